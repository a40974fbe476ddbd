"""The whole path: pack → upload → pod set-up → headless render + SDXL →
download, through real sshd (proxy + inline, direct + S3 on moto), real
Blender and the Stability stand-in, with faults on every leg."""
from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import pytest

from remote.core.config import data_dir
from remote.core.jobspec import RenderJob
from remote.jobs.pipeline import reattach, run_job
from remote.jobs.state import JobProgress, JobRecord
from tests.fixtures.stability_server import png_text


class Recorder:
    """Collects progress; can act (drop the connection, cancel) when a stage starts."""

    def __init__(self, on_stage: dict | None = None) -> None:
        self.events: list[JobProgress] = []
        self.on_stage = dict(on_stage or {})

    def __call__(self, progress: JobProgress) -> None:
        self.events.append(progress)
        action = self.on_stage.pop(progress.stage, None)
        if action:
            action()

    def messages(self, stage: str) -> list[str]:
        return [e.message for e in self.events if e.stage == stage]


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", sys.executable)
    return tmp_path / "data"


def hosts_file(tmp_path: Path, server, name: str, **extra) -> Path:
    # The pod renders with this machine's bpy module (what setup_pod.sh records).
    return server.write_hosts_file(tmp_path / "ssh_hosts.yaml", name=name, workspace=str(tmp_path / "pod-ws"),
                                   env={"POSEFACTORY_BPY_PYTHON": sys.executable}, **extra)


def make_job(server=None, **overrides) -> RenderJob:
    values = dict(blend_path="", output_dir="", prompt="a knight \"in\" $(armour) `now`", negative_prompt="blurry",
                  variations=2, seed=11, steps=20, render_samples=1, backend="stability" if server else "none",
                  api_base_url=server.base_url if server else "http://127.0.0.1:9")
    values.update(overrides)
    return RenderJob(**values)


def submit(job, scene, host, hosts, tmp_path, progress=None, cancel=None, api_key=None, record=None):
    return run_job(job, scene, host=host, hosts_file=hosts, local_output_dir=tmp_path / "results", api_key=api_key,
                   progress=progress or Recorder(), cancel=cancel or threading.Event(),
                   record_path=record or tmp_path / "record.json")


def test_round_trip_through_the_proxy_with_inline_transfer(data, tmp_path, sshd_proxy, sample_scene, stability_server):
    hosts = hosts_file(tmp_path, sshd_proxy, "runpod")
    progress = Recorder()
    result = submit(make_job(stability_server), sample_scene, "runpod", hosts, tmp_path, progress,
                    api_key=stability_server.api_key)
    assert result.status == "done", result.error
    assert [p.name for p in result.images] == ["ai-render-1.png", "ai-render-2.png"]
    assert png_text(result.images[0].read_bytes())["prompt"] == "a knight \"in\" $(armour) `now`"
    assert result.raw_render.is_file() and result.cost_usd == pytest.approx(result.manifest["actual_cost"]["total_usd"])
    assert [p.stage for p in progress.events if p.fraction >= 0][-1] == "done"
    record = JobRecord.load(tmp_path / "record.json")
    assert record.status == "done" and record.images == [str(p) for p in result.images]
    ledger = [json.loads(line) for line in (data_dir() / "ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["job_id"] == result.job_id and ledger[-1]["images"] == 2
    # The key is nowhere on disk: not in the record, the ledger, the pod's workspace or the results.
    for path in [*(tmp_path / "pod-ws").rglob("*"), *(tmp_path / "results").rglob("*"), tmp_path / "record.json"]:
        if path.is_file():
            assert stability_server.api_key.encode() not in path.read_bytes(), path
    # A second submission of the unchanged scene moves no scene bytes.
    again = Recorder()
    assert submit(make_job(stability_server), sample_scene, "runpod", hosts, tmp_path, again,
                  api_key=stability_server.api_key, record=tmp_path / "record2.json").status == "done"
    assert any("0 bytes moved of" in m for m in again.messages("uploading"))


def test_round_trip_through_the_direct_port_with_s3(data, tmp_path, sshd_direct, sample_scene, s3_server,
                                                    s3_credentials):
    bucket = s3_server.make_bucket()
    hosts = hosts_file(tmp_path, sshd_direct, "pod", transfer="s3", storage=s3_server.storage_entry(bucket))
    progress = Recorder()
    result = submit(make_job(variations=1), sample_scene, "pod", hosts, tmp_path, progress)
    assert result.status == "done", result.error
    assert result.images == [] and result.raw_render.is_file()
    assert any("(s3)" in m for m in progress.messages("uploading"))


@pytest.mark.parametrize("stage", ["uploading", "rendering", "downloading"])
def test_connection_dropped_on_each_leg_still_ends_with_the_images(data, tmp_path, sshd_proxy, sample_scene,
                                                                  stability_server, stage):
    hosts = hosts_file(tmp_path, sshd_proxy, "runpod")
    progress = Recorder({stage: sshd_proxy.drop_connections})
    result = submit(make_job(stability_server, variations=1), sample_scene, "runpod", hosts, tmp_path, progress,
                    api_key=stability_server.api_key)
    assert result.status == "done", result.error
    assert len(result.images) == 1
    assert len(stability_server.requests) == 1  # rendered and paid for once


def test_rate_limited_then_success(data, tmp_path, sample_scene, stability_server):
    stability_server.then(429, headers={"Retry-After": "1"})
    result = submit(make_job(stability_server, variations=1), sample_scene, "local", None, tmp_path,
                    api_key=stability_server.api_key)
    assert result.status == "done", result.error
    assert result.manifest["ai_attempts"] == 2


def test_pod_workspace_wiped_between_jobs_is_set_up_again(data, tmp_path, sshd_direct, sample_scene):
    hosts = hosts_file(tmp_path, sshd_direct, "pod")
    assert submit(make_job(variations=1), sample_scene, "pod", hosts, tmp_path).status == "done"
    shutil.rmtree(tmp_path / "pod-ws")
    (tmp_path / "pod-ws").mkdir()
    progress = Recorder()
    result = submit(make_job(variations=1), sample_scene, "pod", hosts, tmp_path, progress, record=tmp_path / "r2.json")
    assert result.status == "done", result.error
    assert (tmp_path / "pod-ws" / "posefactory" / "blender.env").is_file()
    assert not any("scene: 0 bytes" in m for m in progress.messages("uploading"))


def test_cancel_while_rendering(data, tmp_path, sample_scene):
    cancel = threading.Event()
    progress = Recorder({"rendering": cancel.set})
    result = submit(make_job(render_samples=3000), sample_scene, "local", None, tmp_path, progress, cancel=cancel)
    assert result.status == "cancelled"
    assert JobRecord.load(tmp_path / "record.json").status == "cancelled"


def test_blender_restarted_mid_job_reattaches(data, tmp_path, sample_scene, stability_server):
    class BlenderQuit(BaseException):  # as SystemExit: the process goes away (an Exception would be settled)
        pass

    def quit_blender() -> None:
        raise BlenderQuit()

    with pytest.raises(BlenderQuit):
        submit(make_job(stability_server, variations=1), sample_scene, "local", None, tmp_path,
               Recorder({"rendering": lambda: None, "downloading": quit_blender}), api_key=stability_server.api_key)
    record = JobRecord.load(tmp_path / "record.json")
    assert record.status == "running" and record.remote_job_dir
    result = reattach(tmp_path / "record.json", progress=Recorder(), cancel=threading.Event())
    assert result.status == "done" and len(result.images) == 1
    assert len(stability_server.requests) == 1  # not rendered or paid for twice


def test_bad_input_fails_before_anything_is_spent(data, tmp_path, sample_scene, stability_server):
    unknown = submit(make_job(), sample_scene, "nowhere", None, tmp_path)
    assert unknown.status == "failed" and "unknown host 'nowhere'" in unknown.error
    no_key = submit(make_job(stability_server), sample_scene, "local", None, tmp_path)
    assert no_key.status == "failed" and "STABILITY_API_KEY" in no_key.error
    bad_size = submit(make_job(width=512, height=512), sample_scene, "local", None, tmp_path)
    assert bad_size.status == "failed" and "not an SDXL size" in bad_size.error
    missing = submit(make_job(), tmp_path / "missing.blend", "local", None, tmp_path)
    assert missing.status == "failed" and "scene file not found" in missing.error
    assert stability_server.requests == [] and not (data / "local-pod").exists()


def test_ai_failure_is_reported_with_the_render_kept(data, tmp_path, sample_scene, stability_server):
    result = submit(make_job(stability_server, variations=1), sample_scene, "local", None, tmp_path,
                    api_key="sk-wrong-key-0000000")
    assert result.status == "failed" and "rejected the API key" in result.error
    assert result.output_dir.joinpath("render.png").is_file()
