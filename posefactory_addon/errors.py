"""The add-on's one error for a job or a request that cannot go ahead: its message is one line for the artist."""


class SubmitError(ValueError):
    """A job that cannot start; the message is meant for the artist."""
