"""Spending from the ledger (``<data dir>/ledger.jsonl``, one JSON line per
finished job): per day, per ISO week, per host and per backend, the month's
budget left, and a bar chart drawn here as inline SVG (no external service).

The ledger holds two kinds of lines: one per finished job (no ``event`` key:
the job's cost) and events (``pod_start``, ``pod_stop`` with the pod's
uptime cost, ``serverless_request`` with each request's cost). Spending is
the sum of the job lines; events are detail that the job lines already
count (a serverless job's line is the sum of its requests; a pod's uptime
includes the GPU time its jobs were billed for), shown apart: the pods'
uptime cost, and the pods started and not yet stopped with their hourly
rate (the burn rate). Money is Decimal from each line's JSON number, so
every total equals the sum of those lines exactly; figures are shown to the cent. The ledger is
append-only, so it is read incrementally: only bytes added since the last
request are parsed (a rewritten or shorter file is read again from the start).
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .readers import money, plain_name, text

log = logging.getLogger(__name__)

LINE_MAX_BYTES = 64 * 1024
CENT = Decimal("0.01")
ZERO = Decimal(0)


@dataclass(frozen=True)
class LedgerEntry:
    job_id: str
    host: str
    status: str
    cost_usd: Decimal
    day: date | None
    backend: str  # from the line when it has one, else from the job's manifest, else ""
    # Event lines (pod_start, pod_stop, serverless_request); "" for a job's line.
    event: str = ""
    pod_id: str = ""
    cost_per_hr: Decimal | None = None
    at: str = ""


def usd(amount: Decimal) -> str:
    """``$1.23``: to the cent, half up (as invoices round)."""
    try:
        return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP)}"
    except (InvalidOperation, TypeError, AttributeError):  # beyond Decimal's precision, or not a Decimal
        return "$? (implausible figure)"


def _day(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value[:40])
    except ValueError:
        return None
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def entry_from_line(data: Any) -> LedgerEntry | None:
    if not isinstance(data, dict):
        return None
    raw_cost = data.get("cost_usd")
    cost = ZERO if raw_cost is None else money(raw_cost)  # None: a job that cost nothing known (failed early)
    if cost is None:
        return None  # an amount that is not a number is reported as unreadable, never guessed at
    job_id = data.get("job_id")
    return LedgerEntry(job_id=str(job_id) if plain_name(job_id) else "", host=text(data.get("host"), 128) or "?",
                       status=text(data.get("status"), 32), cost_usd=cost,
                       day=_day(data.get("at")), backend=text(data.get("backend"), 64),
                       event=text(data.get("event"), 40), pod_id=text(data.get("pod_id"), 100),
                       cost_per_hr=money(data.get("cost_per_hr")), at=text(data.get("at"), 40))


class Ledger:
    """The ledger's entries, kept up to date by reading only what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        self._entries: list[LedgerEntry] = []
        self.skipped = 0  # lines that were not a JSON object (shown, never guessed at)

    @property
    def version(self) -> tuple[object, int]:
        """Changes whenever :meth:`entries` would return different entries."""
        return self._identity, self._offset

    def entries(self) -> list[LedgerEntry]:
        import json

        with self._lock:
            try:
                stat = self.path.stat()
            except OSError:
                self._offset, self._entries, self._identity, self.skipped = 0, [], None, 0
                return []
            identity = (stat.st_dev, stat.st_ino)
            if identity != self._identity or stat.st_size < self._offset:
                self._offset, self._entries, self._identity, self.skipped = 0, [], identity, 0
            if stat.st_size == self._offset:
                return self._entries
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read(stat.st_size - self._offset)
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next request
            entries = list(self._entries)
            for raw in chunk[:end].splitlines():
                if not raw.strip():
                    continue
                entry = None
                if len(raw) <= LINE_MAX_BYTES:
                    try:
                        entry = entry_from_line(json.loads(raw))
                    except (ValueError, UnicodeDecodeError):
                        entry = None
                if entry is None:
                    self.skipped += 1
                    continue
                entries.append(entry)
            self._offset += end
            self._entries = entries
            return entries


@dataclass
class Spending:
    total: Decimal = ZERO
    jobs: int = 0
    by_day: dict[date, Decimal] = field(default_factory=dict)
    by_week: dict[str, Decimal] = field(default_factory=dict)
    by_host: dict[str, Decimal] = field(default_factory=dict)
    by_backend: dict[str, Decimal] = field(default_factory=dict)
    this_month: Decimal = ZERO
    undated: Decimal = ZERO
    pod_uptime_by_host: dict[str, Decimal] = field(default_factory=dict)  # pod_stop events
    running_pods: list[LedgerEntry] = field(default_factory=list)  # pod_start without a later pod_stop

    @property
    def burn_rate(self) -> Decimal:
        """Dollars per hour of the pods the ledger says are running."""
        return sum((pod.cost_per_hr or ZERO for pod in self.running_pods), ZERO)


def summarize(entries: list[LedgerEntry], backend_of: Callable[[str], str] | None = None,
              today: date | None = None) -> Spending:
    """Totals by day, ISO week, host and backend; ``backend_of(job_id)`` fills lines without a backend."""
    today = today or datetime.now(UTC).date()
    spending = Spending()
    by_day: dict[date, Decimal] = defaultdict(Decimal)
    by_week: dict[str, Decimal] = defaultdict(Decimal)
    by_host: dict[str, Decimal] = defaultdict(Decimal)
    by_backend: dict[str, Decimal] = defaultdict(Decimal)
    uptime: dict[str, Decimal] = defaultdict(Decimal)
    started: dict[tuple[str, str], LedgerEntry] = {}
    for entry in entries:
        if entry.event:
            if entry.event == "pod_start":
                started[(entry.host, entry.pod_id)] = entry
            elif entry.event == "pod_stop":
                started.pop((entry.host, entry.pod_id), None)
                uptime[entry.host] += entry.cost_usd
            continue
        spending.total += entry.cost_usd
        spending.jobs += 1
        by_host[entry.host] += entry.cost_usd
        backend = entry.backend or (backend_of(entry.job_id) if backend_of and entry.job_id else "") or "unknown"
        by_backend[backend] += entry.cost_usd
        if entry.day is None:
            spending.undated += entry.cost_usd
            continue
        by_day[entry.day] += entry.cost_usd
        year, week, _ = entry.day.isocalendar()
        by_week[f"{year}-W{week:02d}"] += entry.cost_usd
        if (entry.day.year, entry.day.month) == (today.year, today.month):
            spending.this_month += entry.cost_usd
    spending.by_day = dict(sorted(by_day.items()))
    spending.by_week = dict(sorted(by_week.items()))
    spending.by_host = dict(sorted(by_host.items(), key=lambda kv: (-kv[1], kv[0])))
    spending.by_backend = dict(sorted(by_backend.items(), key=lambda kv: (-kv[1], kv[0])))
    spending.pod_uptime_by_host = dict(sorted(uptime.items()))
    spending.running_pods = sorted(started.values(), key=lambda e: e.at)
    return spending


def last_days(by_day: dict[date, Decimal], days: int, today: date | None = None) -> list[tuple[date, Decimal]]:
    """The last ``days`` days up to ``today``, oldest first, with 0 for days without spending."""
    today = today or datetime.now(UTC).date()
    return [(day, by_day.get(day, ZERO)) for day in (today - timedelta(days=n) for n in range(days - 1, -1, -1))]


def chart_svg(by_day: dict[date, Decimal], *, days: int = 30, today: date | None = None,
              width: int = 720, height: int = 200) -> str:
    """A bar chart of the last ``days`` days' spending as an inline ``<svg>`` (text escaped)."""
    window = last_days(by_day, days, today)
    span, values = [day for day, _ in window], [value for _, value in window]
    total = sum(values, ZERO)
    top = max(values, default=ZERO) or Decimal(1)
    pad_left, pad_bottom, pad_top = 48, 22, 10
    plot_h = height - pad_bottom - pad_top
    bar_w = (width - pad_left) / days
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" data-total={quoteattr(str(total))} '
             f'aria-label={quoteattr(f"Spending over the last {days} days: {usd(total)}")}>',
             f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width}" y2="{pad_top + plot_h}" class="axis"/>',
             f'<text x="{pad_left - 6}" y="{pad_top + 10}" text-anchor="end" class="label">{escape(usd(top))}</text>',
             f'<text x="{pad_left - 6}" y="{pad_top + plot_h}" text-anchor="end" class="label">$0</text>']
    for index, (day, value) in enumerate(zip(span, values)):
        bar_h = float(value / top) * plot_h if value > 0 else 0.0
        x = pad_left + index * bar_w
        parts.append(f'<rect x="{x + 1:.1f}" y="{pad_top + plot_h - bar_h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                     f'height="{bar_h:.1f}" class="bar" data-day="{day.isoformat()}" data-usd="{value}">'
                     f'<title>{escape(f"{day.isoformat()}: {usd(value)}")}</title></rect>')
        if index % 7 == 0 or index == days - 1:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" text-anchor="middle" class="label">'
                         f'{escape(day.strftime("%m-%d"))}</text>')
    parts.append("</svg>")
    return "".join(parts)
