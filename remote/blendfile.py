"""Is this file a .blend? Checked on the laptop before anything is uploaded.

A .blend starts with ``BLENDER`` (every version, Blender 5's new header
included). Compressed files wrap that in gzip (Blender 2.x) or in Zstandard
frames (Blender 3.0 and later, "Compress" in the save options), so the
header is looked for inside the first decompressed bytes. Zstandard is read
with the ``zstandard`` module when there is one; without it a file that is a
Zstandard stream is let through (the pod opens it and says so if it is not
a scene).
"""
from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

BLEND_MAGIC = b"BLENDER"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)  # little-endian magic of a skippable frame (Blender's seek table)


class NotABlendFile(ValueError):
    """The message names the file and what it looks like instead."""


def _zstd_head(path: Path, size: int) -> bytes | None:
    try:
        import zstandard
    except ImportError:
        return None
    with open(path, "rb") as handle:
        reader = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
        return reader.read(size)


def check_blend_file(path: Path | str) -> None:
    """Raise :class:`NotABlendFile` unless ``path`` is a (plain or compressed) .blend."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise NotABlendFile(f"cannot read the scene {path}: {exc.strerror}") from None
    if head.startswith(BLEND_MAGIC):
        return
    try:
        if head.startswith(GZIP_MAGIC):
            with gzip.open(path, "rb") as handle:
                inner = handle.read(len(BLEND_MAGIC))
            kind = "gzip-compressed"
        elif head.startswith(ZSTD_MAGIC) or int.from_bytes(head[:4], "little") in ZSTD_SKIPPABLE:
            decoded = _zstd_head(path, len(BLEND_MAGIC))
            if decoded is None:
                log.info("%s is Zstandard-compressed; no zstandard module to look inside, letting it through", path)
                return
            inner, kind = decoded, "Zstandard-compressed"
        else:
            raise NotABlendFile(f"{path} is not a .blend file (it starts with {head[:8]!r}); "
                                "save the scene from Blender and try again")
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        if isinstance(exc, NotABlendFile):
            raise
        raise NotABlendFile(f"{path} is a damaged compressed file ({exc}); it cannot be a scene") from None
    if not inner.startswith(BLEND_MAGIC):
        raise NotABlendFile(f"{path} is {kind} but holds no .blend; save the scene from Blender and try again")
