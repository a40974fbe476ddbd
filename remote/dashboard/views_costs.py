"""Costs: spending per day, ISO week, host and backend, the month's budget
left, and the last 30 days as a server-drawn SVG chart."""
from __future__ import annotations

import threading
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, jsonify, render_template
from markupsafe import Markup

from .costs import ZERO, Spending, chart_svg, last_days, summarize
from .state import Dashboard, dashboard

blueprint = Blueprint("costs", __name__)
CHART_DAYS = 30
_lock = threading.Lock()


def _spending() -> tuple[Dashboard, Spending]:
    """The summary, recomputed only when the ledger, the job list or the day changed."""
    board = dashboard()
    entries = board.ledger.entries()
    board.jobs.jobs()
    key = (board.ledger.version, board.jobs.version, datetime.now(UTC).date())
    with _lock:
        cached = current_app.extensions.get("posefactory.spending")
        if cached is None or cached[0] != key:
            cached = (key, summarize(entries, board.backend_of))
            current_app.extensions["posefactory.spending"] = cached
    return board, cached[1]


@blueprint.get("/costs")
def index() -> str:
    board, spending = _spending()
    budget_left = board.monthly_budget - spending.this_month if board.monthly_budget is not None else None
    # chart_svg escapes every text it writes; the markup itself is ours.
    chart = Markup(chart_svg(spending.by_day, days=CHART_DAYS))
    chart_total = sum((value for _, value in last_days(spending.by_day, CHART_DAYS)), ZERO)
    return render_template("costs.html", spending=spending, chart=chart, budget=board.monthly_budget,
                           budget_left=budget_left, chart_total=chart_total, skipped=board.ledger.skipped,
                           month=datetime.now(UTC).strftime("%B %Y"))


@blueprint.get("/api/costs")
def summary() -> Response:
    _, spending = _spending()
    return jsonify({"total_usd": str(spending.total), "jobs": spending.jobs,
                    "by_day": {day.isoformat(): str(v) for day, v in spending.by_day.items()},
                    "by_week": {k: str(v) for k, v in spending.by_week.items()},
                    "by_host": {k: str(v) for k, v in spending.by_host.items()},
                    "by_backend": {k: str(v) for k, v in spending.by_backend.items()},
                    "this_month_usd": str(spending.this_month),
                    "pod_uptime_by_host": {k: str(v) for k, v in spending.pod_uptime_by_host.items()},
                    "burn_rate_usd_per_hr": str(spending.burn_rate)})
