"""A batch job on RunPod Serverless: its ``<item>/…`` files come back, an upload failure is not re-run
(and paid again), and Ctrl-C cancels the in-flight requests on the endpoint. Our stand-in of the hosted
API, real workers (the SDK's local test server, real bpy), moto as the bucket."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from remote.core.batch_spec import check_item_path
from remote.core.jobspec import RenderJob
from remote.runpod.serverless import BatchItem, output_names, run_batch
from tests.fixtures.serverless_api import VALID_KEY, start_endpoint
from tests.fixtures.serverless_worker import start_worker


@pytest.fixture
def host(serverless_host):
    return serverless_host


def batch(host, todo, out, cancel=None):
    events, lines = [], []
    results = run_batch(host, todo, out, on_item=lambda r: None, cancel=cancel or threading.Event(),
                        progress=lines.append, record_event=events.append, batch_id="b1")
    return results, events, lines


def batch_job(scene, **overrides) -> RenderJob:
    values = dict(blend_path=str(scene), output_dir="", prompt="a knight", backend="none", render_samples=1,
                  poses="frames:1-2", cameras="active")
    values.update(overrides)
    return RenderJob(**values)


def relative(result, root):
    return sorted(p.relative_to(root / result.item_id).as_posix() for p in result.files)


def test_a_batch_jobs_item_files_arrive(serverless_endpoint, host, sample_scene, tmp_path):
    assert output_names(batch_job(sample_scene)) == ["manifest.json", "outputs.tar"]
    (result,), events, _ = batch(host(), [BatchItem("job-1", batch_job(sample_scene))], tmp_path / "out")
    assert result.status == "done", result.error
    files = relative(result, tmp_path / "out")
    assert {"frame-0001/render.png", "frame-0002/render.png", "frame-0001/thumb.png", "frame-0002/thumb.png",
            "manifest.json"} <= set(files)
    for name in files:
        assert name in ("manifest.json", "contact-sheet.png") or check_item_path(name)
    folder = tmp_path / "out" / "job-1"
    assert (folder / "frame-0002" / "render.png").read_bytes()[:4] == b"\x89PNG"
    assert not (folder / "outputs.tar").exists()
    assert [e["name"] for e in result.manifest["items"]] == ["frame-0001", "frame-0002"]
    assert all(e["status"] == "done" for e in result.manifest["items"])
    assert len(result.request_ids) == 1 and [e["status"] for e in events] == ["COMPLETED"]


def test_the_one_image_job_keeps_its_flat_files(serverless_endpoint, host, sample_scene, tmp_path):
    job = batch_job(sample_scene, poses="current")
    assert output_names(job) == ["render.png", "manifest.json"]
    (result,), _, _ = batch(host(), [BatchItem("one", job)], tmp_path / "out")
    assert result.status == "done" and relative(result, tmp_path / "out") == ["manifest.json", "render.png"]


def test_an_upload_failure_fails_the_item_without_a_paying_rerun(serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.script = ["uploads_fail"]
    (result,), events, lines = batch(host(), [BatchItem("job-1", batch_job(sample_scene))], tmp_path / "out")
    assert result.status == "failed" and "cannot upload" in result.error and "not re-run" in result.error
    assert len(result.request_ids) == 1 and [e["status"] for e in events] == ["COMPLETED"]
    assert not any("retrying" in line for line in lines)
    assert ("POST", "run") in serverless_endpoint.calls and serverless_endpoint.calls.count(("POST", "run")) == 1


@pytest.fixture
def stability_endpoint(tmp_path, stability_server, monkeypatch):
    """A worker holding the Stability key (a secret of the endpoint's template), behind the API stand-in."""
    worker = start_worker(tmp_path / "worker", {"STABILITY_API_KEY": stability_server.api_key})
    api, server = start_endpoint([worker.url])
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", api.base_url)
    monkeypatch.setenv("RUNPOD_API_KEY", VALID_KEY)
    yield api
    server.shutdown()
    server.server_close()
    worker.stop()


def test_a_stability_batch_delivers_every_items_images_and_pays_once(stability_endpoint, stability_server, host,
                                                                    sample_scene, tmp_path):
    job = batch_job(sample_scene, backend="stability-structure", api_base_url=stability_server.base_url, variations=2,
                    seed=7, control_strength=0.6)
    assert output_names(job) == ["manifest.json", "outputs.tar"]
    (result,), events, _ = batch(host(), [BatchItem("job-1", job)], tmp_path / "out")
    assert result.status == "done", result.error
    files = relative(result, tmp_path / "out")
    for item in ("frame-0001", "frame-0002"):
        assert {f"{item}/render.png", f"{item}/ai-render-1.png", f"{item}/ai-render-2.png"} <= set(files)
    assert len(stability_server.requests) == 4  # 2 items × 2 variations, each paid once
    assert len(result.request_ids) == 1 and [e["status"] for e in events] == ["COMPLETED"]


def test_ctrl_c_cancels_the_in_flight_requests_on_the_endpoint(serverless_endpoint, host, sample_scene, tmp_path, ctrl_c):
    serverless_endpoint.script = ["stuck", "stuck"]

    def interrupt_once_both_run():
        while len(serverless_endpoint.requests) < 2:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it

    threading.Thread(target=interrupt_once_both_run, daemon=True).start()
    todo = [BatchItem(f"pose-{n}", batch_job(sample_scene, poses="current")) for n in (1, 2)]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        batch(host(), todo, tmp_path / "out")
    assert time.monotonic() - started < 30
    assert sorted(r.status for r in serverless_endpoint.requests.values()) == ["CANCELLED", "CANCELLED"]
    assert serverless_endpoint.calls.count(("POST", "cancel")) == 2
