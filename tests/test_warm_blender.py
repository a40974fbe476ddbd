"""The pod's warm Blender (render_client.py + warm_blender.py): one Blender process runs job after job,
in real Blender (the bpy module), and every way a job can end in it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pod_setup import render_client
from remote.core.jobspec import RenderJob

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "pod_setup" / "render_client.py"


@pytest.fixture
def pod(tmp_path, monkeypatch):
    """A workspace whose recorded Blender is the bpy module, as setup_pod.sh records it; its warm Blender
    is stopped at the end."""
    workspace = tmp_path / "workspace"
    (workspace / "posefactory").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STABILITY_", "POSEFACTORY_"))}
    env.update(WORKSPACE=str(workspace), POSEFACTORY_RUNNER="python", POSEFACTORY_EXECUTABLE=sys.executable,
               POSEFACTORY_WARM_IDLE_S="30")
    for name in ("WORKSPACE", "POSEFACTORY_RUNNER", "POSEFACTORY_EXECUTABLE"):
        monkeypatch.setenv(name, env[name])
    yield env
    pid = warm_pid(workspace)
    if pid:
        os.kill(pid, signal.SIGKILL)


def warm_pid(workspace: Path) -> int | None:
    """The warm Blender's pid, from its log ("ready on ... (pid N)"), if it still runs."""
    log = workspace / "posefactory" / "warm-blender.log"
    lines = [line for line in log.read_text().splitlines() if "ready on" in line] if log.exists() else []
    if not lines:
        return None
    pid = int(lines[-1].rsplit("pid ", 1)[1].rstrip(")"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def job_dir(tmp_path: Path, scene: Path, name: str, api: str, key: str | None = None, **overrides) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    RenderJob(blend_path=str(scene), output_dir=str(folder / "out"), prompt=f"knight {name}", api_base_url=api,
              render_samples=1, seed=3, **overrides).write(folder / "job.json")
    if key:  # as pod_agent.sh hands it over
        (folder / ".secret-STABILITY_API_KEY").write_text(key)
        (folder / ".secret-STABILITY_API_KEY").chmod(0o600)
    return folder


def run(env: dict, folder: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLIENT), str(folder / "job.json")], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def manifest(folder: Path) -> dict:
    return json.loads((folder / "out" / "manifest.json").read_text())


def test_jobs_run_one_after_another_in_one_blender_and_a_key_ends_with_its_job(tmp_path, pod, sample_scene,
                                                                                 stability_server):
    first = job_dir(tmp_path, sample_scene, "one", stability_server.base_url, key=stability_server.api_key)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "job.json").write_text("[]")
    keyless = job_dir(tmp_path, sample_scene, "two", stability_server.base_url)
    third = job_dir(tmp_path, sample_scene, "three", stability_server.base_url, key=stability_server.api_key)
    codes = [run(pod, folder).returncode for folder in (first, tmp_path / "bad", keyless, third)]
    # The second job with a key of its own renders; the one without gets none of the first's.
    assert codes == [0, 2, 3, 0]
    assert "STABILITY_API_KEY" in manifest(keyless)["error"]
    assert [manifest(f)["blender_jobs_in_process"] for f in (first, keyless, third)] == [1, 3, 4]
    assert [r["prompts"][0]["text"] for r in stability_server.requests] == ["knight one", "knight three"]
    assert manifest(third)["status"] == "done" and manifest(third)["render_result_fix_applied"] is True
    for line in ps_lines():
        assert stability_server.api_key not in line  # never in a process's command line or environment


def ps_lines() -> list[str]:
    return subprocess.run(["ps", "eww", "-A", "-o", "args"], capture_output=True, text=True).stdout.splitlines()


class Hanging:
    """An AI API that takes the request and never answers: a job waits in its paid call."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_client_killed_mid_job_takes_the_warm_blender_with_it_and_the_next_job_starts_fresh(
        tmp_path, pod, sample_scene, stability_server):
    hanging = Hanging()
    stuck = job_dir(tmp_path, sample_scene, "stuck", hanging.url, key="sk-stuck")
    render_log = (stuck / "render.log").open("w")  # as pod_agent.sh runs it
    client = subprocess.Popen([sys.executable, str(CLIENT), str(stuck / "job.json")], cwd=stuck, env=pod,
                              stdout=render_log, stderr=subprocess.STDOUT)
    # In its paid call: the manifest says so before the request goes out.
    wait_for(lambda: (stuck / "out" / "manifest.json").exists()
             and manifest(stuck).get("ai_images_requested"), "the job's AI call")
    blender = warm_pid(Path(pod["WORKSPACE"]))
    assert blender
    client.send_signal(signal.SIGTERM)  # what a cancel or the time limit does
    client.wait(30)
    wait_for(lambda: warm_pid(Path(pod["WORKSPACE"])) is None, "the warm Blender to stop")
    assert "client went away" in (stuck / "render.log").read_text()  # said in the job's own log
    hanging.listener.close()
    after = job_dir(tmp_path, sample_scene, "after", stability_server.base_url, key=stability_server.api_key)
    assert run(pod, after).returncode == 0
    assert manifest(after)["blender_jobs_in_process"] == 1 and warm_pid(Path(pod["WORKSPACE"])) != blender


def test_a_warm_blender_that_dies_mid_job_fails_that_job_in_one_line_and_the_next_one_runs(
        tmp_path, pod, sample_scene, stability_server):
    hanging = Hanging()
    stuck = job_dir(tmp_path, sample_scene, "stuck", hanging.url, key="sk-stuck")
    client = subprocess.Popen([sys.executable, str(CLIENT), str(stuck / "job.json")], cwd=stuck, env=pod,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (stuck / "out" / "manifest.json").exists()
             and manifest(stuck).get("ai_images_requested"), "the job's AI call")
    os.kill(warm_pid(Path(pod["WORKSPACE"])), signal.SIGKILL)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == render_client.EXIT_RENDER
    assert stderr.strip().splitlines()[-1].startswith("render_job: the warm Blender died during the job")
    hanging.listener.close()
    after = job_dir(tmp_path, sample_scene, "after", stability_server.base_url, key=stability_server.api_key)
    assert run(pod, after).returncode == 0 and manifest(after)["status"] == "done"


def test_requests_that_are_not_jobs_are_refused_and_the_blender_serves_on(tmp_path, pod, sample_scene,
                                                                          stability_server):
    first = job_dir(tmp_path, sample_scene, "one", stability_server.base_url, key=stability_server.api_key)
    assert run(pod, first).returncode == 0
    path = render_client.socket_path()
    for hostile in (b"not json\n", b'{"job": "relative/job.json", "cwd": "/", "env": {}}\n',
                    b'{"job": "/x/job.json", "cwd": "/", "env": {"A": 1}}\n',
                    b'{"job": "/x/job.json", "cwd": "/", "env": {}}\n'):  # the last: no stdout/stderr passed
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(path)
            connection.sendall(hostile)
            connection.settimeout(30)
            assert connection.recv(100) == b""  # closed without running anything
    second = job_dir(tmp_path, sample_scene, "two", stability_server.base_url, key=stability_server.api_key)
    assert run(pod, second).returncode == 0 and manifest(second)["blender_jobs_in_process"] == 2


def test_without_the_warm_blender_a_job_runs_in_a_blender_of_its_own(tmp_path, pod, sample_scene, stability_server):
    folder = job_dir(tmp_path, sample_scene, "alone", stability_server.base_url, key=stability_server.api_key)
    assert run({**pod, "POSEFACTORY_WARM_BLENDER": "0"}, folder).returncode == 0
    assert manifest(folder)["blender_jobs_in_process"] == 1 and warm_pid(Path(pod["WORKSPACE"])) is None


def test_new_pod_code_gets_a_new_warm_blender(tmp_path, pod, monkeypatch):
    before = render_client.socket_path()
    monkeypatch.setattr(render_client, "code_stamp", lambda: "another set-up")
    assert render_client.socket_path() != before
    monkeypatch.setenv("POSEFACTORY_EXECUTABLE", "/opt/blender-4.5/blender")
    assert render_client.socket_path() not in (before,)
