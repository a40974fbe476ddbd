"""Create Pod and Terminate: from a RunPod key to a pod that takes jobs, and back to nothing.

:func:`create_pod_host` is what the add-on's *Create Pod* and
``runpod_cli create`` run: the request checked in one line before anything
is spent; a GPU chosen from the live catalog under the $/h ceiling (or one
line naming what is available under it); the product's ed25519 key pair
made when there is none; the pod created with an official image that runs
sshd with ``PUBLIC_KEY``, ``22/tcp`` exposed, and a host entry written for
it at once (so an interrupted create leaves a pod ``list`` and the hosts
know); progress through PROVISIONING → STARTING → RUNNING; the endpoint read
from the API; the pod's host key pinned on first contact; then the normal
pod set-up (the artist's Blender, render kernels warmed) and the idle
watchdog armed. A pod that never runs, never opens SSH or is cancelled is
terminated (it holds nothing yet) and the line says so; one whose set-up
fails is stopped, so it bills no GPU while the artist looks.

Every pod event goes to the ledger with its price: create, terminate (and
the start and stop of :mod:`remote.runpod.pods`).
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..bridge.api import Bridge
from ..core.config import HostConfig, load_hosts
from ..runpod.created import add_host, free_name, pin_for_boot, remove_pod
from ..runpod.fleet import DEFAULT_IMAGE, affordable, choose_gpu, create_pod, pod_name, slug
from ..runpod.idle import arm_watchdog
from ..runpod.keys import ensure_key_pair
from ..runpod.pods import account_client, read_pod, run_cost, stop_event, utc_now, with_endpoint
from ..runpod.records import CLOUDS, MAX_GPUS, GpuOffer, Pod, RunPodError
from ..runpod.rest import RestClient, RunPodAPIError, resource_id
from .hosts import test_connection
from .ledger import append_ledger
from .pod_steps import JobRunner
from .state import JobProgress, JobRecord

log = logging.getLogger(__name__)

POLL_S = 2.0
WORKSPACE = re.compile(r"^/[A-Za-z0-9._/-]{0,200}$")
NO_INSTANCES = "no longer any instances"  # RunPod's 400 when the catalog's GPU went before the create


class CreateCancelled(RunPodError):
    """The artist cancelled a create; the pod (if any) was terminated."""


@dataclass(frozen=True)
class PodRequest:
    """What *Create Pod* asks for; :meth:`check` refuses bad input in one line."""

    max_price: float  # $/h for all the pod's GPUs together
    gpu_id: str | None = None  # None: the cheapest available under the ceiling
    count: int = 1
    cloud: str = "SECURE"
    disk_gb: int = 20  # container disk: cleared on every stop
    volume_gb: int = 40  # volume disk at the workspace: kept across stops (Blender, the scene store)
    network_volume_id: str | None = None  # instead of the volume disk: kept even after terminate
    name: str | None = None  # after "posefactory-"; default from the GPU
    workspace: str = "/workspace"
    idle_stop_minutes: float = 10.0
    running_timeout_s: float = 900.0  # create → RUNNING; past it the pod is terminated
    ssh_timeout_s: float = 300.0  # RUNNING → SSH answers with our key; past it the pod is terminated
    key_env: str = "RUNPOD_API_KEY"
    blender_version: str = ""  # the artist's, for the set-up ("": setup_pod.sh's default)
    set_up: bool = True
    image: str = DEFAULT_IMAGE

    def check(self) -> None:
        if not (isinstance(self.max_price, int | float) and math.isfinite(self.max_price) and 0 < self.max_price <= 1000):
            raise RunPodError(f"$/h ceiling {self.max_price!r}: a price above 0 and at most 1000")
        if self.cloud not in CLOUDS:
            raise RunPodError(f"cloud {self.cloud!r}: SECURE or COMMUNITY")
        if not 1 <= self.count <= MAX_GPUS:
            raise RunPodError(f"GPU count {self.count}: 1 to {MAX_GPUS}")
        if not 1 <= self.disk_gb <= 4096:
            raise RunPodError(f"container disk {self.disk_gb} GB: 1 to 4096")
        if self.network_volume_id is None and not 10 <= self.volume_gb <= 4096:
            raise RunPodError(f"volume disk {self.volume_gb} GB: 10 to 4096 (RunPod's minimum is 10)")
        if self.network_volume_id is not None:
            resource_id(self.network_volume_id, "network volume")
        if not WORKSPACE.fullmatch(self.workspace) or "/../" in f"{self.workspace}/":
            raise RunPodError(f"workspace {self.workspace!r}: an absolute path of letters, digits, '.', '_', '-' and '/'")
        if not (math.isfinite(self.idle_stop_minutes) and self.idle_stop_minutes >= 0):
            raise RunPodError("auto-stop minutes: 0 (never) or more")
        if not (self.running_timeout_s > 0 and self.ssh_timeout_s > 0):
            raise RunPodError("the start and SSH limits must be positive")
        if not self.key_env.isidentifier():
            raise RunPodError(f"{self.key_env!r} does not name an environment variable")
        if self.name is not None:
            pod_name(self.name)


@dataclass
class CreatedPod:
    host: str  # the host name jobs and the panels use
    pod: Pod
    config: HostConfig  # pointed at the pod's SSH endpoint
    setup_line: str = ""


def offer_rows(offers: list[GpuOffer], cloud: str, count: int, max_price: float) -> list[dict[str, Any]]:
    """The catalog as the Create Pod list shows it: every GPU with a price in ``cloud``, cheapest first."""
    fitting = {offer.id for offer in affordable(offers, cloud, count, max_price)}
    rows = []
    for offer in offers:
        price = offer.price(cloud)
        if price is None:
            continue
        rows.append({"id": offer.id, "name": offer.name, "memory_gb": offer.memory_gb,
                     "price_per_hr": round(price * count, 4), "availability": offer.availability,
                     "fits": offer.id in fitting})
    return sorted(rows, key=lambda row: (not row["fits"], row["price_per_hr"], row["id"]))


def gpu_rows(cloud: str, count: int, max_price: float, key_env: str = "RUNPOD_API_KEY") -> list[dict[str, Any]]:
    """The live catalog for the Create Pod list (one API call)."""
    return offer_rows(account_client(key_env).gpu_catalog(cloud, count), cloud, count, max_price)


def create_pod_host(request: PodRequest, progress: Callable[[str], None], *,
                    record_event: Callable[[dict[str, Any]], None] = append_ledger,
                    hosts_file: Any = None, cancel: threading.Event | None = None) -> CreatedPod:
    """Create a pod for ``request`` and make it a host that takes jobs (see the module's text)."""
    request.check()
    cancel = cancel or threading.Event()
    client = account_client(request.key_env)
    offers = client.gpu_catalog(request.cloud, request.count)
    offer = choose_gpu(offers, request.gpu_id, request.cloud, request.count, request.max_price)
    keys = ensure_key_pair()
    # Host names are this machine's: only its hosts can clash (RunPod itself allows equal pod names).
    name = free_name(pod_name(request.name or slug(offer.name)), set(load_hosts(hosts_file)))
    price = (offer.price(request.cloud) or 0.0) * request.count
    progress(f"creating {name}: {request.count}× {offer.name} in {request.cloud} at ${price:.2f}/h")
    if cancel.is_set():
        raise CreateCancelled("create cancelled before the pod was asked for; nothing was spent")
    try:
        pod = create_pod(client, offer, name, request.cloud, request.count, request.disk_gb, keys.public_key,
                         request.network_volume_id, request.image,
                         volume_gb=None if request.network_volume_id else request.volume_gb,
                         volume_path=request.workspace)
    except RunPodAPIError as exc:
        if exc.status == 400 and NO_INSTANCES in exc.detail.lower():
            others = [o for o in offers if o.id != offer.id]
            raise RunPodError(_gone_line(offer, others, request)) from None
        raise
    record_event({"event": "pod_create", "host": name, "pod_id": pod.id, "name": pod.name, "gpu": offer.id,
                  "gpu_count": request.count, "cloud": request.cloud, "cost_per_hr": pod.cost_per_hr, "at": utc_now()})
    host = add_host(name, pod, keys.private_key, workspace=request.workspace,
                    idle_stop_minutes=request.idle_stop_minutes, resume_timeout_s=request.running_timeout_s,
                    key_env=request.key_env)
    try:
        pod = _wait_running(client, pod, request.running_timeout_s, progress, cancel)
        ready = _wait_for_ssh(host, client, pod, request.ssh_timeout_s, progress, cancel)
    except (RunPodError, KeyboardInterrupt) as exc:
        # Ctrl-C in the CLI is a cancel too: the pod is ours, new and empty, so it goes rather than bill.
        reason = f"create of pod {pod.id} interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        _terminate_new(client, name, pod, record_event, reason)
        if isinstance(exc, CreateCancelled | KeyboardInterrupt):
            raise CreateCancelled(f"{reason}; terminated pod {pod.id} (it held nothing yet)") from None
        raise RunPodError(f"{reason}; terminated pod {pod.id} so it bills nothing more") from None
    created = CreatedPod(name, pod, ready)
    if request.set_up:
        try:
            created.setup_line = _set_up(ready, request.blender_version, progress, record_event)
        except Exception as exc:
            raise RunPodError(f"pod {pod.id} ({name}) runs, but its set-up failed: {exc}; "
                              f"{_stop_after_failed_set_up(client, name, pod, record_event)}") from None
    progress(f"{name} is ready: pod {pod.id}, ${pod.cost_per_hr:.3f}/h, auto-stop after "
             f"{request.idle_stop_minutes:g} idle min")
    return created


def _gone_line(offer: GpuOffer, others: list[GpuOffer], request: PodRequest) -> str:
    fitting = affordable(others, request.cloud, request.count, request.max_price)
    names = ", ".join(f"{o.id} (${(o.price(request.cloud) or 0) * request.count:.2f}/h)" for o in fitting[:5])
    return (f"no {offer.id} left in {request.cloud} (RunPod: no instances available; the catalog reserves nothing); "
            f"available at or under ${request.max_price:.2f}/h: {names or 'none'}")


def _wait_running(client: RestClient, pod: Pod, timeout_s: float, progress: Callable[[str], None],
                  cancel: threading.Event) -> Pod:
    """PROVISIONING → STARTING → RUNNING, a line per state; bounded, cancellable."""
    started = time.monotonic()
    shown = ""
    while True:
        if pod.running:
            progress(f"pod {pod.id}: RUNNING after {time.monotonic() - started:.0f}s")
            return pod
        if pod.status in ("EXITED", "ERROR", "TERMINATED"):
            raise RunPodError(f"pod {pod.id} went {pod.status} while starting (RunPod's console has its logs)")
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise RunPodError(f"pod {pod.id} did not reach RUNNING within {timeout_s:.0f}s (RunPod says {pod.status})")
        if pod.status != shown:
            shown = pod.status
            progress(f"pod {pod.id}: {pod.status} ({waited:.0f}s)")
        if cancel.wait(min(POLL_S, max(0.05, timeout_s / 50))):
            raise CreateCancelled(f"create of pod {pod.id} cancelled while it was {pod.status}")
        pod = read_pod(client, pod.id)


def _wait_for_ssh(host: HostConfig, client: RestClient, pod: Pod, timeout_s: float,
                  progress: Callable[[str], None], cancel: threading.Event) -> HostConfig:
    """The host pointed at the pod once its sshd lets our key in (the first contact pins its host key)."""
    pin_for_boot(host, pod)
    started = time.monotonic()
    last = ""
    while True:
        resolved = with_endpoint(host, pod)
        outcome = test_connection(resolved, timeout=min(30.0, timeout_s))
        if outcome.startswith("connected"):
            progress(f"pod {pod.id}: SSH answers at {resolved.host}:{resolved.port}, host key pinned")
            return resolved
        last = outcome.removeprefix("failed: ")
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise RunPodError(f"pod {pod.id} runs but its image never opened SSH for our key within {timeout_s:.0f}s "
                              f"({resolved.host}:{resolved.port}: {last})")
        progress(f"pod {pod.id}: waiting for SSH at {resolved.host}:{resolved.port} ({waited:.0f}s)")
        if cancel.wait(min(POLL_S, max(0.05, timeout_s / 50))):
            raise CreateCancelled(f"create of pod {pod.id} cancelled while waiting for SSH")
        pod = read_pod(client, pod.id)  # the endpoint may only now be reported


def _set_up(host: HostConfig, blender_version: str, progress: Callable[[str], None],
            record_event: Callable[[dict[str, Any]], None]) -> str:
    """The set-up every job starts with, now: the artist's Blender installed, kernels warmed, watchdog armed."""
    lines: list[str] = []

    def forward(update: JobProgress) -> None:
        lines.append(update.message)
        progress(update.message)

    record = JobRecord(job_id=f"setup-{host.runpod_pod_id}", host=host.name, hosts_file=None, remote_job_dir="",
                       local_output_dir="")
    with Bridge({host.name: host}) as bridge:
        runner = JobRunner(bridge, host, forward, threading.Event(), record, None)
        runner.set_up_pod(blender_version, "none")
        arm_watchdog(runner.run, host, record_event)
    return lines[-1] if lines else ""


def _stop_after_failed_set_up(client: RestClient, host_name: str, pod: Pod,
                              record_event: Callable[[dict[str, Any]], None]) -> str:
    try:
        now = client.get_pod(pod.id)
        if "stop" in now.actions:
            client.pod_action(pod.id, "stop")
            record_event(stop_event(host_name, now, "set-up failed"))
    except RunPodError as exc:
        return f"stopping it failed too ({exc}): stop it in RunPod's console, it bills ${pod.cost_per_hr:.2f}/h"
    return "stopped it (no GPU billing); the next job on it tries the set-up again"


def _terminate_new(client: RestClient, host_name: str, pod: Pod, record_event: Callable[[dict[str, Any]], None],
                   reason: str) -> None:
    try:
        now = client.get_pod(pod.id)
        if now.status != "TERMINATED":
            client.pod_action(pod.id, "terminate")
    except RunPodError as exc:
        log.warning("could not terminate pod %s after a failed create: %s", pod.id, exc)
        raise RunPodError(f"{reason}; and terminating pod {pod.id} failed too ({exc}): terminate it in RunPod's "
                          "console, it may still bill") from None
    record_event(terminate_event(host_name, now, reason))
    remove_pod(pod.id)


def terminate_event(host_name: str, pod: Pod, reason: str) -> dict[str, Any]:
    """The ledger's line for a terminate: what the pod's current run cost."""
    return {"event": "pod_terminate", "host": host_name, "pod_id": pod.id, "name": pod.name, "reason": reason,
            **run_cost(pod), "at": utc_now()}


def terminate_warning(pod_id: str, name: str) -> str:
    """What a terminate loses, for the confirmation the artist must give first."""
    return (f"Terminating pod {pod_id} ({name}) deletes its container disk and volume disk: the Blender "
            "installed there, uploaded scenes and results not yet downloaded. A network volume is only detached. "
            "This cannot be undone.")


def terminate_pod(pod_id: str, *, key_env: str = "RUNPOD_API_KEY", reason: str = "terminated by the user",
                  record_event: Callable[[dict[str, Any]], None] = append_ledger) -> str:
    """Terminate the pod, ledger what its run cost, forget its host entry; one line saying so."""
    client = account_client(key_env)
    pod = client.get_pod(resource_id(pod_id))
    if pod.status != "TERMINATED":
        client.pod_action(pod.id, "terminate")
    names = remove_pod(pod.id)
    record_event(terminate_event(names[0] if names else "", pod, reason))
    return f"terminated {pod.id} ({pod.name}){'; removed host ' + ', '.join(names) if names else ''}"
