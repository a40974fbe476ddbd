"""Stability AI's v1 REST API, image-to-image (SDXL 1024), with requests.

Contract (platform.stability.ai, "v1generation/imageToImage"):
``POST {base}/v1/generation/{engine_id}/image-to-image`` as
``multipart/form-data`` with ``init_image`` (PNG bytes), ``init_image_mode=
IMAGE_STRENGTH``, ``image_strength`` (0..1; near 1 keeps the init image),
``text_prompts[i][text]`` / ``text_prompts[i][weight]`` (a negative weight
makes a negative prompt), ``cfg_scale``, ``sampler``, ``samples``, ``seed``,
``steps``, ``style_preset``; headers ``Authorization: Bearer <key>`` and
``Accept: application/json``. A 200 answer is ``{"artifacts": [{"base64",
"seed", "finishReason"}]}`` with finishReason ``SUCCESS``, ``ERROR`` or
``CONTENT_FILTERED``; errors answer ``{"id", "name", "message"}`` with 400,
401, 403, 404, 429 or 500.

The key is only ever put in the Authorization header: never in a message,
an exception or a log line.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from ..core.jobspec import RenderJob

RETRYABLE_STATUSES = (429, 500, 502, 503, 504)


class StabilityError(RuntimeError):
    """Any failure of the API; ``status`` is the HTTP status when there was one,
    ``retry_after_s`` the wait the server asked for (429 ``Retry-After``)."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class BadRequest(StabilityError):
    pass


class AuthenticationError(StabilityError):
    pass


class NotFound(StabilityError):
    pass


class RateLimited(StabilityError):
    pass


class ServerError(StabilityError):
    pass


class RequestTimedOut(StabilityError):
    pass


_ERRORS_BY_STATUS: dict[int, type[StabilityError]] = {
    400: BadRequest, 401: AuthenticationError, 403: AuthenticationError, 404: NotFound, 429: RateLimited,
}


@dataclass
class Artifact:
    png: bytes | None  # None when the artifact carries no usable image
    seed: int
    finish_reason: str  # SUCCESS | ERROR | CONTENT_FILTERED

    @property
    def usable(self) -> bool:
        return self.finish_reason == "SUCCESS" and bool(self.png)


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
        name, message = body.get("name", ""), body.get("message", "")
        if not message and isinstance(body.get("errors"), list):  # v2beta's shape
            message = "; ".join(str(error) for error in body["errors"])
        return f"{name}: {message}" if name else str(message or body)
    except ValueError:
        return response.text[:300] or response.reason


class StabilityClient:
    def __init__(self, api_key: str, base_url: str = "https://api.stability.ai", *, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 2.0, max_backoff_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, client_id: str = "posefactory") -> None:
        if not api_key:
            raise AuthenticationError("no Stability API key: set STABILITY_API_KEY (or $WORKSPACE/.env on the pod)")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self.client_id = client_id
        self.attempts = 0  # HTTP requests sent by the last call, retries included

    def __repr__(self) -> str:
        return f"StabilityClient(base_url={self.base_url!r}, key=<hidden>)"

    @staticmethod
    def form_fields(job: RenderJob) -> list[tuple[str, str]]:
        """The multipart text fields for ``job`` (the image goes separately)."""
        fields = [
            ("init_image_mode", "IMAGE_STRENGTH"),
            ("image_strength", f"{job.strength:g}"),
            ("text_prompts[0][text]", job.prompt),
            ("text_prompts[0][weight]", "1"),
        ]
        if job.negative_prompt.strip():
            fields += [("text_prompts[1][text]", job.negative_prompt), ("text_prompts[1][weight]", "-1")]
        fields += [("cfg_scale", f"{job.cfg_scale:g}"), ("samples", str(job.variations)),
                   ("seed", str(job.seed)), ("steps", str(job.steps))]
        if job.sampler:
            fields.append(("sampler", job.sampler))
        if job.style_preset:
            fields.append(("style_preset", job.style_preset))
        return fields

    def image_to_image(self, init_png: bytes, job: RenderJob) -> list[Artifact]:
        """Artifacts for ``job`` (one per variation); raises a StabilityError."""
        url = f"{self.base_url}/v1/generation/{job.engine_id}/image-to-image"
        fields: list[tuple[str, Any]] = [(name, (None, value)) for name, value in self.form_fields(job)]
        files: list[tuple[str, Any]] = [("init_image", ("init.png", init_png, "image/png")), *fields]
        self.attempts = 0
        return self._artifacts(self.post(url, files, accept="application/json"))

    def post(self, url: str, files: list, *, accept: str) -> requests.Response:
        """POST multipart ``files`` with the key; retries 429/5xx/timeouts with bounded backoff.

        Returns the 200 answer; raises the StabilityError for any other.
        ``attempts`` counts on from where the caller left it.
        """
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": accept, "Stability-Client-ID": self.client_id}
        delay = self.backoff_s
        while True:
            self.attempts += 1
            try:
                response = requests.post(url, headers=headers, files=files, timeout=self.timeout_s)
            except requests.Timeout:
                error: StabilityError = RequestTimedOut(f"no answer from {self.base_url} within {self.timeout_s:g}s")
            except requests.ConnectionError as exc:
                # Refused, reset or dropped mid-answer: the same retry as a 5xx.
                error = ServerError(f"cannot reach {self.base_url}: {type(exc).__name__}")
            else:
                if response.status_code == 200:
                    return response
                error = self._error(response)
            retryable = isinstance(error, (RateLimited, ServerError, RequestTimedOut))
            if not retryable or self.attempts > self.max_retries:
                if retryable:
                    error.args = (f"{error.args[0]} (gave up after {self.attempts} attempts)",)
                raise error
            wait = max(delay, error.retry_after_s or 0)
            self._sleep(min(wait, self.max_backoff_s))
            delay = min(delay * 2, self.max_backoff_s)

    errors_by_status: dict[int, type[StabilityError]] = _ERRORS_BY_STATUS

    def _error(self, response: requests.Response) -> StabilityError:
        status = response.status_code
        cls = self.errors_by_status.get(status, ServerError if status >= 500 else StabilityError)
        detail = _message(response).replace(self._api_key, "<key>")
        text = self.describe(cls, status, detail)
        retry_after = response.headers.get("Retry-After", "")
        return cls(text, status, float(retry_after) if retry_after.isdigit() else None)

    @staticmethod
    def describe(cls: type[StabilityError], status: int, detail: str) -> str:
        """One line for the artist; a retired v1 engine names the backends that still work."""
        if cls is AuthenticationError:
            return f"Stability rejected the API key (HTTP {status}): {detail}. Check STABILITY_API_KEY."
        if cls is NotFound:
            return (f"Stability retired this engine or has no such endpoint (HTTP 404): {detail}. "
                    "Pick another backend: stability-structure (Stability's v2beta), diffusers (the pod's GPU) "
                    "or none")
        return f"Stability answered HTTP {status}: {detail}"

    @staticmethod
    def _artifacts(response: requests.Response) -> list[Artifact]:
        try:
            body = response.json()
            raw = body["artifacts"]
            artifacts = []
            for item in raw:
                reason = item.get("finishReason", "ERROR")
                png = base64.b64decode(item["base64"]) if item.get("base64") and reason == "SUCCESS" else None
                artifacts.append(Artifact(png=png, seed=int(item.get("seed", 0)), finish_reason=reason))
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(f"Stability answered 200 with a body that is not the documented artifacts list ({exc})", 200) from None
        return artifacts
