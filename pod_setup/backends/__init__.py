"""The AI step behind one small interface: a backend per module.

The render job asks :func:`create` for the job's backend, calls
:meth:`Backend.check_ready` before it renders anything (so a missing key or
model fails before the render is paid for), then :meth:`Backend.generate`
with the rendered init image. A backend returns every variation it was asked
for, usable or not; the job saves the usable ones and records all of them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from remote.core.jobspec import RenderJob


@dataclass(frozen=True)
class Variation:
    n: int  # 1-based variation number
    seed: int
    finish_reason: str  # SUCCESS | CONTENT_FILTERED | ERROR
    png: bytes | None = field(default=None, repr=False)  # the image, when usable

    @property
    def usable(self) -> bool:
        return self.finish_reason == "SUCCESS" and self.png is not None


class Backend(Protocol):
    name: str

    def check_ready(self) -> None:
        """Raise ``JobFailed`` when the backend cannot run (no key, no model)."""

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        """Turn the render into the job's variations; raise ``JobFailed`` on failure.

        ``controls``: the control images written for the job ({"openpose": path, "depth": path}).
        """

    def stats(self) -> dict[str, Any]:
        """Figures for the manifest (attempts, load times), also after a failure."""


def create(job: RenderJob) -> Backend | None:
    """The backend the job names, or None for ``none`` (render only)."""
    if job.backend == "none":
        return None
    if job.backend == "stability":
        from .stability_v1 import StabilityV1Backend

        return StabilityV1Backend(job)
    if job.backend == "stability-structure":
        from .stability_structure import StabilityStructureBackend

        return StabilityStructureBackend(job)
    if job.backend == "diffusers":
        from .diffusers_sdxl import DiffusersBackend

        return DiffusersBackend(job)
    if job.backend == "ai-render":
        from .ai_render import AIRenderBackend

        return AIRenderBackend(job)
    raise ValueError(f"unknown backend {job.backend!r}")  # jobspec validation keeps this unreachable
