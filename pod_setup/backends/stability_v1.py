"""Backend ``stability``: Stability's v1 SDXL image-to-image (paid per image).

The key comes from ``STABILITY_API_KEY`` or ``$WORKSPACE/.env`` (``stability_key.py``),
never from the job file, and is never printed.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remote.core.jobspec import RenderJob
from remote.stability.v1 import StabilityClient, StabilityError

from ..job_errors import EXIT_AI, EXIT_NO_KEY, JobFailed
from .base import Variation
from .stability_key import stability_key


class StabilityV1Backend:
    name = "stability"

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self.key = stability_key()
        self.attempts = 0

    def check_ready(self) -> None:
        if not self.key:
            raise JobFailed(EXIT_NO_KEY, "no Stability API key: set STABILITY_API_KEY or put it in $WORKSPACE/.env")

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        client = StabilityClient(self.key, self.job.api_base_url)
        try:
            artifacts = client.image_to_image(init_png.read_bytes(), self.job)
        except StabilityError as exc:
            raise JobFailed(EXIT_AI, f"AI step failed: {exc}") from None
        finally:
            self.attempts = client.attempts
        return [
            Variation(n, artifact.seed, artifact.finish_reason, artifact.png if artifact.usable else None)
            for n, artifact in enumerate(artifacts, start=1)
        ]

    def stats(self) -> dict[str, Any]:
        return {"ai_attempts": self.attempts}
