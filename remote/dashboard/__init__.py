"""The local dashboard: ``python -m remote.dashboard [--host 127.0.0.1] [--port 8765]``.

A Flask app over the data dir the CLI and the add-on write (jobs, manifests,
outputs, the cost ledger), with the character library and prompt presets;
see docs/dashboard.md. One module per concern: ``app`` (the factory),
``security`` (loopback, token, CSRF, headers), ``readers`` (job records and
manifests), ``thumbs``, ``costs``, ``library``, ``scenes`` and ``submit``
(Generate), and ``views_*`` (the routes).
"""
from .app import create_app

__all__ = ["create_app"]
