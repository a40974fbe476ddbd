"""Host and pod control for front ends (the Blender add-on): Test Connection and
a RunPod pod's state, start, stop and the laptop's idle check, so that they use
remote.jobs and never the bridge or the RunPod clients directly."""
from __future__ import annotations

from typing import Any

from ..bridge import transport
from ..bridge.api import Bridge
from ..core.config import HostConfig
from ..core.pod_output import clean_text
from ..core.quoting import q
from ..runpod.idle import stop_if_idle
from ..runpod.pods import (
    Pod,
    RunPodError,
    client_for,
    ensure_running,
    read_pod,
    start_event,
    stop_pod,
    with_endpoint,
)
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


def pod_summary(pod: Pod) -> dict[str, Any]:
    """What front ends show of a pod (plain values: the add-on's views hold them)."""
    shown = "STARTING" if pod.status == "RUNNING" and not pod.booted else pod.status
    return {"pod_id": pod.id, "name": pod.name, "status": pod.status, "state": shown, "cost_per_hr": pod.cost_per_hr,
            "uptime_s": pod.uptime_s, "gpu_count": pod.gpu_count, "gpu_name": pod.gpu_id or ""}


def pod_info(host: HostConfig) -> dict[str, Any]:
    """What the Remote panel shows: state, $/h, uptime, GPU, auto-stop minutes."""
    assert host.runpod_pod_id is not None
    pod = read_pod(client_for(host), host.runpod_pod_id)
    return {**pod_summary(pod), "idle_stop_minutes": host.idle_stop_minutes}


def start_pod(host: HostConfig, progress: Any = print) -> dict[str, Any]:
    """Resume the pod (when stopped) and wait until it runs."""
    resolved, pod, started = ensure_running(host, progress)
    if started:
        append_ledger(start_event(host.name, pod))
    return {**pod_summary(pod), "ssh": f"{resolved.user}@{resolved.host}:{resolved.port}"}


def stop(host: HostConfig, reason: str = "stopped by the user") -> dict[str, Any]:
    return pod_summary(stop_pod(host, append_ledger, reason))


def idle_check(host: HostConfig) -> str:
    """The laptop's idle check: stop the pod when its watchdog reports it idle past the limit."""
    assert host.runpod_pod_id is not None
    pod = read_pod(client_for(host), host.runpod_pod_id)
    if not pod.running:
        return "not running"
    resolved = with_endpoint(host, pod)
    with Bridge({host.name: resolved}) as bridge:
        def run(command: str, what: str, **options: Any) -> Any:
            result = bridge.run(host.name, f"export WORKSPACE={q(resolved.workspace)}; {command}", timeout=60)
            if not result.ok:
                raise RunPodError(f"{what} failed on {host.name}: {(result.stderr or result.error or '').strip()[:200]}")
            return result
        stopped = stop_if_idle(run, resolved, append_ledger)
    return "stopped (idle past the limit)" if stopped else "left running (busy or not idle long enough)"
