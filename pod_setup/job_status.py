"""``status.json`` on the pod: its one writer, and the line ``pod_agent.sh --status`` prints for the
laptop, both through the wire records of ``remote/core/pod_output.py`` (versioned, checked there on
the laptop). Run by ``pod_agent.sh`` with the pod's ``python3``:

    job_status.py write JOBDIR STATE [EXIT_CODE] [ERROR]
    job_status.py show JOBDIR QUEUE_POSITION   (-1: not queued)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from remote.core.pod_output import next_status  # noqa: E402 - after the path the pod's layout needs


def _read(path: Path) -> dict[str, Any]:
    """A JSON object the pod wrote, or {} (a file being replaced or never written)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(jobdir: Path, state: str, code: str = "", error: str = "") -> None:
    """The job's new state in ``status.json`` and ``state``, each replaced atomically."""
    status = next_status(_read(jobdir / "status.json"), state, exit_code=int(code) if code else None, error=error,
                         now=time.time())
    for name, text in (("status.json", json.dumps(status)), ("state", state)):
        tmp = jobdir / f".{name}.tmp"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, jobdir / name)


def show(jobdir: Path, queue_position: int) -> str:
    """``status.json`` with the queue position and a batch's progress (render_job.py's progress.json)."""
    status = _read(jobdir / "status.json")
    if queue_position >= 0:
        status["queue_position"] = queue_position
    progress = _read(jobdir / "progress.json")
    if progress:
        status["items"] = progress
    return json.dumps(status)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "write":
        write(Path(argv[1]), *argv[2:5])
        return 0
    if len(argv) == 3 and argv[0] == "show":
        print(show(Path(argv[1]), int(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
