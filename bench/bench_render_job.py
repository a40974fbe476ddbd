"""Benchmark: what the pod's render job costs on top of Blender's own render.

    .venv/bin/python -m bench.bench_render_job [--samples 4] [--jobs 3]

Runs the real render job (real Blender, the bpy module) on the sample scene
against our Stability stand-in on 127.0.0.1, and prints:

* job overhead = job wall time minus Blender's render time, batch 1 and 4;
* Blender start-up per job (a bare ``import bpy`` in a fresh process);
* a cold job (one process per job) against a warm worker (one process,
  ``render_job.py --worker``, running every job), per job, as a ratio.

Every figure is measured in the same run, so the ratios hold on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from remote.core.jobspec import RenderJob  # noqa: E402
from tests.fixtures.stability_server import StabilityStandIn, make_handler  # noqa: E402

RENDER_JOB = REPO / "pod_setup" / "render_job.py"


def start_stand_in() -> StabilityStandIn:
    stand_in = StabilityStandIn(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(stand_in))
    stand_in.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return stand_in


def write_job(folder: Path, name: str, scene: Path, stand_in: StabilityStandIn, batch: int) -> Path:
    job = RenderJob(blend_path=str(scene), output_dir=str(folder / name), prompt="a brave knight, studio light",
                    api_base_url=stand_in.base_url, batch=batch, seed=1, steps=20)
    path = folder / f"{name}.json"
    job.write(path)
    return path


def manifest_of(job_path: Path) -> dict:
    output_dir = Path(json.loads(job_path.read_text())["output_dir"])
    manifest = json.loads((output_dir / "manifest.json").read_text())
    if manifest["status"] != "done":
        raise SystemExit(f"bench: job {job_path} failed: {manifest.get('error')}")
    return manifest


def cold_job(job_path: Path, env: dict[str, str]) -> tuple[float, dict]:
    started = time.monotonic()
    subprocess.run([sys.executable, str(RENDER_JOB), str(job_path)], env=env, check=True, capture_output=True)
    return time.monotonic() - started, manifest_of(job_path)


def warm_jobs(job_paths: list[Path], env: dict[str, str]) -> float:
    started = time.monotonic()
    lines = "".join(f"{path}\n" for path in job_paths)
    subprocess.run([sys.executable, str(RENDER_JOB), "--worker"], input=lines, text=True, env=env, check=True,
                   capture_output=True)
    for path in job_paths:
        manifest_of(path)
    return time.monotonic() - started


def bpy_start_up_s(runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import bpy"], check=True, capture_output=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4, help="Cycles samples of the sample scene (default 4)")
    parser.add_argument("--jobs", type=int, default=3, help="jobs for the cold/warm comparison (default 3)")
    args = parser.parse_args()
    stand_in = start_stand_in()
    env = dict(os.environ, STABILITY_API_KEY=stand_in.api_key, WORKSPACE=tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="bench-render-job-") as tmp:
        folder = Path(tmp)
        scene = folder / "sample.blend"
        subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene),
                        "--samples", str(args.samples)], check=True, capture_output=True)
        print(f"sample scene: 1024x1024, Cycles CPU, {args.samples} samples; {os.cpu_count()} CPU cores")
        start_up = bpy_start_up_s(3)
        print(f"Blender start-up (fresh process, import bpy), median of 3: {start_up:.2f} s")
        for batch in (1, 4):
            wall, manifest = cold_job(write_job(folder, f"batch{batch}", scene, stand_in, batch), env)
            render_s = manifest["render_seconds"]
            overhead = wall - render_s
            print(f"batch {batch}: job wall {wall:.2f} s, Blender render {render_s:.2f} s, "
                  f"AI step {manifest['ai_seconds']:.2f} s, overhead {overhead:.2f} s "
                  f"({overhead / wall:.0%} of the job; start-up is {start_up / overhead:.0%} of the overhead)")
        cold = [cold_job(write_job(folder, f"cold{n}", scene, stand_in, 1), env)[0] for n in range(args.jobs)]
        warm_total = warm_jobs([write_job(folder, f"warm{n}", scene, stand_in, 1) for n in range(args.jobs)], env)
        cold_per_job, warm_per_job = statistics.mean(cold), warm_total / args.jobs
        print(f"{args.jobs} jobs, batch 1: cold {cold_per_job:.2f} s/job (one process each), "
              f"warm worker {warm_per_job:.2f} s/job (one process); warm/cold = {warm_per_job / cold_per_job:.2f}, "
              f"saves {cold_per_job - warm_per_job:.2f} s/job")


if __name__ == "__main__":
    main()
