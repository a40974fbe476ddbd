"""How RemoteShell's bytes reach the shell process: a PTY or plain pipes.

Both transports start the same program (``ssh -tt …``, or a login bash for
the built-in ``local`` host) and carry the same marker protocol; they differ
only in what sits between this process and that program:

* ``pty`` (``pty_transport.PtyTransport``): a local pseudo-terminal through
  ``pexpect.spawn``. POSIX only.
* ``pipe`` (:class:`PipeTransport`): ``subprocess`` pipes, a reader thread
  collecting output and a writer thread feeding input. Works wherever
  ``subprocess`` does, Windows included.

Either way the shell itself runs on a terminal: ``ssh -tt`` makes the far
end allocate one even when ssh's own stdin and stdout are pipes, and the
pipe transport runs the local bash under ``script``, which gives it a
terminal of its own. That terminal is what turns the typed ``\\x03`` and
``\\x1a`` of :meth:`Transport.interrupt` into SIGINT and SIGTSTP for the
running command, so interrupting never needs a signal from this side.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
from abc import ABC, abstractmethod

logger = logging.getLogger(__name__)

TRANSPORTS = ("pty", "pipe")
READ_CHUNK = 1 << 20
INTERRUPT_KEY = b"\x03"  # the far terminal sends SIGINT to the running command
STOP_KEY = b"\x1a"  # ... and SIGTSTP, for a command that ignores SIGINT


class TransportUnavailable(OSError):
    """This transport cannot start here (no PTY on Windows, no ``script`` for a local bash…)."""


class TransportClosed(EOFError):
    """The process behind the transport ended; nothing more will be read."""


class Transport(ABC):
    """The process I/O RemoteShell needs, whatever carries it."""

    kind: str

    @abstractmethod
    def write(self, data: bytes, timeout: float | None = None) -> bytes:
        """Send all of ``data``; returns output that arrived meanwhile (to keep, in order).

        Raises TimeoutError when the process does not take it within
        ``timeout`` seconds, OSError when the connection is gone.
        """

    @abstractmethod
    def read(self, timeout: float) -> bytes:
        """The next output available within ``timeout`` seconds (``b""`` if none);
        raises TransportClosed once the process has ended and all output was read."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether the process is still running."""

    @abstractmethod
    def close(self, goodbye: bytes = b"", grace_s: float = 1.0) -> None:
        """Send ``goodbye`` (e.g. ``exit``), wait up to ``grace_s`` for the end, then kill."""

    def interrupt(self, stop: bool = False) -> None:
        """Ask the far terminal to interrupt (or, with ``stop``, suspend) the running command."""
        self.write(STOP_KEY if stop else INTERRUPT_KEY, timeout=5)


def default_transport(platform: str = sys.platform) -> str:
    """Pipes on Windows (no pseudo-terminals there), the PTY everywhere else."""
    return "pipe" if platform == "win32" else "pty"


def local_shell_argv(transport: str, platform: str = sys.platform, which=shutil.which) -> list[str]:
    """The argv of the ``local`` host's login bash for ``transport``.

    Over pipes, bash would see no terminal (no job control, nothing to turn a
    typed Ctrl-C into SIGINT), so it runs under ``script``, which gives it
    one, as ``ssh -tt`` does on a pod. Raises TransportUnavailable with the
    reason and the way out when this machine cannot host it.
    """
    if platform == "win32":
        raise TransportUnavailable(
            "the built-in 'local' host needs bash and a POSIX terminal, which Windows does not have: "
            "add your pod to ssh_hosts.yaml (see remote/ssh_hosts.example.yaml) and render on it")
    if which("bash") is None:
        raise TransportUnavailable("the built-in 'local' host needs bash, which is not on PATH")
    if transport == "pty":
        return ["bash", "--login"]
    if which("script") is None:
        raise TransportUnavailable("the 'local' host over pipes needs the 'script' tool (util-linux or BSD) "
                                   "to give bash a terminal; install it or use transport: pty")
    if platform == "darwin":  # BSD script: the command follows the file
        return ["script", "-q", "/dev/null", "bash", "--login"]
    # util-linux: -e passes bash's exit status on, -f flushes every write at once.
    return ["script", "-q", "-f", "-e", "-c", "bash --login", "/dev/null"]


def local_host_problem(transport: str, platform: str = sys.platform, which=shutil.which) -> str | None:
    """Why the ``local`` host cannot run here (None when it can), for a UI to show before a job starts."""
    try:
        local_shell_argv(transport, platform, which)
    except TransportUnavailable as exc:
        return str(exc)
    return None


def open_transport(kind: str, argv: list[str], env: dict[str, str], cwd: str | None = None) -> Transport:
    """Start ``argv`` behind a transport of ``kind`` (``pty`` or ``pipe``)."""
    logger.debug("starting %s over %s", argv[0], kind)
    if kind == "pipe":
        return PipeTransport(argv, env, cwd)
    if kind == "pty":
        if sys.platform == "win32":
            raise TransportUnavailable("transport 'pty' needs a pseudo-terminal, which Windows lacks: use 'pipe'")
        from .pty_transport import PtyTransport

        return PtyTransport(argv, env, cwd)
    raise TransportUnavailable(f"unknown transport {kind!r} (known: {', '.join(TRANSPORTS)})")


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
