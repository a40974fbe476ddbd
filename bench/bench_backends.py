"""Benchmark: the diffusers backend's own overhead, and a warm worker against a cold load per job.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_backends [--runs 5] [--size 64] [--steps 4]

On this CPU with the tiny random-weight SDXL + ControlNet models the tests use
(built offline into a temp models dir), it prints medians of:

* baseline: the bare diffusers pipeline call for one image (what any SDXL
  img2img costs, whoever drives it);
* the backend's generate() for one image, and its overhead over the baseline
  (init/control PNGs read, scheduler set, result encoded as PNG);
* a job's AI step with the pipeline kept loaded by the resident AI worker
  (warm) and with a fresh worker per job (cold: started, torch imported,
  models loaded), and their ratio;
* drawing the control images at 1024x1024 (OpenPose skeleton, depth from Z).

Every figure is measured in the same run, so the ratios hold on any machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from pod_setup import ai_channel  # noqa: E402
from pod_setup.ai_worker import Pipelines  # noqa: E402
from pod_setup.backends import create  # noqa: E402
from pod_setup.backends.diffusers_sdxl import models_dir  # noqa: E402
from pod_setup.control_images import depth_to_image, draw_openpose  # noqa: E402
from remote.core.jobspec import RenderJob  # noqa: E402
from tests.fixtures.tiny_diffusers import build_tiny_models  # noqa: E402


def median_seconds(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    import torch
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    os.environ["POSEFACTORY_MODELS_DIR"] = str(build_tiny_models(folder / "models"))
    # The resident AI worker runs with this Python (the pod's: its diffusers venv), in a workspace of the bench's own.
    os.environ.setdefault("POSEFACTORY_AI_PYTHON", sys.executable)
    os.environ["WORKSPACE"] = str(folder / "workspace")
    size = args.size
    ys, xs = np.mgrid[0:size, 0:size]
    init = folder / "render.png"
    Image.fromarray(np.stack([xs * 3 % 256, ys * 3 % 256, np.full_like(xs, 90)], -1).astype(np.uint8)).save(init)
    joints = [(size / 2, size * (0.1 + 0.04 * i)) if i < 14 else None for i in range(18)]
    controls = {"openpose": folder / "control-openpose.png", "depth": folder / "control-depth.png"}
    Image.fromarray(draw_openpose([joints], size, size)).save(controls["openpose"])
    Image.fromarray(np.repeat((ys * 3 % 256).astype(np.uint8)[..., None], 3, -1)).save(controls["depth"])

    def job(control: str) -> RenderJob:
        made = RenderJob(blend_path="-", output_dir="-", prompt="a knight", backend="diffusers", width=size,
                         height=size, steps=args.steps, strength=0.25, seed=3, control=control)
        made.validate()
        return made

    def ai_step(control: str) -> None:
        backend = create(job(control))
        backend.check_ready()
        backend.generate(init, controls)

    rows = []
    for control in ("none", "openpose+depth"):
        ai_step(control)  # load once, and warm torch up
        backend = create(job(control))
        backend.check_ready()
        pipeline, _ = Pipelines().pipeline(job(control), models_dir())  # the baseline: in this process, no worker
        image = Image.open(init).convert("RGB")
        extra = {}
        if control != "none":
            extra = {"control_image": [Image.open(controls[k]).convert("RGB") for k in ("openpose", "depth")],
                     "controlnet_conditioning_scale": [1.0, 1.0]}

        def bare() -> None:
            pipeline(prompt="a knight", image=image, strength=0.75, num_inference_steps=args.steps,
                     guidance_scale=7.0, generator=torch.Generator().manual_seed(3), height=size, width=size,
                     output_type="pil", **extra)

        baseline = median_seconds(bare, args.runs)
        generate = median_seconds(lambda: backend.generate(init, controls), args.runs)
        warm = median_seconds(lambda: ai_step(control), args.runs)

        def cold() -> None:
            ai_channel.stop()  # a cold worker: started, torch imported, models loaded
            ai_step(control)

        cold_s = median_seconds(cold, args.runs)
        rows.append((control, baseline, generate, warm, cold_s))

    big = 1024
    big_joints = [(big / 2 + 40 * (i % 3), big * (0.1 + 0.04 * i)) if i < 18 else None for i in range(18)]
    openpose_s = median_seconds(lambda: draw_openpose([big_joints], big, big), args.runs)
    z = (2 + np.add.outer(np.linspace(0, 3, big), np.linspace(0, 1, big))).astype(np.float32)  # a smooth scene
    depth_s = median_seconds(lambda: depth_to_image(z, 100.0), args.runs)
    ai_channel.stop()  # the bench's worker goes with the bench

    print(f"diffusers backend, tiny models, {size}x{size}, {args.steps} steps (strength 0.75: "
          f"{int(args.steps * 0.75)} denoised), torch threads {torch.get_num_threads()}, medians of {args.runs}")
    print("| control | bare pipeline call | backend generate() | overhead | AI step, warm worker | AI step, cold load | cold / warm |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for control, baseline, generate, warm, cold_s in rows:
        print(f"| {control} | {baseline * 1000:.0f} ms | {generate * 1000:.0f} ms | "
              f"{(generate - baseline) * 1000:+.0f} ms ({generate / baseline:.2f} x) | {warm * 1000:.0f} ms | "
              f"{cold_s * 1000:.0f} ms | {cold_s / warm:.1f} x |")
    print(f"control images at {big}x{big}: OpenPose draw {openpose_s * 1000:.0f} ms, "
          f"depth from Z {depth_s * 1000:.0f} ms (the PNGs are written by Blender's image API on the pod)")


if __name__ == "__main__":
    main()
