"""The pod's render job in real Blender (the bpy module, in a subprocess)
against the contract-strict Stability stand-in."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote.core.jobspec import RenderJob
from tests.fixtures.stability_server import png_size, png_text

REPO = Path(__file__).resolve().parents[1]
RENDER_JOB = REPO / "pod_setup" / "render_job.py"


def run_job(tmp_path: Path, scene: Path, server, *, key: str | None = "valid", **overrides):
    values = dict(blend_path=str(scene), output_dir=str(tmp_path / "out"), prompt="a brave knight",
                  api_base_url=server.base_url, steps=20, seed=7, render_samples=1)
    values.update(overrides)
    job = RenderJob(**values)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job.__dict__))
    env = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    env["WORKSPACE"] = str(tmp_path / "workspace")
    if key:
        env["STABILITY_API_KEY"] = server.api_key if key == "valid" else key
    completed = subprocess.run([sys.executable, str(RENDER_JOB), str(job_file)], capture_output=True, text=True,
                               env=env, timeout=180)
    manifest_path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    return completed, manifest


def test_render_fix_img2img_batch_and_manifest(tmp_path, sample_scene, stability_server):
    prompt = "knight \"quoted\" $(rm -rf ~) `id` caf\u00e9\nline two"
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, prompt=prompt, variations=2,
                                  negative_prompt="blurry", style_preset="3d-model", width=1152, height=896)
    assert completed.returncode == 0, completed.stderr
    out = tmp_path / "out"
    render = (out / "render.png").read_bytes()
    assert png_size(render) == (1152, 896)
    assert manifest["render_result_fix_applied"] is True  # background mode: Render Result had no pixels
    assert manifest["status"] == "done" and manifest["images"] == ["ai-render-1.png", "ai-render-2.png"]
    for n in (1, 2):
        text = png_text((out / f"ai-render-{n}.png").read_bytes())
        assert text["init-sha256"] == hashlib.sha256(render).hexdigest()  # our render went through the API
        assert text["prompt"] == prompt
    (request,) = stability_server.requests
    assert request["prompts"][1] == {"text": "blurry", "weight": "-1"}
    assert [v["seed"] for v in manifest["variations"]] == [7, 8]
    assert manifest["actual_cost"]["images"] == 2 and manifest["actual_cost"]["images_usd"] == pytest.approx(0.08)
    assert manifest["estimated_cost"]["images_usd"] == pytest.approx(0.08)
    assert stability_server.api_key not in completed.stdout + completed.stderr + json.dumps(manifest)


def test_invalid_size_is_refused_before_render_or_request(tmp_path, sample_scene, stability_server):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"blend_path": str(sample_scene), "output_dir": str(tmp_path / "out"),
                                    "prompt": "x", "width": 512, "height": 512}))
    completed = subprocess.run([sys.executable, str(RENDER_JOB), str(job_file)], capture_output=True, text=True,
                               timeout=60, env=dict(os.environ, STABILITY_API_KEY=stability_server.api_key))
    assert completed.returncode == 2 and "512x512 is not an SDXL size" in completed.stderr
    assert not (tmp_path / "out").exists() and stability_server.requests == []


def test_missing_key_fails_before_rendering(tmp_path, sample_scene, stability_server):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, key=None)
    assert completed.returncode == 3 and "STABILITY_API_KEY" in completed.stderr
    assert not (tmp_path / "out" / "render.png").exists() and manifest["status"] == "failed"


def test_key_from_workspace_env_file(tmp_path, sample_scene, stability_server):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / ".env").write_text(f"STABILITY_API_KEY='{stability_server.api_key}'\n")
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, key=None)
    assert completed.returncode == 0, completed.stderr
    assert manifest["images"] == ["ai-render-1.png"]


def test_rejected_key_keeps_the_render_and_never_prints_the_key(tmp_path, sample_scene, stability_server):
    bad = "sk-not-a-real-key-abcdef123"
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, key=bad)
    assert completed.returncode == 5 and "rejected the API key (HTTP 401)" in completed.stderr
    assert (tmp_path / "out" / "render.png").exists() and manifest["images"] == []
    assert bad not in completed.stdout + completed.stderr + json.dumps(manifest)


def test_content_filtered_is_reported_not_saved(tmp_path, sample_scene, stability_server):
    stability_server.then(200, finish_reason="CONTENT_FILTERED")
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, variations=2)
    assert completed.returncode == 6 and "CONTENT_FILTERED" in completed.stderr
    assert not list((tmp_path / "out").glob("ai-render-*.png"))
    assert [v["finish_reason"] for v in manifest["variations"]] == ["CONTENT_FILTERED"] * 2


def test_rate_limit_then_partly_filtered_batch(tmp_path, sample_scene, stability_server):
    stability_server.then(429, headers={"Retry-After": "1"})
    stability_server.then(200, finish_reason=("CONTENT_FILTERED", "SUCCESS", "ERROR"))
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, variations=3)
    assert completed.returncode == 0, completed.stderr
    assert manifest["ai_attempts"] == 2 and manifest["images"] == ["ai-render-2.png"]
    assert sorted(p.name for p in (tmp_path / "out").glob("ai-render-*")) == ["ai-render-2.png"]
    assert [v["finish_reason"] for v in manifest["variations"]] == ["CONTENT_FILTERED", "SUCCESS", "ERROR"]
    assert manifest["actual_cost"]["images"] == 2  # the filtered generation ran; the ERROR one did not


def test_backend_none_makes_no_request(tmp_path, sample_scene, stability_server):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, backend="none", key=None)
    assert completed.returncode == 0, completed.stderr
    assert manifest["images"] == [] and stability_server.requests == []
    assert manifest["actual_cost"]["images_usd"] == 0


def test_unreadable_scene_is_a_render_failure_with_a_manifest(tmp_path, stability_server):
    broken = tmp_path / "broken $(id).blend"
    broken.write_bytes(b"BLENDER-not-really")
    completed, manifest = run_job(tmp_path, broken, stability_server)
    assert completed.returncode == 4 and "cannot open scene" in completed.stderr
    assert manifest["status"] == "failed" and "cannot open scene" in manifest["error"]
    assert stability_server.requests == []


def test_usage_errors_and_malformed_job_file(tmp_path):
    completed = subprocess.run([sys.executable, str(RENDER_JOB)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "usage" in completed.stderr
    job_file = tmp_path / "job.json"
    job_file.write_text('{"prompt": "x", ')
    completed = subprocess.run([sys.executable, str(RENDER_JOB), str(job_file)], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 2 and "not valid JSON" in completed.stderr
