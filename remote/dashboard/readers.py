"""Readers for what the CLI, the add-on and the pipeline write into the data
dir: job records (``jobs/<id>.json``), manifests (``<output>/<id>/manifest.json``)
and the outputs next to them.

Every file here is untrusted input (a pod wrote the manifest; anything may
have written the rest): reads are size-bounded, names must be plain
(:func:`plain_name`), paths must resolve inside the data dir, and every value
is type-checked before the dashboard shows it. Parsing is cached by
(mtime, size), and the job list is rebuilt only when the jobs folder changed,
so a page never rescans a thousand records.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..core.pod_output import PodOutputError, check_version
from ..scene.shipment import shipment_from_record

log = logging.getLogger(__name__)

RECORD_MAX_BYTES = 256 * 1024
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
TEXT_MAX_CHARS = 4000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def plain_name(name: Any) -> bool:
    """A file or job name with no path in it: letters, digits, ``._-``, not starting with a dot."""
    return isinstance(name, str) and bool(_PLAIN.fullmatch(name)) and ".." not in name


def plain_relative(name: Any) -> bool:
    """An output file's name inside its job folder: plain names joined by ``/`` (a batch item's
    folder, then the file), at most three deep."""
    if not isinstance(name, str) or len(name) > 400:
        return False
    parts = name.split("/")
    return len(parts) <= 3 and all(plain_name(part) for part in parts)


def read_json(path: Path, limit: int) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None (logged) when missing, too large or not an object."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError:
        return None
    if len(raw) > limit:
        log.warning("ignoring %s: larger than %d bytes", path.name, limit)
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        log.warning("ignoring %s: not valid JSON", path.name)
        return None
    return data if isinstance(data, dict) else None


def inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved (links followed) when it lies inside ``root``; otherwise None."""
    try:
        resolved = path.resolve()
        base = root.resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if resolved != base and resolved.is_relative_to(base) else None


def text(value: Any, limit: int = TEXT_MAX_CHARS) -> str:
    return value[:limit] if isinstance(value, str) else ""


MAX_USD = Decimal(1_000_000)  # no job or pod event costs more; anything above is a corrupt or planted figure


def money(value: Any) -> Decimal | None:
    """A dollar figure as Decimal (from the JSON number's shortest repr), or None when
    it is not one, or not a plausible one (negative, non-finite, above MAX_USD)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):  # ValueError: an int too long for str()
        return None
    if not amount.is_finite() or amount < 0 or amount > MAX_USD:
        return None  # NaN, infinite, negative or implausible (a planted 1e26): shown as unknown, never summed
    return amount


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class JobView:
    """One job record, checked."""

    job_id: str
    status: str
    stage: str
    host: str
    prompt: str
    submitted_at: str
    error: str
    cost_usd: Decimal | None
    output_dir: Path | None  # None when the record points outside the data dir
    record_path: Path
    remote_job_dir: str
    hosts_file: str
    # Batches: the record's item names in order, and those already back on this machine.
    items_total: int | None = None
    items_done: int | None = None
    cost_flagged: bool = False  # the record holds a cost that is no plausible figure (NaN, 1e26, negative…)
    scene_moved: str = ""  # what the scene's upload moved, as the CLI and the add-on say it

    @property
    def running(self) -> bool:
        return self.status in ("submitted", "running")


def job_from_record(data: dict[str, Any], record_path: Path, root: Path) -> JobView | None:
    job_id = data.get("job_id")
    if not plain_name(job_id) or record_path.stem != job_id:
        log.warning("ignoring record %s: its job id is not plain or does not match the file", record_path.name)
        return None
    output = data.get("local_output_dir")
    output_dir = inside(root, Path(output)) if isinstance(output, str) and output else None
    return JobView(job_id=job_id, status=text(data.get("status"), 32) or "unknown", stage=text(data.get("stage"), 32),
                   host=text(data.get("host"), 128), prompt=text(data.get("prompt")),
                   submitted_at=text(data.get("submitted_at"), 40), error=text(data.get("error")),
                   cost_usd=money(data.get("cost_usd")), output_dir=output_dir, record_path=record_path,
                   remote_job_dir=text(data.get("remote_job_dir"), 1000), hosts_file=text(data.get("hosts_file"), 1000),
                   items_total=len(as_list(data.get("items_order"))) or None,
                   items_done=len(as_list(data.get("items_done"))) if as_list(data.get("items_order")) else None,
                   cost_flagged=data.get("cost_usd") is not None and money(data.get("cost_usd")) is None,
                   scene_moved=_scene_moved(data.get("scene")))


def _scene_moved(entry: Any) -> str:
    shipment = shipment_from_record(entry)
    return shipment.summary() if shipment else ""


class JobIndex:
    """Job records of ``<root>/jobs``, newest first; re-reads only records that changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "jobs"
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._files: dict[str, tuple[int, int, int, JobView | None]] = {}  # name -> (inode, mtime, size, view)
        self._inodes: dict[str, int] = {}
        self._sorted: list[JobView] = []
        self._by_id: dict[str, JobView] = {}
        self._position: dict[str, int] = {}  # job id -> index in _sorted
        self._running: list[JobView] = []
        self._running_names: set[str] = set()

    def jobs(self) -> list[JobView]:
        with self._lock:
            try:
                stamp = self.folder.stat().st_mtime_ns
            except OSError:
                self._stamp, self._files, self._inodes, self._sorted, self._by_id = None, {}, {}, [], {}
                self._running, self._running_names = [], set()
                return []
            if stamp != self._stamp:
                self._rescan()
                self._stamp = stamp
            elif self._running_names:
                self._refresh(set(self._running_names))  # a running record written in place keeps the folder's mtime
            return self._sorted

    def _rescan(self) -> None:
        # Records are replaced by rename (JobRecord.save): that changes the folder's
        # mtime and the file's inode, and the listing carries the inodes. So one
        # listing says which files are new or replaced, and only those are stat'ed.
        with os.scandir(self.folder) as entries:
            listing = {entry.name: entry.inode() for entry in entries
                       if entry.name.endswith(".json") and not entry.name.startswith(".")}
        suspects = {name for name, _ in listing.items() - self._inodes.items()}
        removed = self._inodes.keys() - listing.keys()
        for name in removed:
            self._files.pop(name, None)
        self._inodes = listing
        self._refresh(suspects | (self._running_names & listing.keys()), changed=bool(removed))

    def _refresh(self, names: set[str], changed: bool = False) -> None:
        """Parse those of ``names`` whose (inode, mtime, size) moved, and update the lists."""
        updated: list[JobView] = []
        for name in names:
            path = self.folder / name
            try:
                stat = path.stat()
            except OSError:
                changed |= self._files.pop(name, None) is not None
                continue
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            cached = self._files.get(name)
            if cached and cached[:3] == key:
                continue
            data = read_json(path, RECORD_MAX_BYTES)
            view = job_from_record(data, path, self.root) if data else None
            self._files[name] = (*key, view)
            old = cached[3] if cached else None
            if view is None or old is None or (old.submitted_at, old.job_id) != (view.submitted_at, view.job_id):
                changed = True  # a job came, went or moved in the order: sort again
            else:
                updated.append(view)
        if changed:
            views = [view for *_, view in self._files.values() if view is not None]
            self._sorted = sorted(views, key=lambda v: (v.submitted_at, v.job_id), reverse=True)
            self._position = {view.job_id: index for index, view in enumerate(self._sorted)}
            self._by_id = {view.job_id: view for view in views}
            self._running = [view for view in self._sorted if view.running]
            log.debug("job index: %d records", len(views))
        elif updated:
            # The common case while jobs run: a record changed in place in the order.
            for view in updated:
                self._sorted[self._position[view.job_id]] = view
                self._by_id[view.job_id] = view
            running = {v.job_id for v in self._running} | {v.job_id for v in updated}
            self._running = sorted((self._by_id[job_id] for job_id in running if self._by_id[job_id].running),
                                   key=lambda v: self._position[v.job_id])
        self._running_names = {view.record_path.name for view in self._running}

    def running(self) -> list[JobView]:
        """The jobs still submitted or running, newest first."""
        self.jobs()
        return self._running

    @property
    def version(self) -> int | None:
        """Changes whenever the list of jobs may have changed."""
        return self._stamp

    def get(self, job_id: str) -> JobView | None:
        if not plain_name(job_id):
            return None
        self.jobs()
        return self._by_id.get(job_id)


@dataclass(frozen=True)
class Item:
    """One item of a batch job (a pose × camera), when the manifest has items."""

    name: str
    status: str
    images: list[str]
    controls: list[str] = field(default_factory=list)  # its control images (fixed names, as the pod writes them)
    joints: list[str] = field(default_factory=list)  # per armature: what the OpenPose image shows
    warning: str = ""


CONTROL_IMAGE = re.compile(r"control-(openpose|depth)\.png")


@dataclass(frozen=True)
class Manifest:
    status: str
    prompt: str
    negative_prompt: str
    seed: int | None
    backend: str
    steps: int | None
    size: str
    style_preset: str
    strength: float | None
    cfg_scale: float | None
    error: str
    cost_usd: Decimal | None
    estimated_usd: Decimal | None
    render: str | None
    images: list[str] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)  # image name -> its variation's seed
    contact_sheet: str | None = None
    items: list[Item] = field(default_factory=list)
    items_done: int | None = None
    items_total: int | None = None


def _image_name(value: Any) -> str | None:
    return value if plain_relative(value) and value.lower().endswith(IMAGE_SUFFIXES) else None


def _control_images(value: Any) -> list[str]:
    """An item's control images: only ``[<item>/]control-<openpose|depth>.png``, whatever else the pod wrote."""
    names = [_image_name(name) for name in as_dict(value).values()]
    return [name for name in names if name and CONTROL_IMAGE.fullmatch(name.rsplit("/", 1)[-1])]


def _joints(value: Any) -> list[str]:
    """One line per armature of an item's OpenPose report: which rig, how it was read, the joints on screen."""
    lines = []
    for report in as_list(value)[:20]:
        report = as_dict(report)
        on_screen, mapped = whole(report.get("on_screen")), whole(report.get("mapped"))
        hands = [text(side, 8) for side in as_list(report.get("hands"))[:2]]
        line = (f"{text(report.get('armature'), 64)} ({text(report.get('convention'), 64)}): "
                f"{on_screen if on_screen is not None else '?'} of 18 joints on screen, {mapped} mapped")
        lines.append(line + (f", hands: {' '.join(hands)}" if hands else ""))
    return lines


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def manifest_from_dict(data: dict[str, Any]) -> Manifest:
    images = [name for name in map(_image_name, as_list(data.get("images"))) if name]
    seeds = {}
    for variation in as_list(data.get("variations")):
        if isinstance(variation, dict) and _image_name(variation.get("file")) and whole(variation.get("seed")) is not None:
            seeds[variation["file"]] = variation["seed"]
    size = data.get("size")
    items = []
    for index, raw in enumerate(as_list(data.get("items"))[:10_000]):
        if not isinstance(raw, dict):
            continue
        item_images = [n for n in map(_image_name, as_list(raw.get("images"))) if n]
        if not item_images and _image_name(raw.get("render")):
            item_images = [raw["render"]]  # an item without AI images (no backend, or it failed): its render
        name = text(raw.get("name") or raw.get("id") or raw.get("pose"), 200) or f"item {index + 1}"
        items.append(Item(name=name, status=text(raw.get("status"), 32), images=item_images,
                          controls=_control_images(raw.get("control_images")), joints=_joints(raw.get("skeletons")),
                          warning=text(raw.get("warning") or (raw.get("error") if raw.get("status") == "failed" else ""))))
    actual, estimated = as_dict(data.get("actual_cost")), as_dict(data.get("estimated_cost"))
    done = sum(1 for item in items if item.status == "done") if items else None
    return Manifest(
        status=text(data.get("status"), 32), prompt=text(data.get("prompt")), negative_prompt=text(data.get("negative_prompt")),
        seed=whole(data.get("seed")), backend=text(data.get("backend"), 64), steps=whole(data.get("steps")),
        size="x".join(str(v) for v in size) if isinstance(size, list) and len(size) == 2 and all(whole(v) for v in size)
        else "", style_preset=text(data.get("style_preset"), 64), strength=_number(data.get("strength")),
        cfg_scale=_number(data.get("cfg_scale")), error=text(data.get("error")),
        cost_usd=money(actual.get("total_usd")), estimated_usd=money(estimated.get("total_usd")),
        render=_image_name(data.get("render")), images=images, seeds=seeds,
        contact_sheet=_image_name(data.get("contact_sheet")) or None, items=items,
        items_done=done, items_total=len(items) if items else None,
    )


class ManifestCache:
    """Parsed manifests by path, re-read when their (mtime, size) changes."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[int, int, Manifest | None]] = {}
        self._lock = threading.Lock()

    def get(self, job: JobView) -> Manifest | None:
        if job.output_dir is None:
            return None
        path = job.output_dir / "manifest.json"
        try:
            stat = path.stat()
        except OSError:
            return None
        with self._lock:
            cached = self._cache.get(path)
            if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
                return cached[2]
        data = read_json(path, MANIFEST_MAX_BYTES)
        try:
            manifest = manifest_from_dict(data) if data is not None and check_version(data, "manifest") else None
        except PodOutputError as exc:  # written by a newer Pose Factory: shown as unreadable, said in the log
            log.warning("%s: %s", path, exc)
            manifest = None
        with self._lock:
            self._cache[path] = (stat.st_mtime_ns, stat.st_size, manifest)
        return manifest


def contact_sheet_name(job: JobView, manifest: Manifest | None) -> str | None:
    """The contact sheet named by the manifest, or ``contact-sheet.png`` when the job folder has one."""
    if manifest and manifest.contact_sheet:
        return manifest.contact_sheet
    if job.output_dir and (job.output_dir / "contact-sheet.png").is_file():
        return "contact-sheet.png"
    return None


def job_file(root: Path, job: JobView, name: str) -> Path | None:
    """An output file of ``job`` that may be served: a plain image name inside the data dir."""
    if job.output_dir is None or _image_name(name) is None:
        return None
    path = inside(root, job.output_dir / name)
    return path if path is not None and path.is_file() else None
