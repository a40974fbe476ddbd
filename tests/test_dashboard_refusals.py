"""Dashboard hardening: a planted job record cannot steer Cancel anywhere, the pod
agent never signals pid <= 1, and absurd costs render flagged instead of a 500."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from remote.core.config import local_host
from remote.dashboard.app import create_app
from tests.fixtures import require
from tests.fixtures.dashboard_data import make_job

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(path))
    return path


def post(client, app, url: str):
    return client.post(url, data={"csrf_token": app.config["CSRF_TOKEN"]})


def plant_running(root: Path, job_id: str, **fields) -> Path:
    make_job(root, job_id, status="running", ledger=False)
    path = root / "jobs" / f"{job_id}.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    return path


def hostile_hosts(tmp_path: Path) -> tuple[Path, Path]:
    """A hosts file whose ``local`` runs a planted pod_agent.sh that leaves a marker when run."""
    workspace = tmp_path / "evil-workspace"
    agent = workspace / "posefactory" / "pod_setup" / "pod_agent.sh"
    agent.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    agent.write_text(f"#!/bin/bash\necho \"$@\" > {marker}\n")
    hosts = tmp_path / "evil-hosts.yaml"
    hosts.write_text(f"evil:\n  host: 127.0.0.1\n  workspace: {workspace}\n")
    return hosts, marker


@pytest.mark.parametrize("fields, reason", [
    ({"remote_job_dir": "/tmp/elsewhere"}, "pod job dir is not"),
    ({"remote_job_dir": "{ws}/jobs/../../etc"}, "pod job dir is not"),
    ({"remote_job_dir": "{ws}/jobs/other-job"}, "pod job dir is not"),
    ({"host": "evil"}, "not one of the dashboard's hosts"),
    ({"hosts_file": "{hosts}", "remote_job_dir": "/tmp/elsewhere"}, "pod job dir is not"),
])
def test_cancel_refuses_a_planted_record(root, tmp_path, fields, reason):
    hosts, marker = hostile_hosts(tmp_path)
    workspace = local_host().workspace
    job_id = "20261120-100000-cccccc"
    plant_running(root, job_id, **{k: v.format(ws=workspace, hosts=hosts) for k, v in fields.items()})
    app = create_app(root, presets_folder=tmp_path / "presets")
    client = app.test_client()
    page = client.get(post(client, app, f"/jobs/{job_id}/cancel").headers["Location"]).get_data(as_text=True)
    assert "refused to cancel" in page and reason.replace("'", "&#39;") in page
    assert "cancel sent" not in page
    time.sleep(0.5)
    assert not marker.exists()


def test_cancel_never_uses_the_records_hosts_file(root, tmp_path):
    # The record names a hosts file whose "evil" host would run a planted script: never read.
    hosts, marker = hostile_hosts(tmp_path)
    job_id = "20261120-100000-dddddd"
    plant_running(root, job_id, host="evil", hosts_file=str(hosts),
                  remote_job_dir=f"{tmp_path / 'evil-workspace'}/jobs/{job_id}")
    app = create_app(root, presets_folder=tmp_path / "presets")
    client = app.test_client()
    page = client.get(post(client, app, f"/jobs/{job_id}/cancel").headers["Location"]).get_data(as_text=True)
    assert "refused to cancel" in page
    time.sleep(0.5)
    assert not marker.exists()


def in_own_pid_namespace(script: str, **env: str) -> subprocess.CompletedProcess:
    """``script`` in a PID namespace of its own: a ``kill -- -1`` there (the defect) cannot reach
    any process outside it (the rest of this machine)."""
    require(shutil.which("unshare") is not None, "unshare (util-linux), for a PID namespace",
            "apt-get install util-linux")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "true"],
                           capture_output=True, timeout=30)
    require(probe.returncode == 0, "user and PID namespaces (unshare --user --pid)",
            "run the tests where the kernel allows unprivileged namespaces, or as root")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child",
                           "bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.mark.parametrize("pid", ["1", "0", "-1", "01", "1 2", "abc", "", "99999999999999999999", "$(touch x)"])
def test_pod_agent_cancel_never_signals_pid_1_or_junk(tmp_path, pid):
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    (jobdir / "state").write_text("running\n")
    (jobdir / "pid").write_text(pid)
    (jobdir / "boot_id").write_text("x")
    # A bystander process group that kill -- -1 (or init's group) would reach: it must survive.
    script = (f'setsid sleep 30 & bystander=$!; sleep 0.2; cd {tmp_path}; '
              f'bash {REPO / "pod_setup" / "pod_agent.sh"} --cancel {jobdir} >/dev/null; '
              'sleep 0.2; kill -0 "$bystander" && echo BYSTANDER-ALIVE; kill "$bystander"')
    done = in_own_pid_namespace(script, WORKSPACE=str(tmp_path))
    assert "BYSTANDER-ALIVE" in done.stdout, (done.stdout, done.stderr)
    assert "not signalling" in done.stderr
    assert (jobdir / "state").read_text().strip() == "cancelled"
    assert not (tmp_path / "x").exists()


def test_pod_agent_cancel_still_stops_a_real_job_group(tmp_path):
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    job = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (jobdir / "state").write_text("running\n")
        (jobdir / "pid").write_text(str(job.pid))
        subprocess.run(["bash", str(REPO / "pod_setup" / "pod_agent.sh"), "--cancel", str(jobdir)],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "WORKSPACE": str(tmp_path)})
        assert job.wait(timeout=10) != 0
    finally:
        if job.poll() is None:
            job.kill()


@pytest.mark.parametrize("cost", [1e26, float("nan"), float("inf"), -5.0, 1e308, 10 ** 40])
def test_absurd_costs_render_flagged_not_500(root, tmp_path, cost):
    job_id = "20261120-100000-eeeeee"
    make_job(root, job_id, ledger=False)
    path = root / "jobs" / f"{job_id}.json"
    data = json.loads(path.read_text())
    data["cost_usd"] = cost
    path.write_text(json.dumps(data))
    manifest = root / "output" / job_id / "manifest.json"
    m = json.loads(manifest.read_text())
    m["actual_cost"] = {"total_usd": cost}
    m["estimated_cost"] = {"total_usd": cost}
    manifest.write_text(json.dumps(m))
    with open(root / "ledger.jsonl", "a") as ledger:
        ledger.write(json.dumps({"job_id": job_id, "host": "local", "status": "done", "cost_usd": cost,
                                 "at": "2026-11-20T10:00:00+00:00"}) + "\n")
        ledger.write(json.dumps({"event": "pod_start", "host": "gpu", "pod_id": "abc", "cost_per_hr": cost,
                                 "at": "2026-11-20T10:00:00+00:00"}) + "\n")
        ledger.write(json.dumps({"job_id": "ok-job", "host": "local", "status": "done", "cost_usd": 0.25,
                                 "at": "2026-11-20T10:00:00+00:00"}) + "\n")
    client = create_app(root, presets_folder=tmp_path / "presets").test_client()
    for url in ("/", f"/jobs/{job_id}", "/costs", "/api/costs", f"/api/jobs/{job_id}", "/api/jobs"):
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
        body = answer.get_data(as_text=True)
        assert "1e+26" not in body.lower() and "100000000000000000000000000" not in body
    for url in ("/", f"/jobs/{job_id}"):
        assert "not a plausible figure" in client.get(url).get_data(as_text=True)
    costs = client.get("/costs").get_data(as_text=True)
    assert "could not be read" in costs and "$0.25" in costs


@pytest.mark.parametrize("content, says", [
    (b"prompt: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"prompt: caf\xe9\xff\n", "not valid YAML"),
])
def test_a_broken_preset_file_is_one_line_and_hides_no_other(root, tmp_path, content, says):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "broken.yaml").write_bytes(content)
    (presets / "knight.yaml").write_text("name: knight\nprompt: a knight\n")
    client = create_app(root, presets_folder=presets).test_client()
    for url in ("/presets", "/generate", "/generate?preset=broken"):
        answer = client.get(url)
        assert answer.status_code == 200, url
        page = answer.get_data(as_text=True)
        assert "knight" in page
    assert says in client.get("/presets").get_data(as_text=True)
    assert says in client.get("/generate?preset=broken").get_data(as_text=True)
