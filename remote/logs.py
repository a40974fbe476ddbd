"""Pose Factory's log: one rotating file in the data dir (``logs/posefactory.log``),
shared by the CLI, the agent and the add-on, never holding a secret.

Every record goes through :class:`RedactingFormatter`, which removes the
values of the secret environment variables (and any the caller adds) from
the formatted text, traceback included. Modules log with
``logging.getLogger(__name__)``; this only decides where records go.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Iterable
from pathlib import Path

from .config import HostConfig, data_dir
from .redact import Redactor

LOG_FILE = "posefactory.log"
MAX_BYTES = 1 << 20
BACKUPS = 3
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    def __init__(self, redact: Redactor, fmt: str = _FORMAT) -> None:
        super().__init__(fmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record)) or ""


def log_path() -> Path:
    return data_dir() / "logs" / LOG_FILE


def environment_secrets() -> list[str]:
    """Values of the environment variables that are secret wherever they appear."""
    return [os.environ[name] for name in HostConfig.secret_names if os.environ.get(name)]


def setup_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> Path:
    """Send Pose Factory's records (the ``remote`` and add-on loggers) to the rotating
    file; idempotent. Returns the file's path."""
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "posefactory", False):
            return path
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.posefactory = True  # type: ignore[attr-defined]  # marks our handler for idempotence
    handler.setFormatter(RedactingFormatter(Redactor([*environment_secrets(), *secrets])))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return path
