"""The RunPod Serverless worker: one batch item per request, with the pod's own job code.

    python handler.py                                   # on RunPod (the image's CMD)
    python handler.py --rp_serve_api --rp_api_port 8000  # the SDK's local test server

A request's ``input`` (built by ``remote/runpod/serverless.py``)::

    {"item": "pose-03",                         # opaque, echoed back
     "job": {...RenderJob fields but the paths...},
     "scene": {"blend": "scene.blend",          # the job tree (remote/scene/pack.py)
               "files": [{"path": "scene.blend", "sha256": "<64 hex>", "size": 123,
                          "url": "https://…presigned GET…"}, …]},   # content-addressed in R2/S3
     "outputs": {"render.png": "https://…presigned PUT…", "manifest.json": …, "ai-render-1.png": …}}

A batch job (any poses/cameras but ``current``/``active``) writes
``<item>/render.png``, ``<item>/ai-render-N.png``, ``<item>/thumb.png`` and
``contact-sheet.png``, whose item names only the scene knows: its outputs are
``manifest.json`` and ``outputs.tar``, one archive of every item file (each
name checked by ``remote/core/batch_spec.py``'s rule before it is packed; the
laptop checks them again when it unpacks).

Once the job has run (and may have paid for AI images), nothing that fails
afterwards (an upload, a file without a URL) makes the request FAILED: the
answer is COMPLETED with ``item_error`` saying why, so the laptop fails the
item without re-running it and paying again.

Each file of the scene's tree is fetched once per worker (a warm worker
reuses it for the next item, or the next scene sharing a texture), checked
against its sha256, and the tree is laid out with hard links by the pod's
own store (``scene_store.py``, which refuses any path leaving the tree);
the job runs through
``render_job.run()``, exactly as on a pod; each output goes up through its
presigned PUT URL. Progress goes through ``runpod.serverless.progress_update``.
The answer is ``{"item", "files", "manifest"}``, or ``{"error": "…"}`` (the
SDK then marks the request FAILED). No key ever travels in the payload: a
backend's key (``STABILITY_API_KEY``) is a secret of the endpoint's template.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# The pod code: remote/ and pod_setup/ are siblings, as on a pod.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from pod_setup import render_job, scene_store
from remote.core.batch_spec import ItemEntryError, check_item_path
from remote.core.jobspec import JobValidationError, RenderJob

log = logging.getLogger("posefactory.serverless")
OUTPUT_NAME = re.compile(r"^(render\.png|manifest\.json|outputs\.tar|ai-render-[1-9][0-9]?\.png)$")
ARCHIVE = "outputs.tar"
SHEET = "contact-sheet.png"
ITEM_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
SCENE_CACHE = Path(os.environ.get("POSEFACTORY_SCENE_CACHE", Path(tempfile.gettempdir()) / "posefactory-scenes"))
TIMEOUT_S = 300


class ItemError(Exception):
    """An item that cannot run; the message is the request's error."""


def _url(value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s]+$", value) or len(value) > 8192:
        raise ItemError(f"{what}: expected an http(s) URL")
    return value


def check_input(raw: Any) -> dict[str, Any]:
    """The request's input, validated before anything is fetched or rendered."""
    if not isinstance(raw, dict):
        raise ItemError("input: expected an object")
    unknown = sorted(set(raw) - {"item", "job", "scene", "outputs"})
    if unknown:
        raise ItemError(f"input: unknown field(s) {', '.join(unknown)}")
    item = raw.get("item", "")
    if not isinstance(item, str) or not ITEM_ID.match(item):
        raise ItemError("item: expected an id of letters, digits, '.', '_' or '-'")
    if not isinstance(raw.get("job"), dict):
        raise ItemError("job: expected an object of RenderJob fields")
    if "blend_path" in raw["job"] or "output_dir" in raw["job"]:
        raise ItemError("job: paths are the worker's own; send scene and outputs instead")
    outputs = raw.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        raise ItemError("outputs: expected an object of file name → presigned PUT URL")
    for name, url in outputs.items():
        if not isinstance(name, str) or not OUTPUT_NAME.match(name):
            raise ItemError(f"outputs: {str(name)[:40]!r} is not a name the job writes")
        _url(url, f"outputs[{name}]")
    check_scene(raw.get("scene"))
    return raw


def check_scene(scene: Any) -> dict[str, Any]:
    """The scene's tree: the store's own checks (paths inside the tree, hashes, sizes), and a URL per file."""
    if not isinstance(scene, dict) or set(scene) - {"blend", "files"}:
        raise ItemError("scene: expected an object of blend and files")
    files = scene.get("files")
    if not isinstance(files, list) or not files or len(files) > scene_store.MAX_FILES:
        raise ItemError("scene: expected a list of files")
    for number, entry in enumerate(files):
        if not isinstance(entry, dict) or set(entry) != {"path", "sha256", "size", "url"}:
            raise ItemError(f"scene: file {number} needs exactly path, sha256, size and url")
        _url(entry["url"], f"scene: file {number}'s url")
    try:
        scene_store.validate_manifest(scene)
    except scene_store.StoreError as exc:
        raise ItemError(f"scene: {exc}") from None
    return scene


def fetch_scene(scene: dict[str, Any]) -> Path:
    """The scene's tree (each file downloaded once per worker, checked against its hash); its .blend."""
    store = scene_store.Store(str(SCENE_CACHE / "store"))
    store.ensure()
    for entry in scene["files"]:
        if not store.has(entry["sha256"], entry["size"]):
            _fetch_object(entry, Path(store.object(entry["sha256"])))
    listing = json.dumps({"blend": scene["blend"], "files": [{k: f[k] for k in ("path", "sha256", "size")}
                                                              for f in scene["files"]]}, sort_keys=True)
    tree = SCENE_CACHE / "trees" / hashlib.sha256(listing.encode()).hexdigest()[:32]
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "scene-tree.json").write_text(listing)  # marks the tree: the render refuses paths leaving it
    laid = store.layout(json.loads(listing), str(tree / "scene"))
    if "absent" in laid:
        raise ItemError(f"the scene's store lacks {len(laid['absent'])} file(s) after fetching them")
    return tree / "scene" / scene["blend"]


def _fetch_object(entry: dict[str, Any], target: Path) -> None:
    digest = hashlib.sha256()
    part = target.with_name(f"{target.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(entry["url"], timeout=TIMEOUT_S) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise ItemError(f"cannot fetch the scene's {entry['path']} ({_reason(exc)})") from None
    if digest.hexdigest() != entry["sha256"]:
        part.unlink(missing_ok=True)
        raise ItemError(f"the scene's {entry['path']}: its sha256 does not match (changed or truncated in storage)")
    os.replace(part, target)


def upload(path: Path, url: str) -> None:
    # urllib would label a body as a form (application/x-www-form-urlencoded): say what it is.
    request = urllib.request.Request(url, data=path.read_bytes(), method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ItemError(f"cannot upload {path.name} ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    # Never the URL: a presigned URL is a credential for its object.
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)[:120]
    return type(exc).__name__


def progress(job: dict[str, Any], stage: str, **extra: Any) -> None:
    """Shown in the request's /status while it runs (RunPod only: the SDK's local
    test server runs the handler inside /status and has nowhere to send it)."""
    log.info("%s: %s", job.get("id"), stage)
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        import runpod

        runpod.serverless.progress_update(job, {"stage": stage, **extra})


def run_item(job: dict[str, Any]) -> dict[str, Any]:
    """One batch item: fetch, render (+ AI step), upload; the answer for the request."""
    spec = check_input(job.get("input"))
    item = spec.get("item") or str(job.get("id", "item"))
    progress(job, "fetching", item=item)
    scene = fetch_scene(spec["scene"])
    with tempfile.TemporaryDirectory(prefix="posefactory-item-") as tmp:
        output_dir = Path(tmp) / "output"
        try:
            render = RenderJob.from_dict({**spec["job"], "blend_path": str(scene), "output_dir": str(output_dir)})
        except (JobValidationError, TypeError) as exc:
            raise ItemError(f"invalid job: {exc}") from None
        outputs = spec["outputs"]
        archive = ARCHIVE in outputs
        if "manifest.json" not in outputs or (archive and len(outputs) != 2) or (not archive and (
                "render.png" not in outputs or (render.backend != "none" and len(outputs) < 2 + render.batch))):
            raise ItemError("outputs: need URLs for manifest.json and outputs.tar (a batch), or for render.png, "
                            "manifest.json and every variation")
        job_file = Path(tmp) / "job.json"
        render.write(job_file)
        progress(job, "rendering", item=item)
        code = render_job.run(job_file)
        manifest = json.loads((output_dir / "manifest.json").read_text()) if (output_dir / "manifest.json").is_file() else {}
        paid = any(isinstance(v, dict) and v.get("finish_reason") in ("SUCCESS", "CONTENT_FILTERED")
                   for v in manifest.get("variations", []))
        if code != 0 and not paid:  # nothing was paid for AI images: a re-run costs only the render
            if (output_dir / "manifest.json").is_file():
                _try_upload(output_dir / "manifest.json", outputs["manifest.json"], [])
            raise ItemError(f"render_job exited {code}: {manifest.get('error') or 'see the worker log'}")
        progress(job, "uploading", item=item)
        files: list[str] = []
        problems: list[str] = []
        if archive:
            packed = pack(output_dir, Path(tmp) / ARCHIVE)
            if _try_upload(Path(tmp) / ARCHIVE, outputs[ARCHIVE], problems):
                files.append(ARCHIVE)
            missing = [name for name in manifest.get("images", []) if name not in packed]
        else:
            packed = []
            for name, url in outputs.items():
                if name != "manifest.json" and (output_dir / name).is_file() and _try_upload(output_dir / name, url,
                                                                                               problems):
                    files.append(name)
            missing = [name for name in manifest.get("images", []) if name not in outputs]
        if (output_dir / "manifest.json").is_file() and _try_upload(output_dir / "manifest.json",
                                                                    outputs["manifest.json"], problems):
            files.append("manifest.json")
        if missing:
            problems.append(f"no upload for {', '.join(str(m)[:60] for m in missing[:5])}")
        if code != 0:
            problems.append(f"render_job exited {code}: {manifest.get('error') or 'see the worker log'}")
    answer: dict[str, Any] = {"item": item, "files": sorted(files), "manifest": manifest}
    if archive:
        answer["packed"] = packed
    if problems:
        # COMPLETED, not FAILED: the AI step may have been paid; a re-run would pay again.
        answer["item_error"] = "; ".join(problems)[:500] + " (not re-run: its AI images may already be paid)"
        log.warning("item %s: %s", item, answer["item_error"])
    return answer


def pack(output_dir: Path, target: Path) -> list[str]:
    """Every item file of a batch (``<item>/<file>`` by the item-name rule, and the contact sheet) into one tar."""
    packed = []
    with tarfile.open(target, "w") as tar:
        for path in sorted(output_dir.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            name = path.relative_to(output_dir).as_posix()
            if name == "manifest.json":
                continue
            if name != SHEET:
                try:
                    check_item_path(name)
                except ItemEntryError:
                    continue  # control images and other working files stay on the worker
            tar.add(path, arcname=name, recursive=False)
            packed.append(name)
    return packed


def _try_upload(path: Path, url: str, problems: list[str]) -> bool:
    try:
        upload(path, url)
    except ItemError as exc:
        problems.append(str(exc))
        return False
    return True


def handler(job: dict[str, Any]) -> dict[str, Any]:
    """``runpod.serverless.start``'s handler: an item's answer or ``{"error": …}``."""
    try:
        return run_item(job)
    except ItemError as exc:
        log.warning("item failed: %s", exc)
        return {"error": str(exc)}


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler})
