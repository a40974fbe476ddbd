"""The dashboard's forms built from the job settings table (remote/core/jobspec.py): each setting's
widget, the Generate form's sections, and the settings read back from a submitted form."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from werkzeug.datastructures import MultiDict

from ..core.jobspec import SETTINGS, SETTINGS_BY_NAME, Setting

# The form's sections: each job setting goes to the first whose names hold it, the rest to "Prompt".
SECTIONS = (("Where", ("backend",)), ("Items", ("poses", "cameras")),
            ("Backend and render", ("control", "openpose_scale", "depth_scale", "control_strength", "render_device",
                                    "allow_missing_files")))
LONG_TEXT = ("prompt", "negative_prompt")


def widget(each: Setting) -> str:
    """How the form shows ``each``: select, checkbox, textarea, text, integer or decimal."""
    if each.choices:
        return "select"
    if each.kind is bool:
        return "checkbox"
    if each.kind is str:
        return "textarea" if each.name in LONG_TEXT else "text"
    return "integer" if each.kind is int else "decimal"


def fields(names: Iterable[str]) -> list[tuple[Setting, str]]:
    """The job settings ``names``, each with its widget (a preset's form)."""
    return [(SETTINGS_BY_NAME[name], widget(SETTINGS_BY_NAME[name])) for name in names]


def form_sections() -> list[tuple[str, list[tuple[Setting, str]]]]:
    """The job settings table as the form's fieldsets, each setting with its widget."""
    placed = {name for _, names in SECTIONS for name in names}
    sections = [("Prompt", [each for each in SETTINGS if each.name not in placed])]
    sections += [(title, [each for each in SETTINGS if each.name in names]) for title, names in SECTIONS]
    return [(title, [(each, widget(each)) for each in settings]) for title, settings in sections]


def setting_values(form: MultiDict, names: Iterable[str]) -> dict[str, Any]:
    """The job settings ``names`` from a form's text (those left empty keep their defaults); raises
    ValueError naming a field that is not a number."""
    settings: dict[str, Any] = {}
    for each in (SETTINGS_BY_NAME[name] for name in names):
        raw = form.get(each.name)
        if each.kind is bool:
            settings[each.name] = raw is not None and raw.lower() in ("1", "true", "on", "yes")
        elif raw is None or (not raw.strip() and (each.kind is not str or each.default)):
            continue
        elif each.kind is str:
            settings[each.name] = raw.strip() if each.name not in LONG_TEXT else raw
        else:
            settings[each.name] = each.parse(raw)
    return settings
