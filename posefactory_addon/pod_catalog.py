"""RunPod's GPU catalog as the Create Pod dialog lists it: read in a worker thread, answered through
:mod:`ui_channel` (:class:`ui_channel.CatalogLoaded`) into :data:`CATALOG`, which the dialog's draw and
the GPU field's search only read."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import bpy

from . import preferences, ui_channel
from .remote.core.pod_output import clean_text
from .remote.jobs import provision

SHOWN = 12  # rows in the dialog


@dataclass
class CatalogView:
    """The latest catalog (main thread only)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    loading: bool = False
    fetch: int = 0  # the latest fetch asked for; older answers are dropped
    asked: tuple[str, int] = ("", 0)  # its cloud and GPU count


CATALOG = CatalogView()


def one_line(exc: BaseException) -> str:
    """A worker's exception as the one line the artist sees (remote/ redacted the key already)."""
    return clean_text(str(exc), 400) or type(exc).__name__


def fetch(cloud: str, count: int, max_price: float) -> None:
    """Main thread, with the key in the environment: read the catalog in a worker thread (a new
    fetch supersedes one in flight for another cloud or count)."""
    if CATALOG.loading and CATALOG.asked == (cloud, count):
        return
    CATALOG.fetch += 1
    CATALOG.loading, CATALOG.asked, number = True, (cloud, count), CATALOG.fetch

    def worker() -> None:
        try:
            rows = provision.gpu_rows(cloud, count, max_price)
            ui_channel.post(ui_channel.CatalogLoaded(number, rows=tuple(rows)))
        except Exception as exc:  # the dialog shows it in one line
            ui_channel.post(ui_channel.CatalogLoaded(number, error=one_line(exc)))

    threading.Thread(target=worker, name="posefactory-gpu-catalog", daemon=True).start()


def loaded(message: ui_channel.CatalogLoaded) -> None:
    if message.fetch == CATALOG.fetch:
        CATALOG.loading, CATALOG.rows, CATALOG.error = False, list(message.rows), message.error


def refetch(operator: Any, context: bpy.types.Context) -> None:
    """The dialog's cloud or GPU count changed: prices differ, read them again."""
    if preferences.runpod_environment(context):
        fetch(operator.cloud, operator.gpu_count, operator.max_price)


def fits(row: dict[str, Any], max_price: float) -> bool:
    """Available now and under the dialog's ceiling as it is (the row's own ``fits`` was for the fetch's)."""
    return row["availability"] != "NONE" and row["price_per_hr"] <= max_price


def row_text(row: dict[str, Any], max_price: float) -> str:
    why = "" if fits(row, max_price) else ("  unavailable" if row["availability"] == "NONE" else "  over the ceiling")
    return (f"{row['name']} ({row['id']}), {row['memory_gb']} GB: ${row['price_per_hr']:.2f}/h for "
            f"{CATALOG.asked[1]}, {row['availability'].lower()}{why}")


def gpu_search(operator: Any, context: bpy.types.Context, text: str) -> list[tuple[str, str]]:
    """The GPU field's suggestions: the catalog's ids, described by name, memory, price and availability."""
    wanted = text.lower()
    return [(row["id"], row_text(row, operator.max_price)) for row in CATALOG.rows
            if wanted in row["id"].lower() or wanted in row["name"].lower()]


def draw(layout: Any, max_price: float) -> None:
    """The rows as the dialog lists them, marked when over the ceiling or unavailable (reads CATALOG only)."""
    if CATALOG.loading:
        layout.label(text="Refreshing the GPU catalog…", icon="FILE_REFRESH")
    if CATALOG.error:
        layout.label(text=CATALOG.error[:120], icon="ERROR")
    for row in CATALOG.rows[:SHOWN]:
        layout.label(text=row_text(row, max_price), icon="CHECKMARK" if fits(row, max_price) else "X")


def register() -> None:
    ui_channel.on(ui_channel.CatalogLoaded, loaded)


def unregister() -> None:
    CATALOG.rows, CATALOG.loading = [], False
