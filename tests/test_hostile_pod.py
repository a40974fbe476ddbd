"""A hostile or broken pod, played by a fake renderer on the real ``local``
host: whatever it writes, the laptop names nothing outside the job's folder,
shows no control sequence, charges no bad figure, never polls forever, and
writes exactly one ledger line per job."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import remote.jobs.pod_steps
from remote.jobs.ledger import read_ledger
from remote.jobs.pipeline import reattach, run_job
from remote.jobs.state import JobRecord
from tests.test_pipeline_e2e import Recorder, make_job

REPO = Path(__file__).resolve().parents[1]

PRELUDE = f"""#!{sys.executable}
import json, os, signal, sys, time
from pathlib import Path
if sys.argv[1] == "-c":  # setup_pod.sh checking that this "Python" can import bpy
    sys.exit(0)
job_file = Path(sys.argv[-1])
jobdir = job_file.parent
job = json.loads(job_file.read_text())
out = Path(job["output_dir"])
out.mkdir(parents=True, exist_ok=True)
def manifest(**values):
    (out / "manifest.json").write_text(json.dumps({{"job_id": job["job_id"], **values}}))
"""


@pytest.fixture
def fake_pod(tmp_path, monkeypatch):
    """Returns a function installing a fake renderer whose body is the given Python."""
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(remote.jobs.pod_steps, "STATUS_GRACE_S", 1.0)

    def install(body: str) -> Path:
        script = tmp_path / "fake-renderer"
        script.write_text(PRELUDE + textwrap.dedent(body))
        script.chmod(0o755)
        monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", str(script))
        return script

    return install


def submit(tmp_path, sample_scene, progress=None, cancel=None, **job):
    return run_job(make_job(**job), sample_scene, host="local", hosts_file=None, local_output_dir=tmp_path / "results",
                   api_key=None, progress=progress or Recorder(), cancel=cancel or threading.Event(),
                   record_path=tmp_path / "record.json")


def one_ledger_line(job_id: str) -> dict:
    lines = [entry for entry in read_ledger() if entry["job_id"] == job_id]
    assert len(lines) == 1, lines
    return lines[0]


def test_hostile_names_are_never_loaded_or_recorded(fake_pod, tmp_path, sample_scene):
    fake_pod("""
        (out / "ai-render-1.png").write_bytes(b"png")
        manifest(status="done", images=["/etc/hostname", "../../x", "ai-render-1.png"],
                 error="\\x1b[2J\\x1b]0;pwned\\x07boom")
    """)
    result = submit(tmp_path, sample_scene)
    assert result.status == "failed" and "not a plain name" in result.error and "\x1b" not in result.error
    assert result.images == []
    record = JobRecord.load(tmp_path / "record.json")
    assert record.status == "failed" and record.images == [] and "\x1b" not in record.error
    line = one_ledger_line(result.job_id)
    assert line["status"] == "failed" and line["cost_usd"] >= 0


def test_bad_costs_are_flagged_not_charged_and_pod_text_is_cleaned(fake_pod, tmp_path, sample_scene):
    fake_pod("""
        (out / "render.png").write_bytes(b"png")
        (out / "ai-render-1.png").write_bytes(b"png")
        manifest(status="done", images=["ai-render-1.png"], render="render.png", prompt="a \\x1b[31mknight",
                 actual_cost={"total_usd": -5.0}, variations=[{"n": 1, "seed": 3, "finish_reason": "SUCCESS",
                                                              "file": "ai-render-1.png"}])
    """)
    result = submit(tmp_path, sample_scene)
    assert result.status == "done", result.error
    assert [p.name for p in result.images] == ["ai-render-1.png"] and result.raw_render is not None
    assert result.cost_usd >= 0 and "negative" in result.cost_flag
    line = one_ledger_line(result.job_id)
    assert line["cost_usd"] == result.cost_usd and "negative" in line["cost_flag"]
    assert JobRecord.load(tmp_path / "record.json").cost_usd == line["cost_usd"]
    stored = json.loads((result.output_dir / "manifest.json").read_text())
    assert stored["prompt"] == "a knight"


@pytest.mark.parametrize("status, reason", [
    ("not json at all {", "not valid JSON"),
    ('{"exit_code": 0}', "no state"),
    ('{"state": "exploded"}', "unknown state"),
])
def test_unusable_status_fails_the_job_in_one_line_and_stops_it(fake_pod, tmp_path, sample_scene, status, reason):
    fake_pod(f"""
        time.sleep(0.5)
        (jobdir / "status.json").write_text({status!r})
        time.sleep(60)
    """)
    started = time.monotonic()
    result = submit(tmp_path, sample_scene)
    assert result.status == "failed" and reason in result.error and "\n" not in result.error
    assert time.monotonic() - started < 50
    assert JobRecord.load(tmp_path / "record.json").status == "failed"
    line = one_ledger_line(result.job_id)
    assert line["status"] == "failed" and line["gpu_seconds"] > 0
    jobdir = Path(JobRecord.load(tmp_path / "record.json").remote_job_dir)
    assert (jobdir / "state").read_text().strip() == "cancelled"  # the pod stopped spending


def test_a_huge_status_file_is_refused_not_pulled(fake_pod, tmp_path, sample_scene):
    fake_pod("""
        with open(jobdir / "big.tmp", "w") as handle:
            handle.write('{"state": "running", "pad": "' + "x" * (64 << 20) + '"}')
        os.replace(jobdir / "big.tmp", jobdir / "status.json")  # whole at once: only its size is wrong
        time.sleep(60)
    """)
    result = submit(tmp_path, sample_scene)
    assert result.status == "failed" and "over 16384 bytes" in result.error


def test_a_dead_pod_process_is_charged_for_its_gpu_time(fake_pod, tmp_path, sample_scene):
    fake_pod("""
        time.sleep(1.5)
        os.killpg(os.getsid(0), signal.SIGKILL)  # the job's session: the wrapper, as an OOM kill would
        os.killpg(os.getpgid(0), signal.SIGKILL)  # and this process's own group (under `timeout`)
    """)
    result = submit(tmp_path, sample_scene)
    assert result.status == "failed" and "process is gone" in result.error
    line = one_ledger_line(result.job_id)
    assert line["cost_usd"] is not None and line["gpu_seconds"] >= 1.0


def test_two_reattach_runs_charge_and_download_once(fake_pod, tmp_path, sample_scene):
    fake_pod("""
        time.sleep(4)
        (out / "ai-render-1.png").write_bytes(b"png")
        manifest(status="done", images=["ai-render-1.png"], actual_cost={"total_usd": 0.01})
    """)

    class Quit(BaseException):  # as SystemExit: the process goes away (an Exception would be settled)
        pass

    def quit_once_it_runs(progress) -> None:
        if progress.message.startswith("running on"):
            raise Quit()

    with pytest.raises(Quit):
        submit(tmp_path, sample_scene, quit_once_it_runs)
    record_path = tmp_path / "record.json"
    # A second process (the CLI) and this one re-attach at the same time.
    other = subprocess.Popen([sys.executable, "-m", "remote.cli", "reattach", str(record_path)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    mine = reattach(record_path, progress=Recorder(), cancel=threading.Event())
    out, err = other.communicate(timeout=120)
    outcomes = sorted([mine.status, "done" if other.returncode == 0 else "busy" if "already followed" in err else err])
    assert outcomes == ["busy", "done"], (mine, out, err)
    record = JobRecord.load(record_path)
    assert record.status == "done" and len(record.images) == 1
    assert one_ledger_line(record.job_id)["status"] == "done"
    # A third attempt afterwards changes nothing and charges nothing.
    again = reattach(record_path, progress=Recorder(), cancel=threading.Event())
    assert again.status == "done" and len(read_ledger()) == 1


def test_cancelled_after_the_api_accepted_the_request_is_charged(tmp_path, monkeypatch, sample_scene, stability_server):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", sys.executable)
    stability_server.then(200, delay_s=20)
    cancel = threading.Event()

    def cancel_once_the_api_has_it(progress) -> None:
        if stability_server.requests:
            cancel.set()

    progress = Recorder()
    progress_hook = progress.__call__

    def both(event):
        progress_hook(event)
        cancel_once_the_api_has_it(event)

    result = run_job(make_job(stability_server, variations=1), sample_scene, host="local", hosts_file=None,
                     local_output_dir=tmp_path / "results", api_key=stability_server.api_key, progress=both,
                     cancel=cancel, record_path=tmp_path / "record.json")
    assert result.status == "cancelled"
    line = one_ledger_line(result.job_id)
    assert line["status"] == "cancelled" and line["ai_images"] == 1 and line["cost_usd"] > 0
    assert JobRecord.load(tmp_path / "record.json").cost_usd == line["cost_usd"]
