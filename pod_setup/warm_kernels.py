"""Kernel warm-up, run by ``setup_pod.sh`` in the pod's Blender once per Blender and GPU set.

    blender -b --factory-startup -P warm_kernels.py      # or: python warm_kernels.py (the bpy module)

A fresh pod's first Cycles render on the GPU compiles or loads its kernels
("Loading render kernels"), which can take minutes; rendering a tiny scene
here pays that during set-up, so the artist's first job does not. Cycles
keeps compiled kernels on disk, so later Blender processes start from them.

Prints one line, ``warm_kernels: …``: what was warmed on which device and how
long it took, or that there is no GPU to warm.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bpy

from pod_setup.render_device import select_device, use_device


def warm() -> str:
    choice = select_device("auto")
    if not choice.gpu:
        return f"no GPU for Cycles here ({choice.warning or 'CPU only'}): no render kernels to warm"
    bpy.ops.wm.read_factory_settings(use_empty=False)  # the default cube, camera and light
    choice = select_device("auto")  # the factory settings reset the device preferences
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    use_device(scene, choice)
    scene.cycles.samples = 1
    scene.render.resolution_x = scene.render.resolution_y = 64
    with tempfile.TemporaryDirectory(prefix="posefactory-kernels-") as folder:
        scene.render.filepath = str(Path(folder) / "warm.png")
        started = time.monotonic()
        bpy.ops.render.render(write_still=True)
        seconds = time.monotonic() - started
    return (f"warmed the render kernels for Blender {bpy.app.version_string} on {choice.kind} "
            f"{', '.join(choice.names)} in {seconds:.1f}s")


if __name__ == "__main__":
    print(f"warm_kernels: {warm()}", flush=True)
