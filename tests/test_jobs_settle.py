"""The one settle path (remote/jobs/settle.py) and the ends that go through it, without sshd:
serverless ledger lines, serverless re-attach, a settled batch's images on a second re-attach,
disk full mid-batch, the job state and its stage fractions."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from remote.core.pod_output import PodManifest, PodStatus
from remote.jobs.ledger import read_ledger
from remote.jobs.outcome import Outcome
from remote.jobs.pipeline import reattach
from remote.jobs.pod_executor import PodExecutor
from remote.jobs.serverless import interrupted_outcome, item_outcome
from remote.jobs.settle import account, end, follow, result_from_record, settle
from remote.jobs.state import STAGE_FRACTIONS, STAGES, JobRecord, JobState, PodDiskFull, stage_fraction
from remote.runpod.serverless import ItemResult


@pytest.fixture(autouse=True)
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _record(tmp_path: Path, **fields) -> JobRecord:
    defaults = dict(job_id="job-1", host="pod", hosts_file=None, remote_job_dir="/workspace/jobs/job-1",
                    local_output_dir=str(tmp_path / "out" / "job-1"),
                    cost_basis={"steps": 30, "variations": 2, "backend": "stability"})
    return JobRecord(**{**defaults, **fields})


def test_job_state_is_plain_json_and_stages_are_declared_once(tmp_path):
    record = _record(tmp_path, status=JobState.DONE)
    path = tmp_path / "r.json"
    record.save(path)
    assert json.loads(path.read_text())["status"] == "done"
    assert JobRecord.load(path).status == JobState.DONE
    assert JobState.CANCELLED.terminal and not JobState.RUNNING.terminal
    fractions = [STAGE_FRACTIONS[s] for s in STAGES]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert STAGE_FRACTIONS["rendering"] < stage_fraction("rendering", 0.5) < STAGE_FRACTIONS["downloading"]


def test_settle_is_pure_and_account_writes_one_ledger_line(tmp_path, data):
    record = _record(tmp_path)
    outcome = Outcome(JobState.DONE, status=PodStatus("done"), manifest=PodManifest(images_generated=2, raw={}))
    settlement = settle(record, outcome, now=1000.0)
    assert not (data / "ledger.jsonl").exists()  # settle writes nothing
    assert settlement.entry is not None and settlement.entry["ai_images"] == 2
    account(record, tmp_path / "r.json", settlement)
    account(record, tmp_path / "r.json", settle(record, outcome))  # settled again: no second line
    assert [e["job_id"] for e in read_ledger()] == ["job-1"]


def test_a_serverless_job_is_ledgered_once_with_ai_cost_gpu_seconds_and_backend(tmp_path):
    out = tmp_path / "out" / "job-1"
    out.mkdir(parents=True)
    files = [out / "render.png", out / "ai-render-1.png", out / "ai-render-2.png"]
    for f in files:
        f.write_bytes(b"png")
    item = ItemResult("job-1", "done", files=files, manifest={"backend": "stability"}, request_ids=["r1"],
                      execution_s=42.5, cost_usd=0.31)
    record = _record(tmp_path, remote_job_dir="serverless:sl", host="sl")
    result = end(record, None, item_outcome(item), lambda p: None)
    assert result.status == "done" and len(result.images) == 2 and result.raw_render == files[0]
    # A second settle (a re-attach, a retry) does not charge it again.
    record.ledgered = False
    end(record, None, item_outcome(item), lambda p: None)
    [line] = read_ledger()
    assert line["ai_images"] == 2 and line["gpu_seconds"] == 42.5 and line["cost_usd"] == 0.31
    assert line["backend"] == "stability" and line["requests"] == 1 and line["status"] == "done"


def test_reattaching_a_serverless_job_does_not_ssh_and_settles_it_once(tmp_path, monkeypatch):
    import remote.jobs.pod_executor as pod_executor

    def no_ssh(*args, **kwargs):
        raise AssertionError("a serverless record must not reach ssh")

    monkeypatch.setattr(pod_executor, "Bridge", no_ssh)
    monkeypatch.setattr(pod_executor, "prepare_host", no_ssh)
    path = tmp_path / "job-1.json"
    _record(tmp_path, remote_job_dir="serverless:sl", host="sl", status="running", stage="rendering").save(path)
    first = reattach(path, progress=lambda p: None, cancel=threading.Event())
    assert first.status == "failed" and "submit it again" in (first.error or "")
    again = reattach(path, progress=lambda p: None, cancel=threading.Event())
    assert again.status == "failed"
    [line] = read_ledger()
    assert line["status"] == "failed" and "interrupted" in line["cost_flag"]
    assert JobRecord.load(path).stage == "done"
    assert interrupted_outcome(JobRecord.load(path)).state == JobState.FAILED


def test_a_second_reattach_of_a_settled_batch_lists_its_item_images(tmp_path):
    out = tmp_path / "out" / "job-1"
    for item in ("pose-a", "pose-b"):
        (out / item).mkdir(parents=True)
        (out / item / "ai-render-1.png").write_bytes(b"png")
    record = _record(tmp_path, is_batch=True, stage="done", status="done",
                     images=[str(out / "pose-a" / "ai-render-1.png"), "pose-b/ai-render-1.png", "../../etc/passwd"])
    path = tmp_path / "job-1.json"
    record.save(path)
    result = reattach(path, progress=lambda p: None, cancel=threading.Event())
    assert result.images == [out / "pose-a" / "ai-render-1.png", out / "pose-b" / "ai-render-1.png"]
    assert result_from_record(record).images == result.images


class _FakeRunner:
    """What the pod executor and the settle of a stopped job use of a JobRunner; its disk fills while it runs."""

    def __init__(self, record: JobRecord, manifest: PodManifest | None) -> None:
        self.record, self.record_path = record, None
        self.host = SimpleNamespace(pod_type=None, name="pod")
        self.progress = lambda p: None
        self.cancelled = 0
        self.manifest = manifest
        self.cancel = threading.Event()

    def start(self, api_key: str | None) -> None:
        pass

    def poll(self) -> PodStatus | None:
        raise PodDiskFull("pod disk full: the job's status cannot be written")

    def cancel_on_pod(self) -> None:
        self.cancelled += 1

    def final_status(self) -> PodStatus | None:
        return None  # the disk is full: no status can be had

    def read_manifest(self) -> PodManifest | None:
        return self.manifest


def test_disk_full_mid_batch_cancels_the_pod_job_and_charges_the_streamed_items(tmp_path):
    out = tmp_path / "out" / "job-1"
    (out / "pose-a").mkdir(parents=True)
    (out / "pose-a" / "ai-render-1.png").write_bytes(b"png")
    record = _record(tmp_path, is_batch=True, items_done=["pose-a", "pose-b"], items_order=["pose-a", "pose-b", "c"],
                     # A record written before "variations" was the name: its "batch" is still read.
                     started_epoch=1.0, cost_basis={"steps": 30, "batch": 2, "backend": "stability", "items": 3})
    runner = _FakeRunner(record, None)  # the manifest cannot be read either
    result = follow(PodExecutor(runner), start=False)  # type: ignore[arg-type]
    assert runner.cancelled == 1
    assert result.status == "failed" and "disk full" in (result.error or "")
    [line] = read_ledger()
    assert line["ai_images"] == 4 and line["cost_usd"] > 0 and result.cost_usd == line["cost_usd"]


def test_disk_full_charges_what_the_manifest_shows(tmp_path):
    record = _record(tmp_path, started_epoch=1.0)
    runner = _FakeRunner(record, PodManifest(images_generated=2, raw={"backend": "stability"}))
    result = follow(PodExecutor(runner), start=False)  # type: ignore[arg-type]
    assert runner.cancelled == 1 and result.status == "failed"
    [line] = read_ledger()
    assert line["ai_images"] == 2 and line["cost_usd"] > 0


def test_an_unexpected_fault_after_the_pod_was_reached_settles_the_job_once(tmp_path, monkeypatch):
    """Any exception a stage raises (here the batch listing's TimeoutExpired, as a library raises it) ends the
    job as failed with its one ledger line; run_job and reattach never raise."""
    import subprocess

    import remote.jobs.pipeline as pipeline

    def stalled(*args, **kwargs):
        raise subprocess.TimeoutExpired(["blender", "--list"], 300)

    monkeypatch.setattr(pipeline, "follow", stalled)
    path = tmp_path / "job-1.json"
    _record(tmp_path, host="local", status="running", stage="rendering",
            remote_job_dir=str(tmp_path / "ws" / "jobs" / "job-1")).save(path)
    result = reattach(path, progress=lambda p: None, cancel=threading.Event())
    assert result.status == "failed" and "internal error (TimeoutExpired" in (result.error or "")
    [line] = read_ledger()
    assert line["job_id"] == "job-1" and line["status"] == "failed"
    assert JobRecord.load(path).stage == "done"
    assert reattach(path, progress=lambda p: None, cancel=threading.Event()).status == "failed"
    assert len(read_ledger()) == 1
