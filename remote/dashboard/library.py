"""The character library: a character is a scene plus named looks (prompt,
negative prompt, seed, backend settings) with their best images.

Stored as one JSON file per character in ``<data dir>/library/characters``.
A look refers to its images by (job id, file name) and never copies them, so
the library cannot disagree with the job records: a look whose job was
removed shows its images as missing. Deleting moves the character or look
into ``<data dir>/library/trash`` (one JSON file each, with where it came
from), so one click never loses anything; restoring puts it back.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .readers import as_list, plain_name, read_json, text

log = logging.getLogger(__name__)

CHARACTER_MAX_BYTES = 1024 * 1024
NAME_MAX_CHARS = 100
MAX_TAGS = 20
LOOK_FIELDS = ("prompt", "negative_prompt", "seed", "backend", "size", "steps", "strength", "cfg_scale", "style_preset")


class LibraryError(ValueError):
    """An action the library refuses; the message is for the user."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_id() -> str:
    return secrets.token_hex(6)


def clean_name(name: Any) -> str:
    value = " ".join(str(name or "").split())
    if not value:
        raise LibraryError("the name must not be empty")
    if len(value) > NAME_MAX_CHARS:
        raise LibraryError(f"the name has {len(value)} characters, at most {NAME_MAX_CHARS}")
    return value


def clean_tags(raw: str) -> list[str]:
    tags = []
    for tag in raw.split(","):
        tag = " ".join(tag.split()).lower()[:40]
        if tag and tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise LibraryError(f"{len(tags)} tags, at most {MAX_TAGS}")
    return tags


def _checked_character(data: dict[str, Any]) -> dict[str, Any] | None:
    """The character as stored, with every value checked (the file may have been edited by hand)."""
    if not plain_name(data.get("id")):
        return None
    looks = []
    for look in as_list(data.get("looks")):
        if not isinstance(look, dict) or not plain_name(look.get("id")):
            continue
        images = [{"job_id": image["job_id"], "name": image["name"]}
                  for image in as_list(look.get("images"))
                  if isinstance(image, dict) and plain_name(image.get("job_id")) and plain_name(image.get("name"))]
        settings = {key: look.get(key) for key in LOOK_FIELDS
                    if isinstance(look.get(key), (str, int, float)) and not isinstance(look.get(key), bool)}
        looks.append({"id": look["id"], "name": text(look.get("name"), NAME_MAX_CHARS) or "look",
                      "source_job": look.get("source_job") if plain_name(look.get("source_job")) else "",
                      "images": images, **settings})
    scene = data.get("scene_sha256")
    return {"id": data["id"], "name": text(data.get("name"), NAME_MAX_CHARS) or data["id"],
            "scene_sha256": scene if isinstance(scene, str) and len(scene) == 64 and scene.isalnum() else "",
            "tags": [text(tag, 40) for tag in as_list(data.get("tags")) if isinstance(tag, str)][:MAX_TAGS],
            "favourite": data.get("favourite") is True, "created_at": text(data.get("created_at"), 40),
            "looks": looks}


class Library:
    def __init__(self, root: Path) -> None:
        self.folder = root / "library" / "characters"
        self.trash = root / "library" / "trash"
        self._lock = threading.RLock()

    # -- files ---------------------------------------------------------------
    def _path(self, character_id: str) -> Path:
        if not plain_name(character_id):
            raise LibraryError("no such character")
        return self.folder / f"{character_id}.json"

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def characters(self) -> list[dict[str, Any]]:
        """Favourites first, then by name."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob("*.json"):
            data = read_json(path, CHARACTER_MAX_BYTES)
            character = _checked_character(data) if data else None
            if character and path.stem == character["id"]:
                found.append(character)
        return sorted(found, key=lambda c: (not c["favourite"], c["name"].lower()))

    def get(self, character_id: str) -> dict[str, Any]:
        data = read_json(self._path(character_id), CHARACTER_MAX_BYTES)
        character = _checked_character(data) if data else None
        if character is None or character["id"] != character_id:
            raise LibraryError("no such character")
        return character

    def _update(self, character_id: str, change: Any) -> dict[str, Any]:
        with self._lock:
            character = self.get(character_id)
            change(character)
            self._write(self._path(character_id), character)
            return character

    # -- characters ----------------------------------------------------------
    def create(self, name: str, scene_sha256: str = "") -> dict[str, Any]:
        character: dict[str, Any] = {"id": _new_id(), "name": clean_name(name), "scene_sha256": scene_sha256, "tags": [],
                     "favourite": False, "created_at": _now(), "looks": []}
        with self._lock:
            self._write(self._path(character["id"]), character)
        log.info("library: created character %s", character["id"])
        return character

    def find_by_name(self, name: str) -> dict[str, Any] | None:
        wanted = clean_name(name).lower()
        return next((c for c in self.characters() if c["name"].lower() == wanted), None)

    def rename(self, character_id: str, name: str) -> dict[str, Any]:
        new_name = clean_name(name)
        return self._update(character_id, lambda c: c.update(name=new_name))

    def set_tags(self, character_id: str, raw: str) -> dict[str, Any]:
        tags = clean_tags(raw)
        return self._update(character_id, lambda c: c.update(tags=tags))

    def set_favourite(self, character_id: str, favourite: bool) -> dict[str, Any]:
        return self._update(character_id, lambda c: c.update(favourite=favourite))

    # -- looks ---------------------------------------------------------------
    def add_look(self, character_id: str, name: str, settings: dict[str, Any], images: list[tuple[str, str]],
                 source_job: str) -> dict[str, Any]:
        look = {"id": _new_id(), "name": clean_name(name), "source_job": source_job if plain_name(source_job) else "",
                "images": [{"job_id": job, "name": image} for job, image in images
                           if plain_name(job) and plain_name(image)],
                **{key: value for key, value in settings.items() if key in LOOK_FIELDS and value not in (None, "")}}
        self._update(character_id, lambda c: c["looks"].append(look))
        log.info("library: look %s added to %s", look["id"], character_id)
        return look

    def rename_look(self, character_id: str, look_id: str, name: str) -> dict[str, Any]:
        new_name = clean_name(name)

        def change(character: dict[str, Any]) -> None:
            self._look(character, look_id)["name"] = new_name
        return self._update(character_id, change)

    @staticmethod
    def _look(character: dict[str, Any], look_id: str) -> dict[str, Any]:
        for look in character["looks"]:
            if look["id"] == look_id:
                return look
        raise LibraryError("no such look")

    # -- trash ---------------------------------------------------------------
    def _to_trash(self, entry: dict[str, Any]) -> str:
        trash_id = _new_id()
        self._write(self.trash / f"{trash_id}.json", {"id": trash_id, "deleted_at": _now(), **entry})
        return trash_id

    def delete_look(self, character_id: str, look_id: str) -> str:
        with self._lock:
            character = self.get(character_id)
            look = self._look(character, look_id)
            trash_id = self._to_trash({"kind": "look", "character_id": character_id,
                                       "character_name": character["name"], "look": look})
            character["looks"] = [other for other in character["looks"] if other["id"] != look_id]
            self._write(self._path(character_id), character)
        log.info("library: look %s of %s moved to the trash (%s)", look_id, character_id, trash_id)
        return trash_id

    def delete_character(self, character_id: str) -> str:
        with self._lock:
            character = self.get(character_id)
            trash_id = self._to_trash({"kind": "character", "character": character})
            self._path(character_id).unlink()
        log.info("library: character %s moved to the trash (%s)", character_id, trash_id)
        return trash_id

    def trashed(self) -> list[dict[str, Any]]:
        if not self.trash.is_dir():
            return []
        entries = []
        for path in self.trash.glob("*.json"):
            data = read_json(path, CHARACTER_MAX_BYTES)
            if data and plain_name(data.get("id")) and path.stem == data["id"] and data.get("kind") in ("look", "character"):
                entries.append(data)
        return sorted(entries, key=lambda e: str(e.get("deleted_at", "")), reverse=True)

    def restore(self, trash_id: str) -> str:
        """Put a trashed character or look back; returns the character's id."""
        with self._lock:
            path = self.trash / f"{trash_id}.json"
            entry = read_json(path, CHARACTER_MAX_BYTES) if plain_name(trash_id) else None
            if not entry or entry.get("id") != trash_id:
                raise LibraryError("nothing in the trash by that id")
            if entry.get("kind") == "character":
                character = _checked_character(entry.get("character") or {})
                if character is None:
                    raise LibraryError("the trashed character is unreadable")
                if self._path(character["id"]).exists():
                    raise LibraryError("a character with that id exists again")
                self._write(self._path(character["id"]), character)
                restored = character["id"]
            else:
                restored = str(entry.get("character_id", ""))
                look = entry.get("look")
                checked = _checked_character({"id": "x", "looks": [look]}) if isinstance(look, dict) else None
                if not checked or not checked["looks"]:
                    raise LibraryError("the trashed look is unreadable")
                try:
                    self.get(restored)
                except LibraryError:
                    # Its character is gone (deleted too): bring the look back in a character of its own.
                    restored = self.create(str(entry.get("character_name") or "restored"))["id"]
                self._update(restored, lambda c: c["looks"].append(checked["looks"][0]))
            path.unlink()
        log.info("library: restored %s into %s", trash_id, restored)
        return restored
