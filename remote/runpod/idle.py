"""Idle auto-stop of RunPod pods, the laptop's half.

:func:`arm_watchdog` runs once per job after the pod's set-up: it puts the
RunPod key into ``$WORKSPACE/.env`` (mode 600, through the shell's
environment and builtins only, so the key never appears in a command line or
the pod's process list), writes the watchdog's settings, marks activity and
starts ``pod_setup/idle_watchdog.py`` detached (a no-op when one already
watches). :func:`stop_if_idle` is the laptop's own check: when it sees the
pod idle past the limit (the watchdog's ``--status``), it stops the pod
through the API and notes it in the ledger.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..bridge.shell import CommandResult
from ..core.config import HostConfig
from ..core.quoting import q
from .pods import Pod, RunPodError, api_key_for, stop_pod
from .records import MAX_PRICE_PER_HOUR, MAX_SECONDS

log = logging.getLogger(__name__)

# RunPod keys are "rpa_" + base32-ish text; anything else would need quoting in .env.
KEY_SHAPE = re.compile(r"^[A-Za-z0-9_.-]{8,256}$")
Runner = Callable[..., CommandResult]  # JobRunner.run: (command, what, *, secrets=..., timeout=...)


def watchdog_settings(host: HostConfig) -> dict[str, Any]:
    return {"pod_id": host.runpod_pod_id, "idle_stop_minutes": host.idle_stop_minutes,
            "api_base_url": os.environ.get("RUNPOD_API_BASE_URL", "https://api.runpod.io")}


def arm_watchdog(run: Runner, host: HostConfig, record_event: Callable[[dict[str, Any]], None]) -> None:
    """Key, settings and a running watchdog in the pod's workspace (pod hosts only).

    Stops the watchdog made since the last job (``pod_events.jsonl``) are
    collected on the way and noted in the ledger.
    """
    if host.runpod_pod_id is None:
        return
    key = api_key_for(host)
    if not KEY_SHAPE.match(key):
        raise RunPodError(f"${host.runpod_api_key_env} does not look like a RunPod API key")
    settings = json.dumps(watchdog_settings(host))
    result = run(
        'umask 077; pf="$WORKSPACE/posefactory"; env_file="$WORKSPACE/.env"; touch "$env_file"; '
        'chmod 600 "$env_file"; '
        'if [ -s "$pf/pod_events.jsonl" ]; then mv "$pf/pod_events.jsonl" "$pf/pod_events.taken"; '
        'head -n 100 "$pf/pod_events.taken"; rm -f "$pf/pod_events.taken"; fi; '
        # grep sees only the name; printf is a builtin: the key is in no argv.
        '{ grep -v "^RUNPOD_API_KEY=" "$env_file"; printf "RUNPOD_API_KEY=%s\\n" "$__PF_RUNPOD_KEY"; } '
        '> "$env_file.tmp" && mv "$env_file.tmp" "$env_file"; unset __PF_RUNPOD_KEY; '
        f'printf "%s\\n" {q(settings)} > "$pf/watchdog.json"; touch "$pf/activity"; '
        'setsid nohup python3 "$pf/pod_setup/idle_watchdog.py" "$WORKSPACE" '
        '</dev/null >>"$pf/watchdog.log" 2>&1 &',
        "arming the idle watchdog", secrets={"__PF_RUNPOD_KEY": key})
    for event in watchdog_events(result.stdout, host):
        record_event(event)
    log.info("idle watchdog armed on %s: stop after %s idle minute(s)", host.name, host.idle_stop_minutes)


def watchdog_events(text: str, host: HostConfig) -> list[dict[str, Any]]:
    """The watchdog's stop events, validated (they come from the pod), as ledger entries."""
    events = []
    for line in text.splitlines():
        try:
            raw = json.loads(line)
            at = datetime.fromtimestamp(float(raw["at"]), UTC).isoformat(timespec="seconds")
            idle_s = round(float(raw["idle_s"]), 1)
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            continue
        if raw.get("event") == "pod_stop" and raw.get("pod_id") == host.runpod_pod_id:
            events.append({"event": "pod_stop", "host": host.name, "pod_id": host.runpod_pod_id,
                           "reason": "idle (pod watchdog)", "idle_s": idle_s, **_run_cost(raw), "at": at})
    return events


def _run_cost(raw: dict[str, Any]) -> dict[str, Any]:
    """The run's price and length the watchdog read from the API, when they are plausible numbers."""
    price, seconds = raw.get("cost_per_hr"), raw.get("pod_seconds")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (price, seconds)):
        return {}
    assert isinstance(price, int | float) and isinstance(seconds, int | float)
    if not (0 <= price <= MAX_PRICE_PER_HOUR and 0 <= seconds <= MAX_SECONDS):
        return {}
    return {"pod_seconds": int(seconds), "cost_per_hr": float(price), "cost_usd": round(seconds * price / 3600, 4)}


def idle_status(run: Runner, host: HostConfig) -> dict[str, Any]:
    """The watchdog's view of the pod: busy, idle seconds (validated: it comes from the pod)."""
    result = run(f"python3 {q(host.workspace)}/posefactory/pod_setup/idle_watchdog.py --status {q(host.workspace)}",
                 "reading the pod's idle time")
    try:
        status = json.loads(result.stdout.strip().splitlines()[-1])
        busy, idle_s = status["busy"], float(status["idle_s"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise RunPodError(f"{host.name}: the idle watchdog answered something unreadable") from None
    if not isinstance(busy, bool) or not 0 <= idle_s < 10 ** 9:
        raise RunPodError(f"{host.name}: the idle watchdog answered something unreadable")
    return {"busy": busy, "idle_s": idle_s}


def stop_if_idle(run: Runner, host: HostConfig,
                 record_event: Callable[[dict[str, Any]], None]) -> Pod | None:
    """Stop the pod when it is idle past ``idle_stop_minutes``; None when it stays up."""
    if host.runpod_pod_id is None or host.idle_stop_minutes <= 0:
        return None
    status = idle_status(run, host)
    if status["busy"] or status["idle_s"] < host.idle_stop_minutes * 60:
        log.info("%s: pod busy or idle only %.0fs; left running", host.name, status["idle_s"])
        return None
    log.info("%s: pod idle %.0fs, past %s minute(s): stopping it", host.name, status["idle_s"], host.idle_stop_minutes)
    return stop_pod(host, record_event, reason=f"idle {status['idle_s']:.0f}s (seen by the laptop)")
