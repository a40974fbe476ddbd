"""Ctrl-C of ``python -m remote.cli render`` end to end: the job is cancelled on the (local) pod,
settled with its one ledger line, and the CLI exits 130. Real bpy render on the built-in local host."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.signals import terminal_sigint

REPO = Path(__file__).resolve().parents[1]


def test_ctrl_c_of_render_cancels_on_the_pod_and_writes_the_ledger_line(tmp_path, sample_scene):
    data = tmp_path / "data"
    env = {**os.environ, "POSEFACTORY_DATA_DIR": str(data), "POSEFACTORY_BPY_PYTHON": sys.executable,
           "PYTHONUNBUFFERED": "1"}
    env.pop("STABILITY_API_KEY", None)
    cli = subprocess.Popen([sys.executable, "-m", "remote.cli", "render", str(sample_scene), "--prompt", "a knight",
                            "--backend", "none", "--samples", "3000", "--host", "local"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=terminal_sigint)
    try:
        assert cli.stdout is not None
        deadline = time.monotonic() + 240
        for line in cli.stdout:
            if "rendering:" in line and "on local for" in line:
                break
            assert time.monotonic() < deadline, "the render never started"
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, err
    assert err.count("interrupted: cancelling the job") == 1
    [record_file] = (data / "jobs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "cancelled" and record["ledgered"]
    lines = [json.loads(line) for line in (data / "ledger.jsonl").read_text().splitlines() if line.strip()]
    job_lines = [line for line in lines if line.get("job_id") == record["job_id"]]
    assert len(job_lines) == 1 and job_lines[0]["status"] == "cancelled"
    status = json.loads((Path(record["remote_job_dir"]) / "status.json").read_text())
    assert status["state"] not in ("running", "queued"), status  # stopped on the pod, not left rendering


def test_an_sshd_gone_for_two_seconds_mid_upload_does_not_fail_the_job(tmp_path, sample_scene, monkeypatch):
    import threading

    from remote.core.jobspec import RenderJob
    from remote.jobs.pipeline import run_job
    from tests.fixtures.sshd import SSHD, start_sshd

    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", sys.executable)
    server = start_sshd(tmp_path / "sshd", "direct")
    processes = [server.process]
    hosts = server.write_hosts_file(tmp_path / "ssh_hosts.yaml", name="pod", workspace=str(tmp_path / "pod-ws"),
                                    env={"POSEFACTORY_BPY_PYTHON": sys.executable})

    def restart() -> None:
        processes.append(subprocess.Popen([SSHD, "-D", "-e", "-f", str(server.root / "sshd_config")],
                                          stderr=open(server.root / "sshd-2.log", "wb")))

    timer = threading.Timer(2.0, restart)

    def outage() -> None:
        server.drop_connections()
        server.process.kill()
        server.process.wait(5)
        timer.start()

    outages = [outage]

    def progress(p) -> None:
        if p.stage == "uploading" and outages:
            outages.pop()()

    try:
        job = RenderJob(blend_path="", output_dir="", prompt="a knight", backend="none", render_samples=1)
        result = run_job(job, sample_scene, host="pod", hosts_file=hosts, local_output_dir=tmp_path / "results",
                         api_key=None, progress=progress, cancel=threading.Event(), record_path=tmp_path / "r.json")
    finally:
        timer.cancel()
        timer.join(5) if timer.is_alive() else None
        for process in processes:
            process.kill()
            process.wait(5)
    assert not outages and len(processes) == 2, "the outage did not happen"
    assert result.status == "done", result.error
