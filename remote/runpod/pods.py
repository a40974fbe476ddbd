"""Pod-id hosts: RunPod pods through the REST API v2 (:mod:`.rest`).

A host entry with ``runpod_pod_id`` has no fixed SSH details: before a job,
:func:`prepare_host` reads the pod, starts it when it is stopped (EXITED or
ERROR), waits (bounded, with progress) until it runs, and returns the host
with the SSH endpoint the API reports: ``ssh.direct`` (the pod's public IP
and the port mapped to 22: exec and SFTP) or, where the pod has no public
port 22, ``ssh.proxy`` (``<podId>-<hex>@ssh.runpod.io``, PTY only).

The API key is read from the environment variable the host names and used
for the call only; it is never logged, stored or put into a message.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..core.config import HostConfig
from ..core.cost import LIVE_RATE_ENV
from .created import pin_for_boot
from .records import Pod, RunPodError
from .rest import RestClient, RunPodAPIError

log = logging.getLogger(__name__)

WAIT_POLL_S = 2.0
# What a start refused for want of a free GPU says. The v2 code for it is not documented;
# these are GraphQL's text and v2's "no instances" text for a create.
NO_GPU_HINTS = ("not enough free gpu", "no gpu", "no longer any instances available")


def api_key_for(host: HostConfig) -> str:
    key = os.environ.get(host.runpod_api_key_env, "")
    if not key:
        raise RunPodError(f"{host.name}: no RunPod API key: set ${host.runpod_api_key_env} "
                          "(RunPod console → Settings → API Keys)")
    return key


def account_client(key_env: str = "RUNPOD_API_KEY") -> RestClient:
    """A client for the account whose key is in ``$key_env`` (list, create, terminate)."""
    key = os.environ.get(key_env, "")
    if not key:
        raise RunPodError(f"no RunPod API key: set ${key_env} or the key in the add-on's preferences "
                          "(RunPod console → Settings → API Keys)")
    return RestClient(key)


def client_for(host: HostConfig) -> RestClient:
    return RestClient(api_key_for(host))


def read_pod(client: RestClient, pod_id: str) -> Pod:
    """The pod, or one line saying it is gone (unknown id, terminated, another account's key)."""
    try:
        pod = client.get_pod(pod_id)
    except RunPodAPIError as exc:
        if exc.status == 404:
            raise RunPodError(f"unknown pod id {pod_id}: not in this RunPod account (terminated, or another "
                              "account's key?)") from None
        raise
    if pod.status == "TERMINATED":
        raise RunPodError(f"pod {pod_id} was terminated; deploy a new pod and update runpod_pod_id")
    return pod


def start(client: RestClient, pod: Pod) -> None:
    try:
        client.pod_action(pod.id, "start")
    except RunPodAPIError as exc:
        if exc.status == 400 and any(hint in exc.detail.lower() for hint in NO_GPU_HINTS):
            raise RunPodError(f"no GPU available to resume pod {pod.id} right now (RunPod: {exc.detail}); "
                              "try again later, or deploy a new pod in another data centre") from None
        raise


def wait_until_running(client: RestClient, pod_id: str, timeout_s: float, progress: Callable[[str], None]) -> Pod:
    """Poll until the pod runs; a bounded wait with a line per poll."""
    started = time.monotonic()
    while True:
        pod = read_pod(client, pod_id)
        if pod.status == "EXITED":
            raise RunPodError(f"pod {pod_id} stopped again while starting (RunPod may have reclaimed its GPU)")
        if pod.status == "ERROR":
            raise RunPodError(f"pod {pod_id} failed to start (RunPod says ERROR); see its logs in RunPod's console")
        if pod.running:
            return pod
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise RunPodError(f"pod {pod_id} did not start within {timeout_s:.0f}s (RunPod says {pod.status})")
        progress(f"waiting for pod {pod_id} to start ({pod.status.lower()}, {waited:.0f}s)")
        time.sleep(min(WAIT_POLL_S, max(0.05, timeout_s / 20)))


def ensure_running(host: HostConfig, progress: Callable[[str], None]) -> tuple[HostConfig, Pod, bool]:
    """The pod of ``host`` running, and ``host`` with its SSH endpoint filled in.

    Returns (host, pod, started): ``started`` tells that this call started it.
    """
    assert host.runpod_pod_id is not None
    client = client_for(host)
    pod = read_pod(client, host.runpod_pod_id)
    log.info("pod %s is %s (%s)", pod.id, pod.status, "booted" if pod.booted else "no runtime")
    started = pod.status in ("EXITED", "ERROR")
    if started:
        progress(f"resuming pod {pod.id} ({pod.gpu_count}× {pod.gpu_id or 'GPU'})")
        start(client, pod)
    if not pod.running:
        pod = wait_until_running(client, pod.id, host.resume_timeout_s, progress)
    pin_for_boot(host, pod, started)
    return with_endpoint(host, pod), pod, started


def with_endpoint(host: HostConfig, pod: Pod) -> HostConfig:
    """``host`` pointed at the pod's SSH: ``ssh.direct`` where port 22 is public, else ``ssh.proxy``."""
    if pod.ssh_direct is not None:
        direct = pod.ssh_direct
        log.info("pod %s: SSH over exposed TCP at %s:%s", pod.id, direct.host, direct.port)
        return replace(host, host=direct.host, port=direct.port, user=host.user or direct.username,
                       interactive_only=False)
    if pod.ssh_proxy is None:
        raise RunPodError(f"pod {pod.id} has no SSH endpoint (neither ssh.direct nor ssh.proxy); "
                          "expose 22/tcp on the pod (Edit Pod → Expose TCP Ports)")
    proxy = pod.ssh_proxy
    log.info("pod %s: no public port 22, using RunPod's SSH proxy", pod.id)
    return replace(host, host=proxy.host, port=proxy.port, user=proxy.username, interactive_only=True)


def prepare_host(hosts: dict[str, HostConfig], name: str, progress: Callable[[str], None],
                 record_event: Callable[[dict[str, Any]], None]) -> Pod | None:
    """Before a job: a pod host's pod running and ``hosts[name]`` pointed at it.

    Other hosts (and unknown names, which the bridge reports) are left alone.
    The pod's live price travels to the pod-side cost model through the host's
    env, so estimates and the job's actual cost use what RunPod charges now.
    """
    host = hosts.get(name)
    if host is None or host.runpod_pod_id is None:
        return None
    resolved, pod, started = ensure_running(host, progress)
    hosts[name] = replace(resolved, env={**resolved.env, LIVE_RATE_ENV: f"{pod.cost_per_hr:g}"})
    if started:
        record_event(start_event(name, pod))
    return pod


def start_event(host_name: str, pod: Pod) -> dict[str, Any]:
    return {"event": "pod_start", "host": host_name, "pod_id": pod.id, "cost_per_hr": pod.cost_per_hr, "at": utc_now()}


def stop_pod(host: HostConfig, record_event: Callable[[dict[str, Any]], None], reason: str) -> Pod:
    """Stop ``host``'s pod (a no-op when it is not up); the ledger notes what it ran for."""
    assert host.runpod_pod_id is not None
    client = client_for(host)
    pod = read_pod(client, host.runpod_pod_id)
    if "stop" not in pod.actions:
        return pod
    stopped = client.pod_action(pod.id, "stop")
    record_event(stop_event(host.name, pod, reason))
    return stopped if stopped is not None else read_pod(client, pod.id)


def run_cost(pod: Pod) -> dict[str, Any]:
    """What the pod's current run cost so far (the ledger's fields)."""
    return {"pod_seconds": pod.uptime_s, "cost_per_hr": pod.cost_per_hr,
            "cost_usd": round(pod.uptime_s * pod.cost_per_hr / 3600, 4)}


def stop_event(host_name: str, pod: Pod, reason: str) -> dict[str, Any]:
    return {"event": "pod_stop", "host": host_name, "pod_id": pod.id, "reason": reason, **run_cost(pod),
            "at": utc_now()}


def utc_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")
