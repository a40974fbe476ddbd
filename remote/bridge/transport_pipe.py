"""The pipe transport: the shell process on plain ``subprocess`` pipes.

Works wherever ``subprocess`` does, Windows included; see ``transport.py``
for the interface and why the far end still has a terminal.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading

from .transport import READ_CHUNK, Transport, TransportClosed, TransportUnavailable

logger = logging.getLogger(__name__)


class PipeTransport(Transport):
    """The process on plain pipes; threads do the blocking reads and writes.

    Reading: one thread takes whatever the pipe holds (up to ``READ_CHUNK``)
    and appends it to a buffer that :meth:`read` hands out. Writing: one
    thread does the blocking writes in order, so that a writer stuck on a
    peer that stopped reading becomes a timeout here instead of a hang, and
    megabytes of typed input never wait on output nobody reads.
    """

    kind = "pipe"

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        # Its own process group / console group: a Ctrl-C in the terminal that
        # runs the agent must not kill the connection mid-command.
        options: dict = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
                         if sys.platform == "win32" else {"start_new_session": True})
        self.program = argv[0]
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, env=env, cwd=cwd, bufsize=0, **options)
        except OSError as exc:
            raise TransportUnavailable(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in_fd, self._out_fd = self.process.stdin.fileno(), self.process.stdout.fileno()
        self._output = bytearray()
        self._ended = False
        self._arrived = threading.Condition()
        self._writes: queue.Queue[tuple[bytes, threading.Event, list[OSError]] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, name=f"pipe-reader-{self.process.pid}", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"pipe-writer-{self.process.pid}", daemon=True)
        self._reader.start()
        self._writer.start()

    def _read_loop(self) -> None:
        while True:
            try:
                chunk = os.read(self._out_fd, READ_CHUNK)
            except OSError:
                chunk = b""
            with self._arrived:
                if chunk:
                    self._output += chunk
                else:
                    self._ended = True
                self._arrived.notify_all()
            if not chunk:
                return

    def _write_loop(self) -> None:
        while (job := self._writes.get()) is not None:
            data, done, errors = job
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._in_fd, view):]
            except OSError as exc:
                errors.append(exc)
            done.set()

    def write(self, data: bytes, timeout: float | None = None) -> bytes:
        if self._ended or self.process.poll() is not None:
            raise BrokenPipeError(f"{self.program} has exited")
        done, errors = threading.Event(), list[OSError]()
        self._writes.put((data, done, errors))
        if not done.wait(timeout):
            raise TimeoutError(f"input not taken within {timeout:g}s")
        if errors:
            raise errors[0]
        return b""  # output keeps arriving in the reader's buffer

    def read(self, timeout: float) -> bytes:
        with self._arrived:
            if not self._output and not self._ended:
                self._arrived.wait(timeout)
            if self._output:
                data = bytes(self._output)
                self._output.clear()
                return data
            if self._ended:
                raise TransportClosed(f"{self.program} closed its output")
            return b""

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self, goodbye: bytes = b"", grace_s: float = 1.0) -> None:
        if goodbye and self.alive():
            try:
                self.write(goodbye, timeout=grace_s)
                self.process.wait(grace_s)
            except (OSError, TimeoutError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._writes.put(None)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._writer.join(5)  # the process is gone: a blocked write fails with EPIPE and the thread ends
        self._reader.join(5)  # EOF, unless a child the process left behind still holds the pipe
        # A descriptor a thread may still use is left open: closed, its number could be reused.
        if not self._writer.is_alive():
            self.process.stdin.close()
        if not self._reader.is_alive():
            self.process.stdout.close()
