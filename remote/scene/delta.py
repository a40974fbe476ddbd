"""What travels instead of a whole file: a .blend as a patch against a
version of the same scene the pod already holds, other files
zstd-compressed when that saves enough, and the laptop's copies of the last
versions sent, which patches are made from.

A patch works on the .blend's own units, its blocks: each block of the new
file that the base holds byte for byte is a copy of the base's bytes, the
rest is carried (``PFDELTA1``, below), and the whole patch is
zstd-compressed. A one-bone change rewrites a few blocks and moves the
others, so it travels as a few kilobytes whatever the scene's size. (A
zstd raw-content dictionary, what ``zstd --patch-from`` builds on, indexes
only the last few MiB of a base from Python, so large scenes went whole.)
The pod checks every decoded file's sha256, and the laptop sends the whole
file when a patch does not decode.

    PFDELTA1\n  then records:  C <u64 offset> <u64 length>   bytes of the base
                                D <u64 length> <bytes>        bytes carried
                                E                             the end
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import time
from pathlib import Path

from ..core.blendfile import BlendFileError, block_spans
from ..core.config import data_dir
from .pack import SceneFile

log = logging.getLogger(__name__)
LEVEL = 6
DELTA_MAGIC = b"PFDELTA1\n"
COMPRESS_MIN_BYTES = 4096
WORTH = 0.9  # an encoding is sent only when it is at most this fraction of the file
# Already compressed: zstd would only spend time on them.
COMPRESSED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".mov", ".mkv", ".avi", ".webm",
                                 ".mp3", ".ogg", ".flac", ".zip", ".gz", ".zst", ".xz", ".7z", ".ktx2", ".jp2"})
VERSIONS_KEPT = 2
BASES_OFFERED = 4  # the pod patches against the first of these it holds
VERSIONS_MAX_AGE_S = 30 * 24 * 3600


def encode(source: Path, out: Path, base: Path | None = None) -> Path | None:
    """``source`` in ``out``: zstd, or a patch against ``base`` (two .blend files);
    None when that would not save enough to be worth it."""
    import zstandard

    size = source.stat().st_size
    if base is not None:
        patch = block_patch(base.read_bytes(), source.read_bytes())
        if patch is None:
            return None
        data = zstandard.ZstdCompressor(level=LEVEL).compress(patch)
        if len(data) > WORTH * size:
            return None
        out.write_bytes(data)
        return out
    if size < COMPRESS_MIN_BYTES or source.suffix.lower() in COMPRESSED_SUFFIXES:
        return None
    partial = out.with_name(out.name + ".tmp")
    with open(source, "rb") as raw, open(partial, "wb") as handle:
        zstandard.ZstdCompressor(level=LEVEL).copy_stream(raw, handle, size=size)
    if partial.stat().st_size > WORTH * size:
        partial.unlink()
        return None
    os.replace(partial, out)
    return out


def block_patch(base: bytes, new: bytes) -> bytes | None:
    """``new`` as copies of ``base``'s blocks and the bytes it does not hold (None: not two .blend files)."""
    try:
        base_spans, new_spans = block_spans(base), block_spans(new)
    except BlendFileError:
        return None
    view = memoryview(base)
    known: dict[bytes, tuple[int, int]] = {}
    for start, end in base_spans:
        known.setdefault(hashlib.blake2b(view[start:end], digest_size=16).digest(), (start, end))
    records: list[bytes] = [DELTA_MAGIC]
    copy: list[int] = []  # [start, end] of the base run being copied
    carried = bytearray()

    def flush() -> None:
        if copy:
            records.append(b"C" + struct.pack(">QQ", copy[0], copy[1] - copy[0]))
            copy.clear()
        if carried:
            records.append(b"D" + struct.pack(">Q", len(carried)) + bytes(carried))
            carried.clear()

    fresh = memoryview(new)
    for start, end in new_spans:
        found = known.get(hashlib.blake2b(fresh[start:end], digest_size=16).digest())
        if found is not None and view[found[0]:found[1]] == fresh[start:end]:  # compared in place, not copied
            if copy and copy[1] == found[0] and not carried:
                copy[1] = found[1]  # the next block of the same run
                continue
            flush()
            copy.extend(found)
        else:
            if copy:
                flush()
            carried += fresh[start:end]
    flush()
    records.append(b"E")
    return b"".join(records)


def block_digests(data: bytes) -> dict[bytes, int]:
    """A .blend's blocks by content: digest → size (raises BlendFileError for anything else)."""
    view = memoryview(data)
    return {hashlib.blake2b(view[start:end], digest_size=16).digest(): end - start for start, end in block_spans(data)}


class Versions:
    """The last .blend versions sent per scene, kept on this machine as patch bases.

    A new version is patched against the kept version that holds most of its bytes, whatever
    scene it was kept for: a *Save As* under another name, or a scene built from another
    (a shot copied from a layout file), finds its base by content, not by path. Each kept
    version has its block digests beside it (``<sha>.blocks``) so ranking reads no .blend.
    """

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

    def closest(self, blend: Path, limit: int = BASES_OFFERED) -> list[tuple[str, Path]]:
        """(sha256, file) of the kept versions of any scene that share the most block bytes with
        ``blend``, most first (newest first among equals); those sharing nothing are left out."""
        try:
            wanted = block_digests(blend.read_bytes())
        except (OSError, BlendFileError):
            return []
        scored: dict[str, tuple[int, int, Path]] = {}
        for path in self.root.glob("*/*.blend") if self.root.is_dir() else []:
            if len(path.stem) != 64:
                continue
            held = self._digests(path)
            shared = sum(size for digest, size in wanted.items() if digest in held)
            if shared and shared > scored.get(path.stem, (0, 0, path))[0]:
                scored[path.stem] = (shared, path.stat().st_mtime_ns, path)
        ranked = sorted(scored.items(), key=lambda item: (item[1][0], item[1][1]), reverse=True)[:limit]
        for sha, (shared, _, _) in ranked[:1]:
            log.info("delta base: %s holds %d of the %d bytes of blocks", sha[:12], shared, sum(wanted.values()))
        return [(sha, path) for sha, (_, _, path) in ranked]

    def _digests(self, kept: Path) -> set[bytes]:
        """The kept version's block digests, from ``<sha>.blocks`` (written with it, or now)."""
        index = kept.with_suffix(".blocks")
        try:
            raw = index.read_bytes()
        except OSError:
            try:
                raw = b"".join(block_digests(kept.read_bytes()))
                index.write_bytes(raw)
            except (OSError, BlendFileError):
                return set()
        return {raw[i:i + 16] for i in range(0, len(raw) - 15, 16)}

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
                self._digests(kept)
            now = time.time()
            os.utime(kept, (now, now))
            for _, old in self.bases(key)[VERSIONS_KEPT:]:
                old.unlink(missing_ok=True)
                old.with_suffix(".blocks").unlink(missing_ok=True)
            self._prune(folder)
        except OSError as exc:
            log.warning("could not keep the scene version for the next delta: %s", exc)

    def _prune(self, current: Path) -> None:
        """Scenes not sent for a month lose their kept versions."""
        limit = time.time() - VERSIONS_MAX_AGE_S
        for folder in self.root.iterdir():
            if folder != current and folder.is_dir() and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
