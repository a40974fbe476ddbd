"""The laptop's side of a batch: check it against the scene before upload,
reuse items already done, stream finished items back while the batch runs.

* :func:`list_items` asks a Blender on this machine (``POSEFACTORY_BLENDER``,
  a Blender executable; or a Python with the ``bpy`` module) for the batch's
  items, so an unknown pose or camera is one line before anything is spent;
  :func:`openpose_checks` asks it what each item's OpenPose image would show.
* :class:`ItemCache` (``DATA_DIR/items/<key>.json``) remembers every item that
  came back, keyed by the scene's sha256, the job's settings and the item
  (:func:`remote.core.batch_spec.item_key`): a re-submitted batch renders and pays only
  for the items not already here.
* :class:`ItemStreamer` downloads each item as soon as the pod reports it
  finished, so a dropped connection, a cancel or a closed Blender keeps them.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..core.batch_spec import BatchSpecError, ItemEntryError, check_item_entry, check_item_path, is_single, item_cache_key, item_key
from ..core.config import data_dir
from ..core.contact_sheet import Cell, write_sheet
from ..core.humanoid import SkeletonCheck, check_skeletons
from ..core.jobspec import RenderJob
from ..core.pod_output import WIRE_VERSION, PodManifest, PodStatus, clean_text
from .state import JobRecord, PipelineError

log = logging.getLogger(__name__)
POSES_SCRIPT = Path(__file__).resolve().parents[2] / "pod_setup" / "poses.py"


def _lister() -> list[str] | None:
    blender = os.environ.get("POSEFACTORY_BLENDER")
    if blender:
        return [blender, "--background", "--factory-startup", "--python", str(POSES_SCRIPT), "--"]
    python = os.environ.get("POSEFACTORY_BPY_PYTHON")
    if python:
        return [python, str(POSES_SCRIPT)]
    if importlib.util.find_spec("bpy") is not None:
        return [sys.executable, str(POSES_SCRIPT)]
    return None


LIST_TIMEOUT_S = 300


def _ask_blender(blend_file: Path, poses: str, cameras: str, *extra: str) -> dict[str, Any] | None:
    """poses.py's answer about ``blend_file``; None when no Blender is at hand to ask (or it failed)."""
    command = _lister()
    if command is None or not POSES_SCRIPT.is_file():
        log.info("no local Blender to check the job against the scene; the pod will check it")
        return None
    try:
        completed = subprocess.run([*command, "--list", str(blend_file), poses, cameras, *extra], capture_output=True,
                                   text=True, timeout=LIST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BatchSpecError(f"checking the job against the scene: the local Blender did not answer in "
                             f"{LIST_TIMEOUT_S} s (is {blend_file.name} very large?)") from None
    answers = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not answers:
        log.warning("asking the local Blender about the scene failed (exit %s): %s", completed.returncode,
                    completed.stderr.strip()[-300:])
        return None
    answer = json.loads(answers[-1])
    if "error" in answer:
        raise BatchSpecError(str(answer["error"]))
    return dict(answer)


def list_items(blend_file: Path, poses: str, cameras: str) -> list[dict[str, Any]] | None:
    """The batch's items in ``blend_file``; None when no Blender is at hand to ask.

    Raises :class:`BatchSpecError` with the scene's one-line reason (unknown
    pose or camera, no markers, an empty collection, too many items).
    """
    answer = _ask_blender(blend_file, poses, cameras)
    return None if answer is None else list(answer["items"])


def openpose_checks(blend_file: Path, job: RenderJob) -> list[SkeletonCheck] | None:
    """What each item's OpenPose control image would show, read from the scene on this machine the way
    the pod will draw it (only the items with something to say); None when no local Blender can tell."""
    answer = _ask_blender(blend_file, job.poses, job.cameras, "--openpose", json.dumps(job.bone_map))
    if answer is None:
        return None
    reports = answer.get("skeletons", {})
    checks = []
    for name, report in reports.items():
        check = SkeletonCheck(str(report["error"])) if isinstance(report, dict) else check_skeletons(report)
        if check.line:
            checks.append(check if len(reports) == 1 else SkeletonCheck(f"item {name}: {check.line}", check.empty))
    for report in (r for r in reports.values() if isinstance(r, list)):
        for skeleton in report:
            log.info("openpose check: %s (%s): %d of 18 joints on screen", skeleton["armature"], skeleton["convention"],
                     skeleton["on_screen"])
    return checks


def settings_digest(scene_sha256: str, job: RenderJob) -> str:
    """What every item of this job shares: the scene's bytes and the job's settings."""
    return item_key(scene_sha256, asdict(job), {})


@dataclass
class ItemCache:
    root: Path = field(default_factory=lambda: data_dir() / "items")

    def key(self, digest: str, item: dict[str, Any]) -> str:
        return item_cache_key(digest, item)  # one normalisation for the listed item and the pod's entry

    def lookup(self, key: str) -> dict[str, Any] | None:
        """A done item (its folder and entry), when every file of it is still here."""
        path = self.root / f"{key}.json"
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        folder = Path(stored["dir"])
        files = [stored["entry"]["render"], *stored["entry"]["images"]]
        if not all((folder / Path(f).name).is_file() for f in files if f):
            log.info("item %s: cached files are gone; it renders again", stored["entry"]["name"])
            return None
        return stored

    def store(self, key: str, folder: Path, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.tmp"
        tmp.write_text(json.dumps({"dir": str(folder), "entry": entry}))
        os.replace(tmp, self.root / f"{key}.json")


@dataclass
class BatchPlan:
    """What a batch job sends and what it takes from earlier runs."""

    job: RenderJob  # with only_items (and the earlier seed) when items are reused
    digest: str
    items: list[dict[str, Any]] | None  # None: not listed here (no local Blender)
    reused: dict[str, dict[str, Any]] = field(default_factory=dict)  # item name: cached folder + entry

    @property
    def all_reused(self) -> bool:
        return self.items is not None and len(self.reused) == len(self.items)


def plan_batch(job: RenderJob, blend_file: Path, scene_sha256: str, *, fresh: bool,
               cache: ItemCache) -> BatchPlan:
    """List the items (refusing a wrong spec) and find the ones already done, unless ``fresh``."""
    digest = settings_digest(scene_sha256, job)
    items = list_items(blend_file, job.poses, job.cameras)
    plan = BatchPlan(job, digest, items)
    if items is None or fresh:
        return plan
    for item in items:
        found = cache.lookup(cache.key(digest, item))
        if found:
            plan.reused[item["name"]] = found
    if plan.reused and not plan.all_reused:
        todo = [i["name"] for i in items if i["name"] not in plan.reused]
        seed = job.seed or next(iter(plan.reused.values()))["entry"].get("seed") or 0
        plan.job = replace(job, only_items=todo, seed=seed)  # the earlier items' seed: one look across the batch
    log.info("batch: %s item(s), %d reused", "?" if items is None else len(items), len(plan.reused))
    return plan


def copy_reused(plan: BatchPlan, local_dir: Path) -> list[dict[str, Any]]:
    """Copy the reused items into this job's folder; their entries, marked ``reused``."""
    entries = []
    for name, found in plan.reused.items():
        source, target = Path(found["dir"]), local_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and not (target / path.name).exists():
                shutil.copy2(path, target / path.name)
        entries.append({**found["entry"], "status": "reused"})
    return entries


class PodJob(Protocol):
    """What the streamer needs of the pod job it follows (the pod's runner): its record, its
    manifest as it stands, and a way to bring files back."""

    record: JobRecord
    record_path: Path | None

    def read_manifest(self) -> PodManifest | None: ...

    def download_files(self, local_dir: Path, names: list[str], what: str) -> None: ...


class ItemStreamer:
    """Downloads each finished item while the batch runs; remembers it for reuse."""

    def __init__(self, runner: PodJob, local_dir: Path, cache: ItemCache, digest: str) -> None:
        self.runner = runner
        self.local_dir = local_dir
        self.cache = cache
        self.digest = digest
        self.seen = -1

    @property
    def done(self) -> list[str]:
        return self.runner.record.items_done

    def on_status(self, status: PodStatus) -> str | None:
        """Called with every status poll; fetches new items; returns a progress line."""
        items = status.items
        if not isinstance(items, dict):
            return None
        raw = {k: items.get(k) for k in ("total", "done", "failed")}
        numbers = {k: v for k, v in raw.items() if isinstance(v, int) and 0 <= v <= 100_000}
        if len(numbers) != len(raw):
            return None
        finished = numbers["done"] + numbers["failed"]
        if finished > self.seen:

            try:
                self.fetch()
                self.seen = finished
            except (PipelineError, ValueError) as exc:  # PodOutputError is a ValueError
                # The pod rewrites its manifest after every item: a copy caught mid-rewrite fails
                # its checksum. Nothing is lost; the next poll fetches again.
                log.info("fetching finished items: %s; trying again at the next poll", exc)
        current = items.get("current")
        current = current if isinstance(current, str) and len(current) <= 100 and current.isprintable() else None
        return (f"items {numbers['done']}/{numbers['total']} done, {len(self.done)} back"
                + (f", {numbers['failed']} failed" if numbers["failed"] else "")
                + (f"; rendering {current}" if current else ""))

    def fetch(self) -> dict[str, Any]:
        """The pod's manifest so far (bounded and checked), and every done item not yet here."""
        manifest = self.runner.read_manifest()
        if manifest is None:
            return {}
        for entry in checked_items(manifest.raw):
            if entry["status"] != "done" or entry["name"] in self.done:
                continue
            folder = self.local_dir / entry["name"]
            self.runner.download_files(self.local_dir, item_files({"items": [entry]}), f"downloading {entry['name']}")
            self.done.append(entry["name"])
            self.runner.record.save(self.runner.record_path)
            self.cache.store(self.cache.key(self.digest, entry), folder, entry)
            log.info("item %s is back", entry["name"])
        return dict(manifest.raw)


def item_files(manifest: dict[str, Any], skip: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``<item>/<file>`` of every done item of a manifest (render, AI images, control images, thumbnail), but
    those in ``skip``. Control images by their fixed names only, never a path the pod wrote."""
    names: list[str] = []
    for entry in checked_items(manifest):
        if entry["status"] != "done" or entry["name"] in skip:
            continue
        made = entry.get("control_images")
        controls = [f"{entry['name']}/control-{kind}.png" for kind in ("openpose", "depth")
                    if isinstance(made, dict) and kind in made]
        for path in [*([entry["render"]] if entry.get("render") else []), *entry["images"], *controls,
                     f"{entry['name']}/thumb.png"]:
            if path not in names:
                names.append(check_item_path(path))
    return names


def checked_items(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's item entries that are safe to use; the others are dropped with a log line."""
    entries = []
    for entry in manifest.get("items", []) if isinstance(manifest.get("items"), list) else []:
        try:
            entries.append(check_item_entry(entry))
        except ItemEntryError as exc:
            log.warning("ignoring an item entry from the pod: %s", exc)
    return entries


def finish_manifest(manifest: dict[str, Any], reused: list[dict[str, Any]], local_dir: Path,
                    order: list[str]) -> dict[str, Any]:
    """The job's local manifest: the pod's items plus the reused ones, in the batch's ``order``, and the sheet."""
    position = {name: n for n, name in enumerate(order)}
    items = sorted([*reused, *checked_items(manifest)], key=lambda e: position.get(e["name"], len(position)))
    manifest["version"], manifest["items"] = WIRE_VERSION, items
    manifest["images"] = [check_item_path(p) for e in items if e["status"] in ("done", "reused") for p in e["images"]]
    if items:
        manifest["contact_sheet"] = rebuild_sheet(items, local_dir)
    (local_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def rebuild_sheet(items: list[dict[str, Any]], local_dir: Path) -> dict[str, Any]:
    """The contact sheet from the items' thumbnails here (reused and new ones together), each labelled."""
    cells = []
    for entry in items:
        failed = entry["status"] == "failed"
        seed = f"seed {entry['seed']}" if isinstance(entry.get("seed"), int) and entry["seed"] else "seed random"
        second = f"{clean_text(entry.get('camera', ''), 60)} · {seed}" + (" · reused" if entry["status"] == "reused" else "")
        third = f"FAILED: {clean_text(entry.get('error') or 'no reason given', 200)}" if failed else \
            clean_text(entry.get("warning") or "", 200)
        cells.append(Cell(local_dir / entry["name"] / "thumb.png", (entry["name"], second, third), failed=failed))
    return write_sheet(local_dir / "contact-sheet.png", cells)


def is_batch(job: RenderJob) -> bool:
    return not is_single(job.poses, job.cameras)


__all__ = ["BatchPlan", "BatchSpecError", "ItemCache", "ItemStreamer", "copy_reused", "finish_manifest",
           "is_batch", "list_items", "openpose_checks", "plan_batch"]
