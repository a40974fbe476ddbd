"""Exclusive file locks that work on Linux, macOS and Windows.

POSIX uses ``flock`` (whole file, released when the descriptor closes, also
when the process dies); Windows uses ``msvcrt.locking`` on the file's first
byte, which the OS likewise drops with the handle. Both are advisory between
our own processes, which is all they are for: one appender at a time on a
JSONL file, one agent per queue dir, one attached process per job.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import TracebackType

if sys.platform == "win32":  # pragma: no cover - exercised only on Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names it when it said who it is."""


def lock_fd(fd: int, timeout: float | None = None, poll_s: float = 0.02) -> bool:
    """Lock an open descriptor exclusively; wait up to ``timeout`` seconds
    (None: forever, 0: don't wait). Returns whether the lock was taken.

    Polling rather than a blocking call keeps one code path for both
    platforms (``msvcrt``'s blocking mode gives up after ten seconds).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not _try_lock(fd):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


class FileLock:
    """An exclusive lock held on ``path`` (created when missing) for a ``with`` block
    or until :meth:`release`. The holder writes a short description of itself
    into the file so that a process refused the lock can say who holds it.
    """

    def __init__(self, path: Path, holder: str = "") -> None:
        self.path = Path(path)
        self.holder = holder or f"pid {os.getpid()}"
        self._fd: int | None = None

    def acquire(self, timeout: float | None = 0) -> FileLock:
        """Take the lock, or raise :class:`LockHeld` naming the holder after ``timeout``."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not lock_fd(fd, timeout):
            os.close(fd)
            raise LockHeld(f"{self.path} is held by {self.current_holder() or 'another process'}")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, self.holder.encode("utf-8", "replace"))
        self._fd = fd
        return self

    def current_holder(self) -> str:
        """What the holder wrote into the lock file ('' when unknown)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()[:200]
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock on both platforms
            self._fd = None

    def __enter__(self) -> FileLock:
        return self if self._fd is not None else self.acquire(timeout=None)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
