"""Backend ``diffusers``: tiny random-weight SDXL + ControlNet on this CPU, in-process and in real bpy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pod_setup import ai_channel
from pod_setup.backends import create
from pod_setup.control_images import draw_openpose
from pod_setup.job_errors import EXIT_NO_KEY, JobFailed
from remote.core.jobspec import RenderJob

REPO = Path(__file__).resolve().parents[1]
RENDER_JOB = REPO / "pod_setup" / "render_job.py"
RENDER_CLIENT = REPO / "pod_setup" / "render_client.py"
SIZE = 64


@pytest.fixture(scope="module")
def pod_workspace(tmp_path_factory):
    """One workspace, so one resident AI worker, for the module's tests (stopped at the end)."""
    folder = tmp_path_factory.mktemp("workspace")
    saved = os.environ.get("WORKSPACE")
    os.environ["WORKSPACE"] = str(folder)
    yield folder
    ai_channel.stop()
    if saved is None:
        os.environ.pop("WORKSPACE", None)
    else:
        os.environ["WORKSPACE"] = saved


@pytest.fixture
def models(tiny_models, monkeypatch, pod_workspace) -> Path:
    monkeypatch.setenv("POSEFACTORY_MODELS_DIR", str(tiny_models))
    monkeypatch.setenv("POSEFACTORY_AI_PYTHON", sys.executable)  # this venv has diffusers, as the pod's venv does
    return tiny_models


def worker_stats() -> dict:
    return ai_channel.request({"op": "stats"})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A 64x64 'render' and control images of the render's size (and one of half its size)."""
    folder = tmp_path_factory.mktemp("inputs")
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    render = np.stack([xs * 4, ys * 4, np.full_like(xs, 128)], axis=-1).astype(np.uint8)
    joints = [(32.0, 10.0 + 2 * i) if i < 14 else None for i in range(18)]
    depth = np.repeat((ys * 4).astype(np.uint8)[..., None], 3, axis=-1)
    files = {"render": render, "openpose": draw_openpose([joints], SIZE, SIZE), "depth": depth,
             "small": depth[::2, ::2]}
    paths = {}
    for name, pixels in files.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(paths[name])
    return paths


def job(**overrides) -> RenderJob:
    values = dict(blend_path="scene.blend", output_dir="out", prompt="a knight", backend="diffusers", width=SIZE,
                  height=SIZE, steps=2, strength=0.5, seed=11, variations=1)
    values.update(overrides)
    made = RenderJob(**values)
    made.validate()
    return made


def generate(inputs, controls=None, **overrides):
    backend = create(job(**overrides))
    backend.check_ready()
    chosen = {kind: inputs[name] for kind, name in (controls or {}).items()}
    return backend, backend.generate(inputs["render"], chosen)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def test_same_seed_same_image_and_one_seed_per_variation(models, inputs):
    _, first = generate(inputs, variations=2)
    ai_channel.stop()  # a fresh worker, a fresh load: the same images too
    _, again = generate(inputs, variations=2)
    assert [v.seed for v in first] == [11, 12] and all(v.usable for v in first)
    assert [v.png for v in first] == [v.png for v in again]
    assert first[0].png != first[1].png
    assert pixels(first[0].png).shape == (SIZE, SIZE, 3)
    _, other_seed = generate(inputs, seed=99)
    assert other_seed[0].png != first[0].png


@pytest.mark.parametrize("control, files", [
    ("openpose", {"openpose": "openpose"}),
    ("depth", {"depth": "depth"}),
    ("openpose+depth", {"openpose": "openpose", "depth": "depth"}),
])
def test_each_control_type_runs_and_steers_the_image(models, inputs, control, files):
    _, plain = generate(inputs)
    backend, controlled = generate(inputs, files, control=control)
    assert controlled[0].usable and pixels(controlled[0].png).shape == (SIZE, SIZE, 3)
    assert controlled[0].png != plain[0].png  # the ControlNet's input changed the result
    _, weightless = generate(inputs, files, control=control, openpose_scale=0.0, depth_scale=0.0)
    assert weightless[0].png != controlled[0].png  # the conditioning scales reach the pipeline
    assert backend.stats()["ai_denoising_steps"] == 1  # 2 steps x (1 - 0.5 kept)


def test_pipeline_is_loaded_once_per_worker(models, inputs):
    ai_channel.stop()
    first, _ = generate(inputs, {"depth": "depth"}, control="depth")
    second, _ = generate(inputs, {"depth": "depth"}, control="depth")
    third, _ = generate(inputs)
    assert first.stats()["ai_models_cached"] is False and second.stats()["ai_models_cached"] is True
    assert third.stats()["ai_models_cached"] is True  # the base pipeline is shared with the ControlNet one
    assert worker_stats()["loads"] == 2  # SDXL and the depth ControlNet, each once


def test_a_worker_killed_between_jobs_is_started_again_and_one_killed_mid_job_fails_that_item(models, inputs):
    import signal

    generate(inputs)
    killed = worker_stats()["pid"]
    os.kill(killed, signal.SIGKILL)
    _, again = generate(inputs)  # a new worker, loaded again (even while the old one is still dying)
    assert again[0].usable and worker_stats()["loads"] == 1
    backend = create(job(steps=40, strength=0.0))  # long enough to be killed in the middle
    backend.check_ready()
    pid = worker_stats()["pid"]
    import threading
    threading.Timer(1.0, lambda: os.kill(pid, signal.SIGKILL)).start()
    with pytest.raises(JobFailed, match="AI step failed: the AI worker died during the request") as failure:
        backend.generate(inputs["render"], {})
    assert len(str(failure.value).splitlines()) == 1
    _, after = generate(inputs)  # the next item gets a fresh worker
    assert after[0].usable


def test_a_control_image_of_another_size_is_fitted_to_the_render(models, inputs):
    _, variations = generate(inputs, {"depth": "small"}, control="depth")
    assert pixels(variations[0].png).shape == (SIZE, SIZE, 3)


def test_missing_models_fail_before_anything_renders(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(JobFailed, match="model\\(s\\) missing: sdxl .*controlnet-depth .*setup_pod.sh") as failure:
        create(job(control="depth")).check_ready()
    assert failure.value.code == EXIT_NO_KEY


def run_in_bpy(tmp_path: Path, jobs: list[Path], models: Path, warm: bool = False) -> list[subprocess.CompletedProcess]:
    """Each job in its own Blender, or, ``warm``, one after another in the pod's warm Blender (render_client.py)."""
    env = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    # The AI worker and the warm Blender outlive the job (a pod's next job reuses them); here they stop soon after.
    env.update(POSEFACTORY_MODELS_DIR=str(models), WORKSPACE=str(tmp_path / "workspace"), OMP_NUM_THREADS="1",
               POSEFACTORY_AI_PYTHON=sys.executable, POSEFACTORY_AI_IDLE_S="20", POSEFACTORY_WARM_IDLE_S="20",
               POSEFACTORY_RUNNER="python", POSEFACTORY_EXECUTABLE=sys.executable)
    command = [sys.executable, str(RENDER_CLIENT)] if warm else [sys.executable, str(RENDER_JOB)]
    return [subprocess.run([*command, str(path)], capture_output=True, text=True, env=env, timeout=600)
            for path in jobs]


def write_job(tmp_path: Path, scene: Path, name: str, **overrides) -> Path:
    made = job(blend_path=str(scene), output_dir=str(tmp_path / name), render_samples=1, **overrides)
    path = tmp_path / f"{name}.json"
    made.write(path)
    return path


def test_render_job_in_bpy_with_openpose_and_depth_in_a_warm_worker(tmp_path, posed_scene, tiny_models):
    first = write_job(tmp_path, posed_scene, "one", control="openpose+depth", openpose_scale=0.8)
    second = write_job(tmp_path, posed_scene, "two", control="openpose+depth", openpose_scale=0.8)
    for completed in run_in_bpy(tmp_path, [first, second], tiny_models, warm=True):
        assert completed.returncode == 0, completed.stderr[-3000:]
    manifests = {}
    for name in ("one", "two"):
        out = tmp_path / name
        manifests[name] = manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "done" and manifest["images"] == ["ai-render-1.png"], manifest
        (item,) = manifest["items"]  # one pose x one camera: the flat layout
        assert item["control_images"] == {"openpose": "control-openpose.png", "depth": "control-depth.png"}
        for file in ("render.png", "control-openpose.png", "control-depth.png", "ai-render-1.png"):
            assert Image.open(out / file).size == (SIZE, SIZE), file  # control images sized to the render
        assert manifest["backend"] == "diffusers" and manifest["actual_cost"]["images_usd"] == 0
    assert manifests["one"]["ai_models_cached"] is False and manifests["two"]["ai_models_cached"] is True
    assert [manifests[n]["blender_jobs_in_process"] for n in ("one", "two")] == [1, 2]  # one Blender ran both
    assert (tmp_path / "one" / "ai-render-1.png").read_bytes() == (tmp_path / "two" / "ai-render-1.png").read_bytes()


def test_render_job_without_models_stops_before_rendering(tmp_path, posed_scene):
    path = write_job(tmp_path, posed_scene, "out", control="depth")
    (completed,) = run_in_bpy(tmp_path, [path], tmp_path / "no-models")
    assert completed.returncode == EXIT_NO_KEY and "model(s) missing" in completed.stderr
    assert not (tmp_path / "out" / "render.png").exists()


def test_a_batch_generates_item_k_while_item_k_plus_1_renders(tmp_path, sample_scene, tiny_models):
    path = write_job(tmp_path, sample_scene, "batch", poses="frames:1-4", steps=20)
    (completed,) = run_in_bpy(tmp_path, [path], tiny_models, warm=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    items = json.loads((tmp_path / "batch" / "manifest.json").read_text())["items"]
    assert [item["status"] for item in items] == ["done"] * 4
    for item in items:
        (render_start, render_end), (ai_start, ai_end) = item["timeline"]["render"], item["timeline"]["ai"]
        assert 0 <= render_start < render_end <= ai_start < ai_end  # an item's AI step starts after its render
        assert item["ai_seconds"] == pytest.approx(ai_end - ai_start, abs=0.002)
    for this, following in zip(items, items[1:], strict=False):
        # Item k+1's render did not wait for item k's AI step: it began before that step ended.
        assert following["timeline"]["render"][0] < this["timeline"]["ai"][1], (this["timeline"], following["timeline"])
