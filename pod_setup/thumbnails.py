"""An item's thumbnail from one of its PNGs, scaled and written with Blender's own image API."""
from __future__ import annotations

from pathlib import Path

import bpy

from remote.core.contact_sheet import THUMB_PX


def write_thumbnail(source: Path, target: Path) -> None:
    """Write ``target``: ``source`` scaled so its longer side is at most THUMB_PX, in its own aspect."""
    image = bpy.data.images.load(str(source), check_existing=False)
    try:
        width, height = int(image.size[0]), int(image.size[1])
        scale = THUMB_PX / max(width, height)
        if scale < 1:
            image.scale(max(1, round(width * scale)), max(1, round(height * scale)))
        image.filepath_raw = str(target)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)
