"""Prompt presets: the same YAML files the add-on's preset menu lists
(remote.core.presets); list, save (new or over an existing name), delete, and
apply (opens Generate with the preset's settings)."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from ..core.presets import PRESET_SETTINGS, PresetError, PromptPreset, delete_preset, list_presets, preset_from_dict, presets_dir, save_preset
from .form_fields import fields, setting_values
from .state import dashboard

log = logging.getLogger(__name__)
blueprint = Blueprint("presets", __name__)


def folder() -> Path:
    chosen = dashboard().presets_folder
    return chosen if chosen is not None else presets_dir()


def preset_from_form(form: MultiDict) -> PromptPreset:
    """A checked preset from a form's fields; raises PresetError."""
    name = form.get("name", "").strip()
    if not name:
        raise PresetError("name: must not be empty")
    try:
        values = setting_values(form, PRESET_SETTINGS)
    except ValueError as exc:
        raise PresetError(str(exc)) from None
    return preset_from_dict({"name": name, **values}, name, "preset")


@blueprint.get("/presets")
def index() -> str:
    presets, problems = list_presets(folder())
    return render_template("presets.html", presets=presets, problems=problems, folder=folder(),
                           fields=fields(PRESET_SETTINGS), blank=PromptPreset(name=""))


@blueprint.post("/presets")
def save() -> Response:
    try:
        path = save_preset(preset_from_form(request.form), folder())
    except PresetError as exc:
        flash(f"Preset not saved: {exc}", "error")
    else:
        flash(f"Saved preset {path.stem.replace('_', ' ')}", "ok")
    return redirect(url_for("presets.index"))


@blueprint.post("/presets/delete")
def delete() -> Response:
    name = request.form.get("name", "")
    try:
        removed = delete_preset(name, folder())
    except PresetError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Deleted preset {name}" if removed else f"No preset named {name}", "ok" if removed else "error")
    return redirect(url_for("presets.index"))
