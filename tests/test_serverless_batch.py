"""A batch on RunPod Serverless: the local side against our stand-in of the
hosted endpoint API, with the real handler rendering behind it (the SDK's local
test server, real bpy) and moto as the bucket."""
from __future__ import annotations

import hashlib
import json
import sys
import threading

import pytest

from remote.core.jobspec import RenderJob
from remote.runpod.endpoint import EndpointError
from remote.runpod.serverless import BatchItem, run_batch
from tests.fixtures.s3 import CREDENTIALS
from tests.fixtures.serverless_api import ENDPOINT_ID, VALID_KEY


@pytest.fixture
def host(serverless_host):
    return serverless_host


@pytest.fixture(params=["sdk", "requests"])
def transport(request, monkeypatch):
    """The SDK's endpoint client, and requests alone (Blender, where the SDK cannot be installed)."""
    if request.param == "requests":
        monkeypatch.setitem(sys.modules, "runpod", None)
        monkeypatch.setitem(sys.modules, "runpod.endpoint.runner", None)
    return request.param


def items(scene, count: int) -> list[BatchItem]:
    return [BatchItem(f"pose-{n:02d}", RenderJob(blend_path=str(scene), output_dir="", prompt=f"pose {n}",
                                                 backend="none", render_samples=1)) for n in range(1, count + 1)]


def batch(host, todo, tmp_path, cancel=None):
    streamed, events, lines = [], [], []
    results = run_batch(host, todo, tmp_path / "out", on_item=streamed.append, cancel=cancel or threading.Event(),
                        progress=lines.append, record_event=events.append, batch_id="b1")
    return results, streamed, events, lines


def test_batch_renders_every_item_streams_them_and_bills_each_request(serverless_endpoint, host, sample_scene, tmp_path):
    results, streamed, events, lines = batch(host(), items(sample_scene, 2), tmp_path)
    assert sorted(r.item_id for r in streamed) == ["pose-01", "pose-02"] and all(r.status == "done" for r in results)
    for result in results:
        assert [p.name for p in result.files] == ["manifest.json", "render.png"]
        assert (tmp_path / "out" / result.item_id / "render.png").read_bytes()[:4] == b"\x89PNG"
        assert result.manifest["prompt"] == f"pose {int(result.item_id[-2:])}"
        assert result.cost_usd == pytest.approx(result.execution_s * 0.00034, abs=1e-6) and result.execution_s > 0
    assert [e["event"] for e in events] == ["serverless_request"] * 2
    assert all(e["status"] == "COMPLETED" and e["cost_usd"] > 0 for e in events)
    # Inputs travel by URL: small payloads, no key of any kind in them.
    for body in serverless_endpoint.bodies:
        assert len(body) < 16_000
        for secret in (VALID_KEY, CREDENTIALS["AWS_SECRET_ACCESS_KEY"]):
            assert secret.encode() not in body
    assert json.dumps(events).count(VALID_KEY) == 0
    assert ("GET", "health") in serverless_endpoint.calls and lines[-1].startswith("2/2 item(s) finished")


def test_a_failed_request_is_retried_once(serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.script = ["fail"]
    results, _, events, lines = batch(host(), items(sample_scene, 1), tmp_path)
    assert results[0].status == "done" and len(results[0].request_ids) == 2
    assert [e["status"] for e in events] == ["FAILED", "COMPLETED"]
    assert any("failed, retrying once" in line for line in lines)


def test_failing_twice_fails_the_item_with_the_workers_error(serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.script = ["fail", "fail"]
    results, streamed, _, _ = batch(host(), items(sample_scene, 1), tmp_path)
    assert results[0].status == "failed" and results[0].error == "handler raised: scripted failure"
    assert streamed == results


def test_stuck_requests_are_cancelled_retried_then_failed(serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.script = ["stuck", "stuck"]
    results, _, _, _ = batch(host(execution_timeout_s=1), items(sample_scene, 1), tmp_path)
    assert results[0].status == "failed" and "ran over 1s and was cancelled" in results[0].error
    assert serverless_endpoint.calls.count(("POST", "cancel")) == 2
    assert all(serverless_endpoint.requests[i].status == "CANCELLED" for i in results[0].request_ids)


def test_a_request_no_worker_picks_up_is_a_bounded_wait(transport, serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.script = ["never_picked"]
    results, _, _, _ = batch(host(queue_timeout_s=1), items(sample_scene, 1), tmp_path)
    assert results[0].status == "failed" and results[0].error.startswith("no worker picked up the request within 1s")
    assert len(results[0].request_ids) == 1 and ("POST", "cancel") in serverless_endpoint.calls


def test_cancel_cancels_outstanding_requests(serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.script = ["stuck", "stuck"]
    cancel = threading.Event()

    def cancel_once_both_run():
        while len(serverless_endpoint.requests) < 2:
            cancel.wait(0.05)
        cancel.set()

    threading.Thread(target=cancel_once_both_run, daemon=True).start()
    results, _, _, _ = batch(host(), items(sample_scene, 2), tmp_path, cancel)
    assert [r.status for r in results] == ["cancelled", "cancelled"]
    assert serverless_endpoint.calls.count(("POST", "cancel")) == 2


def test_unhealthy_endpoint_is_refused_before_anything_runs(serverless_endpoint, host, sample_scene, tmp_path):
    serverless_endpoint.unhealthy = True
    with pytest.raises(EndpointError, match=f"^endpoint {ENDPOINT_ID} is unhealthy: 2 unhealthy worker"):
        batch(host(), items(sample_scene, 1), tmp_path)
    assert ("POST", "run") not in serverless_endpoint.calls


def test_wrong_key_unknown_endpoint_and_bad_items(transport, serverless_endpoint, host, sample_scene, tmp_path, monkeypatch):
    with pytest.raises(EndpointError, match="has no endpoint nope"):
        batch(host(endpoint_id="nope"), items(sample_scene, 1), tmp_path)
    with pytest.raises(EndpointError, match="item id 'pose-01'"):
        batch(host(), items(sample_scene, 1) * 2, tmp_path)
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-wrong")
    with pytest.raises(EndpointError, match=r"^RunPod refused the API key \(401") as info:
        batch(host(), items(sample_scene, 1), tmp_path)
    assert "rp-wrong" not in str(info.value)
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(EndpointError, match=r"no RunPod API key: set \$RUNPOD_API_KEY"):
        batch(host(), items(sample_scene, 1), tmp_path)


def test_a_job_on_a_serverless_host_goes_through_the_pipeline(serverless_endpoint, s3_server, s3_credentials, data_dir_env,
                                                               sample_scene, tmp_path):
    from remote.jobs.pipeline import run_job
    from remote.jobs.state import JobRecord

    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text(json.dumps({"farm": {"serverless": {"endpoint_id": ENDPOINT_ID},
                                          "storage": s3_server.storage_entry(s3_server.make_bucket(),
                                                                             region="us-east-1")}}))
    stages = []
    result = run_job(RenderJob(blend_path="", output_dir="", prompt="one pose", backend="none", render_samples=1),
                     sample_scene, host="farm", hosts_file=hosts, local_output_dir=tmp_path / "results", api_key=None,
                     progress=lambda p: stages.append(p.stage), cancel=threading.Event(),
                     record_path=tmp_path / "record.json")
    assert result.status == "done", result.error
    assert result.raw_render is not None and result.raw_render.read_bytes()[:4] == b"\x89PNG"
    assert result.raw_render.parent == tmp_path / "results" / result.job_id and result.cost_usd > 0
    assert stages[-1] == "done" and JobRecord.load(tmp_path / "record.json").status == "done"
    ledger = [json.loads(line) for line in (data_dir_env / "ledger.jsonl").read_text().splitlines()]
    assert [e.get("event", "job") for e in ledger] == ["serverless_request", "job"]
    assert ledger[1]["cost_usd"] == ledger[0]["cost_usd"]


@pytest.fixture
def data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_a_textured_scene_travels_as_its_tree_each_file_once_and_renders_on_the_worker(
        serverless_endpoint, host, textured_character, tmp_path):
    from PIL import Image

    from tests.fixtures.textured_scene import TEXTURE_COLOUR

    texture = textured_character.parent / "textures" / "ground.png"
    endpoint = host()
    results, _, _, lines = batch(endpoint, items(textured_character, 2), tmp_path)
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    render = Image.open(tmp_path / "out" / "pose-01" / "render.png").convert("RGB")
    floor = render.getpixel((render.size[0] // 2, render.size[1] - 5))
    assert all(abs(a - b) < 40 for a, b in zip(floor, TEXTURE_COLOUR, strict=True)), floor  # the texture was there
    # Both items share one tree; each of its files went up once, by content.
    body = json.loads(serverless_endpoint.bodies[0])["input"]
    assert sorted(f["path"] for f in body["scene"]["files"]) == ["character.blend", "textures/ground.png"]
    texture_urls = {f["url"].split("?")[0] for b in serverless_endpoint.bodies
                    for f in json.loads(b)["input"]["scene"]["files"] if f["path"] == "textures/ground.png"}
    assert len(texture_urls) == 1 and texture_urls.pop().endswith(hashlib.sha256(texture.read_bytes()).hexdigest())
    assert [line for line in lines if line.startswith("scene: ")] == [
        f"scene: 2 files, {lines_moved(textured_character)} moved of {lines_moved(textured_character)} (s3)"]
    # Again: the bucket holds every file, nothing moves.
    _, _, _, again = batch(endpoint, items(textured_character, 1), tmp_path / "again")
    assert any(line.startswith("scene: 2 files, 0 bytes moved of ") for line in again), again


def lines_moved(blend) -> str:
    from remote.scene.pack import pack_scene
    from remote.scene.shipment import human_bytes

    return human_bytes(pack_scene(blend, blend.parent.parent / "sizes").total_bytes)


def test_run_job_on_a_serverless_host_packs_the_scene_and_records_what_moved(serverless_endpoint, s3_server, s3_credentials,
                                                                            textured_character, tmp_path, monkeypatch):
    import yaml

    from remote.jobs.pipeline import run_job
    from remote.jobs.state import JobRecord
    from tests.fixtures.serverless_api import ENDPOINT_ID

    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"farm": {
        "serverless": {"endpoint_id": ENDPOINT_ID, "gpu_usd_per_second": 0.00034, "max_concurrent": 1},
        "storage": s3_server.storage_entry(s3_server.make_bucket(), region="us-east-1")}}))
    messages: list[str] = []
    result = run_job(RenderJob(blend_path="", output_dir="", prompt="farm", backend="none", render_samples=1),
                     textured_character, host="farm", hosts_file=hosts, local_output_dir=tmp_path / "out",
                     api_key=None, progress=lambda p: messages.append(p.message), cancel=threading.Event(),
                     record_path=tmp_path / "record.json")
    assert result.status == "done", result.error
    record = JobRecord.load(tmp_path / "record.json")
    assert record.scene["files"] == 2 and record.scene["transport"] == "s3" and record.scene["bytes_moved"] > 0
    assert any(m.startswith("scene: 2 files, ") and m.endswith("(s3)") for m in messages), messages


def test_a_cli_killed_mid_request_is_settled_once_by_reattach_without_ssh(serverless_endpoint, s3_server, s3_credentials,
                                                                          textured_character, tmp_path):
    """kill -9 of the CLI while its request runs on the endpoint: re-attach ends the job failed
    (its outputs are not tracked past the process), with one flagged ledger line, twice over."""
    import os
    import signal
    import subprocess
    import time

    import yaml

    from remote.jobs.state import JobRecord
    from tests.fixtures.blender_scene import REPO
    from tests.fixtures.serverless_api import ENDPOINT_ID

    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"farm": {
        "serverless": {"endpoint_id": ENDPOINT_ID, "gpu_usd_per_second": 0.00034, "max_concurrent": 1},
        "storage": s3_server.storage_entry(s3_server.make_bucket(), region="us-east-1")}}))
    data = tmp_path / "data"
    env = {**os.environ, "POSEFACTORY_DATA_DIR": str(data)}
    serverless_endpoint.script = ["stuck"]  # IN_PROGRESS for ever: the CLI is killed while it waits
    cli = subprocess.Popen([sys.executable, "-m", "remote.cli", "render", str(textured_character), "--host", "farm",
                            "--hosts", str(hosts), "--prompt", "x", "--backend", "none"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not serverless_endpoint.bodies and time.monotonic() < deadline:
            assert cli.poll() is None, cli.stdout.read().decode() if cli.stdout else ""
            time.sleep(0.1)
        assert serverless_endpoint.bodies, "the request never reached the endpoint"
        time.sleep(0.5)
    finally:
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(30)
    (record_path,) = list((data / "jobs").glob("*.json"))
    assert JobRecord.load(record_path).status == "running" and not (data / "ledger.jsonl").exists()
    for _ in range(2):
        again = subprocess.run([sys.executable, "-m", "remote.cli", "reattach", str(record_path)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 1, again.stdout + again.stderr
        assert "interrupted before it finished" in again.stdout + again.stderr
        assert "ssh" not in (again.stdout + again.stderr).lower()
    record = JobRecord.load(record_path)
    assert record.status == "failed" and record.ledgered
    (line,) = [json.loads(entry) for entry in (data / "ledger.jsonl").read_text().splitlines()
               if json.loads(entry).get("job_id") == record.job_id]
    assert line["status"] == "failed" and line["cost_usd"] == 0 and "interrupted" in line["cost_flag"]
