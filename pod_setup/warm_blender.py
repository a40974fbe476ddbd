"""The warm Blender: one Blender process on the pod that runs job after job.

    blender -b --factory-startup --enable-autoexec -P render_job.py -- --serve SOCKET [--idle-s 900]

Started by ``render_client.py`` (which ``pod_agent.sh`` runs for every job)
when none is running, so a job pays Blender's start-up (and Cycles' first
render set-up) only when the process is new. Each job still opens its own
scene, so nothing of one artist's scene leaks into the next job; the keys a
job was handed are forgotten when it ends.

One job per connection. The client sends one JSON line,
``{"job": JOB_JSON, "cwd": DIR, "env": {...}}``, with its stdout and stderr
(the job's ``render.log``) as file descriptors, and gets back
``{"exit_code": N, "blender_jobs": K}``. For the job's duration this process
writes to those descriptors and runs with that environment and folder, so a
job reads exactly as when run alone.

A client that goes away before its answer was cancelled or timed out (the job
agent kills it): a render cannot be stopped half-way, so this process kills
itself at once and the next job starts a fresh one. So does a job that raised
something unexpected (the process's state is unknown), and, to keep leaks
bounded, every ``POSEFACTORY_WARM_MAX_JOBS`` jobs (default 50).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pod_setup import resident

log = logging.getLogger("posefactory.warm_blender")
MAX_REQUEST_BYTES = 1 << 20
EXIT_INTERNAL = 1  # what a job that raised exits with when run alone (Python's own code)


class BadRequest(Exception):
    pass


def serve(path: str, idle_s: float, run_job: Callable[[Path], int]) -> int:
    max_jobs = int(os.environ.get("POSEFACTORY_WARM_MAX_JOBS", "50"))
    server = resident.listen(path)
    log.info("ready on %s (pid %d)", path, os.getpid())
    jobs = 0
    workspace = Path(os.environ.get("WORKSPACE", "/workspace"))
    # A workspace that is gone (a deleted local host, a test's) has no job to come: stop at the next idle check.
    with contextlib.closing(resident.connections(server, path, idle_s, workspace.is_dir)) as incoming:
        for connection in incoming:
            with connection:
                try:
                    request, fds = _read_request(connection)
                except BadRequest as exc:
                    log.warning("refused a request: %s", exc)
                    continue
                if request is None:
                    continue  # a client checking that the process listens
                jobs += 1
                code, healthy = _run(connection, request, fds, jobs, run_job)
                try:
                    connection.sendall(json.dumps({"exit_code": code, "blender_jobs": jobs}).encode() + b"\n")
                except OSError:
                    log.warning("the client went away before the answer")
            if not healthy or jobs >= max_jobs:
                log.info("stopping after %d job(s)%s", jobs, "" if healthy else ": the last one raised")
                break
    return 0


def _read_request(connection: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    connection.settimeout(30)
    data, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, 2)
    try:
        while data and not data.endswith(b"\n") and len(data) <= MAX_REQUEST_BYTES:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
        if not data.strip():
            return None, []
        try:
            request = json.loads(data)
        except ValueError:
            raise BadRequest("not JSON") from None
        if not (isinstance(request, dict) and isinstance(request.get("job"), str) and os.path.isabs(request["job"])
                and isinstance(request.get("cwd"), str) and isinstance(request.get("env"), dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())):
            raise BadRequest("not a job request")
        if len(fds) != 2:
            raise BadRequest("no stdout/stderr passed")
    except BadRequest:
        for fd in fds:
            os.close(fd)
        raise
    connection.settimeout(None)
    return request, fds


def _run(connection: socket.socket, request: dict[str, Any], fds: list[int], jobs: int,
         run_job: Callable[[Path], int]) -> tuple[int, bool]:
    """The job's exit code, and whether this process is still fit for the next job."""
    finished = threading.Event()
    threading.Thread(target=_die_when_abandoned, args=(connection, finished), daemon=True).start()
    env = {**request["env"], "POSEFACTORY_BLENDER_JOBS": str(jobs)}
    with _job_context(fds, env):
        try:
            os.chdir(request["cwd"])
        except OSError as exc:  # the job's folder is gone: nothing runs
            print(f"render_job: cannot enter the job's folder {request['cwd']}: {exc.strerror or exc}", file=sys.stderr)
            code, healthy = EXIT_INTERNAL, True
        else:
            try:
                code, healthy = run_job(Path(request["job"])), True
            except Exception:  # told to the job's own log, as a job run alone would
                traceback.print_exc()
                code, healthy = EXIT_INTERNAL, False
    finished.set()
    log.info("job %d (%s): exit %d", jobs, request["job"], code)
    return code, healthy


def _die_when_abandoned(connection: socket.socket, finished: threading.Event) -> None:
    """The client sends nothing after its request: anything it does now is going away."""
    try:
        connection.recv(1)
    except OSError:
        pass
    if not finished.is_set():
        log.warning("the job's client went away (cancelled or out of time): stopping this Blender")
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _job_context(fds: list[int], env: dict[str, str]) -> Iterator[None]:
    """The job's stdout/stderr and environment, and this process's own back afterwards.

    Between jobs the process stays in ``/``: a job's folder (or a whole workspace) may be deleted meanwhile.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = [os.dup(1), os.dup(2)]
    saved_env = dict(os.environ)
    for target, fd in zip((1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, fd in zip((1, 2), saved_fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir("/")
