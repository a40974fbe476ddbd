"""Each AI backend's own settings and its part of the Prompt panel.

One entry per backend id: the scene settings it owns (properties on
``scene.posefactory``) and the function that draws them. The panel loops over
this registry instead of an if/elif on the backend; a new backend adds one entry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backend:
    settings: tuple[str, ...]  # the properties of scene.posefactory this backend reads
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
    "stability": Backend(settings=(), draw=_draw_nothing),
    "stability-structure": Backend(settings=("control_strength",), draw=_draw_structure),
    "diffusers": Backend(settings=("control", "openpose_scale", "depth_scale"), draw=_draw_diffusers),
    "ai-render": Backend(settings=(), draw=_draw_nothing),
}


def draw(layout: Any, settings: Any) -> None:
    """The chosen backend's own settings."""
    backend = BACKENDS.get(settings.backend)
    if backend is not None:
        backend.draw(layout, settings)


def owns(backend: str, setting: str) -> bool:
    """Whether ``setting`` is one of ``backend``'s own (the others' settings are not sent to it)."""
    entry = BACKENDS.get(backend)
    return entry is not None and setting in entry.settings
