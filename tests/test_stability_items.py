"""stability-structure over a batch: errors and attempts belong to the item they happened on
(real bpy render job against the v2beta stand-in)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from remote.core.jobspec import RenderJob

RENDER_JOB = Path(__file__).resolve().parents[1] / "pod_setup" / "render_job.py"


def run_job(tmp_path: Path, scene: Path, server, **overrides):
    values = dict(blend_path=str(scene), output_dir=str(tmp_path / "out"), prompt="a brave knight",
                  api_base_url=server.base_url, seed=7, render_samples=1, backend="stability-structure",
                  control_strength=0.6)
    values.update(overrides)
    job_file = tmp_path / "job.json"
    RenderJob(**values).write(job_file)
    env = dict(os.environ, STABILITY_API_KEY=server.api_key, WORKSPACE=str(tmp_path / "ws"))
    completed = subprocess.run([sys.executable, str(RENDER_JOB), str(job_file)], capture_output=True, text=True,
                               env=env, timeout=300)
    manifest_path = tmp_path / "out" / "manifest.json"
    return completed, json.loads(manifest_path.read_text()) if manifest_path.exists() else None


def by_name(manifest):
    return {entry["name"]: entry for entry in manifest["items"]}


def test_a_moderation_403_fails_its_item_only_and_every_later_item_is_tried(tmp_path, sample_scene, stability_server):
    stability_server.then(200).then(403, body={"id": "m", "name": "content_moderation", "message": "flagged"})
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, poses="frames:1-3", batch=1)
    assert completed.returncode == 0, completed.stderr
    items = by_name(manifest)
    assert [items[n]["status"] for n in ("frame-0001", "frame-0002", "frame-0003")] == ["done", "failed", "done"]
    assert "moderation flagged" in items["frame-0002"]["error"]
    assert items["frame-0001"]["error"] is None and items["frame-0003"]["error"] is None
    assert len(stability_server.requests) == 3  # the item after the 403 was tried (and paid for once)
    assert [(r["item"], r["attempts"]) for r in manifest["ai_items"]] == [
        ("frame-0001", 1), ("frame-0002", 1), ("frame-0003", 1)]
    assert manifest["ai_attempts"] == 3
    assert "moderation flagged" in manifest["ai_items"][1]["error"] and manifest["ai_items"][2]["error"] is None


def test_attempts_add_up_over_items_with_retries(tmp_path, sample_scene, stability_server):
    stability_server.then(503).then(200).then(200)
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, poses="frames:1-2", batch=1)
    assert completed.returncode == 0, completed.stderr
    assert [r["attempts"] for r in manifest["ai_items"]] == [2, 1] and manifest["ai_attempts"] == 3
    assert all(e["status"] == "done" for e in manifest["items"]) and "ai_error" not in manifest


def test_a_refused_key_stops_later_items_and_says_so_on_each(tmp_path, sample_scene, stability_server):
    stability_server.then(200).then(401, body={"id": "k", "name": "unauthorized", "message": "bad key"})
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, poses="frames:1-4", batch=1)
    items = by_name(manifest)
    assert items["frame-0001"]["status"] == "done" and "HTTP 401" in items["frame-0002"]["error"]
    for name in ("frame-0003", "frame-0004"):
        assert items[name]["status"] == "failed"
        assert items[name]["error"].startswith("not tried: Stability refused the API key on an earlier item")
    assert len(stability_server.requests) == 2  # nothing sent after the 401
    assert [r["attempts"] for r in manifest["ai_items"]] == [1, 1, 0, 0]
    assert stability_server.api_key not in completed.stdout + completed.stderr
