"""A job on a pod named by its RunPod id: the stand-in API resumes the pod, the
pipeline takes its SSH endpoint (the real sshd, direct flavour), the job runs
there with real Blender, and the idle watchdog it armed stops the pod through
the API once no job runs — never during one."""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from remote.core.config import data_dir, parse_host
from remote.core.jobspec import RenderJob
from remote.jobs.pipeline import run_job
from remote.runpod.idle import stop_if_idle
from tests.fixtures import wait_for
from tests.fixtures.runpod_v2_standin import VALID_KEY

WATCHDOG = Path(__file__).resolve().parent.parent / "pod_setup" / "idle_watchdog.py"


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def pod_ws(tmp_path):
    workspace = tmp_path / "pod-ws"
    yield workspace
    # Whatever a test left running: turn auto-stop off, so a watchdog exits at its next poll.
    settings = workspace / "posefactory" / "watchdog.json"
    if settings.exists():
        settings.write_text(json.dumps({"pod_id": "", "idle_stop_minutes": 0}))


def pod_entry(sshd_direct, workspace: Path, **extra) -> dict:
    return {"runpod_pod_id": "abc123", "user": getpass.getuser(), "identity_file": sshd_direct.identity_file,
            "known_hosts": sshd_direct.known_hosts, "workspace": str(workspace), "connect_timeout": 10,
            "transfer": "sftp", "env": {"POSEFACTORY_BPY_PYTHON": sys.executable}, **extra}


def write_hosts(tmp_path: Path, entry: dict) -> Path:
    path = tmp_path / "ssh_hosts.yaml"
    path.write_text(yaml.safe_dump({"gpu": entry}))
    return path


def test_job_resumes_the_pod_runs_there_and_the_watchdog_stops_it_when_idle(
        data, tmp_path, pod_ws, sshd_direct, runpod_api, sample_scene):
    pod = runpod_api.add_pod("abc123", ssh_port=sshd_direct.port, status="EXITED", cost_per_hr=0.44)
    hosts = write_hosts(tmp_path, pod_entry(sshd_direct, pod_ws, idle_stop_minutes=0.04))  # 2.4 s
    messages: list[str] = []
    job = RenderJob(blend_path="", output_dir="", prompt="a knight", backend="none", render_samples=1)
    result = run_job(job, sample_scene, host="gpu", hosts_file=hosts, local_output_dir=tmp_path / "results",
                     api_key=None, progress=lambda p: messages.append(p.message), cancel=threading.Event())
    assert result.status == "done", result.error
    assert result.raw_render is not None and result.raw_render.is_file()
    assert pod.events[0] == "start" and any(m.startswith("resuming pod abc123") for m in messages)
    # The job's GPU time is priced at the pod's live rate.
    assert result.manifest["actual_cost"]["gpu_usd"] == pytest.approx(
        result.manifest["actual_cost"]["gpu_seconds"] * 0.44 / 3600, abs=1e-4)
    ledger = [json.loads(line) for line in (data_dir() / "ledger.jsonl").read_text().splitlines()]
    assert ledger[0]["event"] == "pod_start" and ledger[0]["cost_per_hr"] == 0.44
    # The key is in the pod's .env (mode 600) and nowhere else on either side.
    env_file = pod_ws / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600" and f"RUNPOD_API_KEY={VALID_KEY}" in env_file.read_text()
    for path in [*pod_ws.rglob("*"), *(tmp_path / "results").rglob("*"), *data.rglob("*")]:
        if path.is_file() and path != env_file:
            assert VALID_KEY.encode() not in path.read_bytes(), path
    # Idle past the limit: the watchdog stops its own pod through the API.
    wait_for(lambda: pod.status == "EXITED", 30, "the watchdog to stop the pod")
    assert runpod_api.actions("abc123") == ["start", "stop"]
    assert "stopped (EXITED)" in (pod_ws / "posefactory" / "watchdog.log").read_text()
    events = (pod_ws / "posefactory" / "pod_events.jsonl").read_text()
    first_stop = json.loads(events.splitlines()[-1])
    assert first_stop["reason"] == "idle"
    # The next job resumes the pod again and brings the watchdog's stop into the ledger.
    result = run_job(job, sample_scene, host="gpu", hosts_file=hosts, local_output_dir=tmp_path / "results",
                     api_key=None, progress=lambda p: None, cancel=threading.Event())
    assert result.status == "done", result.error
    assert pod.events[:3] == ["start", "stop", "start"]
    ledger = [json.loads(line) for line in (data_dir() / "ledger.jsonl").read_text().splitlines()]
    assert [e.get("event", "job") for e in ledger][:4] == ["pod_start", "job", "pod_start", "pod_stop"]
    assert ledger[3]["reason"] == "idle (pod watchdog)" and ledger[3]["idle_s"] == first_stop["idle_s"]


def watchdog_log(workspace: Path) -> str:
    path = workspace / "posefactory" / "watchdog.log"
    return path.read_text() if path.exists() else ""


def fake_job(workspace: Path, state: str) -> subprocess.Popen:
    """A job dir as pod_agent.sh leaves it, its process alive."""
    jobdir = workspace / "jobs" / "job-1"
    jobdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["sleep", "60"])
    (jobdir / "pid").write_text(str(process.pid))
    (jobdir / "state").write_text(state + "\n")
    return process


def start_watchdog(workspace: Path, api, minutes: float) -> subprocess.Popen:
    (workspace / "posefactory").mkdir(parents=True, exist_ok=True)
    (workspace / "posefactory" / "watchdog.json").write_text(json.dumps(
        {"pod_id": "abc123", "idle_stop_minutes": minutes, "api_base_url": api.base_url}))
    (workspace / ".env").write_text(f"STABILITY_API_KEY=sk-x\nRUNPOD_API_KEY={VALID_KEY}\n")
    os.chmod(workspace / ".env", 0o600)
    return subprocess.Popen([sys.executable, str(WATCHDOG), str(workspace)])


def test_watchdog_never_stops_the_pod_during_a_job(pod_ws, runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=1, status="RUNNING")
    job = fake_job(pod_ws, "running")
    old = time.time() - 3600
    os.utime(pod_ws / "jobs" / "job-1" / "state", (old, old))  # last activity long ago
    watchdog = start_watchdog(pod_ws, runpod_api, minutes=0.01)
    try:
        wait_for(lambda: "watchdog started" in watchdog_log(pod_ws), 30, "the first watchdog holding its lock")
        # A second start is a no-op: one watchdog per workspace.
        assert subprocess.run([sys.executable, str(WATCHDOG), str(pod_ws)], timeout=20).returncode == 0
        time.sleep(2.5)  # many polls past the 0.6 s limit
        assert pod.status == "RUNNING" and runpod_api.actions("abc123") == []
        status = json.loads(subprocess.run([sys.executable, str(WATCHDOG), "--status", str(pod_ws)],
                                           capture_output=True, text=True, check=True).stdout)
        assert status["busy"] is True and status["watchdog_running"] is True
        job.kill()
        job.wait()
        (pod_ws / "jobs" / "job-1" / "state").write_text("done\n")
        wait_for(lambda: pod.status == "EXITED", 20, "the stop after the job")
        assert watchdog.wait(10) == 0
    finally:
        job.kill()
        watchdog.kill()


def test_watchdog_retries_when_the_api_is_down_and_exits_when_turned_off(pod_ws, runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=1, status="RUNNING")
    runpod_api.down = True
    watchdog = start_watchdog(pod_ws, runpod_api, minutes=0.005)
    try:
        wait_for(lambda: "retrying" in watchdog_log(pod_ws), 20, "a failed stop")
        runpod_api.down = False
        wait_for(lambda: pod.status == "EXITED", 20, "the stop once the API is back")
        assert VALID_KEY not in watchdog_log(pod_ws)
        assert watchdog.wait(10) == 0
        watchdog = start_watchdog(pod_ws, runpod_api, minutes=0)
        assert watchdog.wait(10) == 0 and "auto-stop is off" in watchdog_log(pod_ws)
    finally:
        watchdog.kill()


def test_laptop_stops_a_pod_it_sees_idle_past_the_limit(pod_ws, runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=1, status="RUNNING", cost_per_hr=0.4)
    host = parse_host("t", "gpu", {"runpod_pod_id": "abc123", "workspace": str(pod_ws), "idle_stop_minutes": 1})
    (pod_ws / "posefactory").mkdir(parents=True)
    os.symlink(WATCHDOG.parent, pod_ws / "posefactory" / "pod_setup")

    def run(command: str, what: str, **options):
        completed = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
        from remote.bridge.shell import CommandResult
        return CommandResult(id="", host="gpu", status="ok", exit_code=completed.returncode, stdout=completed.stdout,
                             stderr=completed.stderr, started_at="", finished_at="", duration_s=0.0)

    events: list[dict] = []
    job = fake_job(pod_ws, "running")
    try:
        assert stop_if_idle(run, host, events.append) is None and pod.status == "RUNNING"
    finally:
        job.kill()
        job.wait()
    (pod_ws / "jobs" / "job-1" / "state").write_text("done\n")
    assert stop_if_idle(run, host, events.append) is None  # just finished: not idle yet
    old = time.time() - 120
    os.utime(pod_ws / "jobs" / "job-1" / "state", (old, old))
    state = stop_if_idle(run, host, events.append)
    assert state is not None and state.status == "EXITED"
    assert events[0]["event"] == "pod_stop" and "seen by the laptop" in events[0]["reason"]


def test_cli_idle_check_reads_the_pod_over_ssh_and_stops_it_when_idle(data, tmp_path, pod_ws, sshd_direct, runpod_api,
                                                                        capsys):
    from remote.runpod_cli import main

    pod = runpod_api.add_pod("abc123", ssh_port=sshd_direct.port, status="RUNNING", cost_per_hr=0.5)
    (pod_ws / "posefactory").mkdir(parents=True)
    os.symlink(WATCHDOG.parent, pod_ws / "posefactory" / "pod_setup")
    hosts = write_hosts(tmp_path, pod_entry(sshd_direct, pod_ws, idle_stop_minutes=0.5))
    job = fake_job(pod_ws, "running")
    try:
        assert main(["idle-check", "gpu", "--hosts", str(hosts)]) == 0
        assert capsys.readouterr().out == "gpu: left running (busy or not idle long enough)\n"
    finally:
        job.kill()
        job.wait()
    (pod_ws / "jobs" / "job-1" / "state").write_text("done\n")
    old = time.time() - 120
    os.utime(pod_ws / "jobs" / "job-1" / "state", (old, old))
    assert main(["idle-check", "gpu", "--hosts", str(hosts)]) == 0
    assert capsys.readouterr().out == "gpu: stopped (idle past the limit)\n" and pod.status == "EXITED"
    ledger = [json.loads(line) for line in (data_dir() / "ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["event"] == "pod_stop" and "seen by the laptop" in ledger[-1]["reason"]
    assert main(["idle-check", "gpu", "--hosts", str(hosts)]) == 0
    assert capsys.readouterr().out == "gpu: not running\n"
