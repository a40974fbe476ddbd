"""Each AI backend's own settings and its part of the Prompt panel.

One entry per backend id: the function that draws the settings only it reads
(which those are is the job settings table's, ``remote/core/jobspec.py``). The
panel loops over this registry instead of an if/elif on the backend; a new
backend adds one entry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .remote.core.jobspec import SETTINGS


@dataclass(frozen=True)
class Backend:
    draw: Callable[[Any, Any], None]  # (layout, settings): its part of the Prompt panel


def _draw_nothing(layout: Any, settings: Any) -> None:
    return None


def _draw_diffusers(layout: Any, settings: Any) -> None:
    box = layout.box()
    box.prop(settings, "control")
    for control, scale in (("openpose", "openpose_scale"), ("depth", "depth_scale")):
        if control in settings.control:
            box.prop(settings, scale)


def _draw_structure(layout: Any, settings: Any) -> None:
    layout.box().prop(settings, "control_strength")


BACKENDS: dict[str, Backend] = {
    "stability": Backend(draw=_draw_nothing),
    "stability-structure": Backend(draw=_draw_structure),
    "diffusers": Backend(draw=_draw_diffusers),
    "ai-render": Backend(draw=_draw_nothing),
}


def draw(layout: Any, settings: Any) -> None:
    """The chosen backend's own settings."""
    backend = BACKENDS.get(settings.backend)
    if backend is not None:
        backend.draw(layout, settings)


def own_settings(backend: str) -> list[str]:
    """The settings only ``backend`` reads (besides a preview with no AI step): what its entry draws."""
    return [each.name for each in SETTINGS if each.backends and set(each.backends) - {"none"} == {backend}]
