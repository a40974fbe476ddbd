"""How ``pod_agent.sh`` runs a job's render: in the pod's warm Blender.

    python3 render_client.py JOB.json

The Blender to run comes from ``blender.env`` (``POSEFACTORY_RUNNER``:
``blender`` for a Blender binary, ``python`` for the bpy module, and
``POSEFACTORY_EXECUTABLE``), which the agent has sourced. The job runs in
the resident Blender (``warm_blender.py``), started here when none is
running, with this process's stdout/stderr, environment (less the keys) and
folder; this process waits and exits with the job's code, so the agent's
time limit, cancel and error reporting read it as if the render ran here.
Killed meanwhile (cancel, time limit), it takes the warm Blender with it.

One warm Blender per workspace, Blender and code version: a pod whose code
set-up updated, or a job for another Blender version, gets its own. With
``POSEFACTORY_WARM_BLENDER=0``, or when the warm Blender cannot start, the
job runs in a Blender of its own (this process becomes it), as before.

Standard library only (the pod's ``python3``).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pod_setup import resident  # noqa: E402 - after the path the pod's layout needs
from remote.core.secret_names import SECRET_NAMES  # noqa: E402

RENDER_JOB = HERE / "render_job.py"
EXIT_RENDER = 4  # render_job.py's "render failed"
START_S = float(os.environ.get("POSEFACTORY_WARM_START_S", "120"))


def blender_command(*args: str) -> list[str]:
    """The command that runs ``render_job.py ARGS`` in the recorded Blender."""
    executable = os.environ["POSEFACTORY_EXECUTABLE"]
    if os.environ.get("POSEFACTORY_RUNNER") == "python":
        return [executable, str(RENDER_JOB), *args]
    # --enable-autoexec: the job is the artist's own scene, its scripted drivers must run
    # (factory preferences turn Python auto-run off).
    return [executable, "--background", "--factory-startup", "--enable-autoexec", "--python", str(RENDER_JOB),
            "--", *args]


def code_stamp() -> str:
    """Names, sizes and times of the pod code a job runs: a new set-up means a new warm Blender."""
    digest = hashlib.sha256()
    for folder in (HERE, HERE / "backends", HERE.parent / "remote" / "core"):
        for path in sorted(folder.glob("*.py")):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def socket_path() -> str:
    return resident.socket_for("blender", os.environ["POSEFACTORY_EXECUTABLE"], code_stamp())


def log_path() -> Path:
    return resident.log_for("warm-blender.log")


def run_alone(job: str) -> NoReturn:
    """The job in a Blender of its own: this process becomes it."""
    command = blender_command(job)
    os.execv(command[0], command)


def warm_connection() -> socket.socket:
    """A connection to the warm Blender, started when none runs; raises ResidentError or OSError."""
    path = socket_path()
    try:
        return resident.connect(path)
    except OSError:
        idle = os.environ.get("POSEFACTORY_WARM_IDLE_S", "900")
        env = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
        resident.start(path, blender_command("--serve", path, "--idle-s", idle), env, log_path(), START_S,
                       "the warm Blender")
        return resident.connect(path)


def run_warm(job: str, connection: socket.socket) -> int:
    """The job's exit code from the warm Blender; once sent, a job is never run a second time here."""
    request = {"job": os.path.abspath(job), "cwd": os.getcwd(),
               "env": {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}}
    sys.stdout.flush()
    sys.stderr.flush()
    answer = b""
    with connection:
        try:
            socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [1, 2])
            answer = resident.read_line(connection, 1 << 16)
        except OSError:
            pass  # reset by a Blender that died: as an end without an answer
    try:
        code = json.loads(answer)["exit_code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if not isinstance(code, int) or isinstance(code, bool):
        print(f"render_job: the warm Blender died during the job; {resident.last_log_line(log_path())}",
              file=sys.stderr)
        return EXIT_RENDER
    return code


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: render_client.py JOB.json", file=sys.stderr)
        return 2
    if os.environ.get("POSEFACTORY_WARM_BLENDER", "1") == "0":
        run_alone(argv[1])
    try:
        connection = warm_connection()
    except (resident.ResidentError, OSError) as exc:
        print(f"render_client: the warm Blender is not available ({exc}); rendering in a Blender of its own",
              file=sys.stderr)
        run_alone(argv[1])
    return run_warm(argv[1], connection)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
