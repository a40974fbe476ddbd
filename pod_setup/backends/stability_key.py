"""The Stability key on the pod, for the backends that call Stability (v1, v2beta structure, AI Render):
handed over by the job agent in a file (``job_secrets``), else ``$WORKSPACE/.env``; never the job file."""
from __future__ import annotations

import os
from pathlib import Path

from .. import job_secrets


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (quotes stripped, comments ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def stability_key() -> str:
    key = job_secrets.get("STABILITY_API_KEY")  # handed over in a file, not the environment
    if not key:
        workspace = Path(os.environ.get("WORKSPACE", "/workspace"))
        key = read_dotenv(workspace / ".env").get("STABILITY_API_KEY", "")
    return key
