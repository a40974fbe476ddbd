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
from collections.abc import Callable
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


@dataclass(frozen=True)
class Setting:
    """A job setting an artist or a script sets: its field of :class:`RenderJob` and everything the CLI's
    arguments, the add-on's properties and operator options, the API's keywords, presets and the dashboard's
    form are built from. A new setting is one ``setting(...)`` line in RenderJob plus its behaviour."""

    name: str
    kind: type  # int | float | str | bool
    default: Any
    label: str  # the add-on's and the dashboard's name for it
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()  # a str setting's allowed values
    backends: tuple[str, ...] = ()  # the backends that read it (empty: every job)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Raise :class:`JobValidationError` naming this setting when ``value`` is not one of its values."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise JobValidationError(f"{self.name}: {value!r} must be true or false")
        elif self.kind is str:
            if not isinstance(value, str):
                raise JobValidationError(f"{self.name}: must be text")
            if self.choices and value not in self.choices:
                shown = ", ".join(choice or "'' (none)" for choice in self.choices)
                raise JobValidationError(f"{self.name}: {value!r} is not one of {shown}")
        elif self.kind is int:
            _check_int_range(self.name, value, int(self.low or 0), int(self.high or 0))
        else:
            _check_range(self.name, value, float(self.low or 0), float(self.high or 0))

    def parse(self, text: str) -> Any:
        """The value of ``text`` (a command line's or a form's); raises ValueError naming the setting."""
        parsers: dict[type, Callable[[str], Any]] = {bool: _parse_bool, int: int, float: float, str: str}
        try:
            return parsers[self.kind](text.strip())
        except ValueError:
            raise ValueError(f"{self.name}: {text[:20]!r} is not {_KIND_WORDS[self.kind]}") from None


_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def setting(default: Any, label: str, help: str, *, low: float | None = None, high: float | None = None,
            choices: tuple[str, ...] = (), backends: tuple[str, ...] = ()) -> Any:
    """A RenderJob field that is a job setting (see :class:`Setting`)."""
    return field(default=default, metadata={"setting": dict(label=label, help=help, low=low, high=high,
                                                            choices=choices, backends=backends)})


@dataclass
class RenderJob:
    """One render + img2img job, as written to ``job.json``."""

    blend_path: str
    output_dir: str
    prompt: str = setting("", "Prompt", "what the AI step should make of the render")
    negative_prompt: str = setting("", "Negative Prompt", "what the AI step should avoid (sent with a negative weight)")
    width: int = 1024
    height: int = 1024
    strength: float = setting(0.35, "Keep Render", "how much of the render survives the AI step (Stability's "
                              "image_strength): 1 keeps it, 0 ignores it", low=0.0, high=1.0)
    steps: int = setting(30, "Steps", "diffusion steps (Stability 10..50, diffusers 1..150); more is slower and "
                         "costs more per image", low=1, high=150)
    cfg_scale: float = setting(7.0, "Prompt Strength", "how strictly the AI follows the prompt (cfg_scale)",
                               low=0.0, high=35.0)
    sampler: str = ""  # empty: let the API choose
    style_preset: str = setting("", "Style", "a Stability style preset that guides the look of the result",
                                choices=("", *STYLE_PRESETS), backends=("stability", "stability-structure", "ai-render"))
    seed: int = setting(0, "Seed", "the AI step's seed: the same seed and settings give the same image; "
                        "0: a new random seed for every job", low=0, high=MAX_SEED)
    variations: int = setting(1, "Variations", "how many AI variations of each render to make (each one is billed)",
                              low=1, high=10)
    backend: str = setting("stability", "Backend", "where the AI step runs: Stability's API, the pod's GPU "
                           "(diffusers), the AI Render add-on, or none (render only)", choices=BACKENDS)
    api_base_url: str = STABILITY_API_BASE
    engine_id: str = SDXL_ENGINE
    job_id: str = ""
    render_samples: int = setting(0, "Render Samples", "Cycles samples on the pod (0 keeps the scene's own setting)",
                                  low=0, high=1 << 16)
    # AI backends: settings read only by the backend named.
    control: str = setting("none", "Control", "the ControlNet input(s) drawn from the scene (the armature's pose, "
                           "the Z pass); with backend none, a free preview of them", choices=CONTROLS,
                           backends=("diffusers", "none"))
    openpose_scale: float = setting(1.0, "Pose Weight", "how strongly the OpenPose skeleton steers the image",
                                    low=0.0, high=2.0, backends=("diffusers",))
    depth_scale: float = setting(1.0, "Depth Weight", "how strongly the depth map steers the image",
                                 low=0.0, high=2.0, backends=("diffusers",))
    bone_map: dict[str, str] = field(default_factory=dict)  # openpose: joint -> "bone[:head|:tail]" overrides
    control_strength: float = setting(0.7, "Keep Structure", "how closely the render's structure is kept",
                                      low=0.0, high=1.0, backends=("stability-structure",))
    # Items = poses × cameras (remote/core/batch_spec.py), each with every variation.
    poses: str = setting("current", "Poses", "current, markers, assets, frames:A-B[:S], or marker/pose-asset "
                         "names N1,N2")
    cameras: str = setting("active", "Cameras", "active, collection:NAME, or camera names C1,C2")
    only_items: list[str] = field(default_factory=list)  # non-empty: render just these items (the rest are reused)
    # Render fidelity: where the pod renders and how the init image is made.
    render_device: str = setting("auto", "Render Device", "auto: the pod's best GPU, else its CPU with a warning; "
                                 "gpu: fail without a GPU; cpu: the pod's CPU", choices=RENDER_DEVICES)
    allow_missing_files: bool = setting(False, "Allow Missing Files", "render even when files the scene needs are "
                                        "missing on the pod; the job then ends 'done with warnings' listing them")
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
        for each in SETTINGS:
            each.check(getattr(self, each.name))
        _check_size(self.backend, self.width, self.height)
        if self.backend == "diffusers":
            _check_int_range("steps", self.steps, 1, 150)
            if denoising_steps(self) < 1:
                raise JobValidationError(
                    f"strength: keeping {self.strength:g} of the render leaves 0 of {self.steps} denoising steps "
                    f"(diffusers runs steps x (1 - keep)); lower Keep Render or raise steps")
        else:
            _check_int_range("steps", self.steps, 10, 50)
        if self.sampler and self.sampler not in SAMPLERS:
            raise JobValidationError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if not isinstance(self.allow_newer_blender, bool):
            raise JobValidationError(f"allow_newer_blender: {self.allow_newer_blender!r} must be true or false")
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
        if self.control != "none" and self.backend not in ("diffusers", "none"):
            raise JobValidationError(f"control: {self.control} needs backend diffusers (ControlNet runs on the pod), "
                                     f"or none for a preview of the control images, not {self.backend}")
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


# Every job setting, in RenderJob's order.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, kind=type(f.default), default=f.default, **f.metadata["setting"])
    for f in fields(RenderJob) if "setting" in f.metadata)
SETTINGS_BY_NAME: dict[str, Setting] = {each.name: each for each in SETTINGS}


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
