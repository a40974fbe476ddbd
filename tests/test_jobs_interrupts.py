"""Retries back off and stop on cancel (remote/jobs/pod_steps.py); Ctrl-C of the CLI cancels
the job and lets it settle (remote/cli.py). No sshd: the bridge and the job are fakes."""
from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import remote.cli as cli
import remote.jobs.pod_steps as pod_steps
from remote.bridge.shell import CommandResult
from remote.bridge.transfer.common import TransferInterrupted
from remote.jobs.pod_steps import RECONNECT_ATTEMPTS, JobRunner, backoff_s
from remote.jobs.state import Cancelled, JobRecord, JobResult, PipelineError


@pytest.fixture(autouse=True)
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))


class _Waits(threading.Event):
    """A cancel event that records each backoff wait instead of sleeping."""

    def __init__(self, cancel_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.cancel_after = cancel_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if self.cancel_after is not None and len(self.waits) >= self.cancel_after:
            self.set()
        return self.is_set()


class _DroppingBridge:
    def __init__(self) -> None:
        self.calls = 0

    def put(self, host, src, dst):
        self.calls += 1
        raise TransferInterrupted("connection lost")

    get = put

    def run(self, host, command, env=None, timeout=600):
        self.calls += 1
        return CommandResult(id="c", host=host, status="disconnected", exit_code=None, stdout="", stderr="",
                             started_at="", finished_at="", duration_s=0.0, error="gone")


def _runner(tmp_path: Path, cancel: threading.Event) -> tuple[JobRunner, _DroppingBridge]:
    bridge = _DroppingBridge()
    record = JobRecord(job_id="j", host="pod", hosts_file=None, remote_job_dir="/w/jobs/j",
                       local_output_dir=str(tmp_path / "out"))
    host = SimpleNamespace(name="pod", workspace="/w", pod_type="A40", is_local=False)
    return JobRunner(bridge, host, lambda p: None, cancel, record, None), bridge  # type: ignore[arg-type]


def test_backoff_is_exponential_capped_and_long_enough_for_a_restarting_sshd():
    waits = [backoff_s(n) for n in range(1, RECONNECT_ATTEMPTS)]
    assert waits == sorted(waits) and max(waits) <= pod_steps.BACKOFF_CAP_S
    assert sum(waits) >= 15


@pytest.mark.parametrize("how", ["transfer", "run"])
def test_retries_back_off_then_fail(tmp_path, how):
    cancel = _Waits()
    runner, bridge = _runner(tmp_path, cancel)
    with pytest.raises(PipelineError):
        runner.transfer("put", tmp_path, "/w/x", "uploading") if how == "transfer" else runner.run("true", "probing")
    assert bridge.calls == RECONNECT_ATTEMPTS
    assert cancel.waits == [backoff_s(n) for n in range(1, RECONNECT_ATTEMPTS)]


@pytest.mark.parametrize("how", ["transfer", "run"])
def test_a_cancel_stops_the_retries_at_once(tmp_path, how):
    cancel = _Waits(cancel_after=2)
    runner, bridge = _runner(tmp_path, cancel)
    with pytest.raises(Cancelled):
        runner.transfer("put", tmp_path, "/w/x", "uploading") if how == "transfer" else runner.run("true", "probing")
    assert bridge.calls == 2


def _fake_job(calls: dict):
    def run_job(job, scene, *, cancel, record_path, **kwargs):
        calls["started"] = True
        assert cancel.wait(20), "Ctrl-C did not set the cancel event"
        calls["settled"] = True  # the pipeline stops the pod's job and writes its ledger line here
        return JobResult(job_id=job.job_id, status="cancelled", error="cancelled by the user")
    return run_job


def _interrupt_when(flag: dict, key: str, times: int = 1) -> threading.Thread:
    def send() -> None:
        deadline = time.monotonic() + 20
        while key not in flag and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(times):
            time.sleep(0.3)
            _thread.interrupt_main()
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_of_render_cancels_the_job_lets_it_settle_and_exits_130(sample_scene, monkeypatch, capsys, ctrl_c):
    calls: dict = {}
    monkeypatch.setattr(cli, "run_job", _fake_job(calls))
    _interrupt_when(calls, "started")
    code = cli.main(["render", str(sample_scene), "--prompt", "a knight", "--backend", "none"])
    assert code == 130 and calls.get("settled")
    err = capsys.readouterr().err
    assert err.count("interrupted: cancelling the job") == 1


def test_ctrl_c_of_reattach_cancels_too(tmp_path, monkeypatch, ctrl_c):
    calls: dict = {}

    def reattach(record, *, hosts_file, progress, cancel):
        calls["started"] = True
        assert cancel.wait(20)
        calls["settled"] = True
        return JobResult(job_id="j", status="cancelled", error="cancelled by the user")

    monkeypatch.setattr(cli, "reattach", reattach)
    _interrupt_when(calls, "started")
    assert cli.main(["reattach", str(tmp_path / "j.json")]) == 130 and calls.get("settled")


def test_a_second_ctrl_c_leaves_at_once(tmp_path, monkeypatch, capsys, ctrl_c):
    calls: dict = {}
    release = threading.Event()

    def reattach(record, *, hosts_file, progress, cancel):
        calls["started"] = True
        release.wait(20)  # a settle that hangs (a pod that does not answer the cancel)
        return JobResult(job_id="j", status="cancelled")

    monkeypatch.setattr(cli, "reattach", reattach)
    _interrupt_when(calls, "started", times=2)
    try:
        assert cli.main(["reattach", str(tmp_path / "j.json")]) == 130
    finally:
        release.set()
    assert "Resume with" in capsys.readouterr().err
