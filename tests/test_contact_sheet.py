"""The contact sheet the laptop lays out: cells at a useful size in the items' aspect, each labelled in the
picture (item, camera, seed), failed items marked; from the thumbnails of reused and new items alike."""
from __future__ import annotations

import numpy as np
from PIL import Image

from remote.core.contact_sheet import BACKGROUND, FAILED, GAP_PX, LABEL_LINES, LINE_PX, THUMB_PX
from remote.jobs.items import rebuild_sheet


def _item(folder, name, colour, status="done", **extra):
    (folder / name).mkdir(parents=True)
    if status != "failed":
        Image.new("RGB", (THUMB_PX * 832 // 1216, THUMB_PX), colour).save(folder / name / "thumb.png")
    return {"name": name, "status": status, "camera": "Camera", "seed": 7, "images": [], **extra}


def test_three_portrait_items_and_a_failed_one_are_laid_out_labelled(tmp_path):
    items = [_item(tmp_path, "Idle--Camera", (200, 40, 40)), _item(tmp_path, "Wave--Camera", (40, 200, 40)),
             _item(tmp_path, "Cheer--Camera", (40, 40, 200), status="reused"),
             _item(tmp_path, "Kick--Camera", None, status="failed", error="'Kick' fits no armature")]
    entry = rebuild_sheet(items, tmp_path)
    sheet = np.asarray(Image.open(tmp_path / "contact-sheet.png").convert("RGB"))
    cell_w, cell_h = entry["cell"]
    assert max(cell_w, cell_h) >= 384 and cell_h == THUMB_PX and cell_w == THUMB_PX * 832 // 1216  # the items' aspect
    assert (entry["columns"], entry["rows"]) == (2, 2) and list(sheet.shape[1::-1]) == entry["size"]
    assert entry["labels"] == [item["name"] for item in items]
    band = LABEL_LINES * LINE_PX + 4
    for index, item in enumerate(items):
        row, column = divmod(index, 2)
        left, top = GAP_PX + column * (cell_w + GAP_PX), GAP_PX + row * (cell_h + band + GAP_PX)
        picture = sheet[top:top + cell_h, left:left + cell_w]
        label = sheet[top + cell_h:top + cell_h + band, left:left + cell_w]
        # Text was drawn in every cell's label band.
        assert (np.abs(label.astype(int) - BACKGROUND).sum(axis=-1) > 100).sum() > 50, item["name"]
        if item["status"] == "failed":
            assert (np.abs(picture.astype(int) - FAILED).sum(axis=-1) < 10).mean() > 0.8  # marked, not blank
        else:
            centre = picture[cell_h // 2, cell_w // 4]
            assert np.abs(centre.astype(int) - np.asarray(Image.open(tmp_path / item["name"] / "thumb.png"))[0, 0]).max() <= 2


def test_a_thumbnail_of_an_older_smaller_size_is_grown_to_the_cell(tmp_path):
    items = [_item(tmp_path, "a", (90, 90, 90))]
    (tmp_path / "b").mkdir()
    Image.new("RGB", (128, 187), (10, 220, 10)).save(tmp_path / "b" / "thumb.png")
    items.append({"name": "b", "status": "done", "camera": "Side", "seed": 0, "images": []})
    entry = rebuild_sheet(items, tmp_path)
    sheet = Image.open(tmp_path / "contact-sheet.png").convert("RGB")
    cell_w, cell_h = entry["cell"]
    right = sheet.getpixel((2 * GAP_PX + cell_w + cell_w // 2, GAP_PX + cell_h - 4))
    assert right[1] > 200 and right[0] < 40  # the small one fills its cell
