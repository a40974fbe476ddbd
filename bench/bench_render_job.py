"""Benchmark: what the pod's render job costs on top of Blender's own render.

    .venv/bin/python -m bench.bench_render_job [--samples 4] [--jobs 3]

Runs the real render job (real Blender, the bpy module) on the sample scene
against our Stability stand-in on 127.0.0.1, and prints:

* job overhead = job wall time minus Blender's render time, batch 1 and 4;
* Blender start-up per job (a bare ``import bpy`` in a fresh process);
* a cold job (one Blender per job) against the pod's warm Blender
  (``render_client.py``, as ``pod_agent.sh`` runs every job: one Blender
  process runs them all): per-job overhead beyond Blender's render and the AI
  step, cold vs warm (target: warm <= 0.5 s), and the wall per job as a ratio.

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
RENDER_CLIENT = REPO / "pod_setup" / "render_client.py"


def start_stand_in() -> StabilityStandIn:
    stand_in = StabilityStandIn(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(stand_in))
    stand_in.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return stand_in


def write_job(folder: Path, name: str, scene: Path, stand_in: StabilityStandIn, batch: int) -> Path:
    job = RenderJob(blend_path=str(scene), output_dir=str(folder / name), prompt="a brave knight, studio light",
                    api_base_url=stand_in.base_url, variations=batch, seed=1, steps=20)
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


def overhead_s(wall: float, manifest: dict) -> float:
    """What the job cost beyond Blender's render and the AI step."""
    return wall - manifest["render_seconds"] - manifest["ai_seconds"]


def warm_jobs(job_paths: list[Path], env: dict[str, str], workspace: Path) -> list[tuple[float, dict]]:
    """Each job through render_client.py, as pod_agent.sh runs it; the first one starts the warm Blender."""
    env = dict(env, WORKSPACE=str(workspace), POSEFACTORY_RUNNER="python", POSEFACTORY_EXECUTABLE=sys.executable,
               POSEFACTORY_WARM_IDLE_S="10")
    runs = []
    for path in job_paths:
        # The key as pod_agent.sh hands it over: a file the job reads and deletes (never the warm Blender's env).
        secret = path.parent / ".secret-STABILITY_API_KEY"
        secret.write_text(env["STABILITY_API_KEY"])
        secret.chmod(0o600)
        started = time.monotonic()
        subprocess.run([sys.executable, str(RENDER_CLIENT), str(path)], env=env, check=True, capture_output=True)
        runs.append((time.monotonic() - started, manifest_of(path)))
    return runs


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
        cold = [cold_job(write_job(folder, f"cold{n}", scene, stand_in, 1), env) for n in range(args.jobs)]
        warm = warm_jobs([write_job(folder, f"warm{n}", scene, stand_in, 1) for n in range(args.jobs + 1)], env,
                         folder / "workspace")
        starting, warm = warm[0], warm[1:]  # the first one starts the warm Blender: a fresh pod's first job
        cold_wall, warm_wall = statistics.mean(w for w, _ in cold), statistics.mean(w for w, _ in warm)
        cold_over = statistics.mean(overhead_s(*run) for run in cold)
        warm_over = statistics.mean(overhead_s(*run) for run in warm)
        print(f"{args.jobs} jobs, batch 1: overhead beyond render + AI step: cold {cold_over:.2f} s/job "
              f"(one Blender each), warm {warm_over:.2f} s/job (the warm Blender; target <= 0.5 s); "
              f"the job that starts it: {overhead_s(*starting):.2f} s")
        print(f"wall per job: cold {cold_wall:.2f} s, warm {warm_wall:.2f} s; warm/cold = {warm_wall / cold_wall:.2f}, "
              f"saves {cold_wall - warm_wall:.2f} s/job")

if __name__ == "__main__":
    main()
