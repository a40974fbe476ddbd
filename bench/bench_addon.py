"""Benchmark: what the add-on adds before a job leaves the artist's machine.

    .venv/bin/python -m bench.bench_addon [--texture 2048] [--runs 3]

In this process (a plain script, so one Blender: the bpy module) it opens the
sample scene with an external PNG texture and measures, median of ``--runs``:

* baseline: ``save_as_mainfile(copy=True)`` alone — the least any "send the
  file" button must do;
* the add-on's packing: the same copy on the main thread (the only part that
  blocks the UI) plus the job tree traced and hashed in the worker thread
  (``remote.scene.pack``, no second Blender);
* a bare Blender start-up (``import bpy`` in a fresh process): what the
  earlier packing in a background Blender paid before it did anything;
* a cached ``build.py`` (every wheel already in build/wheels).

All figures come from the same run, so the ratios hold on any machine.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import bpy  # noqa: E402  (after the path: the add-on's modules come from this source tree)

from bench.noise import noisy_png  # noqa: E402
from posefactory_addon import packing  # noqa: E402
from remote.scene.pack import pack_scene  # noqa: E402


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texture", type=int, default=2048, help="side of the external texture in pixels")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-addon-"))
    scene = work / "sample.blend"
    subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene), "--samples", "1"],
                   check=True, capture_output=True)
    texture = work / "texture.png"
    noisy_png(texture, args.texture)
    bpy.ops.wm.open_mainfile(filepath=str(scene))
    bpy.data.images.load(str(texture)).use_fake_user = True

    baseline, blocking, background, startup = [], [], [], []
    for run in range(args.runs):
        target = work / f"run-{run}"
        baseline.append(timed(lambda: bpy.ops.wm.save_as_mainfile(
            filepath=str(work / f"plain-{run}.blend"), copy=True, check_existing=False)))
        copies: list[Path] = []
        blocking.append(timed(lambda: copies.append(packing.write_copy(target))))
        background.append(timed(lambda: pack_scene(copies[0], target / "work")))
        startup.append(timed(lambda: subprocess.run([sys.executable, "-c", "import bpy"], check=True)))
    packed_mb = pack_scene(copies[0], work / "sizes").total_bytes / 1e6  # the last run's copy
    build_s = timed(lambda: subprocess.run([sys.executable, str(REPO / "build.py")], check=True, cwd=REPO,
                                           capture_output=True))

    median = statistics.median
    total = median(blocking) + median(background)
    print(f"scene + {args.texture}px external texture; job tree {packed_mb:.1f} MB; medians of {args.runs}")
    print(f"baseline save_as_mainfile(copy=True):   {median(baseline):.3f} s")
    print(f"packing, main thread (UI blocked):      {median(blocking):.3f} s  "
          f"(ratio to baseline {median(blocking) / median(baseline):.2f})")
    print(f"packing, worker thread (BAT trace+hash): {median(background):.3f} s")
    print(f"packing total:                          {total:.3f} s  (ratio to baseline {total / median(baseline):.1f})")
    print(f"bare Blender start-up:                  {median(startup):.3f} s  "
          f"(what the earlier background-Blender packing paid first; {median(startup) / median(background):.1f}x "
          f"the whole packing now)")
    print(f"cached build.py (build + validate):     {build_s:.2f} s")


if __name__ == "__main__":
    main()
