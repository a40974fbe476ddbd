"""Benchmark: finding the humanoid map of an armature (target: under 50 ms for a 200-bone rig).

    .venv/bin/python -m bench.bench_skeleton [--runs 20]

Builds rigs in real Blender (the bpy module) the way tests/fixtures/rigs.py does: a Mixamo-named
body and the same body with names that say nothing (mapped from its structure), each padded to 200
bones with extra leaf bones (twist, corrective and accessory bones as real rigs have them). For each
it times, median of ``--runs``:

* reading the bones into records (``skeleton.bones_of``), the baseline;
* the whole map (``skeleton.humanoid_map``: records, names, structure, face, hands);
* drawing the 1024x1024 OpenPose image from the posed joints, for scale.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MEASURE = r'''
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import bpy
from pod_setup import control_images, skeleton

runs = int(sys.argv[2])
results = {}
for kind, path in json.loads(sys.argv[3]).items():
    bpy.ops.wm.open_mainfile(filepath=path)
    rig = bpy.data.objects["Body"]
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    bones = rig.data.edit_bones
    parents = [b for b in bones if b.children]
    for i in range(200 - len(bones)):
        extra = bones.new(f"extra_{i:03d}")
        parent = parents[i % len(parents)]
        extra.head, extra.tail, extra.parent = parent.head, parent.head + (parent.tail - parent.head) * 0.3, parent
    bpy.ops.object.mode_set(mode="OBJECT")

    def median_ms(work):
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            work()
            times.append((time.perf_counter() - began) * 1000)
        return statistics.median(times)

    mapping = skeleton.humanoid_map(rig)
    body, hands = skeleton.posed_joints(rig, mapping)
    scene = bpy.context.scene
    pixels = [control_images.project(scene, body)]
    hand_pixels = [control_images.project(scene, points) for points in hands.values()]
    results[kind] = {
        "bones": len(rig.data.bones), "summary": mapping.summary(),
        "read_ms": median_ms(lambda: skeleton.bones_of(rig)),
        "map_ms": median_ms(lambda: skeleton.humanoid_map(rig)),
        "draw_ms": median_ms(lambda: control_images.draw_openpose(pixels, 1024, 1024, hand_pixels)),
    }
print("BENCH:" + json.dumps(results))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.fixtures.rigs import build

    with tempfile.TemporaryDirectory(prefix="bench-skeleton-") as folder:
        scenes = {kind: str(build(kind, Path(folder) / f"{kind}.blend")) for kind in ("mixamo", "unknown")}
        script = Path(folder) / "measure.py"
        script.write_text(MEASURE)
        completed = subprocess.run([sys.executable, str(script), str(REPO), str(args.runs), json.dumps(scenes)],
                                   capture_output=True, text=True, timeout=600)
    line = next((row for row in completed.stdout.splitlines() if row.startswith("BENCH:")), None)
    if line is None:
        raise SystemExit(f"bench: the measurement failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    for kind, figures in json.loads(line[6:]).items():
        print(f"{kind:8} {figures['bones']} bones ({figures['summary']}): map {figures['map_ms']:.1f} ms "
              f"(target < 50 ms) = {figures['map_ms'] / figures['read_ms']:.1f}x reading the bones "
              f"({figures['read_ms']:.1f} ms); drawing the 1024² image {figures['draw_ms']:.1f} ms")


if __name__ == "__main__":
    main()
