"""Stability v2beta structure control: the client against the contract-strict stand-in, and the
``stability-structure`` backend in the pod's render job (real bpy)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from remote.core.jobspec import RenderJob
from remote.stability import v1 as stability
from remote.stability import v2beta as stability_v2
from tests.fixtures.stability_server import make_png, png_size, png_text
from tests.fixtures.stability_v2_contract import RANDOM_SEED, STRUCTURE_PATH

REPO = Path(__file__).resolve().parents[1]
RENDER_JOB = REPO / "pod_setup" / "render_job.py"
IMAGE = make_png(1024, 1024, (10, 20, 30), {})


def job(**overrides) -> RenderJob:
    values = dict(blend_path="s.blend", output_dir="out", prompt="a knight", backend="stability-structure",
                  control_strength=0.55, negative_prompt="blurry", style_preset="anime")
    values.update(overrides)
    return RenderJob(**values)


def client(server, key=None, **kw) -> stability_v2.StabilityV2Client:
    sleeps = kw.pop("sleeps", [])
    return stability_v2.StabilityV2Client(key or server.api_key, server.base_url, sleep=sleeps.append, **kw)


def test_request_follows_the_contract_and_the_headers_are_read(stability_server):
    artifact = client(stability_server).structure(IMAGE, job(), seed=7)
    (request,) = stability_server.requests
    assert request["path"] == STRUCTURE_PATH and request["accept"] == "image/*"
    assert request["fields"] == {"prompt": "a knight", "control_strength": "0.55", "seed": "7", "output_format": "png",
                                 "negative_prompt": "blurry", "style_preset": "anime"}
    assert request["image_sha256"] == hashlib.sha256(IMAGE).hexdigest()
    assert artifact.usable and artifact.seed == 7 and png_size(artifact.png) == (1024, 1024)
    assert png_text(artifact.png)["control_strength"] == "0.55"


def test_seed_zero_lets_the_api_pick_and_its_seed_header_is_recorded(stability_server):
    artifact = client(stability_server).structure(IMAGE, job(negative_prompt="", style_preset=""), seed=0)
    assert artifact.seed == RANDOM_SEED
    assert set(stability_server.requests[0]["fields"]) == {"prompt", "control_strength", "seed", "output_format"}


def test_content_filtered_is_not_usable(stability_server):
    stability_server.then(200, finish_reason="CONTENT_FILTERED")
    artifact = client(stability_server).structure(IMAGE, job(), seed=3)
    assert artifact.finish_reason == "CONTENT_FILTERED" and not artifact.usable and artifact.png is None


@pytest.mark.parametrize("status, error, words", [
    (400, stability.BadRequest, "HTTP 400"),
    (402, stability_v2.PaymentRequired, "out of credits"),
    (403, stability_v2.ContentModerated, "moderation flagged"),
    (413, stability_v2.PayloadTooLarge, "10 MiB"),
    (422, stability_v2.Unprocessable, "HTTP 422"),
])
def test_each_documented_error_is_one_clear_line_and_not_retried(stability_server, status, error, words):
    stability_server.then(status, body={"id": "x", "name": f"error_{status}", "errors": [f"detail {status}"]})
    with pytest.raises(error) as raised:
        client(stability_server).structure(IMAGE, job(), seed=1)
    message = str(raised.value)
    assert raised.value.status == status and words in message and f"detail {status}" in message
    assert "\n" not in message and len(stability_server.requests) == 1


def test_a_wrong_key_is_401_and_never_echoed(stability_server):
    with pytest.raises(stability.AuthenticationError, match="HTTP 401") as raised:
        client(stability_server, key="sk-wrong-0123456789").structure(IMAGE, job(), seed=1)
    assert "sk-wrong-0123456789" not in str(raised.value)


def test_an_image_outside_the_limits_gets_the_apis_400(stability_server):
    with pytest.raises(stability.BadRequest, match="64x640 is outside"):
        client(stability_server).structure(make_png(64, 640, (0, 0, 0), {}), job(), seed=1)


def test_429_backs_off_as_asked_then_succeeds(stability_server):
    stability_server.then(429, headers={"Retry-After": "3"})
    sleeps: list[float] = []
    api = client(stability_server, sleeps=sleeps)
    assert api.structure(IMAGE, job(), seed=1).usable
    assert api.attempts == 2 and sleeps == [3.0]


def test_5xx_is_retried_a_bounded_number_of_times(stability_server):
    stability_server.then(503, times=5)
    api = client(stability_server, max_retries=2)
    with pytest.raises(stability.ServerError, match="gave up after 3 attempts"):
        api.structure(IMAGE, job(), seed=1)
    assert len(stability_server.requests) == 3


def test_a_render_over_10_mib_is_refused_before_sending(stability_server):
    with pytest.raises(stability_v2.PayloadTooLarge):
        client(stability_server).structure(b"\x89PNG" + b"0" * (10 * 1024 * 1024), job(), seed=1)
    assert stability_server.requests == []


def test_stand_in_checks_fields_and_serves_json_too(stability_server):
    url = stability_server.base_url + STRUCTURE_PATH
    auth = {"Authorization": f"Bearer {stability_server.api_key}"}
    files = [("image", ("i.png", IMAGE, "image/png")), ("prompt", (None, "x"))]
    answer = requests.post(url, headers={**auth, "Accept": "application/json"}, files=files, timeout=10)
    assert answer.status_code == 200 and answer.json()["finish_reason"] == "SUCCESS"
    for extra, message in (([("strength", (None, "0.5"))], "unknown"), ([("control_strength", (None, "2"))], "0..1")):
        bad = requests.post(url, headers={**auth, "Accept": "image/*"}, files=files + extra, timeout=10)
        assert bad.status_code == 400 and message in bad.json()["message"]
    no_prompt = requests.post(url, headers={**auth, "Accept": "image/*"}, files=files[:1], timeout=10)
    assert no_prompt.status_code == 400 and "prompt" in no_prompt.json()["message"]
    wrong_accept = requests.post(url, headers={**auth, "Accept": "text/html"}, files=files, timeout=10)
    assert wrong_accept.status_code == 400


def test_a_retired_v1_engine_names_the_other_backends(stability_server):
    api = stability.StabilityClient(stability_server.api_key, stability_server.base_url)
    with pytest.raises(stability.NotFound) as raised:
        api.image_to_image(make_png(1024, 1024, (0, 0, 0), {}), job(backend="stability", engine_id="stable-diffusion-v1-6",
                                                                     control_strength=0.7))
    message = str(raised.value)
    assert "retired" in message and "stability-structure" in message and "diffusers" in message
    assert "\n" not in message


def run_job(tmp_path: Path, scene: Path, server, **overrides):
    values = dict(blend_path=str(scene), output_dir=str(tmp_path / "out"), prompt="a brave knight",
                  api_base_url=server.base_url, seed=7, render_samples=1, backend="stability-structure",
                  control_strength=0.6)
    values.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    job_file = tmp_path / "job.json"
    RenderJob(**values).write(job_file)
    env = dict(os.environ, STABILITY_API_KEY=server.api_key, WORKSPACE=str(tmp_path / "ws"))
    completed = subprocess.run([sys.executable, str(RENDER_JOB), str(job_file)], capture_output=True, text=True,
                               env=env, timeout=300)
    manifest_path = tmp_path / "out" / "manifest.json"
    return completed, json.loads(manifest_path.read_text()) if manifest_path.exists() else None


def test_render_job_structure_batch_keeps_paid_images_when_a_later_one_fails(tmp_path, sample_scene, stability_server):
    stability_server.then(200).then(402, body={"id": "p", "name": "payment_required", "message": "no credits"})
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, variations=3)
    assert completed.returncode == 0, completed.stderr
    out = tmp_path / "out"
    render_sha = hashlib.sha256((out / "render.png").read_bytes()).hexdigest()
    assert png_text((out / "ai-render-1.png").read_bytes())["init-sha256"] == render_sha
    assert manifest["images"] == ["ai-render-1.png"] and len(stability_server.requests) == 2  # no third request
    assert [v["finish_reason"] for v in manifest["variations"]] == ["SUCCESS", "ERROR", "ERROR"]
    assert "out of credits" in manifest["ai_error"]
    assert manifest["actual_cost"]["images_usd"] == pytest.approx(0.05) and manifest["actual_cost"]["images"] == 1
    assert manifest["estimated_cost"]["images_usd"] == pytest.approx(0.15)
    assert stability_server.api_key not in completed.stdout + completed.stderr + json.dumps(manifest)


def test_render_job_structure_filtered_and_moderated(tmp_path, sample_scene, stability_server):
    stability_server.then(200, finish_reason="CONTENT_FILTERED")
    completed, manifest = run_job(tmp_path / "a", sample_scene, stability_server)
    assert completed.returncode == 6 and not list((tmp_path / "a" / "out").glob("ai-render-*"))
    stability_server.then(403, body={"id": "m", "name": "content_moderation", "message": "flagged"})
    completed, manifest = run_job(tmp_path / "b", sample_scene, stability_server)
    assert completed.returncode == 5 and "moderation flagged" in completed.stderr
    assert (tmp_path / "b" / "out" / "render.png").exists() and manifest["status"] == "failed"


# --- per item in a batch: errors and attempts belong to their item ---

def by_name(manifest):
    return {entry["name"]: entry for entry in manifest["items"]}


def test_a_moderation_403_fails_its_item_only_and_every_later_item_is_tried(tmp_path, sample_scene, stability_server):
    stability_server.then(200).then(403, body={"id": "m", "name": "content_moderation", "message": "flagged"})
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, poses="frames:1-3", variations=1)
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
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, poses="frames:1-2", variations=1)
    assert completed.returncode == 0, completed.stderr
    assert [r["attempts"] for r in manifest["ai_items"]] == [2, 1] and manifest["ai_attempts"] == 3
    assert all(e["status"] == "done" for e in manifest["items"]) and "ai_error" not in manifest


def test_a_refused_key_stops_later_items_and_says_so_on_each(tmp_path, sample_scene, stability_server):
    stability_server.then(200).then(401, body={"id": "k", "name": "unauthorized", "message": "bad key"})
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, poses="frames:1-4", variations=1)
    items = by_name(manifest)
    assert items["frame-0001"]["status"] == "done" and "HTTP 401" in items["frame-0002"]["error"]
    for name in ("frame-0003", "frame-0004"):
        assert items[name]["status"] == "failed"
        assert items[name]["error"].startswith("not tried: Stability refused the API key on an earlier item")
    assert len(stability_server.requests) == 2  # nothing sent after the 401
    assert [r["attempts"] for r in manifest["ai_items"]] == [1, 1, 0, 0]
    assert stability_server.api_key not in completed.stdout + completed.stderr
