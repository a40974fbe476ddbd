"""RunPod's REST API v2 (``$RUNPOD_API_BASE_URL/v2``, default https://api.runpod.io/v2), through ``requests``.

The contract is RunPod's published OpenAPI (docs/runpod.md cites the notes):
bearer auth; errors as ``application/problem+json`` ``{title, status,
detail, errors?}``, each turned into one :class:`RunPodAPIError` line here;
429 answers wait their ``Retry-After`` (bounded); 5xx answers are retried a
bounded number of times; lists are wrapped (``{"pods": [...]}``) and may
carry cursor pagination, which is followed. Every answer is validated by
:mod:`.records` before it is used.

``requests`` is the one dependency: Blender ships it, the ``runpod`` SDK
cannot be installed there. The key goes into the ``Authorization`` header
and nowhere else: never logged, and taken out of every message (RunPod's
error bodies may echo what was sent).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.logs import environment_secrets
from ..core.redact import Redactor
from .records import (
    CLOUDS,
    POD_ACTIONS,
    RESOURCE_ID,
    VOLUME_TYPES,
    GpuOffer,
    NetworkVolume,
    Pod,
    RunPodError,
    one_line,
    parse_gpu_offer,
    parse_network_volume,
    parse_pod,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.runpod.io"
TIMEOUT_S = 30
SERVER_ERROR_TRIES = 3  # 5xx: RunPod says retry; three tries ride out a restart, not an outage
SERVER_ERROR_BACKOFF_S = 1.0  # doubled after each try
RATE_LIMIT_TRIES = 4
MAX_RETRY_AFTER_S = 60  # a longer wait asked for is an error now, not a frozen panel
MAX_PAGES = 100
# A create answered 500 may have created the pod (money): only gateway answers, which never
# reached RunPod's handler, are retried for it.
UNPROCESSED = (502, 503, 504)


class RunPodAPIError(RunPodError):
    """An error answer of the API: ``status`` is the HTTP code (0: no answer at all)."""

    def __init__(self, message: str, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def base_url() -> str:
    return os.environ.get("RUNPOD_API_BASE_URL", DEFAULT_BASE_URL).rstrip("/")


def resource_id(value: str, what: str = "pod") -> str:
    """An id about to go into a URL path: letters and digits only."""
    if not isinstance(value, str) or not RESOURCE_ID.fullmatch(value):
        raise RunPodError(f"{one_line(repr(value), 70)} is not a RunPod {what} id (letters and digits only)")
    return value


@dataclass(frozen=True)
class PodSpec:
    """The body of ``POST /v2/pods`` (CreatePodRequest): only the fields Pose Factory sets."""

    name: str
    image: str
    gpu_id: str
    gpu_count: int = 1
    cloud: str = "SECURE"
    disk_gb: int = 20
    ports: tuple[str, ...] = ("22/tcp",)
    env: dict[str, str] = field(default_factory=dict)
    data_center_ids: tuple[str, ...] = ()
    network_volume_id: str | None = None
    persistent_volume_gb: int | None = None  # a volume disk on the pod's machine, kept across stops
    volume_path: str = "/workspace"
    start_ssh: bool = True

    def body(self) -> dict[str, Any]:
        if not self.name or self.cloud not in CLOUDS or self.gpu_count < 1 or self.disk_gb < 1:
            raise RunPodError(f"invalid pod request (name {self.name!r}, cloud {self.cloud}, "
                              f"{self.gpu_count} GPU(s), disk {self.disk_gb} GB)")
        # count always: without it RunPod matched nothing and answered 400 "no instances" (observed).
        body: dict[str, Any] = {"name": self.name, "image": self.image, "gpu": {"id": self.gpu_id, "count": self.gpu_count},
                                "cloud": self.cloud, "disk": self.disk_gb, "ports": list(self.ports),
                                "startSsh": self.start_ssh}
        if self.env:
            body["env"] = dict(self.env)
        if self.network_volume_id:
            body["mounts"] = {"network": [{"volumeId": resource_id(self.network_volume_id, "network volume"),
                                           "path": self.volume_path}]}
        elif self.persistent_volume_gb:
            # Marked deprecated in favour of network volumes, but the only way a pod without one keeps
            # /workspace (Blender, the scene store) across a stop; RunPod's console still offers it.
            body["mounts"] = {"persistent": {"size": self.persistent_volume_gb, "path": self.volume_path}}
        if self.data_center_ids:
            body["dataCenterIds"] = list(self.data_center_ids)
        return body


class RestClient:
    """The v2 operations Pose Factory uses, with one key."""

    def __init__(self, api_key: str, base: str | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self._api_key = api_key
        self._base = (base or base_url()).rstrip("/")
        self._sleep = sleep
        self._redact = Redactor([api_key, *environment_secrets()])

    def __repr__(self) -> str:  # never the key
        return f"RestClient({self._base!r}, api_key=<hidden>)"

    # -- pods ---------------------------------------------------------------
    def get_pod(self, pod_id: str) -> Pod:
        pod = self._checked(parse_pod, self._request("GET", f"/pods/{resource_id(pod_id)}", f"reading pod {pod_id}"))
        if pod.id != pod_id:
            raise RunPodError(f"RunPod answered pod {pod.id} when asked for pod {pod_id}; not used")
        return pod

    def list_pods(self) -> list[Pod]:
        return [self._checked(parse_pod, item) for item in self._list("/pods", "pods", "listing pods")]

    def create_pod(self, spec: PodSpec) -> Pod:
        answer = self._request("POST", "/pods", f"creating pod {spec.name}", body=spec.body(), idempotent=False)
        return self._checked(parse_pod, answer)

    def pod_action(self, pod_id: str, action: str) -> Pod | None:
        """start | stop | restart | terminate; the pod as it is now (None after terminate: 204)."""
        if action not in POD_ACTIONS:
            raise RunPodError(f"unknown pod action {action!r} (one of {', '.join(POD_ACTIONS)})")
        doing = {"start": "starting", "stop": "stopping", "restart": "restarting", "terminate": "terminating"}[action]
        answer = self._request("POST", f"/pods/{resource_id(pod_id)}/action", f"{doing} pod {pod_id}",
                               body={"action": action})
        log.info("asked RunPod to %s pod %s", action, pod_id)
        return None if answer is None else self._checked(parse_pod, answer)

    # -- catalog --------------------------------------------------------------
    def gpu_catalog(self, cloud: str = "SECURE", count: int = 1) -> list[GpuOffer]:
        """GPU types for pods with live availability and per-GPU prices (the catalog reserves nothing)."""
        query = {"include": "AVAILABILITY", "product": "POD", "cloud": cloud, "count": str(count)}
        return [self._checked(parse_gpu_offer, item)
                for item in self._list("/catalog/gpus", "gpus", "reading the GPU catalog", query)]

    # -- network volumes ------------------------------------------------------
    def list_network_volumes(self) -> list[NetworkVolume]:
        return [self._checked(parse_network_volume, item)
                for item in self._list("/network-volumes", "networkVolumes", "listing network volumes")]

    def get_network_volume(self, volume_id: str) -> NetworkVolume:
        path = f"/network-volumes/{resource_id(volume_id, 'network volume')}"
        return self._checked(parse_network_volume, self._request("GET", path, f"reading network volume {volume_id}"))

    def create_network_volume(self, name: str, size_gb: int, data_center_id: str,
                              volume_type: str = "STANDARD") -> NetworkVolume:
        if not 10 <= size_gb <= 4096 or volume_type not in VOLUME_TYPES:
            raise RunPodError(f"a network volume is 10 to 4096 GB, STANDARD or HIGH_PERFORMANCE "
                              f"(asked {size_gb} GB {volume_type})")
        body = {"name": name, "size": size_gb, "dataCenter": data_center_id, "type": volume_type}
        answer = self._request("POST", "/network-volumes", f"creating network volume {name}", body=body,
                               idempotent=False)
        return self._checked(parse_network_volume, answer)

    # -- transport ------------------------------------------------------------
    def _checked(self, parse: Callable[[Any], Any], answer: Any) -> Any:
        try:
            return parse(answer)
        except RunPodError as exc:
            raise RunPodError(self._redact(str(exc)) or "RunPod answered something invalid") from None

    def _list(self, path: str, key: str, what: str, query: dict[str, str] | None = None) -> list[Any]:
        """Every item of a wrapped list, following ``pagination.nextCursor`` where the answer pages."""
        items: list[Any] = []
        cursors: set[str] = set()
        query = dict(query or {})
        for _ in range(MAX_PAGES):
            answer = self._request("GET", path, what, query=query)
            if not isinstance(answer, dict) or not isinstance(answer.get(key), list):
                raise RunPodError(f"RunPod answered {what} without a {key!r} list; not used")
            items.extend(answer[key])
            cursor = _next_cursor(answer.get("pagination"))
            if cursor is None:
                return items
            if cursor in cursors:
                raise RunPodError(f"RunPod's pages loop ({what}): cursor seen twice; not used")
            cursors.add(cursor)
            query["cursor"] = cursor
        raise RunPodError(f"RunPod answered more than {MAX_PAGES} pages ({what}); not used")

    def _request(self, method: str, path: str, what: str, *, body: dict[str, Any] | None = None,
                 query: dict[str, str] | None = None, idempotent: bool = True) -> Any:
        try:
            return self._request_unredacted(method, path, what, body, query, idempotent)
        except RunPodAPIError as exc:
            raise RunPodAPIError(self._redact(str(exc)) or "RunPod API error", exc.status,
                                 self._redact(exc.detail) or "") from None

    def _request_unredacted(self, method: str, path: str, what: str, body: dict[str, Any] | None,
                            query: dict[str, str] | None, idempotent: bool) -> Any:
        import requests

        url = f"{self._base}/v2{path}"
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json",
                   "User-Agent": "posefactory"}
        server_errors = rate_limits = 0
        while True:
            log.debug("RunPod %s %s", method, path)
            try:
                response = requests.request(method, url, json=body, params=query, headers=headers, timeout=TIMEOUT_S)
            except requests.RequestException as exc:
                raise RunPodAPIError(f"RunPod API unreachable at {self._base} ({what}): "
                                     f"{one_line(type(exc).__name__ + ': ' + str(exc), 160)}", 0) from None
            status = response.status_code
            if status < 400:
                return _json(response, self._base, what) if status != 204 and response.content else None
            problem = _problem(response)
            if status == 429:
                rate_limits += 1
                wait = _retry_after(response)
                if wait > MAX_RETRY_AFTER_S:
                    raise RunPodAPIError(f"RunPod rate limit (429) while {what}: asked to wait {wait}s, "
                                         f"longer than {MAX_RETRY_AFTER_S}s; try again later", status)
                if rate_limits >= RATE_LIMIT_TRIES:
                    raise RunPodAPIError(f"RunPod rate limit (429) while {what}: still limited after "
                                         f"{rate_limits - 1} wait(s); try again in a minute", status)
                log.info("RunPod rate limit (429) while %s: waiting %ss as asked", what, wait)
                self._sleep(wait)
                continue
            retryable = status >= 500 and (idempotent or status in UNPROCESSED)
            if retryable and server_errors + 1 < SERVER_ERROR_TRIES:
                self._sleep(SERVER_ERROR_BACKOFF_S * 2 ** server_errors)
                server_errors += 1
                log.info("RunPod answered %s while %s: retrying", status, what)
                continue
            raise _error(status, problem, what, self._base, server_errors + 1)


def _json(response: Any, base: str, what: str) -> Any:
    try:
        return response.json()
    except ValueError:  # an outage page or a proxy's error in place of JSON
        raise RunPodAPIError(f"RunPod API at {base} answered {response.status_code} without JSON ({what})",
                             response.status_code) from None


def _problem(response: Any) -> str:
    """``detail`` of the problem+json body, with its ``errors``; the reason phrase when there is none."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return one_line(response.reason or "", 80)
    detail = one_line(problem.get("detail") or problem.get("title") or response.reason or "", 200)
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        detail = f"{detail} ({one_line('; '.join(str(e) for e in errors[:5]), 200)})"
    return detail


def _retry_after(response: Any) -> int:
    value = str(response.headers.get("Retry-After", "")).strip()
    return int(value) if value.isdigit() and len(value) < 7 else 1


def _next_cursor(pagination: Any) -> str | None:
    if not isinstance(pagination, dict) or pagination.get("hasNextPage") is not True:
        return None
    cursor = pagination.get("nextCursor")
    if not isinstance(cursor, str) or not 1 <= len(cursor) <= 512 or not cursor.isprintable():
        raise RunPodError(f"RunPod answered an invalid page cursor: {one_line(repr(cursor), 60)}; not used")
    return cursor


def _error(status: int, detail: str, what: str, base: str, tries: int) -> RunPodAPIError:
    """One line per documented error code."""
    if status == 401:
        message = ("RunPod refused the API key (401 Unauthorized): check the key, "
                   "or create one with pod read/write access")
    elif status == 403:
        message = f"RunPod refused access (403 Forbidden) while {what}: the key has no access to this pool or resource"
    elif status == 402:
        message = f"no RunPod balance (402 Payment Required) for {what}: add funds in RunPod's console (Billing)"
    elif status == 404:
        message = f"not found on RunPod (404) while {what}"
    elif status == 409:
        message = f"RunPod refused (409 Conflict) while {what}: not possible in the pod's current state"
    elif status == 422:
        message = f"RunPod refused the request (422) while {what}"
    elif status == 400:
        message = f"RunPod refused the request (400) while {what}"
    elif status >= 500:
        message = f"RunPod API at {base} failed ({status}) while {what}, {tries} tr{'y' if tries == 1 else 'ies'}"
    else:
        message = f"RunPod answered {status} while {what}"
    return RunPodAPIError(f"{message}: {detail}" if detail and status != 401 else message, status, detail)
