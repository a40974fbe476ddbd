"""The PTY transport: the shell process on a local pseudo-terminal (pexpect).

POSIX only (imported by ``transport.open_transport`` when asked for
``pty``); see ``transport.py`` for the interface and the pipe transport.
"""
from __future__ import annotations

import os
import select
import time

import pexpect

from .transport import READ_CHUNK, Transport, TransportClosed, TransportUnavailable


class PtyTransport(Transport):
    kind = "pty"

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        try:
            self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=cwd, echo=False,
                                       maxread=READ_CHUNK, dimensions=(50, 400))
        except (pexpect.ExceptionPexpect, OSError) as exc:
            raise TransportUnavailable(f"cannot start {argv[0]}: {exc}") from exc
        self.child.delaybeforesend = None

    def write(self, data: bytes, timeout: float | None = None) -> bytes:
        """Write only what the terminal accepts and read in between.

        A blocking write of megabytes could wait forever on a peer that is
        itself waiting for us to read what it printed; this keeps both moving.
        """
        fd, received = self.child.child_fd, bytearray()
        view = memoryview(data)
        deadline = None if timeout is None else time.monotonic() + timeout
        blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)
        try:
            while view:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"input not taken within {timeout:g}s")
                readable, writable, _ = select.select([fd], [fd], [], remaining)
                if readable:
                    chunk: bytes | None
                    try:
                        chunk = os.read(fd, READ_CHUNK)
                    except BlockingIOError:
                        chunk = None
                    except OSError:  # EIO: the process is gone
                        chunk = b""
                    if chunk == b"":
                        raise BrokenPipeError("the terminal closed")
                    received += chunk or b""
                if writable:
                    try:
                        view = view[os.write(fd, view[:READ_CHUNK]):]
                    except BlockingIOError:
                        pass
        finally:
            os.set_blocking(fd, blocking)
        return bytes(received)

    def read(self, timeout: float) -> bytes:
        try:
            return self.child.read_nonblocking(READ_CHUNK, timeout=timeout)
        except pexpect.TIMEOUT:
            return b""
        except (pexpect.EOF, OSError) as exc:
            raise TransportClosed(str(exc)) from exc

    def alive(self) -> bool:
        return self.child.isalive()

    def close(self, goodbye: bytes = b"", grace_s: float = 1.0) -> None:
        try:
            if goodbye and self.child.isalive():
                self.child.send(goodbye)
                self.child.expect(pexpect.EOF, timeout=grace_s)
        except (pexpect.ExceptionPexpect, OSError):
            pass
        self.child.close(force=True)
