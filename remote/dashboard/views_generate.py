"""Generate (a scene, a preset or a prompt, backend and host, the estimate,
then submit), cancel, and re-run with the same settings."""
from __future__ import annotations

import logging
import os
from typing import Any

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from ..core.jobspec import SDXL_SIZES, SETTINGS, STABILITY_KEY_BACKENDS
from ..core.presets import PresetError, find_preset, list_presets, load_preset
from .form_fields import form_sections, setting_values
from .scenes import SceneError
from .state import Dashboard, dashboard
from .submit import SubmitError, build_job, estimate, hosts
from .views_jobs import first_image, job_or_404
from .views_presets import folder as presets_folder

log = logging.getLogger(__name__)
blueprint = Blueprint("generate", __name__)
SCENE_THUMB_JOBS = 300  # how many recent jobs are looked at to find a scene's thumbnail
def settings_from_form(form: MultiDict) -> dict[str, Any]:
    """RenderJob settings from the form's text (those left empty keep their defaults) and its size; raises
    SubmitError naming a field that is not a number."""
    try:
        settings = setting_values(form, [each.name for each in SETTINGS])
    except ValueError as exc:
        raise SubmitError(str(exc)) from None
    size = form.get("size", "1024x1024")
    try:
        settings["width"], settings["height"] = (int(part) for part in size.split("x"))
    except ValueError:
        raise SubmitError(f"size: {size[:20]!r} is not WIDTHxHEIGHT") from None
    return settings


def _scene_thumbs(board: Dashboard) -> dict[str, tuple[str, str]]:
    store, thumbs = board.scenes, {}
    for job in board.jobs.jobs()[:SCENE_THUMB_JOBS]:
        sha = store.scene_of(job)
        if sha and sha not in thumbs:
            manifest = board.manifests.get(job)
            image = (manifest.render if manifest and manifest.render else None) or first_image(job, manifest)
            if image:
                thumbs[sha] = (job.job_id, image)
    return thumbs


def _default_backend() -> str:
    return "stability" if os.environ.get("STABILITY_API_KEY") else "none"


@blueprint.get("/generate")
def form() -> str:
    board = dashboard()
    values: dict[str, Any] = {**{each.name: each.default for each in SETTINGS}, "backend": _default_backend(),
                              "size": "1024x1024", "host": request.args.get("host", "local")}
    chosen_preset = request.args.get("preset", "")
    if chosen_preset:
        try:
            path = find_preset(chosen_preset, presets_folder())
            if path is None:
                raise PresetError(f"no preset named {chosen_preset!r}")
            values.update(load_preset(path).values())
        except PresetError as exc:
            flash(str(exc), "error")
    for key in (*(each.name for each in SETTINGS), "size"):
        if request.args.get(key):
            values[key] = request.args[key][:2000]
    try:
        host_names = sorted(hosts(board.hosts_file))
    except SubmitError as exc:
        flash(str(exc), "error")
        host_names = ["local"]
    presets, _ = list_presets(presets_folder())
    return render_template("generate.html", values=values, scenes=board.scenes.scenes(_scene_thumbs(board)),
                           chosen_scene=request.args.get("scene", ""), presets=presets, chosen_preset=chosen_preset,
                           hosts=host_names, sections=form_sections(),
                           sizes=[f"{w}x{h}" for w, h in SDXL_SIZES],
                           max_upload_mib=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024))


@blueprint.get("/api/estimate")
def estimate_json() -> Response | tuple[Response, int]:
    board = dashboard()
    try:
        job = build_job({**settings_from_form(request.args), "prompt": "estimate"})
        host = hosts(board.hosts_file).get(request.args.get("host", "local"))
        if host is None:
            raise SubmitError("unknown host")
        cost = estimate(job, host)
    except SubmitError as exc:
        return jsonify({"error": str(exc)}), 400
    return jsonify({"total_usd": f"{cost.total_usd:.4f}", "images": cost.images, "pod_type": cost.pod_type,
                    "gpu_seconds": cost.gpu_seconds})


@blueprint.post("/generate")
def submit() -> Response:
    board = dashboard()
    try:
        settings = settings_from_form(request.form)
        job = build_job(settings)
        upload = request.files.get("blend")
        if upload is not None and upload.filename:
            sha = board.scenes.add_upload(upload.stream, upload.filename, current_app.config["MAX_CONTENT_LENGTH"])
        else:
            sha = request.form.get("scene", "")
        scene = board.scenes.path(sha)
        if scene is None:
            raise SubmitError("choose a scene or upload a .blend")
        host = request.form.get("host", "local")
        api_key = os.environ.get("STABILITY_API_KEY") or None
        board.submitter.submit(job, scene, host, api_key)
        board.scenes.record_submission(job, sha, host)
    except (SubmitError, SceneError) as exc:
        flash(f"Not submitted: {exc}", "error")
        return redirect(url_for("generate.form"))
    log.info("generate: job %s on %s from scene %s", job.job_id, host, sha[:12])
    return redirect(url_for("jobs.job_page", job_id=job.job_id))


@blueprint.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    job = job_or_404(job_id)
    if not job.running:
        flash(f"{job_id} is not running", "error")
    else:
        try:
            flash(dashboard().submitter.cancel(job), "ok")
        except SubmitError as exc:
            flash(str(exc), "error")
    return redirect(url_for("jobs.job_page", job_id=job_id))


@blueprint.post("/jobs/<job_id>/rerun")
def rerun(job_id: str) -> Response:
    board = dashboard()
    job = job_or_404(job_id)
    store = board.scenes
    try:
        sha = store.scene_of(job)
        scene = store.path(sha)
        if scene is None:
            raise SubmitError("the scene this job rendered is not on this machine (only jobs submitted here or on "
                              "the local host keep it): use Generate with the scene")
        settings = store.settings_of(job, board.manifests.get(job))
        new = build_job(settings)
        if new.backend in STABILITY_KEY_BACKENDS and not os.environ.get("STABILITY_API_KEY"):
            raise SubmitError("this job used Stability: set STABILITY_API_KEY for the dashboard to re-run it")
        board.submitter.submit(new, scene, job.host, os.environ.get("STABILITY_API_KEY") or None)
        store.record_submission(new, sha, job.host)
    except SubmitError as exc:
        flash(f"Not re-run: {exc}", "error")
        return redirect(url_for("jobs.job_page", job_id=job_id))
    flash(f"Re-running {job_id} as {new.job_id}", "ok")
    return redirect(url_for("jobs.job_page", job_id=new.job_id))
