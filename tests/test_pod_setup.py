"""setup_pod.sh and pod_agent.sh, run for real in a temp workspace."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures import free_port

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "pod_setup" / "setup_pod.sh"
POD_AGENT = REPO / "pod_setup" / "pod_agent.sh"


@pytest.fixture
def pod(tmp_path):
    # A hostile workspace name: every script must quote, never evaluate, it.
    # HOME only gets a space: bpy 5.0.1 itself runs command substitutions
    # found in $HOME at import (seen here), which no script of ours can stop.
    workspace, home = tmp_path / "work space 'q' $(touch pwned)", tmp_path / "home dir"
    workspace.mkdir()
    home.mkdir()
    env = dict(os.environ, WORKSPACE=str(workspace), HOME=str(home), POSEFACTORY_BPY_PYTHON=sys.executable)
    env.pop("STABILITY_API_KEY", None)
    return workspace, home, env


def setup(env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else str(p.stat().st_mtime_ns))
            for p in sorted(root.rglob("*"))}


def test_setup_is_idempotent_and_survives_a_restart(pod):
    workspace, home, env = pod
    (workspace / ".config" / "rclone").mkdir(parents=True)
    (workspace / ".config" / "rclone" / "rclone.conf").write_text("[r2]\ntype = s3\n")
    first = setup(env)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip().splitlines()) == 1 and "linked ~/.config/rclone" in first.stdout
    assert (home / ".config" / "rclone" / "rclone.conf").read_text().startswith("[r2]")
    for folder in ("scripts", "output", "jobs", "blender-addons", ".config"):
        assert (workspace / folder).is_dir()
    before = snapshot(workspace), snapshot(home)
    started = time.monotonic()
    second = setup(env)
    assert second.returncode == 0 and "nothing changed" in second.stdout
    assert "store 0 file(s), 0.0 MB of 20.0 GB)" in second.stdout  # the scene store and its budget
    assert time.monotonic() - started < 10
    assert (snapshot(workspace), snapshot(home)) == before
    # A pod restart: everything outside the workspace is gone.
    shutil.rmtree(home)
    home.mkdir()
    third = setup(env)
    assert third.returncode == 0 and "linked ~/.config/rclone" in third.stdout
    assert (home / ".config" / "rclone" / "rclone.conf").exists()


def test_the_render_kernel_warm_up_runs_once_per_blender_and_gpu_set_and_says_what_it_did(pod):
    workspace, _, env = pod
    env = dict(env, POSEFACTORY_WARM_KERNELS="1")  # this machine has no nvidia-smi: asked for anyway
    cut_short = setup(dict(env, POSEFACTORY_WARM_KERNELS_TIMEOUT_S="0.01"))
    assert cut_short.returncode == 0, cut_short.stderr  # not fatal: the first job compiles them instead
    assert "the render-kernel warm-up did not finish" in cut_short.stdout
    assert not (workspace / "posefactory" / "kernels").exists()  # so the next set-up tries again
    first = setup(env)
    assert first.returncode == 0 and "no GPU for Cycles here" in first.stdout, first.stdout + first.stderr
    (mark,) = (workspace / "posefactory" / "kernels").iterdir()
    assert "no render kernels to warm" in mark.read_text()
    second = setup(env)
    assert second.returncode == 0 and "nothing changed" in second.stdout


def test_the_store_line_reports_its_files_and_a_set_budget(pod):
    workspace, _, env = pod
    objects = workspace / "posefactory" / "store" / "objects"
    objects.mkdir(parents=True)
    data = b"x" * 2_500_000
    (objects / __import__("hashlib").sha256(data).hexdigest()).write_bytes(data)
    done = setup({**env, "POSEFACTORY_STORE_BUDGET_GB": "5"})
    assert done.returncode == 0, done.stderr
    assert "store 1 file(s), 2.5 MB of 5.0 GB)" in done.stdout
    refused = setup({**env, "POSEFACTORY_STORE_BUDGET_GB": "plenty"})
    assert refused.returncode != 0 and "POSEFACTORY_STORE_BUDGET_GB='plenty' is not a number" in refused.stderr


def test_env_file_readable_by_others_is_refused(pod):
    workspace, _, env = pod
    (workspace / ".env").write_text("STABILITY_API_KEY=sk-secret-value\n")
    (workspace / ".env").chmod(0o644)
    completed = setup(env)
    assert completed.returncode != 0 and "chmod 600" in completed.stderr
    assert "sk-secret-value" not in completed.stdout + completed.stderr
    (workspace / ".env").chmod(0o600)
    assert setup(env).returncode == 0


def test_missing_blender_offline_fails_clearly(pod):
    _, _, env = pod
    env = {k: v for k, v in env.items() if k != "POSEFACTORY_BPY_PYTHON"}
    env.update(PATH="/usr/bin:/bin", BLENDER_URL=f"http://127.0.0.1:{free_port()}/blender.tar.xz")
    completed = setup(env)
    assert completed.returncode != 0 and "cannot download Blender" in completed.stderr


def test_blender_download_with_a_wrong_checksum_is_refused(pod, tmp_path):
    workspace, _, env = pod
    served = tmp_path / "served"
    served.mkdir()
    (served / "blender.tar.xz").write_bytes(b"not the Blender you pinned")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in env.items() if k != "POSEFACTORY_BPY_PYTHON"}
        env.update(PATH="/usr/bin:/bin", BLENDER_URL=f"http://127.0.0.1:{server.server_address[1]}/blender.tar.xz")
        completed = setup(env)
    finally:
        server.shutdown()
    assert completed.returncode != 0 and "does not match sha256" in completed.stderr
    assert not (workspace / "blender").exists() and not list(workspace.glob("blender-*.tar.xz*"))


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def agent(env, action: str, jobdir: Path) -> dict:
    """``action``: "start" (no flag), "status" or "cancel"."""
    flag = [] if action == "start" else [f"--{action}"]
    completed = subprocess.run(["bash", str(POD_AGENT), *flag, str(jobdir)], env=env, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def wait_state(env, jobdir: Path, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = agent(env, "status", jobdir)
        if status["state"] in states:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def make_job(workspace: Path, scene: Path, name: str, **extra) -> Path:
    jobdir = workspace / "jobs" / name
    jobdir.mkdir(parents=True)
    shutil.copy(scene, jobdir / "scene.blend")
    job = {"blend_path": str(jobdir / "scene.blend"), "output_dir": str(jobdir / "output"),
           "prompt": "knight", "backend": "none", "render_samples": 1, **extra}
    (jobdir / "job.json").write_text(json.dumps(job))
    return jobdir


def test_pod_agent_runs_a_job_once_and_reports_status(pod, sample_scene):
    workspace, _, env = pod
    assert setup(env).returncode == 0
    hostile = "job 1 \"q\" 'x' $(touch pwned) `touch pwned2`"
    jobdir = make_job(workspace, sample_scene, hostile)
    first = agent(env, "start", jobdir)
    assert first["state"] in ("queued", "running", "done")
    again = agent(env, "start", jobdir)  # re-submitting starts nothing new
    done = wait_state(env, jobdir, {"done", "failed"})
    assert done["state"] == "done" and done["exit_code"] == 0
    assert done["finished_at"] >= done["started_at"] >= done["queued_at"]
    assert (jobdir / "output" / "render.png").exists()
    assert again["queued_at"] == first["queued_at"]
    assert agent(env, "start", jobdir)["finished_at"] == done["finished_at"]
    assert "Saved" in (jobdir / "render.log").read_text()
    assert not list(workspace.parent.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_pod_agent_reports_failures_with_the_jobs_error(pod, sample_scene):
    workspace, _, env = pod
    assert setup(env).returncode == 0
    jobdir = make_job(workspace, sample_scene, "job-nokey", backend="stability")
    agent(env, "start", jobdir)
    failed = wait_state(env, jobdir, {"done", "failed"})
    assert failed["state"] == "failed" and failed["exit_code"] == 3 and "STABILITY_API_KEY" in failed["error"]
    malformed = make_job(workspace, sample_scene, "job-malformed")
    (malformed / "job.json").write_text('{"blend_path": "scene.blend", "prompt": ')
    agent(env, "start", malformed)
    failed = wait_state(env, malformed, {"done", "failed"})
    assert failed["exit_code"] == 2 and "not valid JSON" in failed["error"]


def test_pod_agent_hands_the_start_commands_key_to_the_job(pod, sample_scene, stability_server):
    workspace, _, env = pod
    assert setup(env).returncode == 0
    (workspace / ".env").write_text("STABILITY_API_KEY=sk-stale-key-from-dotenv\n")
    (workspace / ".env").chmod(0o600)
    jobdir = make_job(workspace, sample_scene, "job-key", backend="stability", api_base_url=stability_server.base_url)
    agent(dict(env, STABILITY_API_KEY=stability_server.api_key), "start", jobdir)
    done = wait_state(env, jobdir, {"done", "failed"})
    assert done["state"] == "done", done
    assert [r["prompts"][0]["text"] for r in stability_server.requests] == ["knight"]
    for path in jobdir.rglob("*"):
        if path.is_file():
            assert stability_server.api_key.encode() not in path.read_bytes(), path


def test_pod_agent_usage_errors(pod, tmp_path):
    _, _, env = pod
    for args in ([], ["--bogus", str(tmp_path)], ["--status"], [str(tmp_path / "absent")]):
        completed = subprocess.run(["bash", str(POD_AGENT), *args], env=env, capture_output=True, text=True,
                                   timeout=30)
        assert completed.returncode == 2 and completed.stderr.startswith(("usage:", "pod_agent:")), args


def test_pod_agent_cancel_and_a_killed_job(pod, sample_scene):
    workspace, _, env = pod
    assert setup(env).returncode == 0
    slow = make_job(workspace, sample_scene, "job-slow", render_samples=4000)
    agent(env, "start", slow)
    wait_state(env, slow, {"running"})
    cancelled = agent(env, "cancel", slow)
    assert cancelled["state"] == "cancelled"
    time.sleep(0.5)
    assert agent(env, "status", slow)["state"] == "cancelled"
    at_once = make_job(workspace, sample_scene, "job-cancelled-at-once", render_samples=4000)
    agent(env, "start", at_once)
    assert agent(env, "cancel", at_once)["state"] == "cancelled"  # before the job got going
    time.sleep(1.0)
    assert agent(env, "status", at_once)["state"] == "cancelled"
    killed = make_job(workspace, sample_scene, "job-killed", render_samples=4000)
    agent(env, "start", killed)
    wait_state(env, killed, {"running"})
    os.killpg(int((killed / "pid").read_text()), signal.SIGKILL)  # what a pod restart does to it
    status = wait_state(env, killed, {"failed"}, timeout=10)
    assert "process is gone" in status["error"]


def test_pod_agent_without_setup_says_so(pod, sample_scene):
    workspace, _, env = pod
    jobdir = make_job(workspace, sample_scene, "job-nosetup")
    completed = subprocess.run(["bash", str(POD_AGENT), str(jobdir)], env=env, capture_output=True,
                               text=True, timeout=30)
    assert completed.returncode == 3 and "setup_pod.sh" in completed.stderr
