"""Download the diffusers backend's weights once into the pod's models layout.

    python fetch_models.py MODELS_DIR sdxl=stabilityai/stable-diffusion-xl-base-1.0 controlnet-depth=...

Run by ``setup_backends.sh`` with the diffusers venv's Python. Each model goes
to ``MODELS_DIR/<name>/`` in diffusers' ``save_pretrained`` layout, fetching
only the files diffusers loads: configs, tokenizers, the scheduler and one
weights file per component, the fp16 variant where the repository has one.
A folder that already holds a model (``model_index.json`` or ``config.json``)
is left alone, whoever put it there. ``HF_TOKEN`` (from ``$WORKSPACE/.env``)
is used for gated repositories. Offline, it names each missing model and
where its files must go, and exits 1.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

MARKERS = ("model_index.json", "config.json")
EXTRA_FOLDERS = {"vae_1_0", "vae_decoder", "vae_encoder", "text_encoder_onnx", "unet_onnx"}


def choose_files(files: Iterable[str]) -> list[str]:
    """The files diffusers loads from a repository's listing: configs, tokenizers, one set of weights per folder.

    Only the top level and one folder deep (a pipeline's components); fp16
    weights where the folder has them, else the plain safetensors; never
    .bin/.onnx/.ckpt copies, other variants or extra folders (vae_1_0, ...).
    """
    chosen: list[str] = []
    weights: dict[str, list[str]] = {}
    for name in sorted(files):
        folder, _, base = name.rpartition("/")
        if name.count("/") > 1 or folder in EXTRA_FOLDERS or base.startswith("."):
            continue
        if base.endswith(".safetensors"):
            weights.setdefault(folder, []).append(base)
        elif base.endswith((".json", ".txt", ".model")) and not base.startswith("README"):
            chosen.append(name)
    pipeline = "model_index.json" in chosen
    for folder, names in weights.items():
        if pipeline and not folder:
            continue  # a pipeline's top-level weights are the single-file checkpoint, not diffusers' layout
        fp16 = [n for n in names if ".fp16" in n]
        plain = [n for n in names if n.count(".") == 1 and "twins" not in n]
        for base in fp16 or plain:
            chosen.append(f"{folder}/{base}" if folder else base)
    return sorted(chosen)


def fetch(models_dir: Path, name: str, repo: str) -> str:
    """'present' or 'downloaded'; raises RuntimeError with the reason."""
    target = models_dir / name
    if any((target / marker).is_file() for marker in MARKERS):
        return "present"
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError as exc:
        raise RuntimeError(f"huggingface_hub is not installed ({exc})") from None
    token = os.environ.get("HF_TOKEN") or None
    try:
        files = choose_files(list_repo_files(repo, token=token))
        if not any(marker in files for marker in MARKERS):
            raise RuntimeError(f"{repo} is not in diffusers' layout (no model_index.json or config.json)")
        snapshot_download(repo, allow_patterns=files, local_dir=str(target), token=token)
    except RuntimeError:
        raise
    except Exception as exc:  # the hub's errors (offline, 401 gated, 404) all end the same way
        raise RuntimeError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return "downloaded"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in spec for spec in argv[1:]):
        print("fetch_models: usage: fetch_models.py MODELS_DIR NAME=REPO ...", file=sys.stderr)
        return 2
    models_dir = Path(argv[0])
    models_dir.mkdir(parents=True, exist_ok=True)
    missing, downloaded = [], []
    for spec in argv[1:]:
        name, repo = spec.split("=", 1)
        try:
            if fetch(models_dir, name, repo) == "downloaded":
                downloaded.append(name)
        except RuntimeError as exc:
            missing.append(f"{name} ({repo}) -> {models_dir / name}: {exc}")
    if missing:
        print("fetch_models: cannot download: " + "; ".join(missing) + ". Offline? Copy the weights there in "
              "diffusers' save_pretrained layout, or set HF_TOKEN in $WORKSPACE/.env for gated repositories",
              file=sys.stderr)
        return 1
    print("downloaded " + ", ".join(downloaded) if downloaded else "models present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
