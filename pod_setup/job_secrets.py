"""The job's keys, handed over by ``pod_agent.sh`` in 0600 files
(``JOBDIR/.secret-<NAME>``) instead of the environment, so that no process of
the job (Blender, anything it starts) carries them: read once, deleted at
once, kept only in this process's memory.
"""
from __future__ import annotations

import os
from pathlib import Path

PREFIX = ".secret-"
_secrets: dict[str, str] = {}


def take(jobdir: Path) -> None:
    """Read and delete the job's secret files."""
    for path in Path(jobdir).glob(PREFIX + "*"):
        try:
            _secrets[path.name[len(PREFIX):]] = path.read_text(encoding="utf-8").strip()
        finally:
            path.unlink(missing_ok=True)


def get(name: str) -> str:
    """A key given with the job, else the environment's (a job started by hand)."""
    return _secrets.get(name) or os.environ.get(name, "")


def forget() -> None:
    """Drop the keys of the job that ended (the warm Blender's next job gets its own, or none)."""
    _secrets.clear()
