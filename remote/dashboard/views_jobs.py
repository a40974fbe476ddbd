"""Jobs: the paginated list (running jobs first, live), one job's page with
every image at full size, and the files and thumbnails they show, served
only from inside the data dir."""
from __future__ import annotations

import logging
import mimetypes
from typing import Any

from flask import Blueprint, Response, abort, jsonify, render_template, request, send_file

from .readers import JobView, Manifest, contact_sheet_name, job_file
from .state import JOBS_PER_PAGE, dashboard
from .thumbs import ThumbnailError, thumbnail

log = logging.getLogger(__name__)
blueprint = Blueprint("jobs", __name__)


def first_image(job: JobView, manifest: Manifest | None) -> str | None:
    if manifest is None:
        return None
    if manifest.images:
        return manifest.images[0]
    return contact_sheet_name(job, manifest) or manifest.render


def items_progress(job: JobView, manifest: Manifest | None) -> tuple[int, int] | None:
    """A batch's (items done, items total): from the manifest once it is back, else from the record."""
    if manifest is not None and manifest.items_total:
        return manifest.items_done or 0, manifest.items_total
    if job.items_total:
        return job.items_done or 0, job.items_total
    return None


def job_json(job: JobView, manifest: Manifest | None) -> dict[str, Any]:
    """What the live views poll: status, stage, batch progress, images; the pipeline's own progress
    (fraction, message) for jobs this dashboard runs."""
    progress = dashboard().submitter.progress(job.job_id)
    return {
        "fraction": round(progress.fraction, 3) if progress and progress.fraction >= 0 else None,
        "message": progress.message[:300] if progress else None,
        "job_id": job.job_id, "status": job.status, "stage": job.stage, "host": job.host, "error": job.error,
        "cost_usd": str(job.cost_usd) if job.cost_usd is not None else None,
        "items_done": (items_progress(job, manifest) or (None, None))[0],
        "items_total": (items_progress(job, manifest) or (None, None))[1],
        "images": list(manifest.images) if manifest else [],
    }


def job_or_404(job_id: str) -> JobView:
    job = dashboard().jobs.get(job_id)
    if job is None:
        abort(404, "no such job")
    return job


def _page_number() -> int:
    try:
        return max(1, min(int(request.args.get("page", "1")), 1_000_000))
    except ValueError:
        return 1


@blueprint.get("/")
def index() -> str:
    board = dashboard()
    jobs = board.jobs.jobs()
    page = _page_number()
    pages = max(1, -(-len(jobs) // JOBS_PER_PAGE))
    page = min(page, pages)
    shown = jobs[(page - 1) * JOBS_PER_PAGE: page * JOBS_PER_PAGE]
    running = board.jobs.running()[:50]
    rows = [(job, board.manifests.get(job)) for job in shown]
    return render_template("jobs.html", rows=[(job, manifest, first_image(job, manifest), items_progress(job, manifest))
                                              for job, manifest in rows],
                           running=running, page=page, pages=pages, total=len(jobs))


@blueprint.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = job_or_404(job_id)
    manifest = dashboard().manifests.get(job)
    return render_template("job.html", job=job, manifest=manifest, contact_sheet=contact_sheet_name(job, manifest),
                           items=items_progress(job, manifest),
                           outside=job.output_dir is None)


@blueprint.get("/api/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    job = job_or_404(job_id)
    return jsonify(job_json(job, dashboard().manifests.get(job)))


@blueprint.get("/api/jobs")
def running_jobs() -> Response:
    board = dashboard()
    running = board.jobs.running()[:50]
    return jsonify({"running": [job_json(job, board.manifests.get(job)) for job in running]})


def _served(job_id: str, name: str):
    board = dashboard()
    job = board.jobs.get(job_id)
    path = job_file(board.root, job, name) if job is not None else None
    if path is None:
        log.info("refused file request %r / %r", job_id[:80], name[:80])
        abort(404, "no such file")
    return board, path


@blueprint.get("/files/<job_id>/<path:name>")
def job_image(job_id: str, name: str) -> Response:
    _, path = _served(job_id, name)
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return send_file(path, mimetype=mimetype, conditional=True, max_age=3600)


@blueprint.get("/thumbs/<job_id>/<path:name>")
def job_thumbnail(job_id: str, name: str) -> Response:
    board, path = _served(job_id, name)
    try:
        thumb = thumbnail(path, board.own_dir / "thumbs")
    except ThumbnailError:
        abort(404, "not a readable image")
    return send_file(thumb, mimetype="image/png", conditional=True, max_age=86400)
