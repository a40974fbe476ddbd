"""Resident processes on the pod, each found by its Unix socket: the AI worker
(``ai_worker.py``) and the warm Blender (``warm_blender.py``).

Both sides of the pattern live here so the two stay alike: the client
connects, or starts the process (once, under a lock, whichever job gets
there first) in its own session so that it outlives the job, and waits until
it listens; the process listens on a socket only its user can open, answers
one request per connection and stops itself after an idle limit.

Standard library only: the client side runs in the pod's ``python3`` (the
job agent) as well as in Blender's.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path

log = logging.getLogger(__name__)


class ResidentError(Exception):
    """The process could not be started or reached; the message says why in one line."""


def workspace() -> Path:
    return Path(os.environ.get("WORKSPACE", "/workspace"))


def socket_for(kind: str, *identity: str) -> str:
    """The socket of the ``kind`` process that serves this workspace and ``identity`` (its interpreter,
    its code): another workspace or a changed one gets a process of its own."""
    key = hashlib.sha256("\0".join([str(workspace().resolve()), *identity]).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"posefactory-{kind}-{key}.sock")


def log_for(name: str) -> Path:
    """A resident process's log, in the workspace's ``posefactory`` folder (its pid is its first line)."""
    return workspace() / "posefactory" / name


def connect(path: str) -> socket.socket:
    """A connection to the process listening on ``path``; OSError when none does."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        raise
    return connection


def listening(path: str) -> bool:
    try:
        connect(path).close()
    except OSError:
        return False
    return True


def start(path: str, argv: list[str], env: dict[str, str], log_file: Path, start_s: float, what: str) -> None:
    """Start ``argv`` (which listens on ``path``) unless it already runs; wait until it listens.

    ``what`` names the process in the errors ("the AI worker").
    """
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if listening(path):
            return  # another job started it meanwhile
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s: %s", what, argv[0])
        with open(log_file, "ab") as output:
            try:
                # cwd /: the job's folder it was started from may be deleted while it lives on.
                process = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=output,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise ResidentError(f"cannot start {what} with {argv[0]}: {exc.strerror or exc}") from None
            # Its pid, in its log from the first moment: whoever stops it need not search for it.
            output.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} resident: started {what} (pid {process.pid})\n".encode())
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ResidentError(f"{what} exited at start (code {process.returncode}): {last_log_line(log_file)}")
            if listening(path):
                return
            time.sleep(0.05)
        process.kill()
        raise ResidentError(f"{what} did not start within {start_s:.0f}s: {last_log_line(log_file)}")


def last_log_line(log_file: Path) -> str:
    """The log's last line, to say why a process failed in the one line the artist sees."""
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f"(its log, {log_file}: {lines[-1][-300:]})" if lines else ""


def listen(path: str) -> socket.socket:
    """The listening socket at ``path``, replacing a dead process's (the starter holds the lock)."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(8)
    return server


def connections(server: socket.socket, path: str, idle_s: float,
                still_wanted: Callable[[], bool] = lambda: True) -> Generator[socket.socket, None, None]:
    """Each accepted connection, until ``idle_s`` pass without one, ``still_wanted`` says no at an idle
    moment, or the caller stops; then the socket goes."""
    server.settimeout(min(idle_s, 5.0))
    last = time.monotonic()
    try:
        while True:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                if time.monotonic() - last > idle_s:
                    log.info("idle for %.0fs: stopping", idle_s)
                    return
                if not still_wanted():
                    log.info("no longer wanted: stopping")
                    return
                continue
            connection.settimeout(None)
            yield connection
            last = time.monotonic()
    finally:
        server.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def read_line(connection: socket.socket, limit: int) -> bytes:
    """One request line (or less, when the client closed early or sent more than ``limit``)."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= limit:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
