"""A self-contained copy of the open scene, for shipping to a pod.

The open file is never touched: ``save_as_mainfile(copy=True)`` writes a
copy and leaves the file's path and dirty flag as they were. The copy is then
made self-contained in a separate background Blender (``pack_blend.py``):
linked library data made local, external images, sounds and fonts packed.
Doing that in the artist's own session would change the open file.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy

PACK_SCRIPT = Path(__file__).resolve().parent / "pack_blend.py"


class PackingError(RuntimeError):
    pass


def write_copy(target_dir: Path) -> Path:
    """Main thread: the open file as it is now (unsaved edits included), as a copy."""
    target_dir.mkdir(parents=True, exist_ok=True)
    copy = target_dir / "unpacked.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, relative_remap=True, check_existing=False)
    return copy


def blender_command() -> list[str]:
    """How to start a background Blender: the Blender binary, or this Python with the bpy module."""
    if bpy.app.binary_path and Path(bpy.app.binary_path).name.startswith("blender"):
        return [bpy.app.binary_path, "--background", "--factory-startup", "--python", str(PACK_SCRIPT), "--"]
    return [sys.executable, str(PACK_SCRIPT)]


def make_self_contained(copy: Path, scene_name: str) -> Path:
    """Any thread: pack the copy into ``scene.blend`` next to it (a subprocess)."""
    packed = copy.with_name("scene.blend")
    completed = subprocess.run([*blender_command(), str(copy), str(packed), scene_name],
                               capture_output=True, text=True, timeout=600)
    if completed.returncode != 0 or not packed.is_file():
        problem = [line for line in completed.stderr.splitlines() if line.startswith("pack_blend:")]
        raise PackingError(problem[-1] if problem else f"packing the scene failed (exit {completed.returncode})")
    copy.unlink(missing_ok=True)
    return packed
