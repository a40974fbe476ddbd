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

from .pod_output import PodOutputError, check_name, clean_text

log = logging.getLogger(__name__)

MAX_ITEMS = 500
NAME_MAX_CHARS = 63  # Blender's ID and marker names are at most 63 bytes
ITEM_NAME_MAX_CHARS = 100
POSE_SOURCES = ("current", "markers", "assets")
_FRAMES = re.compile(r"frames:(\d+)-(\d+)(?::(\d+))?")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# What an item may hold on disk: its render, its AI variations, its thumbnail.
ITEM_FILE = re.compile(r"(render|thumb|ai-render-[1-9][0-9]?|control-openpose|control-depth)\.png")
# THE rule for item names, on both sides: the pod names items with item_name / unique_names,
# the laptop accepts a name only through is_item_name. A name starts with a letter or digit,
# holds only letters, digits, '.', '_' and '-', has no '..' run, and is at most 100 characters:
# never '.' or '..', never a separator, always a plain folder name.
ITEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DOTS = re.compile(r"\.{2,}")
ITEM_STATUSES = ("done", "failed", "reused", "rendering")  # rendering: not finished yet


class BatchSpecError(ValueError):
    """A pose or camera spec that cannot be right; the message is one line."""


@dataclass(frozen=True)
class PoseSpec:
    kind: str  # current | markers | assets | frames | names
    names: tuple[str, ...] = ()
    frames: tuple[int, int, int] = (0, 0, 1)  # start, end, step (frames only)

    @property
    def frame_count(self) -> int:
        """How many frames the range holds, by arithmetic (nothing is expanded)."""
        start, end, step = self.frames
        return 0 if end < start or step < 1 else (end - start) // step + 1

    @property
    def frame_list(self) -> list[int]:
        """The frames, expanded only when within :data:`MAX_ITEMS` (else BatchSpecError)."""
        start, end, step = self.frames
        if self.frame_count > MAX_ITEMS:
            raise BatchSpecError(f"poses: frames {start}-{end}:{step} is {self.frame_count} frames; a job renders "
                                 f"at most {MAX_ITEMS} items (use a larger step or split the range)")
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
        if spec.frame_count > MAX_ITEMS:  # counted, never expanded: frames:1-99999999 is refused at once
            raise BatchSpecError(f"poses: {text!r} is {spec.frame_count} frames; a job renders at most "
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


def safe_item_name(text: str) -> str:
    """``text`` made an item name that :func:`is_item_name` accepts (always).

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``; a run of
    dots becomes one dot (``Jump...high`` → ``Jump.high``, ``../../side`` →
    ``side``); it starts with a letter or digit and is at most 100 characters.
    """
    safe = _DOTS.sub(".", _UNSAFE.sub("_", text)).lstrip("._-").rstrip("._-")
    return safe[:ITEM_NAME_MAX_CHARS] or "item"


def is_item_name(name: Any) -> bool:
    """Whether ``name`` is an item name (the laptop's check of what a pod sends back)."""
    return isinstance(name, str) and bool(ITEM_NAME.fullmatch(name)) and ".." not in name


def item_name(pose: str, camera: str | None) -> str:
    """A file-system-safe item name: the pose, and the camera when the job names cameras."""
    return safe_item_name(pose if camera is None else f"{pose}--{camera}")


def unique_names(names: list[str]) -> list[str]:
    """``names`` as item names with repeats made unique (``-2``, ``-3``…), order kept.

    Every result passes :func:`is_item_name` (a name that does not is made one first).
    """
    seen: set[str] = set()
    result = []
    for name in names:
        base = name if is_item_name(name) else safe_item_name(name)
        candidate, n = base, 2
        while candidate in seen:
            suffix = f"-{n}"
            candidate, n = base[:ITEM_NAME_MAX_CHARS - len(suffix)] + suffix, n + 1
        seen.add(candidate)
        result.append(candidate)
    return result


# Job fields that do not change what an item looks like.
_NOT_ITEM_SETTINGS = frozenset({"blend_path", "output_dir", "job_id", "poses", "cameras", "only_items",
                                "api_base_url"})


def item_identity(item: dict[str, Any]) -> dict[str, Any]:
    """What identifies an item for reuse, normalised the same on both sides.

    The laptop lists items from the scene as they are (a marker named with an
    ANSI escape or a bidi override keeps it); the pod's entry comes back
    through :func:`remote.core.pod_output.parse_manifest`, which strips those.
    Both go through this one function, so the same item has the same key.
    """
    identity = {}
    for k in ("name", "pose", "camera", "frame"):
        value = item.get(k)
        identity[k] = clean_text(value, 200) if isinstance(value, str) else value
    return identity


def item_cache_key(digest: str, item: dict[str, Any]) -> str:
    """The reuse key of ``item`` under a job's settings ``digest`` (:func:`item_key` of no item)."""
    return hashlib.sha256(json.dumps([digest, item_identity(item)], sort_keys=True).encode()).hexdigest()


def item_key(scene_sha256: str, job_fields: dict[str, Any], item: dict[str, Any]) -> str:
    """What makes an item's images: the scene's bytes, the job's settings and the item itself."""
    settings = {k: v for k, v in job_fields.items() if k not in _NOT_ITEM_SETTINGS}
    identity = item_identity(item)
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
    if not is_item_name(name):
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
            len(parts) == 2 and not is_item_name(parts[0])):
        raise ItemEntryError(f"item file path {path[:60]!r} is not <item>/<render|ai-render-N|thumb>.png")
    try:  # and the general rule for anything a pod names: plain parts, no controls, bounded
        check_name(path, allow_item_dirs=True)
    except PodOutputError as exc:
        raise ItemEntryError(str(exc)) from None
    return path
