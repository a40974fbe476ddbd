"""Backend ``stability-structure``: Stability's v2beta structure control (5 credits an image).

Keeps the render's structure (pose, silhouette) at ``control_strength`` and
repaints it from the prompt. One request per variation; a variation that
fails after another succeeded is recorded as ERROR and the paid images are
kept. The key is read like the v1 backend's, never from the job file.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remote.core.jobspec import RenderJob
from remote.stability.v1 import StabilityError
from remote.stability.v2beta import StabilityV2Client

from ..job_errors import EXIT_AI, EXIT_NO_KEY, JobFailed
from . import Variation
from .stability_v1 import stability_key

log = logging.getLogger(__name__)


class StabilityStructureBackend:
    name = "stability-structure"

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self.key = stability_key()
        self.attempts = 0
        self.error = ""

    def check_ready(self) -> None:
        if not self.key:
            raise JobFailed(EXIT_NO_KEY, "no Stability API key: set STABILITY_API_KEY or put it in $WORKSPACE/.env")

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        client = StabilityV2Client(self.key, self.job.api_base_url)
        image = init_png.read_bytes()
        variations: list[Variation] = []
        for n in range(1, self.job.batch + 1):
            seed = self.job.seed + n - 1 if self.job.seed else 0  # 0: the API picks, its seed header says which
            if self.error:  # an earlier variation failed for good: do not pay for more attempts
                variations.append(Variation(n, seed, "ERROR"))
                continue
            try:
                artifact = client.structure(image, self.job, seed)
            except StabilityError as exc:
                self.error = str(exc)
                if not any(v.usable for v in variations):
                    raise JobFailed(EXIT_AI, f"AI step failed: {exc}") from None
                log.warning("variation %d failed, keeping the %d already made: %s", n, len(variations), exc)
                variations.append(Variation(n, seed, "ERROR"))
                continue
            finally:
                self.attempts = client.attempts
            variations.append(Variation(n, artifact.seed, artifact.finish_reason, artifact.png))
        return variations

    def stats(self) -> dict[str, Any]:
        return {"ai_attempts": self.attempts, **({"ai_error": self.error} if self.error else {})}
