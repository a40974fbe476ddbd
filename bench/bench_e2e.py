"""End-to-end overhead of a render job on the built-in local host.

    .venv/bin/python -m bench.bench_e2e [--samples 40] [--runs 2]

Measures, in one run on the sample scene:
* the bare headless render: pod_setup/render_job.py run directly (backend none);
* the same job through the whole pipeline (pack-free CLI path: set-up check,
  content-addressed upload, pod agent, polling, download), first submission;
* a second submission of the unchanged scene (bytes of scene moved: 0 expected).
Prints wall times, the ratio to the bare render and the absolute overhead.
Targets: ≤ 1.15x the bare render for a ~10 s render, ≤ 2 s overhead on loopback.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40, help="Cycles samples (40 ≈ 10 s at 1024² on 2 cores)")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pf-bench-e2e-"))
    os.environ["POSEFACTORY_DATA_DIR"] = str(work / "data")
    os.environ["POSEFACTORY_BPY_PYTHON"] = sys.executable
    from remote.core.jobspec import RenderJob
    from remote.jobs.pipeline import run_job

    scene = work / "scene.blend"
    subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene),
                    "--samples", str(args.samples)], check=True, capture_output=True)

    bare = []
    for n in range(args.runs):
        job = RenderJob(blend_path=str(scene), output_dir=str(work / f"bare-{n}"), prompt="bench", backend="none")
        job_file = work / f"bare-{n}.json"
        job.write(job_file)
        started = time.monotonic()
        subprocess.run([sys.executable, str(REPO / "pod_setup" / "render_job.py"), str(job_file)], check=True,
                       capture_output=True)
        bare.append(time.monotonic() - started)
    render_s = json.loads((work / "bare-0" / "manifest.json").read_text())["render_seconds"]

    def submit(tag: str) -> tuple[float, list[str]]:
        messages: list[str] = []
        started = time.monotonic()
        result = run_job(RenderJob(blend_path="", output_dir="", prompt="bench", backend="none"), scene,
                         host="local", hosts_file=None, local_output_dir=work / "out", api_key=None,
                         progress=lambda p: messages.append(p.message), cancel=threading.Event(),
                         record_path=work / f"{tag}.json")
        elapsed = time.monotonic() - started
        assert result.status == "done", result.error
        return elapsed, messages

    first, _ = submit("first")
    repeats = [submit(f"again-{n}") for n in range(args.runs)]
    again = [elapsed for elapsed, _ in repeats]
    moved = [m for _, messages in repeats for m in messages if m.startswith("scene:")]
    bare_median = statistics.median(bare)
    print(f"Blender's own render time:          {render_s:7.2f} s")
    print(f"bare headless job (median of {args.runs}):    {bare_median:7.2f} s")
    print(f"pipeline, first submission:         {first:7.2f} s   ratio {first / bare_median:5.2f}x   "
          f"overhead {first - bare_median:+.2f} s")
    print(f"pipeline, unchanged re-submit (med): {statistics.median(again):7.2f} s   ratio "
          f"{statistics.median(again) / bare_median:5.2f}x   overhead {statistics.median(again) - bare_median:+.2f} s")
    print(f"scene bytes moved on re-submit:     {', '.join(moved)}")


if __name__ == "__main__":
    main()
