"""Add-on preferences: where the hosts are, storage, the budget cap, the
Stability API key and the RunPod API key. Preferences live in Blender's user
preferences, never in a .blend, so a key cannot travel inside a packed scene."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import cast

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from .remote.core.config import data_dir, default_hosts_file
from .remote.core.jobspec import STABILITY_API_BASE
from .remote.core.logs import RedactingFormatter, environment_secrets
from .remote.core.redact import Redactor

RUNPOD_KEY_ENV = "RUNPOD_API_KEY"  # what every RunPod call of remote/ reads
_placed: dict[str, str] = {}  # the values runpod_environment() put into os.environ (not the user's own)


class PosefactoryPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    hosts_file: StringProperty(name="Hosts File", subtype="FILE_PATH",
                               description="ssh_hosts.yaml listing your pods (empty: ssh_hosts.yaml in the user config "
                                           "folder, %APPDATA%\\posefactory on Windows, if there is one; else only "
                                           "the built-in 'local' host)")
    api_key: StringProperty(name="Stability API Key", subtype="PASSWORD",
                            description="Used when STABILITY_API_KEY is not set in the environment; "
                                        "kept in the preferences only, never in a .blend")
    runpod_api_key: StringProperty(name="RunPod API Key", subtype="PASSWORD",
                                   description="Used when RUNPOD_API_KEY is not set in the environment (Create Pod, "
                                               "Start / Stop / Terminate); kept in the preferences only, never in "
                                               "a .blend (RunPod console > Settings > API Keys)")
    api_base_url: StringProperty(name="Stability API", default=STABILITY_API_BASE,
                                 description="Base URL of the Stability REST API")
    budget_cap_usd: FloatProperty(name="Budget per Job ($)", min=0.0, default=2.0, precision=2,
                                  description="Refuse jobs whose estimated cost is above this (0: no cap)")
    output_dir: StringProperty(name="Downloads", subtype="DIR_PATH",
                               description="Where job results are downloaded (empty: the Pose Factory data folder)")
    keep_results: EnumProperty(
        name="Keep Results", default="FAKE_USER",
        items=[("FAKE_USER", "Fake User", "Imported results stay in the .blend as images with a fake user, "
                                          "loaded from the downloads folder"),
               ("PACK", "Pack", "Imported results are packed into the .blend (bigger file, self-contained)")],
        description="How imported results survive saving the .blend")
    storage_access_key_id: StringProperty(name="Storage Key ID",
                                          description="S3/R2 access key id for hosts with a storage section "
                                                      "(empty: AWS_ACCESS_KEY_ID from the environment)")
    storage_secret_access_key: StringProperty(name="Storage Secret", subtype="PASSWORD",
                                              description="S3/R2 secret for hosts with a storage section "
                                                          "(empty: AWS_SECRET_ACCESS_KEY from the environment)")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "hosts_file")
        row = layout.row()
        row.prop(self, "api_key")
        if os.environ.get("STABILITY_API_KEY"):
            layout.label(text="STABILITY_API_KEY is set in the environment and takes precedence", icon="INFO")
        layout.prop(self, "runpod_api_key")
        if _users_runpod_key():
            layout.label(text="RUNPOD_API_KEY is set in the environment and takes precedence", icon="INFO")
        layout.prop(self, "api_base_url")
        layout.prop(self, "budget_cap_usd")
        layout.prop(self, "output_dir")
        layout.prop(self, "keep_results")
        box = layout.box()
        box.label(text="S3 / Cloudflare R2 credentials (bucket and endpoint are set per host in the hosts file)")
        box.prop(self, "storage_access_key_id")
        box.prop(self, "storage_secret_access_key")


def offline(what: str) -> str:
    """One line saying where to allow it when Blender's *Allow Online Access* is off ("" when it is on):
    every network call of the add-on (remote hosts, RunPod's API, Stability) asks here first."""
    if bpy.app.online_access:
        return ""
    return (f"{what} needs the network, and Blender's online access is off: allow it in Preferences > System > "
            "Network > Allow Online Access (the 'local' host works without it)")


def get(context: bpy.types.Context | None = None) -> PosefactoryPreferences:
    context = context or bpy.context
    assert context.preferences is not None
    return cast(PosefactoryPreferences, context.preferences.addons[__package__].preferences)


def api_key(context: bpy.types.Context | None = None) -> str:
    return os.environ.get("STABILITY_API_KEY") or get(context).api_key


def hosts_file(context: bpy.types.Context | None = None) -> Path | None:
    path = get(context).hosts_file
    return Path(bpy.path.abspath(path)) if path else default_hosts_file()


def output_dir(context: bpy.types.Context | None = None) -> Path:
    path = get(context).output_dir
    return Path(bpy.path.abspath(path)) if path else data_dir() / "output"


def storage_environment(context: bpy.types.Context | None = None) -> None:
    """Make the preference credentials visible to boto3 in this Blender process."""
    prefs = get(context)
    if prefs.storage_access_key_id and prefs.storage_secret_access_key:
        os.environ["AWS_ACCESS_KEY_ID"] = prefs.storage_access_key_id
        os.environ["AWS_SECRET_ACCESS_KEY"] = prefs.storage_secret_access_key


def _users_runpod_key() -> str:
    """RUNPOD_API_KEY as the user's environment sets it (empty counts as unset; ours is not theirs)."""
    value = os.environ.get(RUNPOD_KEY_ENV, "")
    return "" if value == _placed.get(RUNPOD_KEY_ENV) else value


def runpod_key(context: bpy.types.Context | None = None) -> str:
    """The RunPod API key: RUNPOD_API_KEY from the environment, else the preferences' (never shown)."""
    return _users_runpod_key() or get(context).runpod_api_key


def runpod_environment(context: bpy.types.Context | None = None) -> bool:
    """Main thread, before any RunPod worker: the preferences' key into RUNPOD_API_KEY when the
    environment has none (remote/ reads it from there). Whether there is a key at all."""
    key = runpod_key(context)
    if not _users_runpod_key():
        if key and _placed.get(RUNPOD_KEY_ENV) != key:
            _redact_in_log(key)
        if key:
            os.environ[RUNPOD_KEY_ENV] = _placed[RUNPOD_KEY_ENV] = key
        elif RUNPOD_KEY_ENV in _placed:  # the key was cleared in the preferences
            os.environ.pop(RUNPOD_KEY_ENV, None)
            del _placed[RUNPOD_KEY_ENV]
    return bool(key)


def _redact_in_log(secret: str) -> None:
    """The log's redaction knows the secrets of the environment when it is set up: add one placed since."""
    for handler in logging.getLogger(__package__).handlers:
        if getattr(handler, "posefactory", False):
            handler.setFormatter(RedactingFormatter(Redactor([*environment_secrets(), secret])))


def register() -> None:
    bpy.utils.register_class(PosefactoryPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(PosefactoryPreferences)
