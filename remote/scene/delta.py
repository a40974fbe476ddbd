"""What travels instead of a whole file: a .blend as a zstd patch against a
version of the same scene the pod already holds (``zstd --patch-from`` on
the pod reads it), other files zstd-compressed when that saves enough, and
the laptop's copies of the last versions sent, which patches are made from.

A one-bone change to a scene moves a few kilobytes instead of the scene;
the pod checks every decoded file's sha256, and the laptop sends the whole
file when a patch does not decode.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

from ..core.config import data_dir
from .pack import SceneFile

log = logging.getLogger(__name__)
LEVEL = 6  # measured in bench_scene_transfer: patches as small as level 19's at a fraction of the time
DELTA_MAX_BYTES = 1 << 30  # zstd's window (2 GiB) must hold the base and the new file; larger ones go whole
COMPRESS_MIN_BYTES = 4096
WORTH = 0.9  # an encoding is sent only when it is at most this fraction of the file
# Already compressed: zstd would only spend time on them.
COMPRESSED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".mov", ".mkv", ".avi", ".webm",
                                 ".mp3", ".ogg", ".flac", ".zip", ".gz", ".zst", ".xz", ".7z", ".ktx2", ".jp2"})
VERSIONS_KEPT = 2
VERSIONS_MAX_AGE_S = 30 * 24 * 3600


def _window_log(*sizes: int) -> int:
    return min(max(sum(sizes).bit_length(), 20), 31)


def encode(source: Path, out: Path, base: Path | None = None) -> Path | None:
    """``source`` as zstd (a patch against ``base`` when given) in ``out``;
    None when that would not save enough to be worth it."""
    import zstandard

    size = source.stat().st_size
    if base is None and (size < COMPRESS_MIN_BYTES or source.suffix.lower() in COMPRESSED_SUFFIXES):
        return None
    if size > DELTA_MAX_BYTES:
        base = None
    reference = base.read_bytes() if base is not None else b""
    params = zstandard.ZstdCompressionParameters.from_level(
        LEVEL, window_log=_window_log(size, len(reference)), enable_ldm=True)
    dictionary = zstandard.ZstdCompressionDict(reference, dict_type=zstandard.DICT_TYPE_RAWCONTENT) if reference else None
    compressor = zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary)
    partial = out.with_name(out.name + ".tmp")
    with open(source, "rb") as raw, open(partial, "wb") as handle:
        compressor.copy_stream(raw, handle, size=size)
    if partial.stat().st_size > WORTH * size:
        partial.unlink()
        return None
    os.replace(partial, out)
    return out


class Versions:
    """The last .blend versions sent per scene, kept on this machine as patch bases."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or data_dir() / "scene-versions"

    def folder(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]

    def bases(self, key: str) -> list[tuple[str, Path]]:
        """(sha256, file) of the kept versions of ``key``, newest first."""
        folder = self.folder(key)
        if not folder.is_dir():
            return []
        found = [(p.stat().st_mtime_ns, p.stem, p) for p in folder.glob("*.blend") if len(p.stem) == 64]
        return [(sha, path) for _, sha, path in sorted(found, reverse=True)]

    def remember(self, key: str, blend: SceneFile) -> None:
        """Keep ``blend`` as the newest version of ``key`` (best effort: a full disk only costs a whole upload later)."""
        folder = self.folder(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            kept = folder / f"{blend.sha256}.blend"
            if not kept.exists():
                partial = kept.with_name(kept.name + ".tmp")
                shutil.copyfile(blend.source, partial)
                os.replace(partial, kept)
            now = time.time()
            os.utime(kept, (now, now))
            for _, old in self.bases(key)[VERSIONS_KEPT:]:
                old.unlink(missing_ok=True)
            self._prune(folder)
        except OSError as exc:
            log.warning("could not keep the scene version for the next delta: %s", exc)

    def _prune(self, current: Path) -> None:
        """Scenes not sent for a month lose their kept versions."""
        limit = time.time() - VERSIONS_MAX_AGE_S
        for folder in self.root.iterdir():
            if folder != current and folder.is_dir() and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
