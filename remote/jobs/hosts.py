"""Host and pod control for front ends (the Blender add-on): Test Connection and
a RunPod pod's state, start, stop and the laptop's idle check, so that they use
remote.jobs and never the bridge or the RunPod clients directly."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..bridge import transport
from ..bridge.api import Bridge
from ..core.config import HostConfig
from ..core.pod_output import clean_text
from ..core.quoting import q
from ..runpod.idle import stop_if_idle
from ..runpod.pods import PodClient, RunPodError, api_key_for, ensure_running, stop_pod, utc_now, with_endpoint
from .ledger import append_ledger


def local_host_problem(transport_name: str) -> str | None:
    """Why the built-in 'local' demo host cannot run here (no bash, say), or None."""
    return transport.local_host_problem(transport_name)


def test_connection(host: HostConfig, timeout: float = 30) -> str:
    """Open a shell on ``host`` and run a trivial command: "connected: …" or "failed: …"."""
    with Bridge({host.name: host}) as bridge:
        result = bridge.run(host.name, "echo posefactory-ok; uname -sm", timeout=timeout)
    if result.ok and result.stdout.startswith("posefactory-ok"):
        return f"connected: {clean_text(result.stdout.splitlines()[-1], 80)} ({result.duration_s * 1000:.0f} ms)"
    return f"failed: {clean_text(result.error or result.stderr.strip() or result.status, 160)}"


def pod_info(host: HostConfig) -> dict[str, Any]:
    """What the Remote panel shows: state, $/h, uptime, GPU, auto-stop minutes."""
    assert host.runpod_pod_id is not None
    state = PodClient(api_key_for(host)).get(host.runpod_pod_id)
    shown = "RUNNING" if state.running else ("STARTING" if state.desired_status == "RUNNING" else state.desired_status)
    return {**asdict(state), "state": shown, "idle_stop_minutes": host.idle_stop_minutes}


def start_pod(host: HostConfig, progress: Any = print) -> dict[str, Any]:
    """Resume the pod (when stopped) and wait until it runs."""
    resolved, state, resumed = ensure_running(host, progress)
    if resumed:
        append_ledger({"event": "pod_start", "host": host.name, "pod_id": state.pod_id,
                       "cost_per_hr": state.cost_per_hr, "at": utc_now()})
    return {**asdict(state), "state": "RUNNING", "ssh": f"{resolved.user}@{resolved.host}:{resolved.port}"}


def stop(host: HostConfig, reason: str = "stopped by the user") -> dict[str, Any]:
    return asdict(stop_pod(host, append_ledger, reason))


def idle_check(host: HostConfig) -> str:
    """The laptop's idle check: stop the pod when its watchdog reports it idle past the limit."""
    assert host.runpod_pod_id is not None
    state = PodClient(api_key_for(host)).get(host.runpod_pod_id)
    if not state.running:
        return "not running"
    resolved = with_endpoint(host, state)
    with Bridge({host.name: resolved}) as bridge:
        def run(command: str, what: str, **options: Any) -> Any:
            result = bridge.run(host.name, f"export WORKSPACE={q(resolved.workspace)}; {command}", timeout=60)
            if not result.ok:
                raise RunPodError(f"{what} failed on {host.name}: {(result.stderr or result.error or '').strip()[:200]}")
            return result
        stopped = stop_if_idle(run, resolved, append_ledger)
    return "stopped (idle past the limit)" if stopped else "left running (busy or not idle long enough)"
