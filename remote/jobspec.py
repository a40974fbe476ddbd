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

from .batch import BatchSpecError, parse_cameras, parse_poses

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
BACKENDS: tuple[str, ...] = ("stability", "none")
RENDER_DEVICES: tuple[str, ...] = ("auto", "gpu", "cpu")
# width x height 0x0: the SDXL size nearest the camera's aspect, chosen on the pod.
AUTO_SIZE = (0, 0)

MAX_SEED = 4_294_967_295
PROMPT_MAX_CHARS = 2000


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
    # Batches (remote/batch.py): items = poses × cameras, each with `batch` variations.
    poses: str = "current"  # current | markers | assets | frames:A-B[:S] | NAME,NAME…
    cameras: str = "active"  # active | collection:NAME | NAME,NAME…
    only_items: list[str] = field(default_factory=list)  # non-empty: render just these items (the rest are reused)
    # Render fidelity (issue 9): where the pod renders and how the init image is made.
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
        if (self.width, self.height) not in SDXL_SIZES and (self.width, self.height) != AUTO_SIZE:
            valid = ", ".join(f"{w}x{h}" for w, h in SDXL_SIZES)
            raise JobValidationError(f"size: {self.width}x{self.height} is not an SDXL size ({valid}) "
                                     f"nor 0x0 (the one nearest the camera's aspect)")
        _check_range("strength", self.strength, 0.0, 1.0)
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
        if self.backend not in BACKENDS:
            raise JobValidationError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
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


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise JobValidationError(f"{name}: {value!r} is outside {low}..{high}")


def _check_int_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobValidationError(f"{name}: {value!r} must be a whole number in {low}..{high}")
