"""The character library's pages: characters, one character's looks, the
trash; rename, tag, favourite, delete (to the trash) and restore; and
"Save to library" from a finished job."""
from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from .library import Library, LibraryError
from .state import dashboard

log = logging.getLogger(__name__)
blueprint = Blueprint("library", __name__)


def library() -> Library:
    return dashboard().library


def _act(action: Callable[[], object], done: str, back: str) -> Response:
    try:
        action()
    except LibraryError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "ok")
    return redirect(back)


@blueprint.get("/library")
def characters() -> str:
    everyone = library().characters()
    tag = request.args.get("tag", "").strip().lower()[:40]
    shown = [c for c in everyone if tag in c["tags"]] if tag else everyone
    all_tags = sorted({t for c in everyone for t in c["tags"]})
    return render_template("library.html", characters=shown, tag=tag, tags=all_tags, trash_count=len(library().trashed()))


@blueprint.get("/library/<character_id>")
def character(character_id: str) -> str:
    try:
        found = library().get(character_id)
    except LibraryError:
        abort(404, "no such character")
    return render_template("character.html", character=found)


@blueprint.post("/library")
def create() -> Response:
    try:
        created = library().create(request.form.get("name", ""))
    except LibraryError as exc:
        flash(str(exc), "error")
        return redirect(url_for("library.characters"))
    return redirect(url_for("library.character", character_id=created["id"]))


@blueprint.post("/library/<character_id>/rename")
def rename(character_id: str) -> Response:
    return _act(lambda: library().rename(character_id, request.form.get("name", "")), "Renamed",
                url_for("library.character", character_id=character_id))


@blueprint.post("/library/<character_id>/tags")
def tags(character_id: str) -> Response:
    return _act(lambda: library().set_tags(character_id, request.form.get("tags", "")), "Tags saved",
                url_for("library.character", character_id=character_id))


@blueprint.post("/library/<character_id>/favourite")
def favourite(character_id: str) -> Response:
    return _act(lambda: library().set_favourite(character_id, request.form.get("favourite") == "1"), "Saved",
                url_for("library.character", character_id=character_id))


@blueprint.post("/library/<character_id>/delete")
def delete(character_id: str) -> Response:
    return _act(lambda: library().delete_character(character_id), "Moved to the trash (restorable)",
                url_for("library.characters"))


@blueprint.post("/library/<character_id>/looks/<look_id>/rename")
def rename_look(character_id: str, look_id: str) -> Response:
    return _act(lambda: library().rename_look(character_id, look_id, request.form.get("name", "")), "Renamed",
                url_for("library.character", character_id=character_id))


@blueprint.post("/library/<character_id>/looks/<look_id>/delete")
def delete_look(character_id: str, look_id: str) -> Response:
    return _act(lambda: library().delete_look(character_id, look_id), "Look moved to the trash (restorable)",
                url_for("library.character", character_id=character_id))


@blueprint.get("/library-trash")
def trash() -> str:
    return render_template("trash.html", entries=library().trashed(), folder=library().trash)


@blueprint.post("/library-trash/<trash_id>/restore")
def restore(trash_id: str) -> Response:
    try:
        restored = library().restore(trash_id)
    except LibraryError as exc:
        flash(str(exc), "error")
        return redirect(url_for("library.trash"))
    flash("Restored", "ok")
    return redirect(url_for("library.character", character_id=restored))


@blueprint.post("/jobs/<job_id>/save-look")
def save_look(job_id: str) -> Response:
    board = dashboard()
    job = board.jobs.get(job_id)
    manifest = board.manifests.get(job) if job else None
    if job is None or manifest is None or not manifest.images:
        abort(404, "no finished job with images by that id")
    chosen = [name for name in request.form.getlist("image") if name in manifest.images] or manifest.images
    settings = {"prompt": manifest.prompt or job.prompt, "negative_prompt": manifest.negative_prompt,
                "seed": manifest.seeds.get(chosen[0], manifest.seed), "backend": manifest.backend,
                "size": manifest.size, "steps": manifest.steps, "strength": manifest.strength,
                "cfg_scale": manifest.cfg_scale, "style_preset": manifest.style_preset}
    try:
        lib = library()
        name = request.form.get("character", "")
        found = lib.find_by_name(name) or lib.create(name, board.scenes.scene_of(job))
        lib.add_look(found["id"], request.form.get("look", "").strip() or f"look from {job_id}", settings,
                     [(job_id, image) for image in chosen], job_id)
    except LibraryError as exc:
        log.info("look from %s not saved: %s", job_id, exc)
        flash(f"Not saved: {exc}", "error")
        return redirect(url_for("jobs.job_page", job_id=job_id))
    flash(f"Saved to {found['name']}", "ok")
    return redirect(url_for("library.character", character_id=found["id"]))
