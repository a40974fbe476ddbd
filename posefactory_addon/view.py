"""What the panels show that takes work to know (the estimate, the crop note,
the batch line), computed off ``draw``: on the UI channel's timer, when the
scene's settings (or the preferences, the hosts file, the cameras, markers and
pose assets) changed since the last computation. ``draw`` only reads
:func:`get`; it never builds a job, draws a seed or reads a file.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import bpy

from . import api, preferences, ui_channel
from .batch import cameras_spec, items_of, poses_spec, summary
from .properties import settings_of
from .remote.core.batch_spec import BatchSpecError

log = logging.getLogger(__name__)

Line = tuple[str, Any]  # (text, icon): an icon name, which fake-bpy types as a Literal of them all


@dataclass(frozen=True)
class PanelView:
    estimate: tuple[Line, ...]  # the main panel: the batch's size, the estimate or why the job cannot start
    framing: str | None  # the output panel: what the size does to the camera's framing (None: no job to build)
    batch: Line  # the batch panel: "12 poses × 2 cameras …" or why the batch cannot be rendered


_views: dict[str, tuple[Hashable, PanelView]] = {}  # scene name -> (the inputs it was computed from, the view)


def _plain(value: Any, depth: int = 0) -> Hashable:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, bpy.types.ID):
        return value.name_full
    if isinstance(value, bpy.types.bpy_struct) and depth < 2:
        return _struct(value, depth + 1)
    try:
        return tuple(_plain(item, depth + 1) for item in value)
    except TypeError:
        return repr(value)


def _struct(struct: Any, depth: int = 0) -> tuple[Hashable, ...]:
    return tuple((prop.identifier, _plain(getattr(struct, prop.identifier, None), depth))
                 for prop in struct.bl_rna.properties if prop.identifier != "rna_type")


def inputs(scene: bpy.types.Scene, context: Any) -> Hashable:
    """Everything the view is computed from, as one comparable value (cheap: no job, no file read)."""
    prefs = preferences.get(context)
    hosts_file = preferences.hosts_file(context)
    try:
        hosts_stamp = hosts_file.stat().st_mtime_ns if hosts_file else 0
    except OSError:
        hosts_stamp = -1
    render = scene.render
    return (
        _struct(settings_of(scene)),
        (render.resolution_x, render.resolution_y, render.pixel_aspect_x, render.pixel_aspect_y),
        scene.camera.name_full if scene.camera else None,
        tuple((obj.name_full, obj.type) for obj in scene.objects if obj.type == "CAMERA"),
        tuple((marker.name, marker.frame) for marker in scene.timeline_markers),
        tuple(action.name_full for action in bpy.data.actions),
        (scene.frame_start, scene.frame_end),
        (prefs.budget_cap_usd, prefs.api_base_url, bool(preferences.api_key(context)), str(hosts_file), hosts_stamp),
    )


def compute(scene: bpy.types.Scene, context: Any) -> PanelView:
    estimate = tuple(api.estimate_lines(scene, context))
    try:
        job = api.preview_job(scene, context)
        framing: str | None = api.framing_note(job, scene)
    except Exception:  # the main panel's estimate line says why there is no job
        framing = None
    settings = settings_of(scene)
    try:
        items = items_of(scene, poses_spec(settings), cameras_spec(settings))
        batch: Line = (summary(items, settings.variations), "RENDERLAYERS")
    except BatchSpecError as exc:
        batch = (str(exc), "ERROR")
    return PanelView(estimate=estimate, framing=framing, batch=batch)


def refresh(scene: bpy.types.Scene, context: Any, *, force: bool = False) -> bool:
    """Main thread: recompute ``scene``'s view when its inputs changed (or ``force``); whether it did."""
    key = inputs(scene, context)
    stored = _views.get(scene.name_full)
    if not force and stored is not None and stored[0] == key:
        return False
    try:
        view = compute(scene, context)
    except Exception as exc:  # the panel shows one line, the timer goes on
        log.exception("computing the Pose Factory panel")
        view = PanelView(estimate=((f"Pose Factory: internal error ({type(exc).__name__}), details in the log", "ERROR"),),
                         framing=None, batch=("", "NONE"))
    _views[scene.name_full] = (key, view)
    return True


def get(scene: bpy.types.Scene | None) -> PanelView | None:
    """What draw shows for ``scene``; None until the timer first computed it."""
    stored = _views.get(scene.name_full) if scene is not None else None
    return stored[1] if stored else None


def refresh_current() -> bool:
    """A tick of the UI channel's timer: the context scene's view."""
    context = bpy.context
    scene = getattr(context, "scene", None)
    if scene is None or getattr(scene, "posefactory", None) is None:
        return False
    return refresh(scene, context)


@bpy.app.handlers.persistent
def _forget(*_args: Any) -> None:
    _views.clear()  # another file: its scenes may reuse the names


def register() -> None:
    ui_channel.on_tick(refresh_current)
    if _forget not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_forget)


def unregister() -> None:
    if _forget in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_forget)
    _views.clear()
