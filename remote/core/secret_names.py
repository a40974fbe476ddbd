"""The one list of environment variables that hold keys.

Every process a scene's own Python can reach (the warm Blender, the AI worker) starts without
them, a host's shell passes none of them to its children, and their values are redacted from
results and logs. Standard library only: the pod's ``render_client.py`` imports it with plain
``python3``.
"""
from __future__ import annotations

SECRET_NAMES: tuple[str, ...] = ("STABILITY_API_KEY", "RUNPOD_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                 "HF_TOKEN")
