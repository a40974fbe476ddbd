"""Benchmark: a pose batch against the same items as separate jobs.

    .venv/bin/python -m bench.bench_batch [--items 12] [--samples 1]

Both run the whole pipeline on the built-in ``local`` host (a login shell
standing in for a pod) with real Blender (the bpy module) and the Stability
stand-in on 127.0.0.1, on the rigged sample scene: the batch is one job
over ``frames:1-N`` (each frame a pose), the baseline is N jobs of one frame
each. Prints, all measured in the same run:

* wall-time ratio: N separate jobs / one batch;
* per-item overhead: (pod-side batch wall − Σ item render times) / items,
  and the same end to end (the laptop's wall);
* time to the first image back on the laptop against the batch's total,
  and against one item's time (wall / items).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from bench.bench_render_job import start_stand_in  # noqa: E402
from remote.core.jobspec import RenderJob  # noqa: E402
from remote.jobs.pipeline import run_job  # noqa: E402
from remote.jobs.state import JobProgress  # noqa: E402


def job_for(stand_in, poses: str, samples: int) -> RenderJob:
    return RenderJob(blend_path="", output_dir="", prompt="a brave knight, studio light", api_base_url=stand_in.base_url,
                     seed=1, steps=20, render_samples=samples, poses=poses)


def submit(job: RenderJob, scene: Path, results: Path, stand_in, on_progress=None):
    result = run_job(job, scene, host="local", hosts_file=None, local_output_dir=results, api_key=stand_in.api_key,
                     progress=on_progress or (lambda progress: None), cancel=threading.Event(), fresh=True)
    if result.status != "done":
        raise SystemExit(f"bench: job failed: {result.error}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    os.environ.update(POSEFACTORY_DATA_DIR=str(work / "data"), POSEFACTORY_BPY_PYTHON=sys.executable)
    scene = work / "sample.blend"
    subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene), "--samples", "1"],
                   check=True, capture_output=True)
    stand_in = start_stand_in()
    frames = f"frames:1-{args.items}"
    # Warm-up: the local pod's set-up and the scene's upload are paid once, by neither side.
    submit(job_for(stand_in, "frames:1-1", args.samples), scene, work / "warm", stand_in)

    results = work / "batch"
    first_back: list[float] = []

    def watch(progress: JobProgress) -> None:
        if not first_back and any(results.glob("*/*/ai-render-1.png")):
            first_back.append(time.monotonic())

    batch_started = time.monotonic()
    batch = submit(job_for(stand_in, frames, args.samples), scene, results, stand_in, watch)
    batch_wall = time.monotonic() - batch_started
    items = batch.manifest["items"]
    render_sum = sum(item["render_seconds"] for item in items)
    pod_wall = batch.manifest["wall_seconds"]

    started = time.monotonic()
    for frame in range(1, args.items + 1):
        submit(job_for(stand_in, f"frames:{frame}-{frame}", args.samples), scene, work / "separate", stand_in)
    separate_wall = time.monotonic() - started

    per_item = batch_wall / args.items
    first = first_back[0] - batch_started if first_back else float("nan")
    print(f"items: {args.items} (frames 1-{args.items}, Cycles {args.samples} sample(s), 1024x1024, AI step: stand-in)")
    print(f"batch wall: {batch_wall:.2f}s (pod-side job {pod_wall:.2f}s, Σ item renders {render_sum:.2f}s)")
    print(f"separate jobs wall: {separate_wall:.2f}s -> ratio {separate_wall / batch_wall:.2f}x")
    print(f"per-item overhead: pod-side {(pod_wall - render_sum) / args.items:.3f}s, "
          f"end to end {(batch_wall - render_sum) / args.items:.3f}s")
    print(f"first image back: {first:.2f}s = {first / batch_wall:.2f} of the batch, {first / per_item:.2f}x one item's time"
          f" (one item's render alone: {render_sum / args.items:.2f}s)")
    single_job = separate_wall / args.items
    print(f"first image back vs a one-item job end to end ({single_job:.2f}s): {first / single_job:.2f}x "
          f"(target <= 1.5x)")


if __name__ == "__main__":
    main()
