"""Prompt presets: small YAML files in the user's config dir, shared by the
dashboard and the add-on (whose Prompt panel lists them as a standard
Blender preset menu).

One file per preset, ``<presets dir>/<file name>.yaml``; the file name is the
preset's name made safe for every file system (the way Blender's own
``AddPresetBase.as_filename`` does it), and the display name is stored inside
the file. A file may have been edited by hand, so reading it checks every
value; a bad file is reported by name and never half-applied. Never imports bpy.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .jobspec import PROMPT_MAX_CHARS, SETTINGS_BY_NAME, JobValidationError

log = logging.getLogger(__name__)

PRESET_EXTENSIONS = (".yaml", ".yml")
PRESET_MAX_BYTES = 64 * 1024
NAME_MAX_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class PresetError(ValueError):
    """A preset that cannot be read or written; the message names the file and the field."""


# The job settings a preset sets (the scene keeps everything else); each as the job settings table declares it.
PRESET_SETTINGS = ("prompt", "negative_prompt", "style_preset", "strength", "steps", "cfg_scale")
_DEFAULTS = {name: SETTINGS_BY_NAME[name].default for name in PRESET_SETTINGS}


@dataclass(frozen=True)
class PromptPreset:
    """A named set of the PRESET_SETTINGS."""

    name: str
    prompt: str = _DEFAULTS["prompt"]
    negative_prompt: str = _DEFAULTS["negative_prompt"]
    style_preset: str = _DEFAULTS["style_preset"]  # empty: none
    strength: float = _DEFAULTS["strength"]
    steps: int = _DEFAULTS["steps"]
    cfg_scale: float = _DEFAULTS["cfg_scale"]

    def values(self) -> dict[str, Any]:
        """The settings without the name, as written to the file."""
        data = asdict(self)
        del data["name"]
        return data


def presets_dir(platform: str = sys.platform, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where prompt presets live, by the platform's convention for user config.

    ``POSEFACTORY_PRESETS_DIR`` overrides; otherwise Linux and other Unixes use
    ``$XDG_CONFIG_HOME`` (default ``~/.config``), macOS ``~/Library/Application
    Support`` and Windows ``%APPDATA%``, each with ``posefactory/presets``.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if env.get("POSEFACTORY_PRESETS_DIR"):
        return Path(env["POSEFACTORY_PRESETS_DIR"])
    if platform == "win32":
        base = Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData" / "Roaming"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        config_home = env.get("XDG_CONFIG_HOME", "")
        # The XDG spec: a relative value is invalid and must be ignored.
        base = Path(config_home) if config_home and Path(config_home).is_absolute() else home / ".config"
    return base / "posefactory" / "presets"


def file_stem(name: str) -> str:
    """The file name (without extension) for a preset name; raises PresetError for an empty result."""
    stem = _UNSAFE.sub("_", name.strip()).strip("_")[:NAME_MAX_CHARS]
    if not stem:
        raise PresetError(f"preset name {name!r}: needs at least one letter or digit")
    return stem


def _text(data: Mapping[str, Any], key: str, source: str, limit: int = PROMPT_MAX_CHARS) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PresetError(f"{source}: {key} must be text")
    if len(value) > limit:
        raise PresetError(f"{source}: {key} has {len(value)} characters, at most {limit}")
    return value


def _setting(data: Mapping[str, Any], name: str, source: str) -> Any:
    """A preset's value of the job setting ``name``, checked as a job checks it (a whole number may stand
    for a float)."""
    each = SETTINGS_BY_NAME[name]
    value = _text(data, name, source) if each.kind is str else data.get(name, each.default)
    if each.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        each.check(value)
    except JobValidationError as exc:
        raise PresetError(f"{source}: {exc}") from None
    return value


def preset_from_dict(data: Any, name: str, source: str = "<preset>") -> PromptPreset:
    """A checked preset from parsed YAML; raises PresetError naming ``source`` and the field."""
    if not isinstance(data, Mapping):
        raise PresetError(f"{source}: must hold a mapping of settings")
    unknown = sorted(set(map(str, data)) - {"name", *PromptPreset.__dataclass_fields__})
    if unknown:
        raise PresetError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    return PromptPreset(name=_text(data, "name", source, NAME_MAX_CHARS).strip() or name,
                        **{key: _setting(data, key, source) for key in PRESET_SETTINGS})


def load_preset(path: Path) -> PromptPreset:
    """Read one preset file (size-bounded, safe YAML, every value checked)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(PRESET_MAX_BYTES + 1)
    except OSError as exc:
        raise PresetError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > PRESET_MAX_BYTES:
        raise PresetError(f"{path.name}: larger than {PRESET_MAX_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PresetError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:  # a hostile or broken file nested thousands deep
        raise PresetError(f"{path.name}: not valid YAML (nested too deeply)") from None
    return preset_from_dict(data, path.stem.replace("_", " "), path.name)


def preset_files(folder: Path | None = None) -> list[Path]:
    """The preset files in ``folder`` (default: :func:`presets_dir`), sorted by name."""
    folder = presets_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in PRESET_EXTENSIONS and not p.name.startswith(".")
                   and p.is_file()), key=lambda p: p.name.lower())


def list_presets(folder: Path | None = None) -> tuple[list[PromptPreset], list[str]]:
    """Every readable preset, and one line per file that could not be read."""
    presets, problems = [], []
    for path in preset_files(folder):
        try:
            presets.append(load_preset(path))
        except PresetError as exc:
            log.warning("skipping preset: %s", exc)
            problems.append(str(exc))
    return presets, problems


def find_preset(name: str, folder: Path | None = None) -> Path | None:
    """The file of the preset called ``name`` (by its display name or its file name)."""
    folder = presets_dir() if folder is None else Path(folder)
    stem = file_stem(name)
    for path in preset_files(folder):
        if path.stem == stem:
            return path
    return None


def save_preset(preset: PromptPreset, folder: Path | None = None, *, overwrite: bool = True) -> Path:
    """Write ``preset`` as ``<folder>/<file name>.yaml`` (atomically); returns the path."""
    folder = presets_dir() if folder is None else Path(folder)
    checked = preset_from_dict({"name": preset.name, **preset.values()}, preset.name, preset.name)
    path = folder / f"{file_stem(checked.name)}.yaml"
    existing = find_preset(checked.name, folder)
    if existing is not None and not overwrite:
        raise PresetError(f"a preset named {checked.name!r} already exists")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump({"name": checked.name, **checked.values()}, sort_keys=False, allow_unicode=True),
                   encoding="utf-8")
    os.replace(tmp, path)
    if existing is not None and existing != path:  # the same name saved as .yml earlier
        existing.unlink(missing_ok=True)
    log.info("saved prompt preset %r to %s", checked.name, path)
    return path


def delete_preset(name: str, folder: Path | None = None) -> bool:
    """Remove the preset called ``name``; False when there is none."""
    path = find_preset(name, folder)
    if path is None:
        return False
    path.unlink()
    log.info("deleted prompt preset %r (%s)", name, path)
    return True
