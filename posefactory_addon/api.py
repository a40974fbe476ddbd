"""The Python API, for the console and scripts:

    from bl_ext.user_default.posefactory import api
    job = api.submit(prompt="a knight in armour", batch=2, host="local")
    job.status            # running | done | failed | cancelled
    result = job.wait()   # blocks until the images are back and loaded
    job.images            # [bpy.types.Image, ...]

Keyword overrides (each defaults to the scene's Pose Factory settings):
prompt, negative_prompt, batch, seed (0: random), host, resolution
("1216x832", or "AUTO": the SDXL size nearest the camera's aspect), steps,
strength, cfg_scale, style_preset, render_samples, use_ai, render_device
("auto" | "gpu" | "cpu"), allow_missing_files,
poses ("markers", "assets", "frames:1-24:2", "Wave,Bow") and cameras
("active", "collection:Cameras", "CamA,CamB"): a batch of items, one per pose × camera.
Bad input raises SubmitError with one clear line, before anything is spent.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

from . import backends, preferences
from .batch import cameras_spec, items_of, poses_spec, summary
from .jobs import MANAGER, TrackedJob, new_copy_dir
from .properties import scene_aspect, settings_of
from .remote.core.batch_spec import BatchSpecError
from .remote.core.config import ConfigError, HostConfig, created_hosts_file, load_hosts
from .remote.core.cost import CostBreakdown, CostConfigError, CostModel
from .remote.core.estimate import estimate
from .remote.core.framing import crop_for, nearest_sdxl_size
from .remote.core.jobspec import STABILITY_KEY_BACKENDS, JobValidationError, RenderJob
from .remote.core.platforms import default_config_dir, default_transport
from .remote.jobs.hosts import local_host_problem
from .remote.jobs.pipeline import new_job_id
from .remote.jobs.state import JobResult

ADD_A_POD = ("save it as ssh_hosts.yaml in {config_dir} or choose it in Preferences > Add-ons > Pose Factory > "
             "Hosts File, then pick its host")

OVERRIDES = ("prompt", "negative_prompt", "batch", "seed", "host", "resolution", "steps", "strength", "cfg_scale",
             "style_preset", "render_samples", "use_ai", "render_device",
             "allow_missing_files", "poses", "cameras",
             "backend", "control", "openpose_scale", "depth_scale", "control_strength")
# Blender's integer properties are 32-bit signed: random seeds stay below that so
# they fit the Seed field and the images' custom properties.
MAX_BLENDER_SEED = 2**31 - 1
_cost_model: CostModel | None = None


class SubmitError(ValueError):
    """A job that cannot start; the message is meant for the artist."""


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
    lines = [(summary(items, job.batch), "NONE")] if len(items) > 1 else []
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
    use_ai = bool(_setting(settings, overrides, "use_ai"))
    seed = overrides.get("seed")
    if estimating:
        seed = settings.seed or 1  # the seed does not change the cost
    elif seed is None:
        seed = random.randint(1, MAX_BLENDER_SEED) if settings.random_seed else settings.seed
    elif seed == 0:
        seed = random.randint(1, MAX_BLENDER_SEED)
    style = _setting(settings, overrides, "style_preset")
    backend = str(_setting(settings, overrides, "backend")) if use_ai else "none"
    prefs = preferences.get(context)
    job = RenderJob(
        blend_path="scene.blend", output_dir="output", prompt=prompt,
        negative_prompt=str(_setting(settings, overrides, "negative_prompt")),
        width=width, height=height, strength=float(_setting(settings, overrides, "strength")),
        steps=int(_setting(settings, overrides, "steps")), cfg_scale=float(_setting(settings, overrides, "cfg_scale")),
        seed=int(seed), batch=int(_setting(settings, overrides, "batch")),
        style_preset="" if style == "NONE" else style, backend=backend,
        api_base_url=prefs.api_base_url, job_id=job_id,
        render_samples=int(overrides.get("render_samples") or settings.render_samples),
        # Each backend's own settings go only to the backend that reads them.
        # A control asked for with no AI step is a preview of the control images (the skeleton before paying).
        control=str(_setting(settings, overrides, "control"))
        if backends.owns(backend, "control") or (backend == "none" and "control" in overrides) else "none",
        openpose_scale=float(_setting(settings, overrides, "openpose_scale")),
        depth_scale=float(_setting(settings, overrides, "depth_scale")),
        control_strength=float(_setting(settings, overrides, "control_strength")),
        poses=poses, cameras=cameras,
        render_device=str(_setting(settings, overrides, "render_device")),
        allow_missing_files=bool(_setting(settings, overrides, "allow_missing_files")),
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


@functools.lru_cache(maxsize=4)
def _hosts(path: Path | None, modified_ns: int, created_ns: int) -> dict[str, HostConfig]:
    # Keyed by modification times: the panel asks on every redraw, the files rarely change
    # (the created pods' file does when Create Pod or Terminate writes it: seen at once).
    return load_hosts(path)


def _modified_ns(path: Path | None) -> int:
    try:
        return path.stat().st_mtime_ns if path else 0
    except OSError:
        return 0


def host_names(context: bpy.types.Context) -> list[str]:
    """Every host a job can name now (the hosts file's, the created pods', ``local``); [] when unreadable."""
    try:
        return sorted(_known_hosts(context))
    except SubmitError:
        return []


def _known_hosts(context: bpy.types.Context) -> dict[str, HostConfig]:
    path = preferences.hosts_file(context)
    try:
        return _hosts(path, _modified_ns(path), _modified_ns(created_hosts_file()))
    except ConfigError as exc:
        raise SubmitError(f"Hosts file: {exc}") from None


def resolve_host(context: bpy.types.Context, host: str) -> HostConfig:
    """The named host from the preferences' hosts file or the pods Pose Factory created; SubmitError
    when there is none."""
    hosts = _known_hosts(context)
    if host not in hosts:
        raise SubmitError(f"Unknown host '{host}': known hosts are {', '.join(sorted(hosts))}")
    problem = local_problem(hosts[host])
    if problem:
        raise SubmitError(f"{problem}; {ADD_A_POD.format(config_dir=default_config_dir())}")
    return hosts[host]


def local_demo_problem() -> str | None:
    """Why the built-in ``local`` host (its default transport) cannot run here; the panel shows it."""
    return _local_problem(default_transport())


def local_problem(config: HostConfig) -> str | None:
    """Why the built-in ``local`` demo host cannot run on this machine (Windows has no bash)."""
    return _local_problem(config.transport) if config.is_local else None


@functools.lru_cache(maxsize=2)
def _local_problem(transport: str) -> str | None:
    return local_host_problem(transport)


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
