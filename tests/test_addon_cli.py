"""`python -m posefactory_addon`: the add-on's CLI, run as a pipeline runs it, with no Blender UI and no bpy."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def addon_cli(*args: str, tmp_path: Path, without_bpy: bool = False, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    environment.update(POSEFACTORY_DATA_DIR=str(tmp_path / "data"), POSEFACTORY_BPY_PYTHON=sys.executable, **env)
    if without_bpy:
        # A bpy that refuses to load, first on the path: the CLI itself must not need Blender's module.
        # (Not for renders: the local pod's Blender would see it too.)
        guard = tmp_path / "guard"
        guard.mkdir(exist_ok=True)
        (guard / "bpy.py").write_text("raise ImportError('the CLI imported bpy')\n")
        environment["PYTHONPATH"] = str(guard)
    return subprocess.run([sys.executable, "-m", "posefactory_addon", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_cli_renders_on_the_local_host_through_the_stability_stand_in(tmp_path, sample_scene, stability_server):
    prompt = "a knight's \"pose\" $(touch pwned) `id`"
    done = addon_cli("render", str(sample_scene), "--prompt", prompt, "--samples", "1", "--size", "832x1216",
                     "--api-base", stability_server.base_url, "--output", str(tmp_path / "out dir"),
                     tmp_path=tmp_path, STABILITY_API_KEY=stability_server.api_key)
    assert done.returncode == 0, done.stdout + done.stderr
    images = [Path(line.split("image:")[1].strip()) for line in done.stdout.splitlines() if "image:" in line]
    assert len(images) == 1 and images[0].is_file() and images[0].is_relative_to(tmp_path / "out dir")
    assert stability_server.api_key not in done.stdout + done.stderr
    assert not (REPO / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_cli_refuses_bad_input_before_anything_is_spent(tmp_path, sample_scene):
    wrong_size = addon_cli("render", str(sample_scene), "--prompt", "x", "--size", "1000x1000", tmp_path=tmp_path,
                          without_bpy=True)
    assert wrong_size.returncode == 2 and "1000x1000 is not an SDXL size" in wrong_size.stderr
    empty = addon_cli("render", str(sample_scene), "--prompt", "", tmp_path=tmp_path, without_bpy=True)
    assert empty.returncode == 2 and "prompt: must not be empty" in empty.stderr
    assert not (tmp_path / "data" / "jobs").exists() or not any((tmp_path / "data" / "jobs").iterdir())
    estimate = addon_cli("estimate", "--steps", "20", "--batch", "5", "--pod-type", "A40", tmp_path=tmp_path, without_bpy=True)
    assert estimate.returncode == 0 and "5 image(s): $0.2000" in estimate.stdout, estimate.stderr
