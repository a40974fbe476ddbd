"""The render job's side of the resident AI worker (``ai_worker.py``):
find it, start it when it is not running, hand it one request, get its answer.

One worker per workspace, found by its Unix socket (a short path under the
temp folder: a socket path is limited to ~100 bytes). It is started with the
diffusers venv's own Python (``worker_python``) in its own session, so it
outlives the job; a lock keeps two jobs from starting two. A worker that died
is started again by the next request; one that dies during a request fails
that request with one line, never a hang.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from remote.core.secret_names import SECRET_NAMES

from . import resident

log = logging.getLogger(__name__)
WORKER = Path(__file__).resolve().parent / "ai_worker.py"
START_S = float(os.environ.get("POSEFACTORY_AI_START_S", "300"))  # importing torch on a cold disk is slow
MAX_ANSWER_BYTES = 1 << 20


class ChannelError(Exception):
    """The worker could not be reached, started or asked; the message says why in one line."""


def worker_python() -> str:
    """The Python the worker runs in, the first of:

    ``POSEFACTORY_AI_PYTHON`` (a pod job gets it from ``$WORKSPACE/posefactory/ai.env``,
    which setup_pod.sh writes once that Python imports the stack and pod_agent.sh
    sources), ``POSEFACTORY_DIFFUSERS_PYTHON``, ``$POSEFACTORY_DIFFUSERS_VENV/bin/python``
    (default ``$WORKSPACE/venv-diffusers``) when it exists, else this Python.
    """
    explicit = os.environ.get("POSEFACTORY_AI_PYTHON") or os.environ.get("POSEFACTORY_DIFFUSERS_PYTHON")
    if explicit:
        return explicit
    venv = Path(os.environ.get("POSEFACTORY_DIFFUSERS_VENV") or resident.workspace() / "venv-diffusers")
    return str(venv / "bin" / "python") if (venv / "bin" / "python").exists() else sys.executable


def socket_path() -> str:
    return resident.socket_for("ai", worker_python())


def log_path() -> Path:
    return resident.log_for("ai-worker.log")


class WorkerDied(ChannelError):
    """The connection ended before an answer: the worker died (or was dying) meanwhile."""


# Asking again is harmless for these; a generation is never repeated behind the job's back.
IDEMPOTENT = ("load", "stats", "stop")


def request(message: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """``message``'s answer from the worker, starting it when none runs."""
    try:
        return _exchange(message, timeout)
    except WorkerDied:
        if message.get("op") not in IDEMPOTENT:
            raise
        log.info("the AI worker went away; starting it again")
        return _exchange(message, timeout)


def _exchange(message: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        connection = resident.connect(socket_path())
    except OSError:
        _start()
        connection = resident.connect(socket_path())
    with connection:
        connection.settimeout(timeout)
        data = b""
        try:
            connection.sendall(json.dumps(message).encode() + b"\n")
            while not data.endswith(b"\n") and len(data) <= MAX_ANSWER_BYTES:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ChannelError(f"the AI worker did not answer within {timeout:.0f}s; {_last_line()}") from None
        except OSError:
            data = b""  # reset by a worker that died: as an end without an answer
    if not data.endswith(b"\n"):
        raise WorkerDied(f"the AI worker died during the request; it starts again for the next one. {_last_line()}")
    try:
        answer = json.loads(data)
    except ValueError:
        raise ChannelError("the AI worker's answer is unreadable") from None
    if not isinstance(answer, dict):
        raise ChannelError("the AI worker's answer is unreadable")
    return answer


def stop() -> bool:
    """Stop the running worker, if any (its models leave memory); whether one was running."""
    if not resident.listening(socket_path()):
        return False
    request({"op": "stop"})
    deadline = time.monotonic() + 30
    while os.path.exists(socket_path()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def _start() -> None:
    """Start the worker (once, whichever job gets here first) and wait until it listens."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    idle = os.environ.get("POSEFACTORY_AI_IDLE_S", "1800")
    argv = [worker_python(), str(WORKER), "--socket", socket_path(), "--idle-s", idle]
    try:
        resident.start(socket_path(), argv, env, log_path(), START_S, "the AI worker")
    except resident.ResidentError as exc:
        raise ChannelError(str(exc)) from None


def _last_line() -> str:
    return resident.last_log_line(log_path())
