"""Opening the job's scene and rendering it headless, with the Render Result fix.

Kept apart from the AI step so that how the scene is rendered (device,
framing, output format) and what is done with the render (the backends) can
change independently.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from remote.jobspec import RenderJob

from .job_errors import EXIT_RENDER, JobFailed


@dataclass(frozen=True)
class RenderOutcome:
    path: Path  # the PNG written
    seconds: float  # Blender's render time
    render_result_fix_applied: bool


def open_scene(job: RenderJob) -> None:
    """Open the job's .blend; a missing or unreadable file or no camera fails the job."""
    import bpy

    blend = Path(job.blend_path)
    if not blend.is_file():
        raise JobFailed(EXIT_RENDER, f"scene file not found: {blend}")
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend))
    except RuntimeError as exc:  # bpy reports an unreadable .blend this way
        raise JobFailed(EXIT_RENDER, f"cannot open scene {blend}: {str(exc).strip().splitlines()[-1]}") from None
    scene = bpy.context.scene
    if scene.camera is None:
        raise JobFailed(EXIT_RENDER, f"scene {scene.name!r} has no active camera")


def configure_output(job: RenderJob) -> None:
    """Set the open scene's output to the job's size as an 8-bit RGB PNG."""
    import bpy

    scene = bpy.context.scene
    render_settings = scene.render
    render_settings.resolution_x, render_settings.resolution_y = job.width, job.height
    render_settings.resolution_percentage = 100
    render_settings.image_settings.file_format = "PNG"
    render_settings.image_settings.color_mode = "RGB"
    if job.render_samples and scene.render.engine == "CYCLES":
        scene.cycles.samples = job.render_samples


def render_still(target: Path) -> RenderOutcome:
    """Render the open scene's current frame to ``target`` and apply the Render Result fix."""
    import bpy

    bpy.context.scene.render.filepath = str(target)
    started = time.monotonic()
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError as exc:
        raise JobFailed(EXIT_RENDER, f"render failed: {str(exc).strip().splitlines()[-1]}") from None
    seconds = time.monotonic() - started
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
    # has_data alone is not enough: saving the result (the depth control's Z pass) marks it so at size 0x0.
    if result is not None and result.has_data and result.size[0] > 0:
        return False
    loaded = bpy.data.images.load(str(rendered), check_existing=False)
    loaded.update()
    if result is not None:
        bpy.data.images.remove(result)
    loaded.name = "Render Result"
    return True
