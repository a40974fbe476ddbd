"""What a scene needs from outside its .blend, found by asking Blender, on the pod.

The laptop traces and sends those files (``remote/scene/pack.py``, Blender's
asset tracer); the pod's render job checks them once the scene is open: it
refuses a scene whose files are missing there (or, with the artist's
consent, renders and says which), so a job never reports a plain ``done``
over a missing file, and refuses one laid out as a job tree that names a
file outside the tree.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalFile:
    kind: str  # "image", "image sequence", "movie texture", "UDIM tiles", "Alembic/USD cache", ...
    name: str  # the datablock (or object/modifier) that uses it
    path: str  # absolute
    exists: bool

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} ({self.path}{'' if self.exists else ', missing'})"


def _abspath(bpy: Any, path: str, library: Any = None) -> str:
    return os.path.normpath(bpy.path.abspath(path, library=library))


def _exists(path: str) -> bool:
    return os.path.exists(path)


def external_files(bpy: Any) -> list[ExternalFile]:
    """Every file the open scene reads from disk (packed data excluded)."""
    found: list[ExternalFile] = []

    def add(kind: str, name: str, raw: str, library: Any = None, exists: bool | None = None) -> None:
        path = _abspath(bpy, raw, library)
        found.append(ExternalFile(kind, name, path, _exists(path) if exists is None else exists))

    for library in bpy.data.libraries:
        add("library", library.name, library.filepath)
    for datablock in _all_ids(bpy):
        if getattr(datablock, "is_missing", False):
            found.append(ExternalFile("linked data", datablock.name, _abspath(bpy, datablock.library.filepath)
                                      if datablock.library else "", False))
    for image in bpy.data.images:
        if image.packed_file is not None or image.source not in ("FILE", "SEQUENCE", "MOVIE", "TILED") \
                or not image.filepath or image.users == 0 or _kept_result(image):
            continue
        kind = {"FILE": "image", "SEQUENCE": "image sequence", "MOVIE": "movie texture", "TILED": "UDIM tiles"}
        path = _abspath(bpy, image.filepath, image.library)
        exists = _udim_exists(path) if image.source == "TILED" else _exists(path)
        found.append(ExternalFile(kind[image.source], image.name, path, exists))
    for cache in bpy.data.cache_files:
        add("Alembic/USD cache", cache.name, cache.filepath, cache.library)
    for volume in bpy.data.volumes:
        if volume.packed_file is None and volume.filepath:
            add("OpenVDB volume", volume.name, volume.filepath, volume.library)
    for clip in bpy.data.movieclips:
        if clip.users:
            add("movie clip", clip.name, clip.filepath, clip.library)
    for sound in bpy.data.sounds:
        if sound.packed_file is None and sound.filepath and sound.users:
            add("sound", sound.name, sound.filepath, sound.library)
    found.extend(_disk_caches(bpy))
    return found


def _kept_result(image: Any) -> bool:
    """An image the add-on brought back from an earlier job, kept only by its fake user: not
    something the scene renders with (the laptop does not send the add-on's results)."""
    return "posefactory_job" in image.keys() and image.use_fake_user and image.users == 1


def _all_ids(bpy: Any):
    for attribute in dir(bpy.data):
        collection: Any = getattr(bpy.data, attribute, None)
        if attribute.startswith("_") or not hasattr(collection, "rna_type") or not hasattr(collection, "__iter__"):
            continue
        try:
            items = list(collection)
        except TypeError:
            continue
        for item in items:
            if isinstance(item, bpy.types.ID):
                yield item


def _udim_exists(path: str) -> bool:
    folder, name = os.path.split(path)
    if "<UDIM>" not in name:
        return _exists(path)
    prefix, suffix = name.split("<UDIM>", 1)
    try:
        return any(entry.startswith(prefix) and entry.endswith(suffix) for entry in os.listdir(folder or "."))
    except OSError:
        return False


def _disk_caches(bpy: Any) -> list[ExternalFile]:
    """Simulation caches baked to disk: particles, cloth, soft body, fluid, geometry-node bakes."""
    found = []
    blend_dir = os.path.dirname(bpy.data.filepath)
    for obj in bpy.data.objects:
        for modifier in obj.modifiers:
            caches = []
            if modifier.type == "PARTICLE_SYSTEM":
                caches.append(modifier.particle_system.point_cache)
            elif modifier.type in ("CLOTH", "SOFT_BODY"):
                caches.append(modifier.point_cache)
            for cache in caches:
                if cache.use_disk_cache and cache.is_baked:
                    folder = _abspath(bpy, cache.filepath) if cache.use_external and cache.filepath else \
                        os.path.join(blend_dir, f"blendcache_{os.path.splitext(os.path.basename(bpy.data.filepath))[0]}")
                    found.append(ExternalFile("disk cache", f"{obj.name}/{modifier.name}", folder, _exists(folder)))
            if modifier.type == "FLUID" and modifier.fluid_type == "DOMAIN":
                folder = _abspath(bpy, modifier.domain_settings.cache_directory)
                if os.path.isdir(folder) and os.listdir(folder):
                    found.append(ExternalFile("fluid cache", f"{obj.name}/{modifier.name}", folder, True))
            if modifier.type == "NODES" and getattr(modifier, "bake_target", "PACKED") == "DISK":
                folder = _abspath(bpy, modifier.bake_directory) if modifier.bake_directory else ""
                if folder and os.path.isdir(folder):
                    found.append(ExternalFile("geometry nodes bake", f"{obj.name}/{modifier.name}", folder, True))
    return found


def missing(files: list[ExternalFile]) -> list[ExternalFile]:
    return [f for f in files if not f.exists]


def outside_tree(blend: Path, files: list[ExternalFile]) -> list[ExternalFile]:
    """The files a scene laid out as a job tree (``JOBDIR/scene/``, from its
    ``scene-tree.json``) names outside that tree: the laptop rewrote every
    path into it, so any other is a hostile or stale path, never read."""
    tree = blend.parent
    if tree.name != "scene" or not (tree.parent / "scene-tree.json").is_file():
        return []
    root = os.path.realpath(tree)
    return [f for f in files if f.path and not os.path.realpath(f.path).startswith(root + os.sep)]
