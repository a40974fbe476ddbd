"""Backend ``diffusers``: SDXL image-to-image on the pod's own GPU, with optional ControlNet.

Weights live under ``$POSEFACTORY_MODELS_DIR`` (default ``$WORKSPACE/models``)
in diffusers' ``save_pretrained`` layout: ``sdxl/`` (the SDXL pipeline),
``controlnet-openpose/`` and ``controlnet-depth/`` (ControlNet models). They
are loaded with ``local_files_only=True`` (the pod never fetches weights
mid-job; ``setup_pod.sh`` downloads them) and kept in this module's cache, so
the warm worker (``render_job.py --worker``) loads them once for every job and
batch item it runs. The fp16 variant is used when its files are there.

torch and diffusers come from the CUDA venv ``setup_pod.sh`` builds under
``$WORKSPACE/venv-diffusers`` from the render job's own Python (Blender's
bundled one for a Blender binary): its site-packages for this Python's
version goes on ``sys.path`` before the import, so the backend runs inside the
Blender process, next to the render (``POSEFACTORY_DIFFUSERS_SITE`` names
another folder; a Python that has them installed needs neither).

"Keep Render" (the job's ``strength``, Stability's image_strength) becomes
diffusers' ``strength = 1 - keep``; a job that would run no denoising step is
refused by the job's validation, before anything renders.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remote.core.jobspec import MAX_SEED, RenderJob, denoising_steps

from ..job_errors import EXIT_AI, EXIT_NO_KEY, JobFailed
from . import Variation

log = logging.getLogger(__name__)

BASE_MODEL = "sdxl"
CONTROLNET_MODELS = {"openpose": "controlnet-openpose", "depth": "controlnet-depth"}
# Stability's sampler names -> diffusers schedulers (the rest keep the model's own scheduler).
SCHEDULERS = {
    "DDIM": "DDIMScheduler", "K_EULER": "EulerDiscreteScheduler", "K_EULER_ANCESTRAL": "EulerAncestralDiscreteScheduler",
    "K_DPMPP_2M": "DPMSolverMultistepScheduler", "K_HEUN": "HeunDiscreteScheduler", "K_LMS": "LMSDiscreteScheduler",
    "DDPM": "DDPMScheduler", "K_DPM_2": "KDPM2DiscreteScheduler", "K_DPM_2_ANCESTRAL": "KDPM2AncestralDiscreteScheduler",
}

# Loaded models, kept for the life of the process (the warm worker): key -> model or pipeline.
_cache: dict[tuple, Any] = {}


def models_dir() -> Path:
    explicit = os.environ.get("POSEFACTORY_MODELS_DIR")
    return Path(explicit) if explicit else Path(os.environ.get("WORKSPACE", "/workspace")) / "models"


def diffusers_site() -> Path | None:
    """site-packages of the venv setup_pod.sh built for this Python's version, if there is one."""
    if os.environ.get("POSEFACTORY_DIFFUSERS_SITE"):
        return Path(os.environ["POSEFACTORY_DIFFUSERS_SITE"])
    workspace = Path(os.environ.get("WORKSPACE", "/workspace"))
    venv = Path(os.environ.get("POSEFACTORY_DIFFUSERS_VENV") or workspace / "venv-diffusers")
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    return site if site.is_dir() else None


def _import_torch_and_diffusers() -> tuple[Any, Any]:
    site = diffusers_site()
    if site is not None and str(site) not in sys.path:
        sys.path.insert(1, str(site))
    import diffusers
    import torch

    return torch, diffusers


def _variant(path: Path) -> str | None:
    """"fp16" when setup_pod.sh fetched the fp16 files, else the default weights."""
    return "fp16" if any(path.rglob("*.fp16.safetensors")) else None


def clear_cache() -> None:
    """Drop every loaded model (tests; a worker that must free the GPU)."""
    _cache.clear()


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self.controls = [] if job.control == "none" else job.control.split("+")
        self.root = models_dir()
        self.load_seconds = 0.0
        self.loaded_from_cache = True
        self.device = ""
        self.pipeline: Any = None

    def _paths(self) -> list[tuple[str, Path]]:
        names = [BASE_MODEL, *(CONTROLNET_MODELS[kind] for kind in self.controls)]
        return [(name, self.root / name) for name in names]

    def check_ready(self) -> None:
        """The weights are there and load (once per worker); fails before the render is paid for."""
        missing = [f"{name} ({path})" for name, path in self._paths() if not (path / _marker(name)).is_file()]
        if missing:
            raise JobFailed(EXIT_NO_KEY, f"diffusers backend: model(s) missing: {', '.join(missing)}; "
                                         "run setup_pod.sh with POSEFACTORY_DIFFUSERS=1 on the pod to download them")
        try:
            torch, diffusers = _import_torch_and_diffusers()
        except ImportError as exc:
            raise JobFailed(EXIT_NO_KEY, f"diffusers backend: {exc.name or exc} is not installed on the pod; "
                                         "run setup_pod.sh with POSEFACTORY_DIFFUSERS=1") from None
        started = time.monotonic()
        try:
            self.pipeline = self._pipeline(torch, diffusers)
        except (OSError, ValueError, RuntimeError) as exc:
            raise JobFailed(EXIT_NO_KEY, f"diffusers backend: cannot load the models from {self.root}: "
                                         f"{str(exc).splitlines()[0][:300]}") from None
        self.load_seconds = time.monotonic() - started

    def _pipeline(self, torch: Any, diffusers: Any) -> Any:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        base_path = self.root / BASE_MODEL
        base = self._cached(("base", str(base_path), self.device), lambda: diffusers.StableDiffusionXLImg2ImgPipeline
                            .from_pretrained(base_path, dtype=dtype, variant=_variant(base_path),
                                             local_files_only=True).to(self.device))
        if not self.controls:
            return base
        nets = []
        for kind in self.controls:
            path = self.root / CONTROLNET_MODELS[kind]
            nets.append(self._cached(("controlnet", str(path), self.device), lambda path=path: diffusers.ControlNetModel
                                     .from_pretrained(path, dtype=dtype, variant=_variant(path),
                                                      local_files_only=True).to(self.device)))
        controlnet = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
        # The base pipeline's modules are shared, not copied: one SDXL in memory for every control type.
        components = {k: v for k, v in base.components.items() if k != "controlnet"}
        return diffusers.StableDiffusionXLControlNetImg2ImgPipeline(**components, controlnet=controlnet)

    def _cached(self, key: tuple, load: Any) -> Any:
        if key not in _cache:
            self.loaded_from_cache = False
            log.info("diffusers: loading %s from %s on %s", key[0], key[1], key[2])
            _cache[key] = load()
        return _cache[key]

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        if self.pipeline is None:
            self.check_ready()
        torch, diffusers = _import_torch_and_diffusers()
        from PIL import Image

        job = self.job
        init = Image.open(init_png).convert("RGB")
        control_images = []
        for kind in self.controls:
            if kind not in controls:
                raise JobFailed(EXIT_AI, f"diffusers backend: no {kind} control image was written for this render")
            image = Image.open(controls[kind]).convert("RGB")
            if image.size != init.size:
                log.warning("%s control image is %s, the render %s: resized", kind, image.size, init.size)
                image = image.resize(init.size, Image.Resampling.BILINEAR)
            control_images.append(image)
        self._set_scheduler(diffusers)
        first_seed = job.seed or random.randint(1, MAX_SEED - job.batch)
        extra: dict[str, Any] = {}
        if control_images:
            scales = {"openpose": job.openpose_scale, "depth": job.depth_scale}
            extra = {"control_image": control_images if len(control_images) > 1 else control_images[0],
                     "controlnet_conditioning_scale": ([scales[k] for k in self.controls] if len(self.controls) > 1
                                                       else scales[self.controls[0]])}
        log.info("diffusers: %d variation(s), %d of %d steps denoised, control %s, on %s",
                 job.batch, denoising_steps(job), job.steps, job.control, self.device)
        variations = []
        for n in range(1, job.batch + 1):
            seed = first_seed + n - 1
            generator = torch.Generator(device="cpu").manual_seed(seed)
            try:
                result = self.pipeline(
                    prompt=job.prompt, negative_prompt=job.negative_prompt or None, image=init,
                    strength=1.0 - job.strength, num_inference_steps=job.steps, guidance_scale=job.cfg_scale,
                    generator=generator, height=init.height, width=init.width, output_type="pil", **extra)
            except (RuntimeError, ValueError) as exc:  # CUDA out of memory lands here too
                raise JobFailed(EXIT_AI, f"AI step failed: diffusers: {str(exc).splitlines()[0][:300]}") from None
            variations.append(Variation(n, seed, "SUCCESS", _png(result.images[0])))
        return variations

    def _set_scheduler(self, diffusers: Any) -> None:
        default_key = ("scheduler", id(self.pipeline.unet))
        default = _cache.setdefault(default_key, self.pipeline.scheduler)
        name = SCHEDULERS.get(self.job.sampler)
        if name is None:
            self.pipeline.scheduler = default
            return
        self.pipeline.scheduler = getattr(diffusers, name).from_config(default.config)

    def stats(self) -> dict[str, Any]:
        return {"ai_model_load_seconds": round(self.load_seconds, 3), "ai_models_cached": self.loaded_from_cache,
                "ai_device": self.device, "ai_denoising_steps": denoising_steps(self.job)}


def _marker(name: str) -> str:
    """The file save_pretrained writes first-level: a pipeline's model_index.json, a model's config.json."""
    return "model_index.json" if name == BASE_MODEL else "config.json"


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
