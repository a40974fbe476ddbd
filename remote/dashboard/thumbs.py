"""Thumbnails, made once and cached in ``<data dir>/dashboard/thumbs``.

A thumbnail's file name is a hash of the source's path, mtime and size, so a
replaced image gets a new one and a page never waits on more than the
thumbnails it shows for the first time. Images are decoded with Pillow, with
its decompression-bomb limit on (a pod's PNG is untrusted input).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

THUMB_PX = 256
MAX_SOURCE_PIXELS = 64_000_000


class ThumbnailError(ValueError):
    pass


def thumbnail(source: Path, cache_dir: Path, size: int = THUMB_PX) -> Path:
    """The cached PNG thumbnail (``size`` px on the long side) of ``source``."""
    stat = source.stat()
    key = hashlib.sha256(f"{source}\0{stat.st_mtime_ns}\0{stat.st_size}\0{size}".encode()).hexdigest()[:32]
    target = cache_dir / key[:2] / f"{key}.png"
    if target.is_file():
        return target
    from PIL import Image, UnidentifiedImageError  # only when a thumbnail is made

    Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS
    try:
        with Image.open(source) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image.thumbnail((size, size))
            converted = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            converted.save(tmp, format="PNG", optimize=False)
            os.replace(tmp, target)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        log.warning("no thumbnail for %s: %s", source.name, exc)
        raise ThumbnailError(f"{source.name}: not a readable image") from None
    log.debug("thumbnail made for %s", source.name)
    return target
