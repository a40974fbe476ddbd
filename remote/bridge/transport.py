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
import shutil
import sys
from abc import ABC, abstractmethod

logger = logging.getLogger(__name__)

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
