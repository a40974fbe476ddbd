"""Finished jobs' images into Blender: ``bpy.data.images`` entries named by job
and variation (``PF <job> <pose> <camera> v<n>`` in a batch; prompt, seed and
cost as custom properties), shown in an open Image Editor, autosaved where the
artist chose, thumbnails for the Jobs panel (a batch's contact sheet)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import bpy
import bpy.utils.previews

from .jobs import MANAGER, TrackedJob
from .remote.batch import ItemEntryError, check_item_path

_previews: dict[str, bpy.utils.previews.ImagePreviewCollection] = {}


# The control images a diffusers job writes next to its results (fixed names: never taken from the manifest).
CONTROL_KINDS = ("openpose", "depth")


def image_name(job_id: str, variation: int, item: dict | None = None) -> str:
    """``PF <job> v<n>``; in a batch ``PF <job> <pose> <camera> v<n>``."""
    if item is None:
        return f"PF {job_id} v{variation}"
    return f"PF {job_id} {item.get('pose', '')} {item.get('camera', '')} v{variation}"


def load_control_images(folder: Path, job_id: str) -> list[bpy.types.Image]:
    """``control-openpose.png`` / ``control-depth.png`` of a results folder as images named by job and kind."""
    loaded = []
    for kind in CONTROL_KINDS:
        path = folder / f"control-{kind}.png"
        if path.is_file():
            control = bpy.data.images.load(str(path), check_existing=True)
            control.name = f"PF {job_id} {kind}"
            control["posefactory_job"] = job_id
            control["posefactory_control"] = kind
            loaded.append(control)
    return loaded


def thumbnails():
    return _previews.get("jobs")


def thumbnail_source(record) -> Path | None:
    """A job's picture for the Jobs panel: its contact sheet (a batch), else its first image."""
    sheet = Path(record.local_output_dir) / "contact-sheet.png"
    if sheet.is_file():
        return sheet
    first = Path(record.images[0]) if record.images else None
    return first if first is not None and first.is_file() else None


def _images_of(folder: Path, manifest: dict) -> list[tuple[str, dict | None]]:
    """(relative path, its item in a batch) of every image to load, in the batch's order."""
    items = [i for i in manifest.get("items", []) if isinstance(i, dict) and i.get("status") in ("done", "reused")]
    if any("/" in str(i.get("render") or "") for i in items):
        found = []
        for item in items:
            paths = item.get("images") or ([item["render"]] if item.get("render") else [])
            found += [(path, item) for path in paths]
    else:
        names = manifest.get("images") or sorted(p.name for p in folder.glob("ai-render-*.png"))
        if not names and (folder / "render.png").is_file():
            names = ["render.png"]  # rendered without the AI step: bring the render itself back
        found = [(name, None) for name in names]
    safe = []
    for path, item in found:
        try:
            safe.append((check_item_path(path), item))
        except ItemEntryError:  # a manifest is data from a pod: never a path out of the folder
            continue
    return safe


def import_folder(folder: Path, job_id: str | None = None, autosave_dir: str = "") -> list[bpy.types.Image]:
    """Load the images of a results folder (as the pod writes them: ``ai-render-<n>.png``, ``<item>/…`` in a batch)."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    job_id = job_id or manifest.get("job_id") or folder.name
    seeds = {v.get("file"): v.get("seed") for v in manifest.get("variations", [])}
    cost = manifest.get("actual_cost", {}).get("total_usd")
    images = []
    for number, (name, item) in enumerate(_images_of(folder, manifest), start=1):
        path = folder / name
        if not path.is_file():
            continue
        image = bpy.data.images.load(str(path), check_existing=True)
        variation = int(path.stem.rsplit("-", 1)[1]) if path.stem.startswith("ai-render-") else 0
        image.name = image_name(job_id, variation or number) if item is None else image_name(job_id, variation, item)
        image["posefactory_job"] = job_id
        image["posefactory_prompt"] = manifest.get("prompt", "")
        if item is not None:
            image["posefactory_item"] = str(item.get("name", ""))
        seed = int(seeds.get(name) or (item or {}).get("seed") or manifest.get("seed") or 0)
        # Custom integer properties are 32-bit: a larger seed (from a script) is kept as text.
        image["posefactory_seed"] = seed if seed < 2**31 else str(seed)
        if cost is not None:
            image["posefactory_cost_usd"] = float(cost)
        images.append(image)
    collection = thumbnails()
    sheet = folder / "contact-sheet.png"
    if collection is not None and job_id not in collection and (images or sheet.is_file()):
        collection.load(job_id, str(sheet if sheet.is_file() else images[0].filepath), "IMAGE")
    load_control_images(folder, job_id)
    if autosave_dir and images:
        target = Path(bpy.path.abspath(autosave_dir)) / job_id
        target.mkdir(parents=True, exist_ok=True)
        for image in images:
            source = Path(bpy.path.abspath(image.filepath))
            flat = source.name if source.parent == folder else f"{source.parent.name}-{source.name}"
            shutil.copy2(source, target / flat)
    show(images[0] if images else None)
    return images


def show(image: bpy.types.Image | None) -> None:
    """Put ``image`` in the first open Image Editor, if there is one."""
    if image is None:
        return
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                return


def deliver(tracked: TrackedJob) -> None:
    result = tracked.result
    if result is None or result.output_dir is None or result.status != "done":
        return
    images = import_folder(result.output_dir, tracked.job_id, tracked.autosave_dir)
    tracked.image_names = [image.name for image in images]


def register() -> None:
    _previews["jobs"] = bpy.utils.previews.new()
    MANAGER.on_finished.append(deliver)


def unregister() -> None:
    if deliver in MANAGER.on_finished:
        MANAGER.on_finished.remove(deliver)
    collection = _previews.pop("jobs", None)
    if collection is not None:
        bpy.utils.previews.remove(collection)
