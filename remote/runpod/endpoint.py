"""RunPod's hosted Serverless endpoint API through the ``runpod`` SDK's client.

``https://api.runpod.ai/v2/{endpoint_id}/``: ``POST run``, ``GET status/{id}``,
``POST cancel/{id}``, ``GET health``. The base URL is
``$RUNPOD_ENDPOINT_BASE_URL`` (the SDK's own setting; read at each client so
tests and proxies can point it elsewhere). Every failure becomes one
:class:`EndpointError` line that never holds the key or a presigned URL.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from ..core.config import ServerlessConfig
from ..core.logs import import_quietly

log = logging.getLogger(__name__)

PAYLOAD_LIMIT = 10 * 1024 * 1024  # /run's documented limit; inputs go by URL, far below it
STATES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")


class EndpointError(RuntimeError):
    """An endpoint API failure, said in one line."""


def _one_line(text: object, limit: int = 200) -> str:
    return "".join(c for c in " ".join(str(text).split()) if c.isprintable())[:limit]


class _RequestsClient:
    """The SDK's RunPodClient contract (Bearer key, JSON, 401 → RuntimeError) with requests alone."""

    def __init__(self, api_key: str) -> None:
        import requests

        self.session = requests.Session()
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        self.endpoint_url_base = ""

    def _request(self, method: str, path: str, data: dict[str, Any] | None, timeout: int) -> Any:
        response = self.session.request(method, f"{self.endpoint_url_base}/{path}", headers=self.headers, json=data,
                                        timeout=timeout)
        if response.status_code == 401:
            raise RuntimeError("Unauthorized request, please check your API key.")
        response.raise_for_status()
        return response.json()

    def post(self, path: str, data: dict[str, Any] | None, timeout: int = 10) -> Any:
        return self._request("POST", path, data, timeout)

    def get(self, path: str, timeout: int = 10) -> Any:
        return self._request("GET", path, None, timeout)


class EndpointClient:
    """One endpoint, one key (from the environment variable the host names)."""

    def __init__(self, config: ServerlessConfig) -> None:
        key = os.environ.get(config.api_key_env, "")
        if not key:
            raise EndpointError(f"no RunPod API key: set ${config.api_key_env} (RunPod console → Settings → API Keys)")
        self.endpoint_id = config.endpoint_id
        base = os.environ.get("RUNPOD_ENDPOINT_BASE_URL", "https://api.runpod.ai/v2")
        try:
            # Through import_quietly: the SDK's import puts an unredacted stderr handler on the root logger.
            runner = import_quietly("runpod.endpoint.runner")
        except ImportError:  # Blender's Python cannot have the SDK: the same calls through requests
            self._client: Any = _RequestsClient(key)
        else:
            self._client = runner.RunPodClient(api_key=key)
        self._client.endpoint_url_base = base

    def __repr__(self) -> str:
        return f"EndpointClient({self.endpoint_id!r}, api_key=<hidden>)"

    def _call(self, method: str, path: str, what: str, data: dict[str, Any] | None = None,
              timeout: int = 30) -> dict[str, Any]:
        import requests

        base = self._client.endpoint_url_base
        try:
            if method == "POST":
                answer = self._client.post(f"{self.endpoint_id}/{path}", data or {}, timeout=timeout)
            else:
                answer = self._client.get(f"{self.endpoint_id}/{path}", timeout=timeout)
        except RuntimeError as exc:  # the SDK's 401
            if "nauthorized" in str(exc):
                raise EndpointError("RunPod refused the API key (401 Unauthorized): check the key") from None
            raise
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code == 404:
                raise EndpointError(f"{what}: RunPod has no endpoint {self.endpoint_id} (or no such request); "
                                    "check serverless.endpoint_id") from None
            if code == 413:
                raise EndpointError(f"{what}: the request is over the endpoint's payload limit") from None
            raise EndpointError(f"{what}: RunPod answered HTTP {code}") from None
        except (requests.RequestException, ValueError) as exc:
            raise EndpointError(f"{what}: RunPod endpoint API unreachable at {base} "
                                f"({_one_line(type(exc).__name__, 60)})") from None
        if not isinstance(answer, dict):
            raise EndpointError(f"{what}: RunPod answered something that is not an object")
        return answer

    def run(self, payload: dict[str, Any]) -> str:
        """Queue one request (``{"input": payload}``); its request id."""
        size = len(json.dumps({"input": payload}).encode())
        if size > PAYLOAD_LIMIT:  # never expected: scenes and outputs travel by URL
            raise EndpointError(f"request of {size} bytes is over the {PAYLOAD_LIMIT} byte limit of /run")
        answer = self._call("POST", "run", "submitting a request", {"input": payload})
        request_id = answer.get("id")
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            raise EndpointError("submitting a request: RunPod's answer has no valid request id")
        return request_id

    def status(self, request_id: str) -> dict[str, Any]:
        """The request's status, validated (it is input from the network)."""
        answer = self._call("GET", f"status/{request_id}", "reading a request's status")
        if answer.get("status") not in STATES:
            raise EndpointError(f"status of {request_id}: unknown state {_one_line(answer.get('status'), 30)!r}")
        for key in ("executionTime", "delayTime"):
            value = answer.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                answer[key] = None
        if answer.get("error") is not None:
            answer["error"] = _one_line(answer["error"], 300)
        return answer

    def cancel(self, request_id: str) -> None:
        self._call("POST", f"cancel/{request_id}", "cancelling a request", timeout=10)
        log.info("cancelled request %s on endpoint %s", request_id, self.endpoint_id)

    def health(self) -> dict[str, Any]:
        return self._call("GET", "health", "checking the endpoint's health", timeout=10)


def check_health(health: dict[str, Any], endpoint_id: str) -> None:
    """Refuse an endpoint whose workers are all unhealthy (zero workers is fine: it scales from zero)."""
    workers: dict[str, Any] = health["workers"] if isinstance(health.get("workers"), dict) else {}

    def count(name: str) -> int:
        value = workers.get(name, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    usable = sum(count(name) for name in ("idle", "ready", "running", "initializing"))
    if count("unhealthy") and not usable:
        raise EndpointError(f"endpoint {endpoint_id} is unhealthy: {count('unhealthy')} unhealthy worker(s), none "
                            "ready (check the worker image and its logs in the RunPod console)")
    if count("throttled") and not usable:
        log.warning("endpoint %s: all workers throttled; requests may wait", endpoint_id)
