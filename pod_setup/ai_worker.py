"""The resident AI worker: SDXL (+ ControlNet) loaded once, in its own process and venv.

    <venv>/bin/python ai_worker.py --socket PATH [--idle-s 1800]

Diffusers never runs inside Blender's Python (importing accelerate there
dies on a circular import, and every job would load the weights again):
the render job hands each image to this process over a Unix socket
(``ai_channel.py`` is the client) and gets files back. The pipelines stay in
memory, keyed by model folder and ControlNet set, for the life of the
process; it stops itself after ``--idle-s`` without a request. No key ever
reaches it (the diffusers backend needs none).

One request per connection, one JSON line each way:

    {"op": "load", "job": {...RenderJob...}, "models": DIR}
        -> {"ok": true, "load_seconds": 1.2, "cached": false, "device": "cuda", "loads": 1}
    {"op": "generate", "job": {...}, "models": DIR, "init": PNG, "controls": {"depth": PNG}, "out": DIR}
        -> {"ok": true, "variations": [{"index": 1, "seed": 11, "file": "DIR/variation-1.png"}], ...}
    {"op": "stats"} -> {"ok": true, "loads": 1, "requests": 3, "pid": 123}
    {"op": "stop"}  -> the same, then the worker exits (tests; freeing the GPU)

A failure answers ``{"ok": false, "error": "…"}``: the exception's own type
and message, with the package versions for an import or load error.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

# The pod code: remote/ and pod_setup/ are siblings, as on a pod.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pod_setup import resident
from remote.core.jobspec import MAX_SEED, RenderJob, denoising_steps

log = logging.getLogger("posefactory.ai_worker")
BASE_MODEL = "sdxl"
CONTROLNET_MODELS = {"openpose": "controlnet-openpose", "depth": "controlnet-depth"}
# Stability's sampler names -> diffusers schedulers (the rest keep the model's own scheduler).
SCHEDULERS = {
    "DDIM": "DDIMScheduler", "K_EULER": "EulerDiscreteScheduler", "K_EULER_ANCESTRAL": "EulerAncestralDiscreteScheduler",
    "K_DPMPP_2M": "DPMSolverMultistepScheduler", "K_HEUN": "HeunDiscreteScheduler", "K_LMS": "LMSDiscreteScheduler",
    "DDPM": "DDPMScheduler", "K_DPM_2": "KDPM2DiscreteScheduler", "K_DPM_2_ANCESTRAL": "KDPM2AncestralDiscreteScheduler",
}
MAX_REQUEST_BYTES = 1 << 20


class WorkerError(Exception):
    pass


def versions() -> str:
    from importlib import metadata

    found = []
    for name in ("torch", "diffusers", "transformers", "accelerate"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def _variant(path: Path) -> str | None:
    """"fp16" when setup_pod.sh fetched the fp16 files, else the default weights."""
    return "fp16" if any(path.rglob("*.fp16.safetensors")) else None


class Pipelines:
    """The loaded models of this process, and the generation with them."""

    def __init__(self) -> None:
        self.cache: dict[tuple, Any] = {}
        self.loads = 0
        self.torch: Any = None
        self.diffusers: Any = None
        self.device = ""

    def _import(self) -> None:
        if self.diffusers is not None:
            return
        try:
            import diffusers
            import torch
        except Exception as exc:  # an ImportError, or what a broken package raises while importing
            raise WorkerError(f"cannot import diffusers: {type(exc).__name__}: {exc} ({versions()})") from None
        self.torch, self.diffusers = torch, diffusers
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def pipeline(self, job: RenderJob, root: Path) -> tuple[Any, bool]:
        """The pipeline for ``job``'s ControlNet set, and whether every model was in memory already."""
        self._import()
        controls = [] if job.control == "none" else job.control.split("+")
        torch, diffusers, device = self.torch, self.diffusers, self.device
        dtype = torch.float16 if device == "cuda" else torch.float32
        cached = True

        def load(key: tuple, make: Any) -> Any:
            nonlocal cached
            if key not in self.cache:
                cached = False
                log.info("loading %s from %s on %s", key[0], key[1], device)
                try:
                    self.cache[key] = make()
                except Exception as exc:
                    raise WorkerError(f"cannot load {key[0]} from {key[1]}: {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0][:300] if str(exc) else ''} ({versions()})") from None
                self.loads += 1
            return self.cache[key]

        base_path = root / BASE_MODEL
        base = load(("sdxl", str(base_path)), lambda: diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(
            base_path, dtype=dtype, variant=_variant(base_path), local_files_only=True).to(device))
        if not controls:
            return base, cached
        nets = [load(("controlnet", str(root / CONTROLNET_MODELS[kind])), lambda path=root / CONTROLNET_MODELS[kind]:
                     diffusers.ControlNetModel.from_pretrained(path, dtype=dtype, variant=_variant(path),
                                                               local_files_only=True).to(device))
                for kind in controls]
        controlnet = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
        # The base pipeline's modules are shared, not copied: one SDXL in memory for every control set.
        components = {k: v for k, v in base.components.items() if k != "controlnet"}
        return diffusers.StableDiffusionXLControlNetImg2ImgPipeline(**components, controlnet=controlnet), cached

    def generate(self, job: RenderJob, root: Path, init_png: Path, controls: dict[str, Path], out: Path) -> list[dict]:
        from PIL import Image

        pipeline, _ = self.pipeline(job, root)
        kinds = [] if job.control == "none" else job.control.split("+")
        init = Image.open(init_png).convert("RGB")
        control_images = []
        for kind in kinds:
            if kind not in controls:
                raise WorkerError(f"no {kind} control image was written for this render")
            image = Image.open(controls[kind]).convert("RGB")
            if image.size != init.size:
                log.warning("%s control image is %s, the render %s: resized", kind, image.size, init.size)
                image = image.resize(init.size, Image.Resampling.BILINEAR)
            control_images.append(image)
        self._set_scheduler(pipeline, job)
        first_seed = job.seed or random.randint(1, MAX_SEED - job.variations)
        extra: dict[str, Any] = {}
        if control_images:
            scales = {"openpose": job.openpose_scale, "depth": job.depth_scale}
            extra = {"control_image": control_images if len(control_images) > 1 else control_images[0],
                     "controlnet_conditioning_scale": [scales[k] for k in kinds] if len(kinds) > 1 else scales[kinds[0]]}
        log.info("%d variation(s), %d of %d steps denoised, control %s, on %s",
                 job.variations, denoising_steps(job), job.steps, job.control, self.device)
        out.mkdir(parents=True, exist_ok=True)
        variations = []
        for n in range(1, job.variations + 1):
            seed = first_seed + n - 1
            generator = self.torch.Generator(device="cpu").manual_seed(seed)
            try:
                result = pipeline(
                    prompt=job.prompt, negative_prompt=job.negative_prompt or None, image=init,
                    strength=1.0 - job.strength, num_inference_steps=job.steps, guidance_scale=job.cfg_scale,
                    generator=generator, height=init.height, width=init.width, output_type="pil", **extra)
            except (RuntimeError, ValueError) as exc:  # CUDA out of memory lands here too
                raise WorkerError(f"diffusers: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
            target = out / f"variation-{n}.png"
            result.images[0].save(target, format="PNG")
            variations.append({"index": n, "seed": seed, "file": str(target)})
        return variations

    def _set_scheduler(self, pipeline: Any, job: RenderJob) -> None:
        default = self.cache.setdefault(("scheduler", id(pipeline.unet)), pipeline.scheduler)
        name = SCHEDULERS.get(job.sampler)
        pipeline.scheduler = default if name is None else getattr(self.diffusers, name).from_config(default.config)


def answer(pipelines: Pipelines, request: dict[str, Any], requests: int) -> dict[str, Any]:
    op = request.get("op")
    if op in ("stats", "stop"):
        return {"ok": True, "loads": pipelines.loads, "requests": requests, "pid": os.getpid()}
    if op not in ("load", "generate"):
        raise WorkerError(f"unknown op {str(op)[:40]!r}")
    job = RenderJob.from_dict(request["job"])
    root = Path(request["models"])
    started = time.monotonic()
    if op == "load":
        _, cached = pipelines.pipeline(job, root)
        return {"ok": True, "load_seconds": round(time.monotonic() - started, 3), "cached": cached,
                "device": pipelines.device, "loads": pipelines.loads}
    variations = pipelines.generate(job, root, Path(request["init"]),
                                    {k: Path(v) for k, v in dict(request.get("controls") or {}).items()},
                                    Path(request["out"]))
    return {"ok": True, "variations": variations, "generate_seconds": round(time.monotonic() - started, 3),
            "device": pipelines.device, "loads": pipelines.loads}


def serve(path: str, idle_s: float) -> int:
    pipelines = Pipelines()
    server = resident.listen(path)
    log.info("ready on %s (pid %d)", path, os.getpid())
    requests = 0
    with contextlib.closing(resident.connections(server, path, idle_s)) as incoming:
        for connection in incoming:
            requests += 1
            with connection:
                data = resident.read_line(connection, MAX_REQUEST_BYTES)
                if not data.strip():
                    continue  # a client checking that the worker listens
                try:
                    reply = answer(pipelines, json.loads(data), requests)
                except WorkerError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:  # one bad request must not stop the worker the next job needs
                    log.exception("request failed")
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                if not reply["ok"]:
                    log.error("%s", reply["error"])
                try:
                    connection.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    log.warning("the client went away before the answer")
            if reply["ok"] and data.startswith(b'{"op": "stop"'):
                log.info("stopping, as asked")
                break
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="ai_worker.py")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--idle-s", type=float, default=1800.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ai_worker: %(message)s")
    return serve(args.socket, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
