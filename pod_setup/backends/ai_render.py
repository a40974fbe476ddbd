"""Backend ``ai-render``: the seed's path, the AI Render add-on (benrugg/AI-Render 1.1.1) in the pod's Blender.

AI Render is installed by ``setup_pod.sh`` (``POSEFACTORY_AI_RENDER=1``) as
``$WORKSPACE/blender-addons/addons/AI-Render`` (``POSEFACTORY_ADDONS_DIR``
overrides the root): the folder must be named exactly ``AI-Render``, the
add-on checks its own package name. Its code is not part of Pose Factory.

Headless, its render-complete handler only queues the work on a
``bpy.app.timers`` timer, which never runs in background mode, so this
backend sets ``scene.air_props`` (enabled, prompt, negative prompt, image
similarity = Keep Render, steps, cfg, seed, no preset, autosave after images
into a private folder) and calls AI Render's own generation function
synchronously, once per variation. The render job has already applied the
Render Result fix, so AI Render's ``save_render`` of 'Render Result' finds the
render's pixels. AI Render's Stability base URL is pointed at the job's
``api_base_url`` (the test stand-in in tests), the key goes into its
in-memory preferences only (never saved, never printed) and its analytics
are switched off: a pod does not phone home.
"""
from __future__ import annotations

import importlib
import logging
import os
import random
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remote.core.jobspec import MAX_SEED, RenderJob

from ..job_errors import EXIT_AI, EXIT_NO_KEY, JobFailed
from .base import Variation
from .stability_key import stability_key

log = logging.getLogger(__name__)

PACKAGE = "AI-Render"  # AI Render refuses to run under any other module name


def addons_root() -> Path:
    explicit = os.environ.get("POSEFACTORY_ADDONS_DIR")
    return Path(explicit) if explicit else Path(os.environ.get("WORKSPACE", "/workspace")) / "blender-addons"


def enable_ai_render(root: Path) -> Any:
    """Enable AI Render from ``root/addons/AI-Render``; returns its package module."""
    import bpy

    addon_utils = importlib.import_module("addon_utils")  # after bpy, which puts Blender's modules on the path

    folder = root / "addons" / PACKAGE
    if not (folder / "__init__.py").is_file():
        raise JobFailed(EXIT_NO_KEY, f"AI Render is not installed at {folder}; "
                                     "run setup_pod.sh with POSEFACTORY_AI_RENDER=1 on the pod")
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))
    blender_preferences: Any = bpy.context.preferences
    if PACKAGE not in blender_preferences.addons:
        module = addon_utils.enable(PACKAGE, default_set=True, handle_error=lambda exc: log.error("AI Render: %s", exc))
        if module is None:
            raise JobFailed(EXIT_NO_KEY, f"AI Render at {folder} could not be enabled (see the log)")
        log.info("AI Render enabled from %s", folder)
    return sys.modules[PACKAGE]


class AIRenderBackend:
    name = "ai-render"
    uses_blender = True  # it drives Blender (scene props, 'Render Result'): the render job runs it on the main thread

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self.key = stability_key()
        self.package: Any = None

    def check_ready(self) -> None:
        if not self.key:
            raise JobFailed(EXIT_NO_KEY, "no Stability API key for AI Render: set STABILITY_API_KEY or put it in "
                                         "$WORKSPACE/.env")
        self.package = enable_ai_render(addons_root())

    def _configure(self, autosave_dir: Path) -> Any:
        import bpy

        package = self.package
        config: Any = importlib.import_module(f"{PACKAGE}.config")
        base = self.job.api_base_url.rstrip("/")
        config.STABILITY_API_V1_URL = f"{base}/v1/generation/"
        config.STABILITY_API_V2_URL = f"{base}/v2beta/stable-image/"
        blender_preferences: Any = bpy.context.preferences
        preferences = blender_preferences.addons[PACKAGE].preferences
        preferences.sd_backend = "dreamstudio"
        preferences.dream_studio_api_key = self.key
        preferences.is_opted_out_of_analytics = True
        scene: Any = bpy.context.scene
        props = scene.air_props
        job = self.job
        props.is_enabled = True
        props.auto_run = False  # nothing else may start a generation behind this backend's back
        props.sd_model = job.engine_id
        props.prompt_text = job.prompt
        props.negative_prompt_text = job.negative_prompt
        props.image_similarity = job.strength
        props.steps = job.steps
        props.cfg_scale = job.cfg_scale
        props.use_random_seed = False
        props.use_preset = False
        props.use_animated_prompts = False
        props.do_upscale_automatically = False
        props.do_autosave_before_images = False
        props.do_autosave_after_images = True
        props.autosave_image_path = str(autosave_dir) + os.sep
        if job.sampler:
            props.sampler = job.sampler
        return package

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        import bpy

        if self.package is None:
            self.check_ready()
        operators = importlib.import_module(f"{PACKAGE}.operators")
        scene: Any = bpy.context.scene
        first_seed = self.job.seed or random.randint(1, MAX_SEED - self.job.variations)
        variations = []
        kept_tempdir = tempfile.tempdir
        try:
            with tempfile.TemporaryDirectory(prefix="posefactory-ai-render-") as autosave:
                # AI Render writes its before/after copies with tempfile: keep them in here, removed with it.
                tempfile.tempdir = autosave
                self._configure(Path(autosave))
                props = scene.air_props
                for n in range(1, self.job.variations + 1):
                    seed = first_seed + n - 1
                    props.seed = seed
                    props.last_generated_image_filename = ""
                    props.error_message = ""
                    generated = operators.sd_generate(scene)
                    image = Path(bpy.path.abspath(props.last_generated_image_filename or "")) \
                        if props.last_generated_image_filename else None
                    if image is None or not image.is_file():
                        reason = props.error_message or "AI Render made no image"
                        raise JobFailed(EXIT_AI, f"AI step failed: AI Render: {' '.join(reason.split())[:300]}")
                    if not generated:
                        # The image was made and saved; only showing it in an image editor failed (no UI headless).
                        log.info("AI Render: %s (headless; the image is kept)", props.error_message)
                    variations.append(Variation(n, seed, "SUCCESS", image.read_bytes()))
        finally:
            tempfile.tempdir = kept_tempdir
            self._forget_key()
        return variations

    def _forget_key(self) -> None:
        import bpy

        blender_preferences: Any = bpy.context.preferences
        addon = blender_preferences.addons.get(PACKAGE)
        if addon is not None:
            addon.preferences.dream_studio_api_key = ""

    def stats(self) -> dict[str, Any]:
        return {"ai_render_addon": PACKAGE}
