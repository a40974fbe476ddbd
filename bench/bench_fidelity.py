"""Benchmark: render fidelity — render seconds per device, packing, re-submit bytes.

    .venv/bin/python -m bench.bench_fidelity [--samples 16] [--runs 3]

Prints, all measured in this run:

* render seconds of the sample scene per device kind this machine has
  (``render_device`` cpu, and gpu when Cycles finds one), median of ``--runs``;
* the cost of the init-image framing (a 16:9 sample rendered at its nearest
  size vs the same scene left at 1024x1024): a ratio;
* packing as the add-on does it (copy-save + ``pack_blend.py`` in a second
  process) for the sample scene carrying a 2048x2048 texture: seconds, bytes,
  and the share of that time spent making the bytes canonical;
* re-submit bytes: the scene packed again in a fresh process and uploaded
  through the pipeline to the ``local`` host a second time (target 0).
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

from remote.core.blendfile import canonicalize  # noqa: E402
from remote.core.jobspec import RenderJob  # noqa: E402
from remote.jobs.pipeline import run_job  # noqa: E402

PACK = REPO / "posefactory_addon" / "pack_blend.py"
RENDER_JOB = REPO / "pod_setup" / "render_job.py"


def render_seconds(folder: Path, scene: Path, device: str, runs: int, **fields) -> list[float] | None:
    seconds = []
    for n in range(runs):
        job = RenderJob(blend_path=str(scene), output_dir=str(folder / f"{device}-{n}"), prompt="x", backend="none",
                        render_device=device, **fields)
        path = folder / f"{device}-{n}.json"
        job.write(path)
        completed = subprocess.run([sys.executable, str(RENDER_JOB), str(path)], capture_output=True, text=True)
        if completed.returncode != 0:
            return None  # e.g. gpu on a machine without one
        seconds.append(json.loads((folder / f"{device}-{n}" / "manifest.json").read_text())["render_seconds"])
    return seconds


def pack_in_fresh_process(source: Path, target: Path) -> float:
    script = ("import bpy, subprocess, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
              "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2], copy=True, relative_remap=True); "
              "sys.exit(subprocess.run([sys.executable, sys.argv[3], sys.argv[2], sys.argv[4], "
              "bpy.context.scene.name]).returncode)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(source), str(target.with_name("unpacked.blend")), str(PACK),
                    str(target)], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["POSEFACTORY_DATA_DIR"] = str(folder / "data")  # the local host's workspace and ledger
        scene = folder / "sample.blend"
        subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene), "--samples",
                        str(args.samples)], check=True, capture_output=True)
        for device in ("cpu", "gpu"):
            seconds = render_seconds(folder, scene, device, args.runs)
            print(f"render {device}: " + (f"median {statistics.median(seconds):.2f} s over {len(seconds)} runs "
                                          f"(1024x1024, {args.samples} samples)" if seconds else "no such device here"))
        # Framing: a 16:9 scene at its nearest SDXL size against the same scene at 1024x1024.
        wide = folder / "wide.blend"
        subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
                        "r = bpy.context.scene.render; r.resolution_x, r.resolution_y = 1920, 1080; "
                        "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])", str(scene), str(wide)], check=True,
                       capture_output=True)
        nearest = render_seconds(folder, wide, "cpu", args.runs, width=0, height=0)
        square = render_seconds(folder, wide, "cpu", args.runs)
        print(f"framing: 16:9 at 1344x768 {statistics.median(nearest):.2f} s vs at 1024x1024 "
              f"{statistics.median(square):.2f} s (pixels 0.98x)")
        # Packing, with a 2048x2048 texture packed into the file.
        textured = folder / "textured.blend"
        subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
                        "image = bpy.data.images.new('Skin', 2048, 2048); image.generated_type = 'COLOR_GRID'; "
                        "image.filepath_raw = sys.argv[3]; image.file_format = 'PNG'; image.save(); "
                        "image.source = 'FILE'; image.use_fake_user = True; "
                        "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])", str(scene), str(textured),
                        str(folder / "skin.png")], check=True, capture_output=True)
        first, second = folder / "p1" / "scene.blend", folder / "p2" / "scene.blend"
        first.parent.mkdir()
        second.parent.mkdir()
        pack_s = pack_in_fresh_process(textured, first)
        pack_again_s = pack_in_fresh_process(textured, second)
        started = time.perf_counter()
        canonicalize(first)
        canonical_s = time.perf_counter() - started
        print(f"packing: {first.stat().st_size} bytes in {pack_s:.2f} s (again in a fresh process: {pack_again_s:.2f} s); "
              f"canonical bytes {canonical_s:.3f} s ({canonical_s / pack_s:.1%} of packing); "
              f"same bytes both times: {first.read_bytes() == second.read_bytes()}")
        # Re-submit: both packs through the pipeline to the local host.
        moved = []
        for packed in (first, second):
            messages: list[str] = []
            job = RenderJob(blend_path="scene.blend", output_dir="output", prompt="x", backend="none", render_samples=1)
            result = run_job(job, packed, host="local", hosts_file=None, local_output_dir=folder / "results",
                             api_key=None, progress=lambda p, m=messages: m.append(p.message), cancel=threading.Event())
            if result.status != "done":
                raise SystemExit(f"bench: job failed: {result.error}")
            moved.append(next(m for m in messages if m.startswith("scene: ")))
        print(f"re-submit: first {moved[0]!r}, second {moved[1]!r}")


if __name__ == "__main__":
    main()
