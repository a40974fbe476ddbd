"""Book-keeping of a batch's items on the pod: where each item's files go,
its manifest entry and the progress file the status poll reads.

Layout: the one-image job (``current`` pose, ``active`` camera) keeps its
files at the output dir's root as before batches (``render.png``,
``ai-render-<n>.png``); every other job writes ``<item>/render.png``,
``<item>/ai-render-<n>.png`` and ``<item>/thumb.png`` (the laptop lays the
thumbnails out as the contact sheet). Manifest paths are relative to the output dir.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from remote.core.batch_spec import is_single, parse_poses
from remote.core.jobspec import MAX_SEED, RenderJob

from .backends import Variation
from .poses import Item

log = logging.getLogger(__name__)
PROGRESS_FILE = "progress.json"  # in the job dir, next to job.json; merged into pod_agent's --status


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def with_batch_seed(job: RenderJob) -> RenderJob:
    """One seed for the whole batch, so the character's look holds across poses.

    A random seed (0) is drawn once here for a batch; the one-image job keeps
    0 and lets the AI backend choose, as before batches.
    """
    if job.seed or is_single(job.poses, job.cameras):
        return job
    seed = random.randint(1, MAX_SEED)
    log.info("batch seed %d drawn for every item", seed)
    return replace(job, seed=seed)


@dataclass
class BatchBook:
    """The items' entries and files under ``output_dir``; writes progress as items finish."""

    job: RenderJob
    output_dir: Path
    progress_path: Path
    items: list[Item] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def flat(self) -> bool:
        return is_single(self.job.poses, self.job.cameras)

    def item_dir(self, item: Item) -> Path:
        folder = self.output_dir if self.flat else self.output_dir / item.name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def relative(self, item: Item, name: str) -> str:
        return name if self.flat else f"{item.name}/{name}"

    def new_entry(self, item: Item) -> dict[str, Any]:
        return {**item.to_dict(), "status": "rendering", "render": None, "images": [], "seed": self.job.seed,
                "error": None}

    def save_variations(self, item: Item, entry: dict[str, Any], variations: list[Variation],
                        manifest: dict[str, Any]) -> None:
        """Write the usable variations into the item's folder; record all of them."""
        folder = self.item_dir(item)
        for variation in variations:
            record: dict[str, Any] = {"n": variation.n, "seed": variation.seed,
                                      "finish_reason": variation.finish_reason, "item": item.name}
            if variation.usable and variation.png is not None:
                name = f"ai-render-{variation.n}.png"
                (folder / name).write_bytes(variation.png)
                record["file"] = self.relative(item, name)
                entry["images"].append(record["file"])
                manifest["images"].append(record["file"])
            manifest["variations"].append(record)
        entry["variations"] = [{k: v for k, v in r.items() if k != "item"}
                               for r in manifest["variations"] if r["item"] == item.name]

    def write_progress(self, entries: list[dict[str, Any]], current: str | None) -> None:
        if self.flat:
            return  # one image: the job's state says it all
        done = sum(1 for e in entries if e["status"] == "done")
        failed = sum(1 for e in entries if e["status"] == "failed")
        write_json_atomically(self.progress_path, {
            "total": len(self.items), "done": done, "failed": failed, "current": current,
            "elapsed_s": round(time.monotonic() - self.started, 3)})

    def sequences(self, entries: list[dict[str, Any]]) -> dict[str, list[str]] | None:
        """A frame range's images per variation, in frame order (the animation's sequences)."""
        if parse_poses(self.job.poses).kind != "frames":
            return None
        ordered = sorted((e for e in entries if e["status"] == "done"), key=lambda e: e["frame"])
        result: dict[str, list[str]] = {"render": [e["render"] for e in ordered]}
        for n in range(1, self.job.variations + 1):
            frames = [path for e in ordered for path in e["images"] if path.endswith(f"/ai-render-{n}.png")]
            if frames:
                result[f"ai-render-{n}"] = frames
        return result
