"""The Python API, for the console and scripts:

    from bl_ext.user_default.posefactory import api
    job = api.submit(prompt="a knight in armour", variations=2, host="local")
    job.status            # running | done | failed | cancelled
    result = job.wait()   # blocks until the images are back and loaded
    job.images            # [bpy.types.Image, ...]

Keyword overrides, each defaulting to the scene's Pose Factory settings: every
job setting (``remote.core.jobspec.SETTINGS``: prompt, negative_prompt,
strength, steps, cfg_scale, style_preset, seed (0: random), variations, backend,
render_samples, control, openpose_scale, depth_scale, control_strength, poses
("markers", "assets", "frames:1-24:2", "Wave,Bow"), cameras ("active",
"collection:Cameras", "CamA,CamB"), render_device ("auto" | "gpu" | "cpu"),
allow_missing_files), and host, resolution ("1216x832", or "AUTO": the SDXL
size nearest the camera's aspect) and use_ai. Poses × cameras make the job's
items, each with every variation. Bad input raises SubmitError with one clear
line, before anything is spent.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

from . import preferences
from .batch import cameras_spec, items_of, poses_spec, summary
from .errors import SubmitError
from .host_lookup import resolve_host
from .jobs import MANAGER, TrackedJob, new_copy_dir
from .properties import BUILT_ELSEWHERE, scene_aspect, settings_of, to_job
from .remote.core.batch_spec import BatchSpecError
from .remote.core.config import ConfigError
from .remote.core.cost import CostBreakdown, CostConfigError, CostModel
from .remote.core.estimate import estimate
from .remote.core.framing import crop_for, nearest_sdxl_size
from .remote.core.jobspec import SETTINGS, STABILITY_KEY_BACKENDS, JobValidationError, RenderJob
from .remote.jobs.pipeline import new_job_id
from .remote.jobs.state import JobResult

# The API's keywords: every job setting, and what only the add-on adds to a job.
OVERRIDES = (*(each.name for each in SETTINGS), "host", "resolution", "use_ai")
# Blender's integer properties are 32-bit signed: random seeds stay below that so
# they fit the Seed field and the images' custom properties.
MAX_BLENDER_SEED = 2**31 - 1
_cost_model: CostModel | None = None


def cost_model() -> CostModel:
    global _cost_model
    if _cost_model is None:
        _cost_model = CostModel.load()
    return _cost_model


def _setting(settings: Any, overrides: dict[str, Any], name: str) -> Any:
    value = overrides.get(name)
    return getattr(settings, name) if value in (None, "") else value


def build_job(scene: bpy.types.Scene, context: bpy.types.Context, **overrides: Any) -> tuple[RenderJob, str]:
    """The job for ``scene`` with ``overrides``, checked; raises SubmitError."""
    return _checked_job(scene, context, overrides, job_id=new_job_id(), estimating=False)


def preview_job(scene: bpy.types.Scene, context: bpy.types.Context) -> RenderJob:
    """The job the settings would make, for the panels: no job id, no random seed; raises SubmitError."""
    return _checked_job(scene, context, {}, job_id="estimate", estimating=True)[0]


def estimate_lines(scene: bpy.types.Scene, context: bpy.types.Context) -> list[tuple[str, str]]:
    """(text, icon) lines for the main panel: a batch's size and the next job's estimate, or why it cannot start.

    Builds no job id and draws no random seed (it runs on every redraw), and
    never raises: a broken hosts file or cost config is a label, not an exception.
    """
    try:
        job, host = _checked_job(scene, context, {}, job_id="estimate", estimating=True)
        items = items_of(scene, job.poses, job.cameras)
        cost = estimate_job(job, resolve_host(context, host).pod_type, items=len(items))
    except SubmitError as exc:
        return [(str(exc), "ERROR")]
    except (CostConfigError, ConfigError, BatchSpecError, OSError, ValueError) as exc:
        return [(f"Cannot estimate: {exc}", "ERROR")]
    lines = [(summary(items, job.variations), "NONE")] if len(items) > 1 else []
    per_image = f"{cost.images} image(s)" if cost.images else f"GPU {cost.gpu_seconds:.0f}s"
    return [*lines, (f"Estimate: ${cost.total_usd:.3f} ({per_image}, {cost.backend})", "INFO")]


def _checked_job(scene: bpy.types.Scene, context: bpy.types.Context, overrides: dict[str, Any], *, job_id: str,
                 estimating: bool) -> tuple[RenderJob, str]:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise SubmitError(f"unknown option(s): {', '.join(unknown)} (known: {', '.join(OVERRIDES)})")
    settings = settings_of(scene)
    poses = str(overrides.get("poses") or poses_spec(settings))
    cameras = str(overrides.get("cameras") or cameras_spec(settings))
    try:
        items = items_of(scene, poses, cameras)
    except BatchSpecError as exc:
        raise SubmitError(f"Batch: {exc}") from None
    if scene.camera is None and cameras == "active":
        raise SubmitError(f"Scene '{scene.name}' has no active camera: add one and set it as the scene camera")
    prompt = str(_setting(settings, overrides, "prompt")).strip()
    if not prompt:
        raise SubmitError("The prompt is empty: describe what the AI step should make of the render")
    resolution = _setting(settings, overrides, "resolution")
    if isinstance(resolution, (tuple, list)):
        resolution = "x".join(map(str, resolution))
    if str(resolution).upper() == "AUTO":
        resolution = "x".join(map(str, nearest_sdxl_size(scene_aspect(scene))))
    try:
        width, height = (int(part) for part in str(resolution).lower().split("x"))
    except ValueError:
        raise SubmitError(f"Invalid size {resolution!r}: use WIDTHxHEIGHT, e.g. 1216x832") from None
    backend = str(_setting(settings, overrides, "backend")) if _setting(settings, overrides, "use_ai") else "none"
    values = {each.name: to_job(each.name, _setting(settings, overrides, each.name))
              for each in SETTINGS if each.name not in BUILT_ELSEWHERE}
    seed = int(values["seed"])
    if estimating:
        seed = seed or 1  # the seed does not change the cost
    elif seed == 0:
        seed = random.randint(1, MAX_BLENDER_SEED)
    # Each backend's own settings go only to the backend that reads them (their defaults to the others).
    # A control asked for with no AI step is a preview of the control images (the skeleton before paying).
    for each in SETTINGS:
        if each.backends and backend not in each.backends:
            values[each.name] = each.default
    if backend == "none" and "control" not in overrides:
        values["control"] = "none"
    prefs = preferences.get(context)
    job = RenderJob(
        blend_path="scene.blend", output_dir="output", job_id=job_id, api_base_url=prefs.api_base_url,
        **{**values, "prompt": prompt, "backend": backend, "seed": seed, "poses": poses, "cameras": cameras},
        width=width, height=height,
        blender_version="%d.%d.%d" % bpy.app.version[:3],  # the pod installs and runs the artist's Blender
    )
    try:
        job.validate()
    except JobValidationError as exc:
        raise SubmitError(f"Invalid job: {exc}") from None
    if backend in STABILITY_KEY_BACKENDS and not preferences.api_key(context):
        raise SubmitError(f"No Stability API key for backend {backend}: set STABILITY_API_KEY or the key in the "
                          "add-on preferences (or pick the diffusers backend, or turn AI Enhance off)")
    host = str(_setting(settings, overrides, "host"))
    estimate = estimate_job(job, resolve_host(context, host).pod_type, items=len(items))
    if prefs.budget_cap_usd and estimate.total_usd > prefs.budget_cap_usd:
        raise SubmitError(f"Over budget: this job ({len(items)} item(s)) is estimated at ${estimate.total_usd:.2f}, "
                          f"the cap is ${prefs.budget_cap_usd:.2f} (Preferences ▸ Pose Factory)")
    return job, host


def framing_note(job: RenderJob, scene: bpy.types.Scene) -> str:
    """What the job's size does to the camera's framing, for the panel (before the click)."""
    aspect = scene_aspect(scene)
    crop = crop_for(aspect, (job.width, job.height))
    if crop.percent == 0:
        return "Camera framing kept"
    sides = "left and right" if crop.keep_x < 1 else "top and bottom"
    return f"Crops {crop.percent} % of the camera frame ({sides})"


def estimate_job(job: RenderJob, pod_type: str | None, items: int = 1) -> CostBreakdown:
    """Every item of the batch: its render time and its variations (the one estimate, remote/core/estimate.py)."""
    return estimate(job, pod_type, items=items, model=cost_model())


@dataclass
class JobHandle:
    tracked: TrackedJob

    @property
    def job_id(self) -> str:
        return self.tracked.job_id

    @property
    def status(self) -> str:
        MANAGER.pump()  # scripts poll from the main thread, where the timer may not get to run
        return self.tracked.status

    @property
    def progress(self) -> tuple[str, float, str]:
        MANAGER.pump()
        return self.tracked.stage, self.tracked.fraction, self.tracked.message

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends and its images are loaded; freezes the UI meanwhile."""
        return MANAGER.wait(self.tracked, timeout)

    @property
    def images(self) -> list[bpy.types.Image]:
        return [bpy.data.images[name] for name in self.tracked.image_names if name in bpy.data.images]

    def cancel(self) -> None:
        self.tracked.cancel.set()


def submit(scene: bpy.types.Scene | None = None, **overrides: Any) -> JobHandle:
    """Pack the open scene and render it remotely; returns at once with a handle."""
    context = bpy.context
    scene = scene or context.scene
    if scene is None:
        raise SubmitError("No scene to render (Blender is loading a file?)")
    host = str(overrides.get("host") or settings_of(scene).host)
    if host != "local" and (problem := preferences.offline(f"A job on {host}")):
        raise SubmitError(problem)
    job, host = build_job(scene, context, **overrides)
    if job.backend in STABILITY_KEY_BACKENDS and (problem := preferences.offline(f"The {job.backend} AI step")):
        raise SubmitError(problem)
    preferences.storage_environment(context)
    preferences.runpod_environment(context)  # a pod host is started (and stopped) with the RunPod key
    copy = _write_copy(scene)
    settings = settings_of(scene)
    tracked = MANAGER.submit(job, copy, scene_key(), host=host, hosts_file=preferences.hosts_file(context),
                             output_dir=preferences.output_dir(context), api_key=preferences.api_key(context) or None,
                             autosave_dir=settings.autosave_path if settings.autosave else "")
    return JobHandle(tracked)


def scene_key() -> str:
    from .packing import scene_key as key

    return key()


def _write_copy(scene: bpy.types.Scene) -> Path:
    from .packing import write_copy

    window = bpy.context.window
    if window is not None and window.scene != scene:
        raise SubmitError(f"Switch to scene '{scene.name}' first: the copy is saved from the scene on screen")
    return write_copy(new_copy_dir())
