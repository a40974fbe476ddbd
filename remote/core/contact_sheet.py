"""The contact sheet: every item's first image in one grid, numpy only.

Thumbnails and the sheet are 8-bit RGB PNGs written by this module (no
filter, one zlib stream), so they can be read back without an image library:
the laptop rebuilds a sheet from thumbnails of reused and new items. The
labels are not drawn into the pixels; the manifest lists them in grid order.
"""
from __future__ import annotations

import logging
import math
import struct
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
THUMB_PX = 256  # a thumbnail's longer side
GAP_PX = 4
BACKGROUND = (24, 24, 28)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an ``(height, width, 3)`` uint8 array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a (height, width, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def decode_png(data: bytes) -> np.ndarray:
    """Read back a PNG this module wrote (8-bit RGB, unfiltered); anything else is a ValueError."""
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG")
    offset, header, compressed = len(_SIGNATURE), b"", b""
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed += body
        offset += 12 + length
    if len(header) != 13:
        raise ValueError("PNG without a header")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if (depth, color, interlace) != (8, 2, 0) or width * height > 64_000_000:
        raise ValueError("not an 8-bit RGB thumbnail")
    raw = np.frombuffer(zlib.decompress(compressed), np.uint8)
    if raw.size != height * (width * 3 + 1):
        raise ValueError("PNG data has the wrong size")
    rows = raw.reshape(height, width * 3 + 1)
    if rows[:, 0].any():
        raise ValueError("PNG rows are filtered (not written by this module)")
    return rows[:, 1:].reshape(height, width, 3).copy()


def shrink(rgb: np.ndarray, longest: int = THUMB_PX) -> np.ndarray:
    """Box-filter ``rgb`` down so its longer side is at most ``longest``."""
    height, width = rgb.shape[:2]
    step = max(1, math.ceil(max(height, width) / longest))
    height, width = height // step * step, width // step * step
    blocks = rgb[:height, :width].reshape(height // step, step, width // step, step, 3).astype(np.float32)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def sheet(tiles: list[np.ndarray | None], columns: int | None = None) -> np.ndarray:
    """A grid of ``tiles`` (None: an empty cell, e.g. a failed item), row by row."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    present = [t for t in tiles if t is not None]
    cell_h = max((t.shape[0] for t in present), default=THUMB_PX // 4)
    cell_w = max((t.shape[1] for t in present), default=THUMB_PX // 4)
    canvas = np.empty((rows * cell_h + (rows + 1) * GAP_PX, columns * cell_w + (columns + 1) * GAP_PX, 3), np.uint8)
    canvas[:] = BACKGROUND
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        row, column = divmod(index, columns)
        top, left = GAP_PX + row * (cell_h + GAP_PX), GAP_PX + column * (cell_w + GAP_PX)
        canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    return canvas


def write_sheet(path: Path, tiles: list[np.ndarray | None], labels: list[str]) -> dict:
    """Write the sheet; returns its manifest entry (file, grid, labels in grid order)."""
    columns = math.ceil(math.sqrt(len(tiles)))
    image = sheet(tiles, columns)
    path.write_bytes(encode_png(image))
    log.info("contact sheet %s: %d tile(s), %d column(s)", path.name, len(tiles), columns)
    return {"file": path.name, "columns": columns, "rows": math.ceil(len(tiles) / columns),
            "size": [int(image.shape[1]), int(image.shape[0])], "labels": labels}
