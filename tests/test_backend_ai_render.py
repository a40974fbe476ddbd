"""Backend ``ai-render``: AI Render 1.1.1's own code, driven in real bpy against the v1 Stability stand-in."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from remote.core.jobspec import RenderJob
from tests.fixtures import require
from tests.fixtures.stability_server import png_size, png_text

REPO = Path(__file__).resolve().parents[1]
RENDER_JOB = REPO / "pod_setup" / "render_job.py"
ZIP_NAME = "AI-Render-v1.1.1.zip"


def vendor_zip() -> Path:
    """../shared/vendor next to the clone (CI); a worktree one level deeper finds the same folder."""
    candidates = [Path(os.environ["POSEFACTORY_VENDOR_DIR"]) / ZIP_NAME] if os.environ.get("POSEFACTORY_VENDOR_DIR") else []
    candidates += [REPO.parent / "shared" / "vendor" / ZIP_NAME, REPO.parents[1] / "shared" / "vendor" / ZIP_NAME]
    found = next((path for path in candidates if path.is_file()), None)
    require(found is not None, f"the AI Render release zip ({ZIP_NAME})",
            f"put it in ../shared/vendor/ next to the repository (looked at {', '.join(map(str, candidates))})")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A pod workspace with AI Render where setup_pod.sh puts it: blender-addons/addons/AI-Render."""
    root = tmp_path_factory.mktemp("workspace")
    with zipfile.ZipFile(vendor_zip()) as archive:
        archive.extractall(root / "blender-addons" / "addons")
    assert (root / "blender-addons" / "addons" / "AI-Render" / "__init__.py").is_file()
    return root


def run_job(tmp_path: Path, scene: Path, server, workspace: Path, **overrides):
    values = dict(blend_path=str(scene), output_dir=str(tmp_path / "out"), prompt="a knight in the rain",
                  negative_prompt="blurry", api_base_url=server.base_url, steps=20, seed=41, render_samples=1,
                  backend="ai-render", strength=0.4, cfg_scale=9.0)
    values.update(overrides)
    job_file = tmp_path / "job.json"
    RenderJob(**values).write(job_file)
    env = dict(os.environ, STABILITY_API_KEY=server.api_key, WORKSPACE=str(workspace), TMPDIR=str(tmp_path))
    completed = subprocess.run([sys.executable, str(RENDER_JOB), str(job_file)], capture_output=True, text=True,
                               env=env, timeout=300)
    manifest_path = tmp_path / "out" / "manifest.json"
    return completed, json.loads(manifest_path.read_text()) if manifest_path.exists() else None


def test_the_image_comes_back_through_ai_renders_own_code(tmp_path, sample_scene, stability_server, workspace):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, workspace, variations=2)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert manifest["status"] == "done" and manifest["images"] == ["ai-render-1.png", "ai-render-2.png"]
    first, second = stability_server.requests
    # AI Render's request, as its stability_api module builds it: its own field set and our settings.
    assert first["fields"] == {"seed": "41", "cfg_scale": "9.0", "steps": "20", "image_strength": "0.4",
                               "sampler": first["fields"]["sampler"]}
    assert first["prompts"] == [{"text": "a knight in the rain", "weight": "1.0"}, {"text": "blurry", "weight": "-1.0"}]
    assert first["headers"]["User-Agent"].startswith("Blender/") and second["fields"]["seed"] == "42"
    # The init image is the render (through the Render Result fix), re-saved by AI Render.
    sent = np.asarray(Image.open(io.BytesIO(first["init_image"])).convert("RGB")).astype(float)
    render = np.asarray(Image.open(tmp_path / "out" / "render.png").convert("RGB")).astype(float)
    assert sent.shape == render.shape and np.corrcoef(sent.ravel(), render.ravel())[0, 1] > 0.95
    for n, request in ((1, first), (2, second)):
        image = (tmp_path / "out" / f"ai-render-{n}.png").read_bytes()
        assert png_size(image) == (1024, 1024) and png_text(image)["init-sha256"] == request["init_image_sha256"]
    assert [v["seed"] for v in manifest["variations"]] == [41, 42]
    assert manifest["actual_cost"]["images_usd"] == pytest.approx(0.08)
    assert stability_server.api_key not in completed.stdout + completed.stderr + json.dumps(manifest)
    assert not list(tmp_path.glob("ai-render-*"))  # AI Render's temporary copies are not left behind


def test_ai_renders_error_is_one_line_and_the_render_is_kept(tmp_path, sample_scene, stability_server, workspace):
    stability_server.then(401, body={"id": "a", "name": "unauthorized", "message": "Incorrect API key provided"})
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, workspace)
    assert completed.returncode == 5 and "AI Render:" in completed.stderr
    assert (tmp_path / "out" / "render.png").exists() and manifest["status"] == "failed"
    assert stability_server.api_key not in completed.stdout + completed.stderr + json.dumps(manifest)


def test_missing_add_on_fails_before_rendering(tmp_path, sample_scene, stability_server):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, tmp_path / "empty-workspace")
    assert completed.returncode == 3 and "AI Render is not installed" in completed.stderr
    assert not (tmp_path / "out" / "render.png").exists() and stability_server.requests == []
