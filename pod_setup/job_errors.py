"""Exit codes of the render job and the exception that carries one.

Shared by the orchestrator (``render_job.py``), the scene renderer and every
AI backend, so a backend can fail the job with the right code without
knowing how the job is driven.
"""
from __future__ import annotations

EXIT_INVALID, EXIT_NO_KEY, EXIT_RENDER, EXIT_AI, EXIT_FILTERED = 2, 3, 4, 5, 6


class JobFailed(Exception):
    """The job cannot go on; ``code`` is the process exit code it ends with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
