"""The copy of the open scene that is shipped to a pod.

The open file is never touched: ``save_as_mainfile(copy=True)`` writes a
copy (unsaved edits included) and leaves the file's path and dirty flag as
they were. The job then packs that copy in its worker thread with Blender's
asset tracer (:mod:`remote.scene.pack`): the files it needs (textures,
caches, linked libraries) are traced and sent by content, not embedded, and
no second Blender is started.
"""
from __future__ import annotations

import logging
from pathlib import Path

import bpy

log = logging.getLogger(__name__)


def write_copy(target_dir: Path) -> Path:
    """Main thread: the open file as it is now, as a copy whose relative paths still find its files.

    The copy keeps the file's name, and the disk caches Blender keeps beside
    the file (``blendcache_<name>/``, which point caches find by the file's
    own name and folder, not by a path the save could remap) are linked in
    beside it, so the tracer finds them from the copy as Blender does.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    original = Path(bpy.path.abspath(bpy.data.filepath)) if bpy.data.filepath else None
    copy = target_dir / (original.name if original else "untitled.blend")
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, relative_remap=True, check_existing=False)
    if original is not None:
        caches = original.parent / f"blendcache_{original.stem}"
        if caches.is_dir():
            try:
                (target_dir / caches.name).symlink_to(caches, target_is_directory=True)
            except OSError as exc:  # Windows without the right to make links: the pod then names the cache missing
                log.warning("cannot link the disk cache %s beside the copy: %s", caches, exc)
    return copy


def scene_key() -> str:
    """Which scene this is a version of (its file, or the unsaved session's): the pod's last
    version of it is what the next .blend is sent as a delta against."""
    if bpy.data.filepath:
        return bpy.path.abspath(bpy.data.filepath)
    scene = bpy.context.scene
    return f"unsaved:{scene.name if scene else ''}"
