"""The contact sheet of a batch: every item's thumbnail in one grid, each labelled in the picture.

The pod writes each item's ``thumb.png`` (``pod_setup/thumbnails.py``, Blender's
own image API) at :data:`THUMB_PX` on its longer side, in the item's aspect;
the laptop lays the sheet out from the thumbnails it holds, reused and new
items together, with Pillow: under each thumbnail the item's name, its camera
and seed, and a failed item's cell marked FAILED with its reason, so a sheet
printed or pasted into a review still says what each picture is.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
THUMB_PX = 384  # a thumbnail's longer side: what a reviewer can still judge a pose and a face at
GAP_PX = 8
FONT_PX = 15
LINE_PX = FONT_PX + 5
LABEL_LINES = 3
BACKGROUND = (24, 24, 28)
TEXT = (232, 232, 232)
FAILED = (150, 30, 36)


@dataclass(frozen=True)
class Cell:
    """One item of the sheet: its thumbnail (None when it has none) and its label lines."""

    thumb: Path | None
    lines: tuple[str, ...]
    failed: bool = False


def write_sheet(path: Path, cells: list[Cell]) -> dict:
    """Write the sheet (PNG); returns its manifest entry (file, grid, size, each cell's first label line)."""
    from PIL import Image, ImageDraw, ImageFont

    if not cells:
        raise ValueError("a contact sheet needs at least one item")
    thumbs = [_open(cell.thumb) if cell.thumb and not cell.failed else None for cell in cells]
    present = [thumb for thumb in thumbs if thumb is not None]
    aspect = (present[0].width / present[0].height) if present else 1.0
    cell_w, cell_h = (THUMB_PX, round(THUMB_PX / aspect)) if aspect >= 1 else (round(THUMB_PX * aspect), THUMB_PX)
    columns = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    band = LABEL_LINES * LINE_PX + 4
    size = (columns * cell_w + (columns + 1) * GAP_PX, rows * (cell_h + band) + (rows + 1) * GAP_PX)
    sheet = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_PX)
    for index, (cell, thumb) in enumerate(zip(cells, thumbs)):
        row, column = divmod(index, columns)
        left, top = GAP_PX + column * (cell_w + GAP_PX), GAP_PX + row * (cell_h + band + GAP_PX)
        if thumb is not None:
            fitted = thumb.resize(_fit(thumb.size, (cell_w, cell_h)), Image.Resampling.LANCZOS)
            sheet.paste(fitted, (left + (cell_w - fitted.width) // 2, top + (cell_h - fitted.height) // 2))
        elif cell.failed:
            draw.rectangle((left, top, left + cell_w - 1, top + cell_h - 1), fill=FAILED)
            draw.text((left + cell_w // 2, top + cell_h // 2), "FAILED", fill=TEXT, font=font, anchor="mm")
        for number, line in enumerate(cell.lines[:LABEL_LINES]):
            draw.text((left + 2, top + cell_h + 3 + number * LINE_PX), _fit_text(draw, line, font, cell_w - 4),
                      fill=TEXT, font=font)
    sheet.save(path, format="PNG")
    log.info("contact sheet %s: %d cell(s) of %dx%d, %d column(s)", path.name, len(cells), cell_w, cell_h, columns)
    return {"file": path.name, "columns": columns, "rows": rows, "size": list(size), "cell": [cell_w, cell_h],
            "labels": [cell.lines[0] if cell.lines else "" for cell in cells]}


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        log.info("contact sheet: %s left out (%s)", path, exc)
        return None


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled to fill ``box`` in its own aspect (thumbnails of an older, smaller size grow)."""
    scale = min(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _fit_text(draw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
