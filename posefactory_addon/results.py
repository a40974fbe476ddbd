"""Finished jobs' images into Blender: ``bpy.data.images`` entries named by job
and variation number (``PF <job> <pose> <camera> v<n>`` in a batch; prompt, seed
and cost as custom properties), kept when the .blend is saved (a fake user, or
packed into the file: the artist's choice in the preferences), shown in an open
Image Editor, autosaved where the artist chose, thumbnails for the Jobs panel
(a batch's contact sheet).

The results folder came from a pod: its manifest is read through
``remote.core.pod_output`` (size-bounded, names checked to stay inside the
folder, text cleaned) before anything is loaded or copied."""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import bpy
import bpy.utils.previews

from . import preferences
from .jobs import MANAGER, TrackedJob
from .remote.core.batch_spec import ItemEntryError, check_item_path, is_item_name
from .remote.core.pod_output import output_path, read_local_manifest

log = logging.getLogger(__name__)
VARIATION_FILE = re.compile(r"ai-render-(\d+)\.png")

_previews: dict[str, bpy.utils.previews.ImagePreviewCollection] = {}


# The control images a diffusers job writes next to its results (fixed names: never taken from the manifest).
CONTROL_KINDS = ("openpose", "depth")


def image_name(job_id: str, variation: int, item: dict | None = None) -> str:
    """``PF <job> v<n>``; in a batch ``PF <job> <pose> <camera> v<n>``."""
    if item is None:
        return f"PF {job_id} v{variation}"
    return f"PF {job_id} {item.get('pose', '')} {item.get('camera', '')} v{variation}"


def load_control_images(folder: Path, job_id: str, items: list[str] | tuple[str, ...] = ()) -> list[bpy.types.Image]:
    """``control-openpose.png`` / ``control-depth.png`` of a results folder (and of each batch item's
    folder in ``items``) as images named by job, item and kind."""
    loaded = []
    for item in ("", *items):
        for kind in CONTROL_KINDS:
            path = (folder / item if item else folder) / f"control-{kind}.png"
            if path.is_file():
                control = bpy.data.images.load(str(path), check_existing=True)
                control.name = " ".join(part for part in ("PF", job_id, item, kind) if part)
                control["posefactory_job"] = job_id
                control["posefactory_control"] = kind
                if item:
                    control["posefactory_item"] = item
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
        found: list[tuple[str, dict | None]] = []
        for item in items:
            paths = item.get("images") or ([item["render"]] if item.get("render") else [])
            found += [(path, item) for path in paths]
    else:
        names = manifest.get("images") or sorted(p.name for p in folder.glob("ai-render-*.png"))
        if not names and (folder / "render.png").is_file():
            names = ["render.png"]  # rendered without the AI step: bring the render itself back
        found = [(name, None) for name in names]
    safe: list[tuple[str, dict | None]] = []
    for path, entry in found:
        try:
            safe.append((check_item_path(path), entry))
        except ItemEntryError:  # a manifest is data from a pod: never a path out of the folder
            continue
    return safe


def import_folder(folder: Path, job_id: str | None = None, autosave_dir: str = "") -> list[bpy.types.Image]:
    """Load the images of a results folder (as the pod writes them: ``ai-render-<n>.png``, ``<item>/…`` in a batch).

    Raises PodOutputError when the folder's manifest is not to be trusted.
    """
    manifest = read_local_manifest(folder, allow_item_dirs=True)
    job_id = job_id or (manifest.job_id if manifest else "") or folder.name
    keep = preferences.get().keep_results
    images = []
    for position, (name, item) in enumerate(_images_of(folder, manifest.raw if manifest else {}), start=1):
        path = output_path(folder, name, allow_item_dirs=True)
        if not path.is_file():
            continue
        image = bpy.data.images.load(str(path), check_existing=True)
        if item is None:
            image.name = image_name(job_id, _variation_number(manifest, name, position))
        else:
            match = VARIATION_FILE.fullmatch(path.name)
            image.name = image_name(job_id, int(match.group(1)) if match else 0, item)
            image["posefactory_item"] = str(item.get("name", ""))
        image["posefactory_job"] = job_id
        image["posefactory_prompt"] = manifest.prompt if manifest else ""
        item_seed = item.get("seed") if item is not None and isinstance(item.get("seed"), int) else 0
        seed = (manifest.seeds.get(name) or item_seed or manifest.seed or 0) if manifest else 0
        # Custom integer properties are 32-bit: a larger seed (from a script) is kept as text.
        image["posefactory_seed"] = seed if seed < 2**31 else str(seed)
        if manifest is not None and manifest.reported_usd is not None:
            image["posefactory_cost_usd"] = float(manifest.reported_usd)
        _keep_with_the_file(image, keep)
        images.append(image)
    collection = thumbnails()
    sheet = folder / "contact-sheet.png"
    if collection is not None and job_id not in collection and (images or sheet.is_file()):
        collection.load(job_id, str(sheet if sheet.is_file() else images[0].filepath), "IMAGE")
    load_control_images(folder, job_id, _item_names(manifest.raw if manifest else {}))
    show(images[0] if images else None)
    if autosave_dir and images:
        autosave(images, job_id, autosave_dir)
    return images


def item_notes(manifest: dict) -> list[str]:
    """One line per item that failed or came with a warning (a thin skeleton, an empty depth image):
    a done job says what it did not do."""
    listed = manifest.get("items")
    items: list = listed if isinstance(listed, list) else []
    notes = []
    for item in items:
        if not isinstance(item, dict):
            continue
        note = item.get("error") if item.get("status") == "failed" else item.get("warning")
        if isinstance(note, str) and note:
            notes.append(f"{item.get('name', '?')}: {note}" if len(items) > 1 else note)
    return notes


def _item_names(manifest: dict) -> list[str]:
    """A batch's item folder names, those that are safe names only (the manifest came from the pod)."""
    items = manifest.get("items")
    return [item["name"] for item in items if isinstance(item, dict) and is_item_name(item.get("name"))] \
        if isinstance(items, list) else []


def _variation_number(manifest, name: str, position: int) -> int:
    """The image's variation number (a filtered variation leaves a gap), not its position."""
    if manifest is not None and name in manifest.numbers:
        return manifest.numbers[name]
    match = VARIATION_FILE.fullmatch(name)
    return int(match.group(1)) if match else position


def _keep_with_the_file(image: bpy.types.Image, keep: str) -> None:
    """Imported results survive saving the .blend: packed into it, or kept by a fake user."""
    if keep == "PACK":
        image.pack()
    else:
        image.use_fake_user = True


def autosave_folder(autosave_dir: str) -> Path:
    """Where autosaved results go: ``//`` is relative to the saved .blend; in an
    unsaved file it means the Downloads folder's ``autosave`` (never the process's cwd)."""
    if autosave_dir.startswith("//") and not bpy.data.filepath:
        return preferences.output_dir() / "autosave" / autosave_dir[2:]
    return Path(bpy.path.abspath(autosave_dir))


def autosave(images: list[bpy.types.Image], job_id: str, autosave_dir: str) -> Path:
    """Copy the job's images into the autosave folder; OSError says why it could not."""
    target = autosave_folder(autosave_dir) / job_id
    target.mkdir(parents=True, exist_ok=True)
    for image in images:
        source = Path(bpy.path.abspath(image.filepath))
        # A batch's ``<item>/ai-render-1.png`` becomes ``<item>-ai-render-1.png``: one flat folder per job.
        flat = source.name if image.get("posefactory_item") is None else f"{source.parent.name}-{source.name}"
        shutil.copy2(source, target / flat)
    log.info("autosaved %d image(s) of job %s to %s", len(images), job_id, target)
    return target


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
    """Import a finished job's images; a failed autosave is reported and the images are kept."""
    result = tracked.result
    if result is None or result.output_dir is None or result.status != "done":
        return
    tracked.item_notes = item_notes(result.manifest)
    images = import_folder(result.output_dir, tracked.job_id)
    tracked.image_names = [image.name for image in images]
    if tracked.autosave_dir and images:
        try:
            autosave(images, tracked.job_id, tracked.autosave_dir)
        except OSError as exc:
            log.warning("job %s: autosave failed: %s", tracked.job_id, exc)
            tracked.delivery_error = f"images imported, but autosave failed: {exc.strerror or exc} " \
                                     f"({exc.filename or tracked.autosave_dir})"


def register() -> None:
    _previews["jobs"] = bpy.utils.previews.new()
    MANAGER.on_finished.append(deliver)


def unregister() -> None:
    if deliver in MANAGER.on_finished:
        MANAGER.on_finished.remove(deliver)
    collection = _previews.pop("jobs", None)
    if collection is not None:
        bpy.utils.previews.remove(collection)
