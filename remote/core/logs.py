"""Pose Factory's log: one rotating file in the data dir (``logs/posefactory.log``),
shared by the CLI, the agent and the add-on, never holding a secret.

Every record goes through :class:`RedactingFormatter`, which removes the
values of the secret environment variables (and any the caller adds) from
the formatted text, traceback included. Modules log with
``logging.getLogger(__name__)``; this only decides where records go.
"""
from __future__ import annotations

import importlib
import logging
import logging.handlers
import os
import types
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


def setup_logging(package: str = "remote", secrets: Iterable[str] = (), level: int = logging.INFO) -> Path:
    """Send the records of ``package``'s loggers (``remote`` for the CLI, the add-on's
    package inside Blender, which holds its copy of ``remote`` too) to the rotating
    file; other programs' loggers are left alone. Idempotent; returns the file's path."""
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(package)
    for handler in list(logger.handlers):
        if getattr(handler, "posefactory", False):
            if Path(getattr(handler, "baseFilename", "")) == path.absolute():
                return path
            logger.removeHandler(handler)  # the data dir changed (tests, a second session)
            handler.close()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.posefactory = True  # type: ignore[attr-defined]  # marks our handler for idempotence
    handler.setFormatter(RedactingFormatter(Redactor([*environment_secrets(), *secrets])))
    logger.addHandler(handler)
    logger.setLevel(level)
    return path


def import_quietly(module: str) -> types.ModuleType:
    """``import module``, undoing what it does to the root logger on import.

    The ``runpod`` SDK calls ``logging.basicConfig`` when imported: a stream
    handler on the root logger that prints every propagated record, unredacted,
    to stderr, and the root's level set to INFO. The handlers it added are
    removed and the level put back, so records reach only Pose Factory's
    redacting handlers (and those the program itself installed)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return importlib.import_module(module)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        # Its own loggers end in a NullHandler and do not propagate: nothing of the SDK reaches the
        # root (or logging's last-resort stderr handler) past our redaction.
        package = module.partition(".")[0]  # importing runpod.endpoint.runner imports runpod itself first
        for name in [package, *(n for n in list(logging.root.manager.loggerDict) if n.startswith(package + "."))]:
            logger = logging.getLogger(name)
            if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
                logger.addHandler(logging.NullHandler())
            logger.propagate = False
