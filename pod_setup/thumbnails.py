"""An item's thumbnail from one of its PNGs, read with Blender's own image loader."""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from remote.core.contact_sheet import encode_png, shrink


def read_rgb(path: Path) -> np.ndarray:
    """The PNG at ``path`` as an ``(height, width, 3)`` uint8 array, top row first."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = int(image.size[0]), int(image.size[1])
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)  # byte images: stored values / 255, bottom row first
    finally:
        bpy.data.images.remove(image)
    rgb = pixels.reshape(height, width, 4)[::-1, :, :3]
    return (rgb * 255 + 0.5).clip(0, 255).astype(np.uint8)


def write_thumbnail(source: Path, target: Path) -> np.ndarray:
    """Write ``target`` (a small PNG of ``source``); returns its pixels."""
    thumb = shrink(read_rgb(source))
    target.write_bytes(encode_png(thumb))
    return thumb
