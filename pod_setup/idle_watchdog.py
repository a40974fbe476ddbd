"""Idle auto-stop, on the pod: stop this pod through RunPod's API once no job
has run for ``idle_stop_minutes``.

    python3 idle_watchdog.py WORKSPACE            # the watchdog (started detached)
    python3 idle_watchdog.py --status WORKSPACE   # one JSON line: busy, idle seconds, limit

The pipeline starts it detached (setsid/nohup) in ``$WORKSPACE`` before each
job, so it survives the laptop sleeping or losing its connection; a second
start is a no-op (one watchdog per workspace, held by a file lock).

Settings come from ``$WORKSPACE/posefactory/watchdog.json`` (``pod_id``,
``idle_stop_minutes``, ``api_base_url``), re-read on every poll so a new
limit applies at once; the API key from ``RUNPOD_API_KEY`` in
``$WORKSPACE/.env`` (mode 600), never from the command line, so it is not in
the process list. Activity: the job dirs' status files (``pod_agent.sh``
writes them) and ``posefactory/activity`` (touched by the pipeline when it
arrives). A queued or running job whose process lives is never stopped.

Standard library only: it runs under the pod's own ``python3``. The stop is
RunPod's REST API v2 ``POST /v2/pods/{id}/action`` ``{"action": "stop"}``.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_API = "https://api.runpod.io"


def log(workspace: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n"
    with open(workspace / "posefactory" / "watchdog.log", "a", encoding="utf-8") as handle:
        handle.write(line)


def settings(workspace: Path) -> dict:
    try:
        data = json.loads((workspace / "posefactory" / "watchdog.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def api_key(workspace: Path) -> str | None:
    try:
        lines = (workspace / ".env").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition("=")
        if name.strip() == "RUNPOD_API_KEY":
            return value.strip().strip("'\"") or None
    return None


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def activity(workspace: Path) -> tuple[bool, float]:
    """(a job is queued or running, the time of the last activity)."""
    busy, last = False, 0.0
    marker = workspace / "posefactory" / "activity"
    if marker.exists():
        last = marker.stat().st_mtime
    for state_file in (workspace / "jobs").glob("*/state"):
        try:
            state = state_file.read_text().strip()
            last = max(last, state_file.stat().st_mtime)
        except OSError:
            continue
        if state in ("queued", "running") and _alive(state_file.parent / "pid"):
            busy = True
    return busy, last


def status(workspace: Path) -> dict:
    busy, last = activity(workspace)
    limit = settings(workspace).get("idle_stop_minutes")
    return {"busy": busy, "idle_s": 0.0 if busy or not last else round(time.time() - last, 1),
            "idle_stop_minutes": limit, "watchdog_running": _locked_elsewhere(workspace)}


def _lock_path(workspace: Path) -> Path:
    return workspace / "posefactory" / "watchdog.lock"


def _locked_elsewhere(workspace: Path) -> bool:
    try:
        with open(_lock_path(workspace), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class PodGone(Exception):
    """The API knows no such pod (404): terminated, nothing left to stop."""


def pod_run(api_base_url: str, key: str, pod_id: str) -> dict:
    """The price and uptime of the pod's run now, for the ledger ({} when the API cannot say)."""
    request = urllib.request.Request(f"{api_base_url.rstrip('/')}/v2/pods/{pod_id}", method="GET",
                                     headers={"Authorization": f"Bearer {key}", "Accept": "application/json",
                                              "User-Agent": "posefactory-watchdog"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read() or b"{}")
    except (OSError, ValueError):
        return {}
    runtime = answer.get("runtime") if isinstance(answer, dict) else None
    cost, uptime = answer.get("cost") if isinstance(answer, dict) else None, (runtime or {}).get("uptime")
    if isinstance(cost, int | float) and isinstance(uptime, int | float):
        return {"cost_per_hr": cost, "pod_seconds": uptime}
    return {}


def stop_pod(api_base_url: str, key: str, pod_id: str) -> str:
    """Ask the API to stop the pod; returns its status as the API answers it."""
    body = json.dumps({"action": "stop"}).encode()
    request = urllib.request.Request(f"{api_base_url.rstrip('/')}/v2/pods/{pod_id}/action", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}",
                                              "Accept": "application/json", "User-Agent": "posefactory-watchdog"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise PodGone() from None
        if exc.code == 409:  # not stoppable now: already stopped (EXITED) or stopping
            return "not running"
        raise
    status = answer.get("status") if isinstance(answer, dict) else None
    return str(status)[:20] if isinstance(status, str) and status.isalpha() else "unknown"


def watch(workspace: Path) -> int:
    lock = open(_lock_path(workspace), "a")  # held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # one is already watching this workspace
    log(workspace, f"watchdog started (pid {os.getpid()})")
    started = time.time()  # idle is counted from here at the earliest
    while True:
        config = settings(workspace)
        limit_s = float(config.get("idle_stop_minutes") or 0) * 60
        pod_id = str(config.get("pod_id") or "")
        if limit_s <= 0 or not pod_id.isalnum():
            log(workspace, "auto-stop is off; watchdog exits")
            return 0
        busy, last = activity(workspace)
        idle = 0.0 if busy else time.time() - max(last, started)
        if idle >= limit_s:
            key = api_key(workspace)
            if not key:
                log(workspace, "idle past the limit but no RUNPOD_API_KEY in .env; cannot stop the pod")
            else:
                base = config.get("api_base_url") or DEFAULT_API
                run = pod_run(base, key, pod_id)  # before the stop, which ends the run (cost 0, no uptime)
                try:
                    answer = stop_pod(base, key, pod_id)
                except PodGone:
                    log(workspace, f"pod {pod_id} no longer exists (404); watchdog exits")
                    return 0
                except (OSError, ValueError) as exc:
                    # urllib's errors are OSErrors; the message never holds the key.
                    log(workspace, f"stopping pod {pod_id} failed ({type(exc).__name__}: {exc}); retrying")
                else:
                    log(workspace, f"pod {pod_id} idle for {idle:.0f}s (limit {limit_s:.0f}s): stopped ({answer})")
                    with open(workspace / "posefactory" / "pod_events.jsonl", "a", encoding="utf-8") as events:
                        events.write(json.dumps({"event": "pod_stop", "pod_id": pod_id, "reason": "idle",
                                                 "idle_s": round(idle, 1), "at": time.time(), **run}) + "\n")
                    return 0
        time.sleep(max(0.2, min(30.0, limit_s / 4)))


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--status":
        print(json.dumps(status(Path(argv[2]))))
        return 0
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: idle_watchdog.py [--status] WORKSPACE", file=sys.stderr)
        return 2
    return watch(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
