"""Opening the job's scene and rendering it headless, with the Render Result fix.

Kept apart from the AI step so that how the scene is rendered (device,
framing, output format) and what is done with the render (the backends) can
change independently.

Per scene (:func:`open_scene`, once for all renders of a scene): the render
device, the artist's scripted drivers, the artist's framing captured.
Per render (:func:`configure_output`, :func:`render_still`): the init image's
size, framing and clean output settings (``init_image``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote.core.blendfile import BlendFileError, saved_version
from remote.core.jobspec import RenderJob

from . import init_image
from .job_errors import EXIT_INVALID, EXIT_RENDER, JobFailed
from .render_device import DeviceChoice, select_device, use_device
from .scene_files import external_files, missing, outside_tree

log = logging.getLogger(__name__)
# Engines that draw with the GPU's graphics API even in background mode.
GPU_ONLY_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT", "BLENDER_WORKBENCH")


@dataclass(frozen=True)
class RenderOutcome:
    path: Path  # the PNG written
    seconds: float  # Blender's render time
    render_result_fix_applied: bool


@dataclass
class SceneSetup:
    """What opening the scene decided, shared by every render of it."""

    device: DeviceChoice
    frame: init_image.ArtistFrame
    engine: str
    warnings: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # rendered without them, with the artist's consent

    def to_manifest(self) -> dict:
        entry: dict = {"render_device": self.device.to_manifest(), "render_engine": self.engine}
        if self.missing_files:
            entry["missing_files"] = list(self.missing_files)
        return entry


def open_scene(job: RenderJob) -> SceneSetup:
    """Pick the render device, open the job's .blend with its scripted drivers on.

    A missing GPU under ``render_device: gpu``, a missing or unreadable file or
    no camera fails the job.
    """
    import bpy

    blend = Path(job.blend_path)
    if not blend.is_file():
        raise JobFailed(EXIT_RENDER, f"scene file not found: {blend}")
    device = select_device(job.render_device)
    try:
        check_version(job, saved_version(blend))  # before opening: Blender may lose data reading a newer file
    except BlendFileError:
        pass  # compressed without a reader here: Blender says after opening
    try:
        open_with_scripts(blend)
    except RuntimeError as exc:  # bpy reports an unreadable .blend this way
        raise JobFailed(EXIT_RENDER, f"cannot open scene {blend}: {str(exc).strip().splitlines()[-1]}") from None
    version: Any = bpy.data.version  # the version that saved the file just opened
    check_version(job, tuple(version)[:2])
    scene: Any = bpy.context.scene
    if scene.camera is None:
        raise JobFailed(EXIT_RENDER, f"scene {scene.name!r} has no active camera")
    needed = external_files(bpy)
    outside = outside_tree(blend, needed)
    if outside:
        raise JobFailed(EXIT_RENDER, f"the scene names {len(outside)} file(s) outside its job tree, nothing was "
                                     f"rendered: {'; '.join(f.describe() for f in outside)}")
    absent = [f.describe() for f in missing(needed)]
    if absent and not job.allow_missing_files:
        raise JobFailed(EXIT_RENDER, f"the scene needs {len(absent)} file(s) this pod does not have, nothing was "
                                     f"rendered: {'; '.join(absent)}")
    use_device(scene, device)
    setup = SceneSetup(device, init_image.ArtistFrame.capture(scene), scene.render.engine, missing_files=absent)
    if device.warning:
        setup.warnings.append(device.warning)
    if absent:
        setup.warnings.append(f"rendered without {len(absent)} missing file(s) (allowed by the job): {'; '.join(absent)}")
    if scene.render.engine in GPU_ONLY_ENGINES and not device.gpu:
        # Without a GPU these engines cannot make a drawing context headless: Blender 5.0.1 dies mid-render.
        raise JobFailed(EXIT_RENDER, f"render engine {scene.render.engine} needs a GPU (OpenGL/Vulkan) to render "
                                     f"headless and this pod has none ({device.warning or 'render_device cpu'}); "
                                     f"switch the scene to Cycles or use a GPU pod")
    if scene.render.engine != "CYCLES":
        log.info("render engine %s: the Cycles device choice does not apply", scene.render.engine)
    return setup


def check_version(job: RenderJob, saved: tuple[int, ...]) -> None:
    """Refuse a file from a newer Blender (major.minor) than this one, unless the job allows it."""
    import bpy

    running = tuple(bpy.app.version[:2])
    if tuple(saved[:2]) <= running:
        return
    saved_text, running_text = ".".join(map(str, saved[:2])), ".".join(map(str, bpy.app.version))
    if job.allow_newer_blender:
        log.warning("scene saved by Blender %s, rendering with %s as the job allows", saved_text, running_text)
        return
    raise JobFailed(EXIT_INVALID, f"scene saved by Blender {saved_text}, newer than this pod's Blender {running_text}: "
                                  f"it may render wrongly or lose data here; set the job's blender_version to "
                                  f"{saved_text} to install it on the pod, or allow_newer_blender to render anyway")


def open_with_scripts(blend: Path) -> None:
    """Open ``blend`` with Python auto-run on (its scripted drivers evaluate).

    The job's file is the artist's own scene: its scripted drivers must pose
    the rig as on the artist's machine. The pod's Blender runs with factory
    preferences, where auto-run is off, so ``open_mainfile`` is told to trust
    this file (its ``use_scripts``); the preferences stay as they are.
    """
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(blend), use_scripts=True)
    if bpy.app.autoexec_fail:
        log.warning("scripts in %s did not run: %s", blend.name, bpy.app.autoexec_fail_message)


def configure_output(job: RenderJob, setup: SceneSetup) -> init_image.RenderSettings:
    """Per render: the active camera's framing at the job's size, as a clean 8-bit sRGB PNG."""
    import bpy

    return init_image.configure(bpy.context.scene, job, setup.frame)


def render_still(target: Path, settings: init_image.RenderSettings | None = None) -> RenderOutcome:
    """Render the open scene's current frame to ``target`` and apply the Render Result fix."""
    import bpy

    scene: Any = bpy.context.scene
    if settings is not None and settings.frame is not None:
        init_image.frame_camera(scene, settings.frame, settings.size)  # the camera active now (batches switch)
    scene.render.filepath = str(target)
    started = time.monotonic()
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError as exc:
        raise JobFailed(EXIT_RENDER, f"render failed: {str(exc).strip().splitlines()[-1]}") from None
    seconds = time.monotonic() - started
    if settings is not None and settings.view:
        # Multiview names the file after the view (render_L.png): the init image is render.png.
        written = target.with_name(f"{target.stem}{init_image.view_suffix(scene, settings.view)}{target.suffix}")
        if written != target and written.is_file():
            written.replace(target)
    if not target.is_file():
        raise JobFailed(EXIT_RENDER, f"Blender did not write {target}")
    return RenderOutcome(target, seconds, apply_render_result_fix(target))


def apply_render_result_fix(rendered: Path) -> bool:
    """In background mode 'Render Result' holds no pixels: load the written file in its place.

    Add-ons that read ``bpy.data.images['Render Result']`` (AI Render does)
    then find the real image.
    """
    import bpy

    result = bpy.data.images.get("Render Result")
    # has_data alone is not enough: saving the result (the depth control's Z pass) marks it so at size 0x0;
    # and a 'Render Result' an earlier fix loaded (a file) holds the previous render, not this one.
    if result is not None and result.type == "RENDER_RESULT" and result.has_data and result.size[0] > 0:
        return False
    loaded = bpy.data.images.load(str(rendered), check_existing=False)
    loaded.update()
    if result is not None:
        bpy.data.images.remove(result)
    loaded.name = "Render Result"
    return True
