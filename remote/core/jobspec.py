"""The render job contract shared by the add-on, the bridge and the pod.

A :class:`RenderJob` is written as ``job.json`` into the pod's job directory
and read there by ``pod_setup/render_job.py``. It is validated on both sides:
locally so that bad input is refused before anything is uploaded or paid for,
and on the pod because a job file may come from a script.

It never holds a secret: the Stability key reaches the pod through the
environment or ``$WORKSPACE/.env``, never through this file.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .batch_spec import BatchSpecError, parse_cameras, parse_poses

# The output sizes the SDXL 1024 engine accepts (Stability v1 API); every other
# size is refused by the API with a 400 after the render has been paid for.
SDXL_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)

SDXL_ENGINE = "stable-diffusion-xl-1024-v1-0"
STABILITY_API_BASE = "https://api.stability.ai"

# Documented enumerations of the v1 generation endpoints.
SAMPLERS: tuple[str, ...] = (
    "DDIM", "DDPM", "K_DPMPP_2M", "K_DPMPP_2S_ANCESTRAL", "K_DPM_2",
    "K_DPM_2_ANCESTRAL", "K_EULER", "K_EULER_ANCESTRAL", "K_HEUN", "K_LMS",
)
STYLE_PRESETS: tuple[str, ...] = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art",
    "enhance", "fantasy-art", "isometric", "line-art", "low-poly",
    "modeling-compound", "neon-punk", "origami", "photographic", "pixel-art",
    "tile-texture",
)
# The AI step's backends (pod_setup/backends/, one module each); "none" renders only.
BACKENDS: tuple[str, ...] = ("stability", "stability-structure", "diffusers", "ai-render", "none")
# Backends that send the render to Stability's API and need the key.
STABILITY_KEY_BACKENDS: tuple[str, ...] = ("stability", "stability-structure", "ai-render")
# What setup_pod.sh is told for a backend that needs its own parts on the pod.
BACKEND_SETUP_ENV: dict[str, str] = {"diffusers": "POSEFACTORY_DIFFUSERS=1", "ai-render": "POSEFACTORY_AI_RENDER=1"}
# ControlNet inputs the diffusers backend draws from the scene itself.
CONTROLS: tuple[str, ...] = ("none", "openpose", "depth", "openpose+depth")
# COCO-18 keypoint names, in the OpenPose order (the keys of ``bone_map``).
COCO18_JOINTS: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# "bone", "bone:head" or "bone:tail" (a Blender bone name is at most 63 bytes; Mixamo's hold a ":").
BONE_REF = re.compile(r"^[^\x00-\x1f]{1,63}(:head|:tail)?$")
RENDER_DEVICES: tuple[str, ...] = ("auto", "gpu", "cpu")
# width x height 0x0: the SDXL size nearest the camera's aspect, chosen on the pod.
AUTO_SIZE = (0, 0)

MAX_SEED = 4_294_967_295
PROMPT_MAX_CHARS = 2000


def control_files(control: str) -> list[str]:
    """The control images a job with ``control`` writes beside each render (fixed names)."""
    return [] if control == "none" else [f"control-{kind}.png" for kind in control.split("+")]


class JobValidationError(ValueError):
    """A job that must not run; the message names the field and the reason."""


@dataclass
class RenderJob:
    """One render + img2img job, as written to ``job.json``."""

    blend_path: str
    output_dir: str
    prompt: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    strength: float = 0.35  # share of the render kept: Stability's image_strength
    steps: int = 30
    cfg_scale: float = 7.0
    sampler: str = ""  # empty: let the API choose
    style_preset: str = ""  # empty: none
    seed: int = 0  # 0: random, as the API defines it
    batch: int = 1  # variations, one image each
    backend: str = "stability"
    api_base_url: str = STABILITY_API_BASE
    engine_id: str = SDXL_ENGINE
    job_id: str = ""
    render_samples: int = 0  # 0: keep the scene's own setting
    # AI backends: settings read only by the backend named.
    control: str = "none"  # diffusers: ControlNet input(s) drawn from the scene (CONTROLS); none: a preview of them
    openpose_scale: float = 1.0  # diffusers: conditioning scale of the OpenPose ControlNet
    depth_scale: float = 1.0  # diffusers: conditioning scale of the depth ControlNet
    bone_map: dict[str, str] = field(default_factory=dict)  # openpose: joint -> "bone[:head|:tail]" overrides
    control_strength: float = 0.7  # stability-structure: how closely the render's structure is kept
    # Batches (remote/core/batch_spec.py): items = poses × cameras, each with `batch` variations.
    poses: str = "current"  # current | markers | assets | frames:A-B[:S] | NAME,NAME…
    cameras: str = "active"  # active | collection:NAME | NAME,NAME…
    only_items: list[str] = field(default_factory=list)  # non-empty: render just these items (the rest are reused)
    # Render fidelity: where the pod renders and how the init image is made.
    render_device: str = "auto"  # auto (GPU, else CPU with a warning) | gpu (fail without one) | cpu
    allow_missing_files: bool = False  # render a scene whose files are missing on the pod: "done with warnings"
    blender_version: str = ""  # the artist's Blender ("4.2" or "4.2.3"): the pod installs and runs it; "": the pod's
    allow_newer_blender: bool = False  # render a file saved by a newer Blender than the pod runs

    def validate(self) -> None:
        """Raise :class:`JobValidationError` on the first field that is wrong."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise JobValidationError("prompt: must not be empty")
        for name in ("prompt", "negative_prompt"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise JobValidationError(f"{name}: must be text")
            if len(text) > PROMPT_MAX_CHARS:
                raise JobValidationError(f"{name}: {len(text)} characters, at most {PROMPT_MAX_CHARS}")
        if self.backend not in BACKENDS:
            raise JobValidationError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        _check_size(self.backend, self.width, self.height)
        _check_range("strength", self.strength, 0.0, 1.0)
        if self.backend == "diffusers":
            _check_int_range("steps", self.steps, 1, 150)
            if denoising_steps(self) < 1:
                raise JobValidationError(
                    f"strength: keeping {self.strength:g} of the render leaves 0 of {self.steps} denoising steps "
                    f"(diffusers runs steps x (1 - keep)); lower Keep Render or raise steps")
        else:
            _check_int_range("steps", self.steps, 10, 50)
        _check_range("cfg_scale", self.cfg_scale, 0.0, 35.0)
        _check_int_range("seed", self.seed, 0, MAX_SEED)
        _check_int_range("batch", self.batch, 1, 10)
        _check_int_range("render_samples", self.render_samples, 0, 1 << 16)
        if self.sampler and self.sampler not in SAMPLERS:
            raise JobValidationError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.style_preset and self.style_preset not in STYLE_PRESETS:
            raise JobValidationError(f"style_preset: {self.style_preset!r} is not one of {', '.join(STYLE_PRESETS)}")
        if self.render_device not in RENDER_DEVICES:
            raise JobValidationError(f"render_device: {self.render_device!r} is not one of {', '.join(RENDER_DEVICES)}")
        for flag in ("allow_missing_files", "allow_newer_blender"):
            if not isinstance(getattr(self, flag), bool):
                raise JobValidationError(f"{flag}: {getattr(self, flag)!r} must be true or false")
        if self.blender_version and not (isinstance(self.blender_version, str)
                                         and re.fullmatch(r"\d{1,2}\.\d{1,2}(\.\d{1,3})?", self.blender_version)):
            raise JobValidationError(f"blender_version: {self.blender_version!r} is not a version like 4.2 or 4.2.3")
        self._validate_backend_settings()
        try:
            parse_poses(self.poses)
            parse_cameras(self.cameras)
        except BatchSpecError as exc:
            raise JobValidationError(str(exc)) from None
        if not isinstance(self.only_items, list) or not all(isinstance(n, str) for n in self.only_items):
            raise JobValidationError("only_items: must be a list of item names")
        if not self.blend_path:
            raise JobValidationError("blend_path: must not be empty")
        if not self.output_dir:
            raise JobValidationError("output_dir: must not be empty")

    def _validate_backend_settings(self) -> None:
        if self.control not in CONTROLS:
            raise JobValidationError(f"control: {self.control!r} is not one of {', '.join(CONTROLS)}")
        if self.control != "none" and self.backend not in ("diffusers", "none"):
            raise JobValidationError(f"control: {self.control} needs backend diffusers (ControlNet runs on the pod), "
                                     f"or none for a preview of the control images, not {self.backend}")
        _check_range("openpose_scale", self.openpose_scale, 0.0, 2.0)
        _check_range("depth_scale", self.depth_scale, 0.0, 2.0)
        _check_range("control_strength", self.control_strength, 0.0, 1.0)
        if not isinstance(self.bone_map, dict):
            raise JobValidationError("bone_map: must map joint names to bone names")
        for joint, bone in self.bone_map.items():
            if joint not in COCO18_JOINTS:
                raise JobValidationError(f"bone_map: {joint!r} is not a COCO-18 joint ({', '.join(COCO18_JOINTS)})")
            if not isinstance(bone, str) or not BONE_REF.fullmatch(bone):
                raise JobValidationError(f"bone_map: {joint}: {bone!r} is not 'bone', 'bone:head' or 'bone:tail'")
        if not isinstance(self.api_base_url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.api_base_url):
            raise JobValidationError(f"api_base_url: {self.api_base_url!r} is not an http(s) URL")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def write(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderJob:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobValidationError(f"unknown field(s): {', '.join(unknown)}")
        missing = [f.name for f in fields(cls) if f.name in ("blend_path", "output_dir", "prompt") and f.name not in data]
        if missing:
            raise JobValidationError(f"missing field(s): {', '.join(missing)}")
        job = cls(**data)
        job.validate()
        return job

    @classmethod
    def read(cls, path: Path) -> RenderJob:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise JobValidationError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise JobValidationError(f"{path}: must hold a JSON object")
        return cls.from_dict(data)


def denoising_steps(job: RenderJob) -> int:
    """Steps diffusers' img2img really runs: ``steps x strength`` with strength = 1 - keep."""
    return min(int(job.steps * (1.0 - job.strength)), job.steps)


def _check_size(backend: str, width: Any, height: Any) -> None:
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) or not isinstance(height, int):
        raise JobValidationError(f"size: {width!r}x{height!r} must be whole numbers")
    if (width, height) == AUTO_SIZE:
        return  # the pod picks the SDXL size nearest the camera's aspect: valid for every backend
    if backend == "diffusers":
        # SDXL runs at any multiple of 8 (the VAE's factor); the SDXL sizes are the best-trained ones.
        if not (64 <= width <= 2048 and 64 <= height <= 2048 and width % 8 == 0 and height % 8 == 0):
            raise JobValidationError(f"size: {width}x{height} must be multiples of 8 in 64..2048 for diffusers")
    elif backend == "stability-structure":
        # control/structure: each side >= 64, 4,096..9,437,184 pixels, aspect 1:2.5..2.5:1.
        if min(width, height) < 64 or not 4096 <= width * height <= 9_437_184 or max(width, height) > 2.5 * min(width, height):
            raise JobValidationError(f"size: {width}x{height} is outside Stability's structure control limits "
                                     "(sides >= 64, up to 9,437,184 pixels, aspect 1:2.5..2.5:1)")
    elif (width, height) not in SDXL_SIZES:
        valid = ", ".join(f"{w}x{h}" for w, h in SDXL_SIZES)
        raise JobValidationError(f"size: {width}x{height} is not an SDXL size ({valid}) "
                                 f"nor 0x0 (the one nearest the camera's aspect)")


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise JobValidationError(f"{name}: {value!r} is outside {low}..{high}")


def _check_int_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobValidationError(f"{name}: {value!r} must be a whole number in {low}..{high}")
