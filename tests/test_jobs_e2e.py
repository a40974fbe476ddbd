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

REPO = Path(__file__).resolve().parents[1]


def test_ctrl_c_of_render_cancels_on_the_pod_and_writes_the_ledger_line(tmp_path, sample_scene):
    data = tmp_path / "data"
    env = {**os.environ, "POSEFACTORY_DATA_DIR": str(data), "POSEFACTORY_BPY_PYTHON": sys.executable,
           "PYTHONUNBUFFERED": "1"}
    env.pop("STABILITY_API_KEY", None)
    cli = subprocess.Popen([sys.executable, "-m", "remote.cli", "render", str(sample_scene), "--prompt", "a knight",
                            "--backend", "none", "--samples", "3000", "--host", "local"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
