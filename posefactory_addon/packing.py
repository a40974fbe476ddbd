"""The copy of the open scene that is shipped to a pod.

The open file is never touched: ``save_as_mainfile(copy=True)`` writes a
copy (unsaved edits included) and leaves the file's path and dirty flag as
they were. The job then packs that copy in its worker thread with Blender's
asset tracer (:mod:`remote.scene.pack`): the files it needs (textures,
caches, linked libraries) are traced and sent by content, not embedded, and
no second Blender is started.
"""
from __future__ import annotations

from pathlib import Path

import bpy


def write_copy(target_dir: Path) -> Path:
    """Main thread: the open file as it is now, as a copy whose relative paths still find its files."""
    target_dir.mkdir(parents=True, exist_ok=True)
    copy = target_dir / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, relative_remap=True, check_existing=False)
    return copy


def scene_key() -> str:
    """Which scene this is a version of (its file, or the unsaved session's): the pod's last
    version of it is what the next .blend is sent as a delta against."""
    if bpy.data.filepath:
        return bpy.path.abspath(bpy.data.filepath)
    scene = bpy.context.scene
    return f"unsaved:{scene.name if scene else ''}"
