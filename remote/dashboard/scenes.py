"""Scenes for Generate: content-addressed ``.blend`` files, and which scene
and settings each job used (for re-runs and the library).

Uploads go to ``<data dir>/scenes/<sha256>.blend`` after a size limit and a
header check (an uncompressed .blend starts ``BLENDER``; a compressed one is
a zstd or gzip stream whose content starts so). A job re-runs from these:
a scene the CLI or the add-on sent travels as its traced file tree
(``remote/scene``), which the pod's store keeps by content, not as one
.blend the dashboard could offer, so their jobs re-run from Blender or the CLI.

What the job records do not hold (the scene's hash, the full job settings)
is kept per job the dashboard submitted, in
``<data dir>/dashboard/submissions/<job id>.json``; for other jobs the
local pod's ``job.json`` or the manifest answers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..core.jobspec import SETTINGS, RenderJob
from .readers import JobView, Manifest, inside, plain_name, read_json, text

log = logging.getLogger(__name__)

SHA256 = re.compile(r"[0-9a-f]{64}")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1024 * 1024
# What a submission keeps of its job to re-run it: every job setting, and its size and sampler.
KEPT_SETTINGS = (*(each.name for each in SETTINGS), "width", "height", "sampler")


class SceneError(ValueError):
    """An upload or scene the dashboard refuses; the message is for the user."""


@dataclass(frozen=True)
class Scene:
    sha256: str
    name: str
    path: Path
    size: int
    added_at: str
    thumb: tuple[str, str] | None = None  # (job id, image name) of the newest job that used it


def blend_header_ok(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a .blend: plain, gzip- or zstd-compressed."""
    if head.startswith(b"BLENDER"):
        return True
    if head.startswith(GZIP_MAGIC):
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 7).startswith(b"BLENDER")
        except zlib.error:
            return False
    return head.startswith(ZSTD_MAGIC)  # zstd is not in the standard library: the frame magic must do


class SceneStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "scenes"
        self.submissions = root / "dashboard" / "submissions"

    # -- scenes ----------------------------------------------------------------
    def add_upload(self, stream: IO[bytes], filename: str, limit: int) -> str:
        """Store an uploaded .blend; returns its sha256. Raises SceneError before keeping anything bad."""
        display = Path(filename or "").name
        if not display.lower().endswith(".blend"):
            raise SceneError("only .blend files can be uploaded")
        self.folder.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        handle, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=self.folder)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                head = stream.read(64)
                if not blend_header_ok(head):
                    raise SceneError(f"{display[:80]} is not a Blender file (its header is not a .blend header)")
                while head:
                    size += len(head)
                    if size > limit:
                        raise SceneError(f"the upload is larger than {limit // (1024 * 1024)} MiB")
                    digest.update(head)
                    out.write(head)
                    head = stream.read(CHUNK)
            sha = digest.hexdigest()
            os.replace(tmp, self.folder / f"{sha}.blend")
        finally:
            tmp.unlink(missing_ok=True)
        meta = self.folder / f"{sha}.json"
        if not meta.exists():
            meta.write_text(json.dumps({"name": display[:200], "added_at": datetime.now(UTC).isoformat(timespec="seconds")}))
        log.info("scene uploaded: %s (%d bytes)", sha[:12], size)
        return sha

    def path(self, sha256: str) -> Path | None:
        if not SHA256.fullmatch(sha256 or ""):
            return None
        found = inside(self.root, self.folder / f"{sha256}.blend")
        return found if found is not None and found.is_file() else None

    def scenes(self, thumbs: dict[str, tuple[str, str]] | None = None) -> list[Scene]:
        """Every known scene, newest first; ``thumbs`` maps a scene hash to an image to show."""
        found: dict[str, Scene] = {}
        for folder in (self.folder,) if self.folder.is_dir() else ():
            for path in folder.glob("*.blend"):
                sha = path.stem
                if not SHA256.fullmatch(sha) or sha in found or inside(self.root, path) is None:
                    continue
                meta = read_json(path.with_suffix(".json"), 4096) or {}
                stat = path.stat()
                added = text(meta.get("added_at"), 40) or datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
                found[sha] = Scene(sha256=sha, name=text(meta.get("name"), 200) or f"scene {sha[:12]}", path=path,
                                   size=stat.st_size, added_at=added, thumb=(thumbs or {}).get(sha))
        return sorted(found.values(), key=lambda s: s.added_at, reverse=True)

    # -- submissions -----------------------------------------------------------
    def record_submission(self, job: RenderJob, scene_sha256: str, host: str) -> None:
        self.submissions.mkdir(parents=True, exist_ok=True)
        data = {"scene_sha256": scene_sha256, "host": host, "settings": {key: getattr(job, key) for key in KEPT_SETTINGS}}
        path = self.submissions / f"{job.job_id}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)

    def _local_pod_job(self, job: JobView) -> dict[str, Any] | None:
        path = inside(self.root, self.root / "local-pod" / "workspace" / "jobs" / job.job_id / "job.json")
        return read_json(path, 256 * 1024) if path is not None and job.host == "local" else None

    def scene_of(self, job: JobView) -> str:
        """The scene hash ``job`` rendered, or "" when no file here says."""
        submitted = read_json(self.submissions / f"{job.job_id}.json", 64 * 1024) if plain_name(job.job_id) else None
        if submitted and SHA256.fullmatch(str(submitted.get("scene_sha256", ""))):
            return submitted["scene_sha256"]
        return ""

    def settings_of(self, job: JobView, manifest: Manifest | None) -> dict[str, Any]:
        """The settings ``job`` ran with, as RenderJob fields (from the most complete source there is)."""
        submitted = read_json(self.submissions / f"{job.job_id}.json", 64 * 1024) if plain_name(job.job_id) else None
        source = (submitted or {}).get("settings") or self._local_pod_job(job)
        if isinstance(source, dict):
            return {key: source[key] for key in KEPT_SETTINGS if key in source}
        if manifest is None:
            return {"prompt": job.prompt} if job.prompt else {}
        settings: dict[str, Any] = {"prompt": manifest.prompt or job.prompt, "negative_prompt": manifest.negative_prompt,
                                    "style_preset": manifest.style_preset, "backend": manifest.backend}
        for key in ("steps", "strength", "cfg_scale", "seed"):
            if getattr(manifest, key) is not None:
                settings[key] = getattr(manifest, key)
        if manifest.size:
            settings["width"], settings["height"] = (int(v) for v in manifest.size.split("x"))
        return {key: value for key, value in settings.items() if value not in ("", None)}
