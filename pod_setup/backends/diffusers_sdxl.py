"""Backend ``diffusers``: SDXL image-to-image on the pod's own GPU, with optional ControlNet.

Weights live under ``$POSEFACTORY_MODELS_DIR`` (default ``$WORKSPACE/models``)
in diffusers' ``save_pretrained`` layout: ``sdxl/`` (the SDXL pipeline),
``controlnet-openpose/`` and ``controlnet-depth/`` (ControlNet models),
downloaded by ``setup_pod.sh`` (the pod never fetches weights mid-job).

The models are loaded and run by the resident AI worker (``ai_worker.py``,
reached through ``ai_channel.py``), a process of its own with the diffusers
venv's own Python: never inside Blender's Python, where importing accelerate
dies on a circular import, and loaded once for every job and item the pod
runs until the worker's idle limit.

"Keep Render" (the job's ``strength``, Stability's image_strength) becomes
diffusers' ``strength = 1 - keep``; a job that would run no denoising step is
refused by the job's validation, before anything renders.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from remote.core.jobspec import RenderJob, denoising_steps

from .. import ai_channel
from ..job_errors import EXIT_AI, EXIT_NO_KEY, JobFailed
from .base import Variation

log = logging.getLogger(__name__)

BASE_MODEL = "sdxl"
CONTROLNET_MODELS = {"openpose": "controlnet-openpose", "depth": "controlnet-depth"}


def models_dir() -> Path:
    explicit = os.environ.get("POSEFACTORY_MODELS_DIR")
    return Path(explicit) if explicit else Path(os.environ.get("WORKSPACE", "/workspace")) / "models"


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self.controls = [] if job.control == "none" else job.control.split("+")
        self.root = models_dir()
        self.load_seconds = 0.0
        self.loaded_from_cache = True
        self.device = ""
        self.worker_loads = 0
        self.ready = False

    def _paths(self) -> list[tuple[str, Path]]:
        names = [BASE_MODEL, *(CONTROLNET_MODELS[kind] for kind in self.controls)]
        return [(name, self.root / name) for name in names]

    def _ask(self, message: dict[str, Any], code: int, what: str) -> dict[str, Any]:
        job = {k: v for k, v in asdict(self.job).items()}
        try:
            answer = ai_channel.request({**message, "job": job, "models": str(self.root)})
        except ai_channel.ChannelError as exc:
            raise JobFailed(code, f"{what}: {exc}") from None
        if answer.get("ok") is not True:
            raise JobFailed(code, f"{what}: {str(answer.get('error', 'no reason given'))[:600]}")
        self.device = str(answer.get("device", self.device))[:40]
        self.worker_loads = int(answer.get("loads", 0) or 0)
        return answer

    def check_ready(self) -> None:
        """The weights are there and loaded in the worker; fails before the render is paid for."""
        missing = [f"{name} ({path})" for name, path in self._paths() if not (path / _marker(name)).is_file()]
        if missing:
            raise JobFailed(EXIT_NO_KEY, f"diffusers backend: model(s) missing: {', '.join(missing)}; "
                                         "run setup_pod.sh with POSEFACTORY_DIFFUSERS=1 on the pod to download them")
        answer = self._ask({"op": "load"}, EXIT_NO_KEY, "diffusers backend")
        self.load_seconds = float(answer.get("load_seconds", 0.0) or 0.0)
        self.loaded_from_cache = answer.get("cached") is True
        self.ready = True

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        if not self.ready:
            self.check_ready()
        for kind in self.controls:
            if kind not in controls:
                raise JobFailed(EXIT_AI, f"diffusers backend: no {kind} control image was written for this render")
        with tempfile.TemporaryDirectory(prefix="posefactory-ai-") as out:
            answer = self._ask({"op": "generate", "init": str(init_png), "out": out,
                                "controls": {kind: str(path) for kind, path in controls.items() if kind in self.controls}},
                               EXIT_AI, "AI step failed")
            variations = []
            for entry in answer.get("variations") or []:
                try:
                    file, index, seed = Path(str(entry["file"])), int(entry["index"]), int(entry["seed"])
                except (KeyError, TypeError, ValueError):
                    raise JobFailed(EXIT_AI, "AI step failed: the AI worker's answer is malformed") from None
                if file.parent != Path(out) or not file.is_file():  # the worker writes only where it was told
                    raise JobFailed(EXIT_AI, "AI step failed: the AI worker returned a file outside its folder")
                variations.append(Variation(index, seed, "SUCCESS", file.read_bytes()))
        if len(variations) != self.job.variations:
            raise JobFailed(EXIT_AI, f"AI step failed: the AI worker returned {len(variations)} of {self.job.variations} images")
        return variations

    def stats(self) -> dict[str, Any]:
        return {"ai_model_load_seconds": round(self.load_seconds, 3), "ai_models_cached": self.loaded_from_cache,
                "ai_device": self.device, "ai_denoising_steps": denoising_steps(self.job),
                "ai_worker_loads": self.worker_loads}


def _marker(name: str) -> str:
    """The file save_pretrained writes first-level: a pipeline's model_index.json, a model's config.json."""
    return "model_index.json" if name == BASE_MODEL else "config.json"
