"""One persistent interactive shell on a host, typed into over a transport.

Why a PTY: RunPod's SSH proxy only accepts interactive sessions, so every
command is typed into one long-lived login shell (``ssh -tt`` for remote
hosts, ``bash --login`` for the built-in ``local`` host). The shell always
runs on a terminal; this side reaches it through a local pseudo-terminal
(transport ``pty``) or plain pipes (``pipe``, the only choice on Windows):
see ``transport.py``. Everything below holds on both.

How a command's output is made exact
------------------------------------
* On connect the shell is tamed once: ``stty -echo -opost`` (no echo of what
  we type, no ``\\n`` → ``\\r\\n`` rewriting, so bytes pass unchanged),
  line editing off (``set +o emacs +o vi``: no readline, hence no
  bracketed-paste or other escape codes), empty ``PS1``/``PS2`` and
  ``PROMPT_COMMAND``, no history file, ``TERM=dumb`` and ``cat`` as pager.
  Whatever the host printed before (banner, prompts, colours) is discarded up
  to a ready marker.
* Each command travels as ANSI-C quoted text (``$'…'``) in which every byte
  outside printable ASCII, and every quote and backslash, is a ``\\xHH``
  escape: no quoting can break out, no control byte reaches the terminal
  driver, and lines stay far below the PTY's 4096-byte canonical limit
  (long commands are sent as several ``+=`` lines).
* It runs as ``( cd …; export …; eval "$cmd" ) </dev/null 2>ERRFILE``:
  stdin is empty (a command that reads stdin gets EOF at once), stdout goes
  straight through the PTY, stderr to a file that is printed after it, and
  a subshell keeps ``cd``, ``exit`` and variables of one command from
  leaking into the next: **the working directory does not persist**; use
  the ``cwd`` argument.
* Markers bracket each part. A fresh random token per command is printed
  with ``printf '%s%s' 'HEAD' 'TAIL'`` so only the shell's output, never an
  echo of what we typed, can contain it joined.

Timeouts: Ctrl-C (typed, turned into SIGINT by the shell's own terminal) ends the command (an interactive bash then drops the rest of
the line, so the end marker never comes); a new ready marker resynchronises.
A command that ignores SIGINT is stopped with Ctrl-Z and killed as ``%%``.
If even that fails the connection is closed and reopened on the next run.

Low-level members for other modules (in-band file transfer):
``send_line(text)`` types one line; ``read_until(marker, timeout)`` returns
the bytes before ``marker`` (consuming it) with a large, fast read loop;
``variable_lines(name, data)`` builds the lines that set a shell variable to exact bytes
(``variable_lines(name, data)`` gives the same as lines, to batch with
others into one write);
``new_token()`` and ``marker_printf(head, tail)`` build split markers;
``ansi_c_quote(data)`` quotes bytes for the shell.
"""
from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..core.config import HostConfig
from ..core.platforms import TRANSPORTS
from ..core.redact import Redactor
from .transport import Transport, TransportClosed, TransportUnavailable, local_shell_argv
from .transport_pipe import PipeTransport

logger = logging.getLogger(__name__)

# Longest line we type: far below the 4096-byte canonical-mode limit.
MAX_LINE = 1000
# Puts back the terminal modes that make output exact (see the module docstring).
TAME_TTY = "stty -echo -opost 2>/dev/null"
INTERRUPT_GRACE_S = 5.0  # a loaded machine can take seconds to deliver ^C and answer
SEND_TIMEOUT_S = 120.0  # a shell that takes no input for this long between commands is gone


class ShellDisconnected(ConnectionError):
    """The connection to the host ended (or could not be opened).

    ``partial`` holds what the connection printed before it ended.
    """

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class CommandTimeout(TimeoutError):
    """A command ran past its timeout; ``partial`` holds its stdout so far."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_NEEDS_ESCAPE = re.compile(rb"[^\x20-\x26\x28-\x5b\x5d-\x7e]")  # all but printable ASCII minus ' and \\


def ansi_c_quote(data: bytes) -> str:
    """``data`` as the body of a bash ``$'…'`` string, printable ASCII only."""
    return _NEEDS_ESCAPE.sub(lambda match: b"\\x%02x" % match[0][0], data).decode("ascii")


def decode_output(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 text when it is, else base64 so no byte is lost."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


@dataclass
class CommandResult:
    """One command's outcome; the fields of a ``results.jsonl`` line."""

    id: str
    host: str
    status: str  # ok | failed | timeout | disconnected | invalid
    exit_code: int | None
    stdout: str
    stderr: str
    started_at: str
    finished_at: str
    duration_s: float
    error: str | None = None
    stdout_encoding: str = "utf-8"
    stderr_encoding: str = "utf-8"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stdout_bytes(self) -> bytes:
        return _raw(self.stdout, self.stdout_encoding)

    @property
    def stderr_bytes(self) -> bytes:
        return _raw(self.stderr, self.stderr_encoding)

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        if data["error"] is None:
            del data["error"]
        for stream in ("stdout", "stderr"):
            if data[f"{stream}_encoding"] == "utf-8":
                del data[f"{stream}_encoding"]
        data.update(extra)
        return data


def _raw(text: str, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


def new_token() -> str:
    return secrets.token_hex(8)


def marker_printf(head: str, tail: str, extra_format: str = "", *args: str) -> str:
    """A printf whose output joins ``head`` and ``tail``: typed text never does."""
    quoted = " ".join(["'" + head + "'", "'" + tail + "'", *args])
    return f"printf '%s%s{extra_format}' {quoted}"


def variable_lines(name: str, data: bytes) -> list[str]:
    """Shell lines, each under ``MAX_LINE``, that set ``name`` to ``data`` exactly."""
    quoted = ansi_c_quote(data)
    lines: list[str] = []
    start = 0
    while not lines or start < len(quoted):
        end = min(len(quoted), start + MAX_LINE)
        # Every backslash in ``quoted`` opens a 4-character \xHH escape: never cut one.
        escape = quoted.rfind("\\", max(start, end - 3), end)
        if escape >= 0 and end < len(quoted):
            end = escape
        lines.append(f"{name}{'+=' if lines else '='}$'{quoted[start:end]}'")
        start = end
    return lines


_TYPED_INPUT = re.compile(r"(?:[\x20-\x7e]{0,%d}\n)*" % (MAX_LINE - 1))


def _check_typed_input(text: str) -> None:
    if not _TYPED_INPUT.fullmatch(text):
        raise ValueError("typed_input must be printable ASCII lines, each shorter than the PTY line limit, "
                         "ending with a newline")


class RemoteShell:
    """A persistent interactive shell on one host (see the module docstring)."""

    def __init__(self, host: HostConfig, *, interrupt_grace_s: float = INTERRUPT_GRACE_S) -> None:
        self.host = host
        # How long Ctrl-C gets before a command is stopped with Ctrl-Z and killed.
        self.interrupt_grace_s = interrupt_grace_s
        self.transport: Transport | None = None
        self._buffer = bytearray()

    # -- connection ---------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.alive()

    def connect(self) -> None:
        """Open the session and tame the shell; raises ShellDisconnected."""
        self.close()
        # The laptop's secrets stay out of the shell's environment (the local "pod" would
        # otherwise hand them to every process of every job); a job gets a key only explicitly.
        env = {k: v for k, v in os.environ.items() if k not in self.host.secret_names}
        env.update(TERM="dumb", LC_ALL=os.environ.get("LC_ALL", "C.UTF-8"))
        kind = self.host.transport
        try:
            if self.host.is_local:
                argv = local_shell_argv(kind)
                os.makedirs(self.host.workspace, exist_ok=True)
                self.transport = open_transport(kind, argv, env, cwd=self.host.workspace)
            else:
                self.transport = open_transport(kind, self.host.ssh_command(), env)
        except (TransportUnavailable, OSError) as exc:
            raise ShellDisconnected(f"{self.host.name}: cannot start the shell: {exc}") from exc
        logger.info("%s: connected over %s", self.host.name, kind)
        self._buffer.clear()
        token = new_token()
        setup = (
            # The size the PTY transport asks for, also where no local terminal passes one on (pipes).
            f"{TAME_TTY}; stty cols 400 rows 50 2>/dev/null; set +o emacs +o vi; unset HISTFILE PROMPT_COMMAND; "
            "PS1=''; PS2=''; PS4='+ '; export TERM=dumb PAGER=cat GIT_PAGER=cat; "
            "__pf_err=$(mktemp \"${TMPDIR:-/tmp}/posefactory-err.XXXXXX\"); "
            + marker_printf("__PF", f"READY_{token}__", "\\n")
        )
        self.send_line(setup)
        try:
            self.read_until(f"__PFREADY_{token}__\n".encode(), self.host.connect_timeout)
        except CommandTimeout as exc:
            seen = bytes(exc.partial[-300:]).decode("utf-8", "replace")
            self.close()
            raise ShellDisconnected(
                f"{self.host.name}: no shell prompt within {self.host.connect_timeout:g}s (last output: {seen!r})"
            ) from exc
        except ShellDisconnected as exc:
            # ssh says why ("Connection refused", "Host key verification failed"): pass its last line on.
            lines = [line.strip() for line in exc.partial.decode("utf-8", "replace").splitlines() if line.strip()]
            reason = lines[-1][:200] if lines else "the connection closed before a shell started"
            raise ShellDisconnected(f"{self.host.name}: cannot connect: {reason}", exc.partial) from exc

    def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.close(goodbye=b'rm -f -- "$__pf_err"; exit\n')

    # -- low-level primitives -------------------------------------------------
    def send_line(self, text: str) -> None:
        if self.transport is None:
            raise ShellDisconnected(f"{self.host.name}: not connected")
        try:
            self._buffer += self.transport.write(text.encode("utf-8") + b"\n", SEND_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ShellDisconnected(f"{self.host.name}: connection lost while sending ({exc})") from exc

    def read_until(self, marker: bytes, timeout: float | None) -> bytes:
        """Bytes before ``marker``; the marker is consumed, what follows kept."""
        if self.transport is None:
            raise ShellDisconnected(f"{self.host.name}: not connected")
        deadline = None if timeout is None else time.monotonic() + timeout
        searched = 0
        while True:
            index = self._buffer.find(marker, searched)
            if index >= 0:
                data = bytes(self._buffer[:index])
                del self._buffer[: index + len(marker)]
                return data
            searched = max(0, len(self._buffer) - len(marker) + 1)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise CommandTimeout(f"{self.host.name}: no answer within {timeout:g}s", bytes(self._buffer))
            try:
                self._buffer += self.transport.read(remaining if remaining is not None else 3600)
            except TransportClosed as exc:
                partial = bytes(self._buffer)
                self._buffer.clear()
                self.transport.close()
                self.transport = None
                raise ShellDisconnected(
                    f"{self.host.name}: connection closed ({len(partial)} bytes of output received)", partial
                ) from exc

    def _type(self, data: bytes, timeout: float) -> None:
        """Write ``data`` to the terminal while its output keeps being collected
        (the transport never blocks on a peer waiting for us to read)."""
        assert self.transport is not None
        try:
            self._buffer += self.transport.write(data, timeout)
        except TimeoutError as exc:
            raise CommandTimeout(f"{self.host.name}: typed input not taken within {timeout:g}s", b"") from exc

    # -- commands --------------------------------------------------------------
    def run(self, command: str, *, timeout: float | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None, request_id: str = "", typed_input: str | None = None) -> CommandResult:
        """Run one command; never raises for the command's own failure.

        Raises ShellDisconnected when the connection cannot be opened; a
        connection lost mid-command gives status ``disconnected`` instead.

        ``typed_input`` (printable ASCII lines, e.g. base64, each shorter than
        the PTY's line limit) becomes the command's stdin: it is typed after
        the command line and ``head -c`` hands exactly those bytes over, so
        the shell never reads them as commands. Without it stdin is empty.
        """
        if typed_input is not None:
            _check_typed_input(typed_input)
        if not self.connected:
            self.connect()
        started_at, started = utc_now(), time.monotonic()
        token = new_token()
        prefix = []
        if cwd:
            prefix.append(f"cd -- $'{ansi_c_quote(cwd.encode())}' || exit $?")
        for key, value in (env or {}).items():
            if not key.isidentifier():
                raise ValueError(f"env: {key!r} is not a valid variable name")
            prefix.append(f"export {key}=$'{ansi_c_quote(str(value).encode())}'")
        body = "; ".join(prefix + ['eval "$__pf_cmd"'])
        # The typed bytes are taken off the terminal whole before the command
        # starts: a command that exits early must not leave them for the shell.
        stdin = "</dev/null" if typed_input is None else '<"$__pf_err.in"'
        # Non-canonical for the copy: head then reads whole buffers rather than
        # one line per read (the lines keep the canonical phase before stty safe).
        feeder = "" if typed_input is None else (
            f'stty -icanon min 1 time 0 2>/dev/null; head -c {len(typed_input)} >"$__pf_err.in"; '
            'stty icanon 2>/dev/null; ')
        cleanup = "" if typed_input is None else '; rm -f -- "$__pf_err.in"'

        # One write for the whole command: each extra write is a round of
        # PTY and ssh wake-ups, which dominates a trivial command's cost.
        self.send_line("\n".join(variable_lines("__pf_cmd", command.encode("utf-8", "surrogateescape"))) + "\n"
            + marker_printf("__PF", f"S_{token}__") + "; "
            f"{feeder}( {body} ) {stdin} 2>\"$__pf_err\"; "
            + marker_printf("__PF", f"M_{token}_", "%d\\n", "$?") + cleanup + "; "
            "[ -s \"$__pf_err\" ] && cat -- \"$__pf_err\"; "
            + marker_printf("__PF", f"E_{token}__")
        )
        if typed_input:
            try:
                self._type(typed_input.encode("ascii"), timeout or 3600)
            except (OSError, CommandTimeout):
                pass  # the reads below report the lost connection or the timeout

        def finish(status: str, exit_code: int | None, out: bytes, err: bytes, error: str | None) -> CommandResult:
            stdout, out_enc = decode_output(out)
            stderr, err_enc = decode_output(err)
            return CommandResult(
                id=request_id, host=self.host.name, status=status, exit_code=exit_code,
                stdout=stdout, stderr=stderr, started_at=started_at, finished_at=utc_now(),
                duration_s=round(time.monotonic() - started, 6), error=error,
                stdout_encoding=out_enc, stderr_encoding=err_enc,
            )

        try:
            echoed = self.read_until(f"__PFS_{token}__".encode(), timeout or self.host.connect_timeout + 10)
            deadline = None if timeout is None else started + timeout
            try:
                out = self.read_until(f"__PFM_{token}_".encode(), None if deadline is None else max(0.0, deadline - time.monotonic()))
            except CommandTimeout as exc:
                partial = exc.partial
                self._buffer.clear()
                self._interrupt()
                return finish("timeout", None, partial, b"", f"timed out after {timeout:g}s; the command was interrupted")
            code = self.read_until(b"\n", 10)
            err = self.read_until(f"__PFE_{token}__".encode(), 30)
        except ShellDisconnected as exc:
            return finish("disconnected", None, b"", b"", f"{exc}; the command may or may not have run to the end")
        except CommandTimeout:
            self.close()
            return finish("disconnected", None, b"", b"", f"{self.host.name}: the shell stopped answering; it will be reopened")
        exit_code = int(code)
        # Our typed line echoed back, or "\r\n" line ends: a command turned
        # echo or output processing back on (stty on /dev/tty, a program that
        # died in raw mode). Tame the terminal before the next command.
        if echoed or code.endswith(b"\r"):
            try:
                self._resync(TAME_TTY + "; ", 30)
            except (CommandTimeout, ShellDisconnected):
                self.close()  # the next command reconnects to a fresh terminal
        return finish("ok" if exit_code == 0 else "failed", exit_code, out, err, None)

    def _resync(self, commands: str, timeout: float) -> None:
        """Run ``commands`` and discard all output up to a fresh marker."""
        token = new_token()
        self.send_line(commands + marker_printf("__PF", f"R_{token}__", "\\n"))
        self.read_until(f"__PFR_{token}__\n".encode(), timeout)

    def _interrupt(self) -> None:
        """End the running command and resynchronise, or drop the connection."""
        assert self.transport is not None
        # After a kill, bash would announce "[1]+ Killed …" whenever it reaps
        # the job, possibly inside another command's output. ``wait`` returns
        # at once for a stopped job, so poll until the group is gone (reaped),
        # then list jobs into /dev/null, which consumes the notice here.
        reap = ("kill -KILL %% 2>/dev/null; while kill -0 %% 2>/dev/null; do sleep 0.01; done; "
                "jobs >/dev/null 2>&1; ")
        # An interrupted program may have left the terminal in its own modes.
        for stop, follow_up in ((False, f"{TAME_TTY}; "), (True, f"{reap}{TAME_TTY}; ")):
            try:
                self.transport.interrupt(stop=stop)
                time.sleep(0.05)
                self._resync(follow_up, self.interrupt_grace_s)
                return
            except (CommandTimeout, TimeoutError):
                continue
            except (ShellDisconnected, OSError):
                self.close()
                return
        logger.warning("%s: a timed-out command survived Ctrl-C and Ctrl-Z; reconnecting", self.host.name)
        self.close()


def open_transport(kind: str, argv: list[str], env: dict[str, str], cwd: str | None = None) -> Transport:
    """Start ``argv`` behind a transport of ``kind`` (``pty`` or ``pipe``)."""
    logger.debug("starting %s over %s", argv[0], kind)
    if kind == "pipe":
        return PipeTransport(argv, env, cwd)
    if kind == "pty":
        if sys.platform == "win32":
            raise TransportUnavailable("transport 'pty' needs a pseudo-terminal, which Windows lacks: use 'pipe'")
        from .transport_pty import PtyTransport

        return PtyTransport(argv, env, cwd)
    raise TransportUnavailable(f"unknown transport {kind!r} (known: {', '.join(TRANSPORTS)})")


def redact_result(redact: Redactor, result: CommandResult) -> None:
    """Redact a command's stdout, stderr and error in place, whatever their encoding."""
    if not redact:
        return
    result.stdout, result.stdout_encoding = decode_output(redact.redact_bytes(result.stdout_bytes))
    result.stderr, result.stderr_encoding = decode_output(redact.redact_bytes(result.stderr_bytes))
    result.error = redact(result.error)
