"""Stability AI's v2beta Stable Image API: structure control (``control/structure``).

Contract (platform.stability.ai, v2beta; field lists as in the SDK generated
from Stability's OpenAPI): ``POST {base}/v2beta/stable-image/control/structure``
as ``multipart/form-data`` with ``image`` (png/jpeg/webp, each side >= 64 px,
4,096..9,437,184 pixels, aspect 1:2.5..2.5:1) and ``prompt``; optional
``control_strength`` (0..1, default 0.7), ``negative_prompt``, ``seed`` (0 =
random), ``output_format`` (png), ``style_preset``. With ``Accept: image/*``
the answer is the image's bytes with ``finish-reason`` (SUCCESS |
CONTENT_FILTERED) and ``seed`` headers. Errors: 400 invalid parameters, 401
key, 402 no credits, 403 flagged by moderation, 404, 413 over 10 MiB, 422
well-formed but rejected, 429 rate limit (retried with backoff), 5xx
(retried); body ``{"id", "name", "message"}`` (or ``"errors": [...]``).
5 credits per successful generation; failed requests are free.
"""
from __future__ import annotations

import logging

import requests

from ..core.jobspec import RenderJob
from .v1 import (
    Artifact,
    AuthenticationError,
    BadRequest,
    NotFound,
    RateLimited,
    ServerError,
    StabilityClient,
    StabilityError,
)

log = logging.getLogger(__name__)

STRUCTURE_PATH = "/v2beta/stable-image/control/structure"
MAX_REQUEST_BYTES = 10 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PaymentRequired(StabilityError):
    pass


class ContentModerated(StabilityError):
    pass


class PayloadTooLarge(StabilityError):
    pass


class Unprocessable(StabilityError):
    pass


class StabilityV2Client(StabilityClient):
    """The v2beta endpoints on the v1 client's transport (key handling, retries, backoff)."""

    errors_by_status: dict[int, type[StabilityError]] = {
        400: BadRequest, 401: AuthenticationError, 402: PaymentRequired, 403: ContentModerated, 404: NotFound,
        413: PayloadTooLarge, 422: Unprocessable, 429: RateLimited,
    }

    @staticmethod
    def describe(cls: type[StabilityError], status: int, detail: str) -> str:
        if cls is PaymentRequired:
            return f"Stability says the account is out of credits (HTTP 402): {detail}. Top it up, or use backend diffusers"
        if cls is ContentModerated:
            return f"Stability's moderation flagged the request (HTTP 403): {detail}. Change the prompt or the scene"
        if cls is PayloadTooLarge:
            return f"the render is larger than Stability accepts (HTTP 413, 10 MiB): {detail}"
        if cls is Unprocessable:
            return f"Stability refused the request (HTTP 422): {detail}"
        if cls is NotFound:
            return f"Stability has no such v2beta endpoint (HTTP 404): {detail}. Check the API base URL"
        return StabilityClient.describe(cls, status, detail)

    @staticmethod
    def structure_fields(job: RenderJob, seed: int) -> list[tuple[str, str]]:
        fields = [("prompt", job.prompt), ("control_strength", f"{job.control_strength:g}"), ("seed", str(seed)),
                  ("output_format", "png")]
        if job.negative_prompt.strip():
            fields.append(("negative_prompt", job.negative_prompt))
        if job.style_preset:
            fields.append(("style_preset", job.style_preset))
        return fields

    def structure(self, image_png: bytes, job: RenderJob, seed: int) -> Artifact:
        """One generation that keeps the render's structure; raises a StabilityError."""
        if len(image_png) > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(f"the render is {len(image_png) / 2**20:.1f} MiB; Stability accepts up to 10 MiB", 413)
        fields = [(name, (None, value)) for name, value in self.structure_fields(job, seed)]
        files = [("image", ("render.png", image_png, "image/png")), *fields]
        response = self.post(f"{self.base_url}{STRUCTURE_PATH}", files, accept="image/*")
        return self._image_artifact(response, seed)

    @staticmethod
    def _image_artifact(response: requests.Response, asked_seed: int) -> Artifact:
        reason = response.headers.get("finish-reason", "")
        if reason not in ("SUCCESS", "CONTENT_FILTERED", "ERROR"):
            raise ServerError(f"Stability answered 200 without a documented finish-reason header ({reason[:40]!r})", 200)
        seed_text = response.headers.get("seed", "")
        seed = int(seed_text) if seed_text.isdigit() else asked_seed
        png = response.content
        if reason == "SUCCESS" and not png.startswith(PNG_SIGNATURE):
            raise ServerError("Stability answered 200 with a body that is not the PNG asked for", 200)
        log.info("structure control: finish-reason %s, seed %d, %d bytes", reason, seed, len(png))
        return Artifact(png=png if reason == "SUCCESS" else None, seed=seed, finish_reason=reason)
