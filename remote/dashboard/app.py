"""The Flask app factory (the views' shared state is :mod:`.state`).

Everything shown is read from the data dir on request (cached by file
mtimes); nothing is copied into a second store that could disagree with the
job records. The dashboard's own files (thumbnail cache, the library, the
trash, uploaded scenes) live under the same data dir.
"""
from __future__ import annotations

import logging
import secrets
from decimal import Decimal
from pathlib import Path

from flask import Flask

from ..core.config import data_dir
from . import security, views_costs, views_generate, views_jobs, views_library, views_presets
from .costs import usd
from .state import Dashboard

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def create_app(root: Path | None = None, *, access_token: str | None = None, presets_folder: Path | None = None,
               hosts_file: Path | None = None, monthly_budget: Decimal | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Flask:
    """The dashboard over ``root`` (default: the data dir); ``access_token`` for use beyond loopback."""
    root = Path(root) if root is not None else data_dir()
    root.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=max_upload_bytes, MAX_FORM_MEMORY_SIZE=64 * 1024,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", TEMPLATES_AUTO_RELOAD=False)
    app.secret_key = secrets.token_bytes(32)  # signs the flash messages' cookie; new on every start
    app.extensions["posefactory"] = Dashboard(root=root, presets_folder=presets_folder, hosts_file=hosts_file,
                                              monthly_budget=monthly_budget)
    security.install(app, access_token=access_token)
    app.add_template_filter(usd, "usd")
    for module in (views_jobs, views_costs, views_presets, views_library, views_generate):
        app.register_blueprint(module.blueprint)
    log.info("dashboard over %s (token %s)", root, "required" if access_token else "not used: loopback only")
    return app
