"""setup_pod.sh's AI-backend parts (setup_backends.sh, fetch_models.py), run for real in a temp workspace."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from pod_setup.fetch_models import choose_files
from tests.test_backend_ai_render import vendor_zip

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "pod_setup" / "setup_pod.sh"


def setup(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    workspace = tmp_path / "work space"
    workspace.mkdir(exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEFACTORY_", "HF_"))}
    env.update(WORKSPACE=str(workspace), HOME=str(tmp_path / "home"), POSEFACTORY_BPY_PYTHON=sys.executable, **extra)
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=300)


def test_ai_render_is_installed_once_under_the_exact_folder_name(tmp_path):
    first = setup(tmp_path, POSEFACTORY_AI_RENDER="1", POSEFACTORY_AI_RENDER_ZIP=str(vendor_zip()))
    assert first.returncode == 0 and "installed AI Render" in first.stdout, first.stderr
    addon = tmp_path / "work space" / "blender-addons" / "addons" / "AI-Render"
    assert (addon / "__init__.py").is_file() and (addon / "sd_backends" / "stability_api.py").is_file()
    second = setup(tmp_path, POSEFACTORY_AI_RENDER="1", POSEFACTORY_AI_RENDER_ZIP=str(vendor_zip()))
    assert second.returncode == 0 and "nothing changed" in second.stdout
    assert not list((tmp_path / "work space" / "blender-addons").glob(".ai-render-*"))  # no staging left


def test_a_zip_without_an_ai_render_folder_is_refused(tmp_path):
    wrong = tmp_path / "AI-Render-main.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("AI-Render-main/__init__.py", "")
    failed = setup(tmp_path, POSEFACTORY_AI_RENDER="1", POSEFACTORY_AI_RENDER_ZIP=str(wrong))
    assert failed.returncode == 1 and "folder named exactly AI-Render" in failed.stderr
    assert not (tmp_path / "work space" / "blender-addons" / "addons" / "AI-Render").exists()


def test_not_asked_means_no_venv_no_models_no_add_on(tmp_path):
    plain = setup(tmp_path)
    assert plain.returncode == 0, plain.stderr
    workspace = tmp_path / "work space"
    assert not (workspace / "models").exists() and not (workspace / "venv-diffusers").exists()
    assert not (workspace / "blender-addons" / "addons").exists()


def test_an_ai_python_that_cannot_import_the_stack_is_refused_in_one_line(tmp_path):
    # accelerate failing as it did inside Blender's Python (the reason the AI step has its own venv).
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "accelerate.py").write_text(
        'raise ImportError("cannot import name \'x\' from partially initialized module (most likely due to a circular import)")\n')
    failed = setup(tmp_path, POSEFACTORY_DIFFUSERS="1", POSEFACTORY_DIFFUSERS_PYTHON=sys.executable,
                   PYTHONPATH=str(shadow))
    assert failed.returncode == 1
    message = failed.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"the AI Python {sys.executable} cannot import torch, diffusers, transformers and accelerate" in message
    assert "ImportError: cannot import name 'x'" in message and "circular import" in message
    assert not (tmp_path / "work space" / "posefactory" / "ai.env").exists()


def test_no_plain_python_for_the_venv_is_one_line_before_anything_is_built(tmp_path):
    failed = setup(tmp_path, POSEFACTORY_DIFFUSERS="1", POSEFACTORY_AI_BASE_PYTHON=str(tmp_path / "no-python"))
    assert failed.returncode == 1
    assert failed.stderr.strip() == (f"setup_pod: error: POSEFACTORY_AI_BASE_PYTHON={tmp_path / 'no-python'} is missing "
                                     "or cannot make venvs (needs venv and ensurepip; on Debian: apt-get install python3-venv)")
    assert not (tmp_path / "work space" / "venv-diffusers").exists()


def test_only_the_files_diffusers_loads_are_fetched_fp16_first():
    listing = [
        "model_index.json", "README.md", ".gitattributes", "sd_xl_base_1.0.safetensors",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin", "unet/openvino_model.xml", "vae_1_0/config.json",
        "vae_1_0/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors", "text_encoder/config.json", "tokenizer/vocab.json",
        "tokenizer/merges.txt", "scheduler/scheduler_config.json", "text_encoder/onnx/model.onnx",
    ]
    assert choose_files(listing) == [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt",
        "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
    ]
    controlnet = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model_twins.safetensors",
                  "diffusion_pytorch_model.bin", "images/sample.png"]
    assert choose_files(controlnet) == ["config.json", "diffusion_pytorch_model.safetensors"]
