"""The diffusers backend as a pod installs it: setup_pod.sh builds the AI venv offline from a wheel folder,
and real bpy jobs through pod_agent.sh run the AI worker with it (the Python comes from ai.env alone)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pod_setup import ai_channel
from tests.fixtures import require
from tests.test_pod_setup import agent, make_job, wait_state

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "pod_setup" / "setup_pod.sh"
RENDER_JOB = REPO / "pod_setup" / "render_job.py"
# The production stack of setup_backends.sh, with the CPU torch this machine's wheel folder holds.
TORCH_SPEC = "torch==2.13.0"
STACK = ["diffusers==0.42.*", "transformers==5.*", "safetensors", "huggingface_hub", "accelerate", "pillow"]
WHEEL_CACHE = Path.home() / ".cache" / "posefactory-test-wheels"
# Short: a worker lingers this long after the tests' last request (teardown stops it sooner).
IDLE_S = "30"
DIFFUSERS_JOB = dict(backend="diffusers", width=64, height=64, steps=2, strength=0.5, seed=11, variations=1,
                     control="openpose+depth", openpose_scale=0.8)


@pytest.fixture(scope="session")
def wheel_dir() -> Path:
    """Every wheel of the stack for this Python, downloaded once into a cache keyed by the spec."""
    python_tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
    key = hashlib.sha256(" ".join([python_tag, TORCH_SPEC, *STACK]).encode()).hexdigest()[:16]
    folder = WHEEL_CACHE / key
    if folder.is_dir():
        return folder
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=WHEEL_CACHE, prefix=".download-"))
    downloaded = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(staging), TORCH_SPEC, *STACK],
                                capture_output=True, text=True, timeout=1800)
    if downloaded.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        require(False, f"the wheels of {TORCH_SPEC} {' '.join(STACK)}",
                f"a pip index or find-links that has them ({downloaded.stderr.strip().splitlines()[-1:]})")
    try:
        staging.rename(folder)  # whole or not at all: an interrupted download is never mistaken for the cache
    except OSError:  # another session cached it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def base_python() -> str:
    """The plain Python under this venv: the wheels were chosen for its version."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def setup_env(workspace: Path, home: Path, wheels: Path) -> dict[str, str]:
    """setup_pod.sh's environment with nothing of this venv's AI settings, and pip offline: the wheel folder only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEFACTORY_", "HF_", "PIP_"))}
    env.update(WORKSPACE=str(workspace), HOME=str(home), POSEFACTORY_BPY_PYTHON=sys.executable,
               POSEFACTORY_DIFFUSERS="1", POSEFACTORY_WHEELS=str(wheels), POSEFACTORY_TORCH_SPEC=TORCH_SPEC,
               POSEFACTORY_AI_BASE_PYTHON=base_python(), HF_HUB_OFFLINE="1", PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1", POSEFACTORY_AI_IDLE_S=IDLE_S)
    return env


def setup(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=900)


def recorded_ai_python(workspace: Path) -> str:
    """POSEFACTORY_AI_PYTHON as a shell that sources ai.env sees it."""
    return subprocess.run(["bash", "-c", '. "$1" && printf %s "$POSEFACTORY_AI_PYTHON"', "_",
                           str(workspace / "posefactory" / "ai.env")], capture_output=True, text=True,
                          check=True).stdout


@contextmanager
def channel_of(workspace: Path, python: str) -> Iterator[None]:
    """ai_channel, in this process, pointed at the worker a job of ``workspace`` runs with ``python``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKSPACE", str(workspace))
        patch.setenv("POSEFACTORY_AI_PYTHON", python)
        yield


class Pod:
    def __init__(self, workspace: Path, env: dict[str, str], first: subprocess.CompletedProcess,
                 second: subprocess.CompletedProcess, build_seconds: float) -> None:
        self.workspace, self.env, self.first, self.second, self.build_seconds = workspace, env, first, second, build_seconds
        self.venv_python = str(workspace / "venv-diffusers" / "bin" / "python")

    def worker_stats(self) -> dict:
        """The running worker's counters (started with the recorded Python when none runs)."""
        with channel_of(self.workspace, self.venv_python):
            return ai_channel.request({"op": "stats"})

    def worker_log(self) -> str:
        path = self.workspace / "posefactory" / "ai-worker.log"
        return path.read_text(errors="replace") if path.exists() else ""  # none before the first worker

    def run_job(self, scene: Path, name: str, **fields) -> tuple[dict, dict]:
        """A job started with pod_agent.sh and waited for: its final status and manifest."""
        jobdir = make_job(self.workspace, scene, name, **{**DIFFUSERS_JOB, **fields})
        agent(self.env, "start", jobdir)
        status = wait_state(self.env, jobdir, {"done", "failed"}, timeout=600)
        return status, json.loads((jobdir / "output" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def pod(tmp_path_factory, wheel_dir, tiny_models) -> Iterator[Pod]:
    """A workspace set up twice with POSEFACTORY_DIFFUSERS=1, offline, the models already in place (built once)."""
    root = tmp_path_factory.mktemp("ai-pod")
    workspace, home = root / "work space", root / "home"
    workspace.mkdir()
    home.mkdir()
    shutil.copytree(tiny_models, workspace / "models")
    env = setup_env(workspace, home, wheel_dir)
    started = time.monotonic()
    first = setup(env)
    build_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    made = Pod(workspace, env, first, setup(env), build_seconds)
    yield made
    with channel_of(workspace, made.venv_python):
        ai_channel.stop()


def test_the_venv_is_built_offline_from_a_plain_python_with_the_production_stack(pod):
    print(f"venv built in {pod.build_seconds:.0f}s")
    assert "built the diffusers venv" in pod.first.stdout and "recorded the AI Python" in pod.first.stdout
    assert pod.second.returncode == 0 and "nothing changed" in pod.second.stdout, pod.second.stdout
    venv = pod.workspace / "venv-diffusers"
    config = (venv / "pyvenv.cfg").read_text()
    assert f"home = {Path(base_python()).parent}" in config and "include-system-site-packages = false" in config
    # accelerate: the part of the production stack that Blender's Python could not import.
    imported = subprocess.run([pod.venv_python, "-c", "import accelerate, diffusers, torch, transformers; "
                               "print(accelerate.__file__, torch.__version__)"],
                              capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(venv)) and "2.13.0" in imported.stdout
    assert recorded_ai_python(pod.workspace) == pod.venv_python
    assert "POSEFACTORY_WHEELS" not in (venv / ".posefactory-installed").read_text()  # the folder, not the variable
    assert str(pod.env["POSEFACTORY_WHEELS"]) in (venv / ".posefactory-installed").read_text()


def test_a_given_ai_python_is_used_and_offline_models_are_named_with_where_they_go(pod, tmp_path):
    workspace = tmp_path / "work space"
    workspace.mkdir()
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in setup_env(workspace, tmp_path / "home", Path(pod.env["POSEFACTORY_WHEELS"])).items()
           if k != "POSEFACTORY_WHEELS"}
    failed = setup({**env, "POSEFACTORY_DIFFUSERS_PYTHON": pod.venv_python})
    assert failed.returncode == 1
    message = failed.stderr.strip()
    assert len(message.splitlines()) == 1 and "cannot download" in message
    for name in ("sdxl", "controlnet-openpose", "controlnet-depth"):
        assert f"{name} (" in message and str(workspace / "models" / name) in message
    assert not (workspace / "venv-diffusers").exists()  # a given Python: no venv
    assert recorded_ai_python(workspace) == pod.venv_python


def test_jobs_through_pod_agent_run_the_worker_with_the_recorded_python_loaded_once(pod, posed_scene):
    assert "POSEFACTORY_AI_PYTHON" not in pod.env and "POSEFACTORY_DIFFUSERS_PYTHON" not in pod.env
    with channel_of(pod.workspace, pod.venv_python):
        ai_channel.stop()  # a cold start for the first job
    loads_before = pod.worker_log().count("ai_worker: loading ")
    first_status, first = pod.run_job(posed_scene, "first")
    second_status, second = pod.run_job(posed_scene, "second")
    for status, manifest in ((first_status, first), (second_status, second)):
        assert status["state"] == "done", status
        assert manifest["images"] == ["ai-render-1.png"] and manifest["ai_worker_loads"] == 3, manifest
    assert first["ai_models_cached"] is False and second["ai_models_cached"] is True
    assert pod.worker_log().count("ai_worker: loading ") - loads_before == 3  # SDXL + two ControlNets, once
    pid = pod.worker_stats()["pid"]
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == pod.venv_python
    images = pod.workspace / "jobs"
    assert (images / "first/output/ai-render-1.png").read_bytes() == (images / "second/output/ai-render-1.png").read_bytes()


def test_a_worker_killed_between_jobs_is_started_again_with_the_same_image(pod, posed_scene):
    pod.run_job(posed_scene, "warm")
    killed = pod.worker_stats()["pid"]
    os.kill(killed, signal.SIGKILL)
    status, manifest = pod.run_job(posed_scene, "after-kill")
    assert status["state"] == "done", status
    assert manifest["ai_models_cached"] is False and manifest["ai_worker_loads"] == 3  # a fresh worker, loaded again
    assert pod.worker_stats()["pid"] != killed
    jobs = pod.workspace / "jobs"
    assert (jobs / "after-kill/output/ai-render-1.png").read_bytes() == (jobs / "warm/output/ai-render-1.png").read_bytes()


def test_the_venv_worker_makes_the_same_image_as_this_venvs_worker(pod, posed_scene, tmp_path, tiny_models):
    status, _ = pod.run_job(posed_scene, "reference")
    assert status["state"] == "done", status
    job = json.loads((pod.workspace / "jobs" / "reference" / "job.json").read_text())
    job.update(blend_path=str(posed_scene), output_dir=str(tmp_path / "out"))
    (tmp_path / "job.json").write_text(json.dumps(job))
    workspace = tmp_path / "workspace"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEFACTORY_", "STABILITY_"))}
    env.update(WORKSPACE=str(workspace), POSEFACTORY_MODELS_DIR=str(tiny_models), POSEFACTORY_AI_PYTHON=sys.executable,
               POSEFACTORY_AI_IDLE_S=IDLE_S, OMP_NUM_THREADS="1")
    try:
        completed = subprocess.run([sys.executable, str(RENDER_JOB), str(tmp_path / "job.json")], env=env,
                                   capture_output=True, text=True, timeout=600)
    finally:
        with channel_of(workspace, sys.executable):
            ai_channel.stop()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "out" / "ai-render-1.png").read_bytes() == \
        (pod.workspace / "jobs" / "reference" / "output" / "ai-render-1.png").read_bytes()


def test_a_worker_killed_during_the_first_items_generation_fails_that_item_and_the_batch_goes_on(pod, posed_scene):
    pid = pod.worker_stats()["pid"]  # the warm worker the job will use (a stats request waits for a busy one)
    log_start = len(pod.worker_log())
    # 50 full denoising steps: seconds of generation, long after the worker logs its start.
    jobdir = make_job(pod.workspace, posed_scene, "killed-mid-item",
                      **{**DIFFUSERS_JOB, "control": "none", "poses": "frames:1-2", "steps": 50, "strength": 0.0})
    agent(pod.env, "start", jobdir)
    deadline = time.monotonic() + 300
    while "variation(s)" not in pod.worker_log()[log_start:]:
        status = agent(pod.env, "status", jobdir)
        assert time.monotonic() < deadline and status["state"] in ("queued", "running"), status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    status = wait_state(pod.env, jobdir, {"done", "failed"}, timeout=600)
    manifest = json.loads((jobdir / "output" / "manifest.json").read_text())
    assert status["state"] == "done" and status["exit_code"] == 0, status
    first, second = manifest["items"]
    assert first["status"] == "failed" and second["status"] == "done" and second["images"], manifest["items"]
    assert "AI step failed: the AI worker died during the request" in first["error"]
    assert len(first["error"].splitlines()) == 1 and "1 of 2 item(s) failed" in manifest["error"]
    assert manifest["ai_worker_loads"] == 1  # the second item's fresh worker loaded SDXL again
