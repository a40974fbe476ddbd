"""What a batch is, without Blender: the pose and camera specs, item names,
the item limit, item keys for reuse, and checks on item entries a pod sends back.

A job renders *items*: each pose of its pose source on each camera of its
camera source. The specs are plain strings, the same in the CLI, the add-on
and ``job.json``:

* poses: ``current`` | ``markers`` | ``assets`` | ``frames:A-B[:S]`` | ``NAME,NAME,…``
  (timeline markers or pose assets by name);
* cameras: ``active`` | ``collection:NAME`` | ``NAME,NAME,…``.

Which markers, assets and cameras exist is only known with the scene open
(``pod_setup/poses.py``); what can be checked from the text alone is checked
here, so a wrong spec is refused before anything is uploaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from .pod_output import PodOutputError, check_name

log = logging.getLogger(__name__)

MAX_ITEMS = 500
NAME_MAX_CHARS = 63  # Blender's ID and marker names are at most 63 bytes
ITEM_NAME_MAX_CHARS = 100
POSE_SOURCES = ("current", "markers", "assets")
_FRAMES = re.compile(r"frames:(\d+)-(\d+)(?::(\d+))?")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# What an item may hold on disk: its render, its AI variations, its thumbnail.
ITEM_FILE = re.compile(r"(render|thumb|ai-render-[1-9][0-9]?)\.png")
ITEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ITEM_STATUSES = ("done", "failed", "reused", "rendering")  # rendering: not finished yet


class BatchSpecError(ValueError):
    """A pose or camera spec that cannot be right; the message is one line."""


@dataclass(frozen=True)
class PoseSpec:
    kind: str  # current | markers | assets | frames | names
    names: tuple[str, ...] = ()
    frames: tuple[int, int, int] = (0, 0, 1)  # start, end, step (frames only)

    @property
    def frame_list(self) -> list[int]:
        start, end, step = self.frames
        return list(range(start, end + 1, step))


@dataclass(frozen=True)
class CameraSpec:
    kind: str  # active | collection | names
    names: tuple[str, ...] = ()


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if any(not name for name in names):
        raise BatchSpecError(f"{what}: {text!r} has an empty name (names are separated by commas)")
    for name in names:
        if len(name.encode("utf-8")) > NAME_MAX_CHARS:
            raise BatchSpecError(f"{what}: {name[:20]!r}… is longer than Blender's {NAME_MAX_CHARS}-byte names")
        if any(ord(ch) < 32 for ch in name):
            raise BatchSpecError(f"{what}: {name!r} holds a control character")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BatchSpecError(f"{what}: {', '.join(duplicates)} named more than once")
    return names


def parse_poses(text: str) -> PoseSpec:
    """``current|markers|assets|frames:A-B[:S]|NAME,NAME…``; raises :class:`BatchSpecError`."""
    if not isinstance(text, str) or not text.strip():
        raise BatchSpecError("poses: must not be empty (current, markers, assets, frames:A-B[:S] or names)")
    text = text.strip()
    if text in POSE_SOURCES:
        return PoseSpec(text)
    if text.startswith("frames:"):
        match = _FRAMES.fullmatch(text)
        if not match:
            raise BatchSpecError(f"poses: {text!r} is not frames:START-END or frames:START-END:STEP")
        start, end, step = int(match[1]), int(match[2]), int(match[3] or 1)
        if end < start:
            raise BatchSpecError(f"poses: {text!r} is a reversed range ({start} > {end})")
        if step < 1:
            raise BatchSpecError(f"poses: {text!r}: the step must be at least 1")
        spec = PoseSpec("frames", frames=(start, end, step))
        if len(spec.frame_list) > MAX_ITEMS:
            raise BatchSpecError(f"poses: {text!r} is {len(spec.frame_list)} frames; a job renders at most "
                                 f"{MAX_ITEMS} items (use a larger step or split the range)")
        return spec
    return PoseSpec("names", names=_names(text, "poses"))


def parse_cameras(text: str) -> CameraSpec:
    """``active|collection:NAME|NAME,NAME…``; raises :class:`BatchSpecError`."""
    if not isinstance(text, str) or not text.strip():
        raise BatchSpecError("cameras: must not be empty (active, collection:NAME or names)")
    text = text.strip()
    if text == "active":
        return CameraSpec("active")
    if text.startswith("collection:"):
        return CameraSpec("collection", _names(text.removeprefix("collection:"), "cameras"))
    return CameraSpec("names", _names(text, "cameras"))


def check_item_count(poses: int, cameras: int) -> None:
    if poses * cameras > MAX_ITEMS:
        raise BatchSpecError(f"{poses} poses × {cameras} cameras = {poses * cameras} items; a job renders at most "
                             f"{MAX_ITEMS} (split the batch)")


def is_single(poses: str, cameras: str) -> bool:
    """The one-image job of before batches: its files stay at the output dir's root."""
    return poses.strip() == "current" and cameras.strip() == "active"


def item_name(pose: str, camera: str | None) -> str:
    """A file-system-safe item name: the pose, and the camera when the job names cameras."""
    text = pose if camera is None else f"{pose}--{camera}"
    safe = _UNSAFE.sub("_", text).strip("._-") or "item"
    return safe[:ITEM_NAME_MAX_CHARS]


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats made unique (``-2``, ``-3``…), order kept."""
    seen: set[str] = set()
    result = []
    for name in names:
        candidate, n = name, 2
        while candidate in seen:
            suffix = f"-{n}"
            candidate, n = name[:ITEM_NAME_MAX_CHARS - len(suffix)] + suffix, n + 1
        seen.add(candidate)
        result.append(candidate)
    return result


# Job fields that do not change what an item looks like.
_NOT_ITEM_SETTINGS = frozenset({"blend_path", "output_dir", "job_id", "poses", "cameras", "only_items",
                                "api_base_url"})


def item_key(scene_sha256: str, job_fields: dict[str, Any], item: dict[str, Any]) -> str:
    """What makes an item's images: the scene's bytes, the job's settings and the item itself."""
    settings = {k: v for k, v in job_fields.items() if k not in _NOT_ITEM_SETTINGS}
    identity = {k: item.get(k) for k in ("name", "pose", "camera", "frame")}
    blob = json.dumps({"scene": scene_sha256, "settings": settings, "item": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ItemEntryError(ValueError):
    """An item entry from a pod that must not be used (bad name or path)."""


def check_item_entry(entry: Any) -> dict[str, Any]:
    """An item entry of a pod's manifest, checked: safe name, paths ``<item>/<file>`` only.

    Everything that comes back from a pod is untrusted; the paths here become
    local file names, so anything but the known item files is refused.
    """
    if not isinstance(entry, dict):
        raise ItemEntryError("item entry is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not ITEM_NAME.fullmatch(name) or ".." in name:
        raise ItemEntryError(f"item name {str(name)[:40]!r} is not a safe name")
    if entry.get("status") not in ITEM_STATUSES:
        raise ItemEntryError(f"item {name}: status {str(entry.get('status'))[:20]!r} is not one of {ITEM_STATUSES}")
    paths = [entry["render"]] if entry.get("render") else []
    images = entry.get("images", [])
    if not isinstance(images, list):
        raise ItemEntryError(f"item {name}: images is not a list")
    for path in [*paths, *images]:
        check_item_path(path)
    return entry


def check_item_path(path: Any) -> str:
    """``render.png`` style files at the root (the one-image job) or ``<item>/<file>``."""
    if not isinstance(path, str):
        raise ItemEntryError("item file path is not text")
    parts = path.split("/")
    if len(parts) > 2 or not ITEM_FILE.fullmatch(parts[-1]) or (
            len(parts) == 2 and (not ITEM_NAME.fullmatch(parts[0]) or ".." in parts[0])):
        raise ItemEntryError(f"item file path {path[:60]!r} is not <item>/<render|ai-render-N|thumb>.png")
    try:  # and the general rule for anything a pod names (issue #10): plain parts, no controls, bounded
        check_name(path, allow_item_dirs=True)
    except PodOutputError as exc:
        raise ItemEntryError(str(exc)) from None
    return path
