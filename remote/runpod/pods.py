"""RunPod pods through RunPod's API (the ``runpod`` SDK, GraphQL).

A host entry with ``runpod_pod_id`` has no fixed SSH details: before a job,
:func:`prepare_host` reads the pod, resumes it when it is stopped, waits
(bounded, with progress) until its container runs, and returns the host with
the SSH endpoint the API reports: the public IP and the port mapped to 22
(RunPod's "SSH over exposed TCP", exec and sftp) or, where the pod has no
public port 22, RunPod's proxy ``<podHostId>@ssh.runpod.io`` (PTY only).

The SDK posts to ``$RUNPOD_API_BASE_URL/graphql`` (default
https://api.runpod.io), which the tests point at a local stand-in. The API
key is read from the environment variable the host names and passed to each
call; it is never logged, stored or put into a message.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..core.config import HostConfig
from ..core.cost import LIVE_RATE_ENV
from ..core.logs import environment_secrets, import_quietly
from ..core.redact import Redactor

log = logging.getLogger(__name__)

PROXY_HOST = "ssh.runpod.io"
POD_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")  # the SDK puts the id into the query text unescaped
WAIT_POLL_S = 2.0
# The operations, as the SDK writes them (runpod.api.queries.pods, .mutations.pods),
# reduced to the fields Pose Factory reads; podHostId is the proxy's user name.
QUERY_POD = ('query pod {{ pod(input: {{podId: "{pod_id}"}}) {{ id desiredStatus costPerHr gpuCount uptimeSeconds '
             'runtime {{ ports {{ ip isIpPublic privatePort publicPort type }} }} '
             'machine {{ gpuDisplayName podHostId }} }} }}')
MUTATION_RESUME = 'mutation {{ podResume(input: {{ podId: "{pod_id}", gpuCount: {gpu_count} }}) {{ id desiredStatus }} }}'
MUTATION_STOP = 'mutation {{ podStop(input: {{ podId: "{pod_id}" }}) {{ id desiredStatus }} }}'


class RunPodError(RuntimeError):
    """A pod API failure, said in one line that never holds the key."""


class GraphQLUnauthorized(Exception):
    pass


class GraphQLQueryError(Exception):
    pass


def post_graphql(query: str, api_key: str) -> dict[str, Any]:
    """``{"query": …}`` to ``$RUNPOD_API_BASE_URL/graphql`` with the key as Bearer.

    Through the SDK's own ``run_graphql_query`` where the ``runpod`` package is
    installed (the CLI, scripts, the pipeline outside Blender). Blender's
    Python cannot have it (aiohttp, cryptography, fastapi… are compiled), so
    there the same request goes through the ``requests`` Blender ships.
    """
    try:
        import_quietly("runpod")  # its import puts an unredacted stderr handler on the root logger
        from runpod import error
        from runpod.api.graphql import run_graphql_query
    except ImportError:
        return _post_with_requests(query, api_key)
    try:
        return run_graphql_query(query, api_key=api_key)
    except error.AuthenticationError:
        raise GraphQLUnauthorized() from None
    except error.QueryError as exc:
        raise GraphQLQueryError(exc.message) from None


def _post_with_requests(query: str, api_key: str) -> dict[str, Any]:
    import json

    import requests

    base = os.environ.get("RUNPOD_API_BASE_URL", "https://api.runpod.io")
    response = requests.post(f"{base}/graphql", data=json.dumps({"query": query}), timeout=30, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {api_key}", "User-Agent": "posefactory"})
    if response.status_code == 401:
        raise GraphQLUnauthorized()
    answer = response.json()
    if isinstance(answer, dict) and answer.get("errors"):
        raise GraphQLQueryError(str(answer["errors"][0].get("message", "error")))
    return answer if isinstance(answer, dict) else {}


@dataclass(frozen=True)
class PodState:
    """What the API says about one pod (only the fields Pose Factory uses)."""

    pod_id: str
    desired_status: str  # RUNNING | EXITED | TERMINATED
    cost_per_hr: float | None
    uptime_s: int
    gpu_count: int
    gpu_name: str
    ssh_ip: str | None  # the public IP and port mapped to the pod's 22, once it runs
    ssh_port: int | None
    booted: bool  # the container runs (the API reports its runtime)
    proxy_user: str | None  # <podid>-<hash> for ssh.runpod.io

    @property
    def running(self) -> bool:
        return self.desired_status == "RUNNING" and self.booted


def _one_line(text: object, limit: int = 200) -> str:
    """Server text made safe for a message: printable, one line, bounded."""
    flat = " ".join(str(text).split())
    return "".join(c for c in flat if c.isprintable())[:limit]


def api_key_for(host: HostConfig) -> str:
    key = os.environ.get(host.runpod_api_key_env, "")
    if not key:
        raise RunPodError(f"{host.name}: no RunPod API key: set ${host.runpod_api_key_env} "
                          "(RunPod console → Settings → API Keys)")
    return key


class PodClient:
    """The pod operations Pose Factory needs, through the SDK, with one key."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __repr__(self) -> str:  # never the key
        return "PodClient(api_key=<hidden>)"

    def _redacted(self, exc: RunPodError) -> RunPodError:
        """The error with the key (and every secret of the environment) taken out of its message:
        RunPod's error bodies may echo what was sent, and the message is printed and stored."""
        return RunPodError(Redactor([self._api_key, *environment_secrets()])(str(exc)) or "RunPod API error")

    def _call(self, what: str, pod_id: str, query: str) -> dict[str, Any]:
        try:
            return self._call_unredacted(what, pod_id, query)
        except RunPodError as exc:
            raise self._redacted(exc) from None

    def _call_unredacted(self, what: str, pod_id: str, query: str) -> dict[str, Any]:
        import requests

        if not POD_ID.match(pod_id):
            raise RunPodError(f"{pod_id!r} is not a RunPod pod id (letters and digits only)")
        base = os.environ.get("RUNPOD_API_BASE_URL", "https://api.runpod.io")
        try:
            data = post_graphql(query, self._api_key).get("data")
        except GraphQLUnauthorized:
            raise RunPodError("RunPod refused the API key (401 Unauthorized): check the key, "
                              "or create one with pod read/write access") from None
        except GraphQLQueryError as exc:
            message = _one_line(exc)
            if "not enough free gpu" in message.lower() or "no gpu" in message.lower():
                raise RunPodError(f"no GPU available to resume pod {pod_id} right now (RunPod: {message}); "
                                  "try again later, or deploy a new pod in another data centre") from None
            if "not found" in message.lower():
                raise RunPodError(f"unknown pod id {pod_id}: not in this RunPod account (terminated?)") from None
            raise RunPodError(f"RunPod API: {what} {pod_id}: {message}") from None
        except (requests.RequestException, ValueError) as exc:
            # ValueError: a body that is not JSON (an outage page, a proxy error)
            raise RunPodError(f"RunPod API unreachable at {base} ({what} {pod_id}): "
                              f"{_one_line(type(exc).__name__ + ': ' + str(exc), 160)}") from None
        if not isinstance(data, dict):
            raise RunPodError(f"RunPod API at {base} answered without data ({what} {pod_id})")
        return data

    def get(self, pod_id: str) -> PodState:
        pod = self._call("reading pod", pod_id, QUERY_POD.format(pod_id=pod_id)).get("pod")
        if pod is None:
            raise RunPodError(f"unknown pod id {pod_id}: not in this RunPod account (terminated, or another "
                              "account's key?)")
        try:
            return parse_pod(pod_id, pod)
        except RunPodError as exc:
            raise self._redacted(exc) from None

    def resume(self, pod_id: str, gpu_count: int) -> None:
        self._call("resuming pod", pod_id, MUTATION_RESUME.format(pod_id=pod_id, gpu_count=max(1, int(gpu_count))))
        log.info("asked RunPod to resume pod %s", pod_id)

    def stop(self, pod_id: str) -> None:
        self._call("stopping pod", pod_id, MUTATION_STOP.format(pod_id=pod_id))
        log.info("asked RunPod to stop pod %s", pod_id)


MAX_API_NUMBER = 1e12  # beyond any uptime, port, GPU count or price the API can mean


def _number(value: Any, kind: type, default: Any) -> Any:
    """A number of the API's JSON, or ``default``: NaN, Infinity (Python's json reads both)
    and absurd magnitudes are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    if not math.isfinite(value) or abs(value) > MAX_API_NUMBER:
        return default
    return kind(value)


def parse_pod(pod_id: str, pod: dict[str, Any]) -> PodState:
    """The API's pod record, validated: it is input from the network."""
    status = pod.get("desiredStatus")
    if status not in ("RUNNING", "EXITED", "TERMINATED", "CREATED", "RESTARTING", "DEAD"):
        raise RunPodError(f"pod {pod_id}: unexpected desiredStatus {_one_line(status, 40)!r}")
    runtime = pod.get("runtime") if isinstance(pod.get("runtime"), dict) else None
    ssh_ip, ssh_port = None, None
    for port in (runtime or {}).get("ports") or []:
        if (isinstance(port, dict) and port.get("privatePort") == 22 and port.get("isIpPublic") is True
                and port.get("type") == "tcp"):
            public = _number(port.get("publicPort"), int, 0)
            ip = port.get("ip")
            if 1 <= public <= 65535 and isinstance(ip, str) and re.fullmatch(r"[0-9A-Fa-f.:]{2,45}", ip):
                ssh_ip, ssh_port = ip, public
    cost = _number(pod.get("costPerHr"), float, None)
    machine: dict[str, Any] = pod["machine"] if isinstance(pod.get("machine"), dict) else {}
    proxy_user = machine.get("podHostId")
    if not isinstance(proxy_user, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,100}", proxy_user):
        proxy_user = None
    return PodState(
        pod_id=pod_id, desired_status=status, cost_per_hr=cost if cost is None or cost >= 0 else None,
        uptime_s=max(0, _number(pod.get("uptimeSeconds"), int, 0)), gpu_count=max(1, _number(pod.get("gpuCount"), int, 1)),
        gpu_name=_one_line(machine.get("gpuDisplayName") or "", 60), ssh_ip=ssh_ip, ssh_port=ssh_port,
        booted=runtime is not None, proxy_user=proxy_user,
    )


def wait_until_running(client: PodClient, pod_id: str, timeout_s: float,
                       progress: Callable[[str], None]) -> PodState:
    """Poll until the pod's container runs; a bounded wait with a line per poll."""
    started = time.monotonic()
    while True:
        state = client.get(pod_id)
        if state.desired_status == "TERMINATED":
            raise RunPodError(f"pod {pod_id} was terminated; deploy a new pod and update runpod_pod_id")
        if state.desired_status == "EXITED":
            raise RunPodError(f"pod {pod_id} stopped again while starting (RunPod may have reclaimed its GPU)")
        if state.running:
            return state
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise RunPodError(f"pod {pod_id} did not start within {timeout_s:.0f}s "
                              f"(RunPod says {state.desired_status}, container not running yet)")
        progress(f"waiting for pod {pod_id} to start ({waited:.0f}s)")
        time.sleep(min(WAIT_POLL_S, max(0.05, timeout_s / 20)))


def ensure_running(host: HostConfig, progress: Callable[[str], None]) -> tuple[HostConfig, PodState, bool]:
    """The pod of ``host`` running, and ``host`` with its SSH endpoint filled in.

    Returns (host, state, resumed): ``resumed`` tells that this call started it.
    """
    assert host.runpod_pod_id is not None
    pod_id = host.runpod_pod_id
    client = PodClient(api_key_for(host))
    state = client.get(pod_id)
    resumed = False
    log.info("pod %s is %s (%s)", pod_id, state.desired_status, "booted" if state.booted else "no runtime")
    if state.desired_status == "TERMINATED":
        raise RunPodError(f"pod {pod_id} was terminated; deploy a new pod and update runpod_pod_id")
    if state.desired_status == "EXITED":
        progress(f"resuming pod {pod_id} ({state.gpu_count}× {state.gpu_name or 'GPU'}, "
                 f"${state.cost_per_hr or 0:.3f}/h)")
        client.resume(pod_id, state.gpu_count)
        resumed = True
    if not state.running:
        state = wait_until_running(client, pod_id, host.resume_timeout_s, progress)
    return with_endpoint(host, state), state, resumed


def with_endpoint(host: HostConfig, state: PodState) -> HostConfig:
    """``host`` pointed at the pod's SSH: direct where port 22 is public, else the proxy."""
    if state.ssh_ip and state.ssh_port:
        log.info("pod %s: SSH over exposed TCP at %s:%s", state.pod_id, state.ssh_ip, state.ssh_port)
        return replace(host, host=state.ssh_ip, port=state.ssh_port, user=host.user or "root",
                       interactive_only=False)
    user = state.proxy_user
    if not user:
        raise RunPodError(f"pod {state.pod_id} exposes no public TCP port 22 and RunPod gave no proxy user; "
                          "expose 22/tcp on the pod (Edit Pod → Expose TCP Ports)")
    log.info("pod %s: no public port 22, using RunPod's SSH proxy", state.pod_id)
    return replace(host, host=PROXY_HOST, port=22, user=user, interactive_only=True)


def prepare_host(hosts: dict[str, HostConfig], name: str, progress: Callable[[str], None],
                 record_event: Callable[[dict[str, Any]], None]) -> PodState | None:
    """Before a job: a pod host's pod running and ``hosts[name]`` pointed at it.

    Other hosts (and unknown names, which the bridge reports) are left alone.
    The pod's live price travels to the pod-side cost model through the host's
    env, so estimates and the job's actual cost use what RunPod charges now.
    """
    host = hosts.get(name)
    if host is None or host.runpod_pod_id is None:
        return None
    resolved, state, resumed = ensure_running(host, progress)
    if state.cost_per_hr is not None:
        resolved = replace(resolved, env={**resolved.env, LIVE_RATE_ENV: f"{state.cost_per_hr:g}"})
    hosts[name] = resolved
    if resumed:
        record_event({"event": "pod_start", "host": name, "pod_id": state.pod_id, "cost_per_hr": state.cost_per_hr,
                      "at": utc_now()})
    return state


def stop_pod(host: HostConfig, record_event: Callable[[dict[str, Any]], None], reason: str) -> PodState:
    """Stop ``host``'s pod (a no-op when it is not running); the ledger notes what it ran for."""
    assert host.runpod_pod_id is not None
    client = PodClient(api_key_for(host))
    state = client.get(host.runpod_pod_id)
    if state.desired_status != "RUNNING":
        return state
    client.stop(host.runpod_pod_id)
    cost = round(state.uptime_s * state.cost_per_hr / 3600, 4) if state.cost_per_hr is not None else None
    record_event({"event": "pod_stop", "host": host.name, "pod_id": state.pod_id, "reason": reason,
                  "pod_seconds": state.uptime_s, "cost_per_hr": state.cost_per_hr, "cost_usd": cost, "at": utc_now()})
    return client.get(host.runpod_pod_id)


def utc_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")
