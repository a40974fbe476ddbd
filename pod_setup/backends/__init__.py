"""The AI step behind one small interface: a backend per module.

The render job asks :func:`create` for the job's backend (the interface and its
result, :class:`Backend` and :class:`Variation`, are in ``base.py``, which every
backend imports), calls
:meth:`Backend.check_ready` before it renders anything (so a missing key or
model fails before the render is paid for), then :meth:`Backend.generate`
with the rendered init image. A backend returns every variation it was asked
for, usable or not; the job saves the usable ones and records all of them.
"""
from __future__ import annotations

from remote.core.jobspec import RenderJob

from .base import Backend, Variation

__all__ = ["Backend", "Variation", "create"]


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
