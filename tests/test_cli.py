"""The headless CLI and the README's main-job command, as a user runs them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, data: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    environment.update(POSEFACTORY_DATA_DIR=str(data), POSEFACTORY_BPY_PYTHON=sys.executable, **env)
    return subprocess.run([sys.executable, "-m", "remote.cli", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_render_with_the_stability_stand_in(tmp_path, sample_scene, stability_server):
    done = cli("render", str(sample_scene), "--prompt", "a knight $(x)", "--batch", "2", "--samples", "1",
               "--size", "1216x832", "--api-base", stability_server.base_url, data=tmp_path / "data",
               STABILITY_API_KEY=stability_server.api_key)
    assert done.returncode == 0, done.stderr
    images = [line.split("image:")[1].strip() for line in done.stdout.splitlines() if "image:" in line]
    assert len(images) == 2 and all(Path(image).is_file() for image in images)
    assert "cost:   $" in done.stdout and stability_server.api_key not in done.stdout + done.stderr


def test_bad_input_and_estimate(tmp_path, sample_scene):
    bad = cli("render", str(sample_scene), "--prompt", "x", "--size", "512x512", data=tmp_path)
    assert bad.returncode == 2 and "512x512 is not an SDXL size" in bad.stderr
    empty = cli("render", str(sample_scene), "--prompt", " ", data=tmp_path)
    assert empty.returncode == 2 and "prompt: must not be empty" in empty.stderr
    estimate = cli("estimate", "--steps", "20", "--batch", "5", "--pod-type", "A40", data=tmp_path)
    assert estimate.returncode == 0 and "5 image(s): $0.2000" in estimate.stdout


def test_the_readme_main_job_runs_the_round_trip_on_the_local_host(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    environment["POSEFACTORY_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run([str(REPO / "scripts" / "demo.sh"), "--samples", "1"], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AI step skipped: STABILITY_API_KEY is not set" in done.stdout
    # A small pose batch: the sample character's three marker poses, and the contact sheet at the end.
    assert "items:  3 (3 rendered, 0 reused, 0 failed)" in done.stdout
    sheet = done.stdout.strip().splitlines()[-1]
    assert sheet.startswith("  contact sheet: ") and Path(sheet.split(": ", 1)[1]).is_file()
    for pose in ("Idle", "Wave", "Cheer"):
        assert (Path(sheet.split(": ", 1)[1]).parent / pose / "render.png").is_file()
    assert (tmp_path / "data" / "ledger.jsonl").is_file()


def test_backend_options_are_refused_in_one_line_before_anything_runs(tmp_path):
    scene = tmp_path / "scene.blend"
    wrong = cli("render", str(scene), "--prompt", "x", "--backend", "stability", "--control", "depth", data=tmp_path)
    assert wrong.returncode == 2 and "control: depth needs backend diffusers" in wrong.stderr
    zero = cli("render", str(scene), "--prompt", "x", "--backend", "diffusers", "--steps", "10", "--strength", "0.95",
               data=tmp_path)
    assert zero.returncode == 2 and "leaves 0 of 10 denoising steps" in zero.stderr
    unknown = cli("render", str(scene), "--prompt", "x", "--backend", "dalle", data=tmp_path)
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
def test_batch_options_are_checked_before_upload_in_one_line(tmp_path, sample_scene):
    reversed_range = cli("render", str(sample_scene), "--prompt", "x", "--poses", "frames:9-3", data=tmp_path)
    assert reversed_range.returncode == 2 and "error: poses: 'frames:9-3' is a reversed range" in reversed_range.stderr
    unknown = cli("render", str(sample_scene), "--prompt", "x", "--poses", "Wave,Dance", "--cameras", "Camera",
                  data=tmp_path)
    assert unknown.returncode == 1 and "unknown pose 'Dance'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and not (tmp_path / "local-pod").exists()
