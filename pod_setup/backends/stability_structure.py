"""Backend ``stability-structure``: Stability's v2beta structure control (5 credits an image).

Keeps the render's structure (pose, silhouette) at ``control_strength`` and
repaints it from the prompt. One request per variation; a variation that
fails after another succeeded is recorded as ERROR and the paid images are
kept. The key is read like the v1 backend's, never from the job file.

Errors and attempts are per item (one ``generate`` call): a moderation 403,
a 402 or a 5xx on one item never stops the next item from being tried. The
one exception is the key being refused (HTTP 401): no later item can succeed
with that key, so each later item fails without a request, saying so.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remote.core.jobspec import RenderJob
from remote.stability.v1 import AuthenticationError, StabilityError
from remote.stability.v2beta import StabilityV2Client

from ..job_errors import EXIT_AI, EXIT_NO_KEY, JobFailed
from .base import Variation
from .stability_key import stability_key

log = logging.getLogger(__name__)


class StabilityStructureBackend:
    name = "stability-structure"

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self.key = stability_key()
        self.attempts = 0  # HTTP requests over every item of the job, retries included
        self.error = ""  # the last item's error (the manifest's ai_error)
        self.key_refused = ""  # Stability's 401: every later item fails untried
        self.items: list[dict[str, Any]] = []  # per item: {"item", "attempts", "error"}

    def check_ready(self) -> None:
        if not self.key:
            raise JobFailed(EXIT_NO_KEY, "no Stability API key: set STABILITY_API_KEY or put it in $WORKSPACE/.env")

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        record: dict[str, Any] = {"item": init_png.parent.name, "attempts": 0, "error": None}
        self.items.append(record)
        if self.key_refused:
            message = f"not tried: Stability refused the API key on an earlier item ({self.key_refused})"
            record["error"] = self.error = message
            raise JobFailed(EXIT_NO_KEY, message)
        client = StabilityV2Client(self.key, self.job.api_base_url)
        image = init_png.read_bytes()
        variations: list[Variation] = []
        item_error = ""
        try:
            for n in range(1, self.job.variations + 1):
                seed = self.job.seed + n - 1 if self.job.seed else 0  # 0: the API picks, its seed header says which
                if item_error:  # an earlier variation of this item failed for good: do not pay for more attempts
                    variations.append(Variation(n, seed, "ERROR"))
                    continue
                try:
                    artifact = client.structure(image, self.job, seed)
                except StabilityError as exc:
                    item_error = record["error"] = self.error = str(exc)
                    if isinstance(exc, AuthenticationError) and getattr(exc, "status", None) == 401:
                        self.key_refused = str(exc)
                    if not any(v.usable for v in variations):
                        code = EXIT_NO_KEY if self.key_refused else EXIT_AI
                        raise JobFailed(code, f"AI step failed: {exc}") from None
                    log.warning("variation %d failed, keeping the %d already made: %s", n, len(variations), exc)
                    variations.append(Variation(n, seed, "ERROR"))
                    continue
                variations.append(Variation(n, artifact.seed, artifact.finish_reason, artifact.png))
        finally:
            record["attempts"] = client.attempts  # a fresh client per item: its count is this item's
            self.attempts += client.attempts
        return variations

    def stats(self) -> dict[str, Any]:
        return {"ai_attempts": self.attempts, "ai_items": [dict(r) for r in self.items],
                **({"ai_error": self.error} if self.error else {})}
