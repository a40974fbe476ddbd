"""The pod's scene store (pod_setup/scene_store.py) as shipped: run with the
pod's python3, on manifests the laptop makes and on hostile ones."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from remote.core.blendfile import block_spans
from remote.scene.delta import encode
from remote.scene.pack import pack_scene

STORE_TOOL = Path(__file__).resolve().parents[1] / "pod_setup" / "scene_store.py"


def store(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", str(STORE_TOOL), "--store", str(root), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def answer(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def put_object(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / "objects").mkdir(parents=True, exist_ok=True)
    (root / "objects" / sha).write_bytes(data)
    return sha


def manifest(tmp_path: Path, files: dict[str, bytes], blend: str = "scene.blend", **extra) -> Path:
    path = tmp_path / "scene-tree.json"
    path.write_text(json.dumps({"blend": blend, "files": [
        {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in files.items()],
        **extra}))
    return path


def test_plan_names_only_what_the_store_lacks_and_layout_hard_links_the_tree(tmp_path):
    root = tmp_path / "store"
    files = {"scene.blend": b"BLENDER-v500 scene", "tex/skin.png": b"png bytes", "tex/copy.png": b"png bytes"}
    listing = manifest(tmp_path, files)
    assert answer(store(root, "plan", str(listing)))["missing"] == sorted(
        {hashlib.sha256(d).hexdigest() for d in files.values()})
    put_object(root, b"png bytes")
    plan = answer(store(root, "plan", str(listing)))
    assert plan["missing"] == [hashlib.sha256(b"BLENDER-v500 scene").hexdigest()] and plan["zstd"] is True
    put_object(root, b"BLENDER-v500 scene")
    tree = tmp_path / "job" / "scene"
    laid = answer(store(root, "layout", str(listing), str(tree)))
    assert laid == {"files": 3, "bytes": sum(len(d) for d in files.values()), "blend": "scene.blend"}
    assert (tree / "tex" / "skin.png").read_bytes() == b"png bytes"
    # One object, linked twice: no copies.
    assert (tree / "tex" / "skin.png").stat().st_ino == (tree / "tex" / "copy.png").stat().st_ino == \
        (root / "objects" / hashlib.sha256(b"png bytes").hexdigest()).stat().st_ino
    assert answer(store(root, "layout", str(listing), str(tree)))["files"] == 3  # again: checked, not redone


def plain_blend(sample_scene: Path, folder: Path) -> bytes:
    """The sample scene as packing sends it: uncompressed, canonical."""
    return pack_scene(sample_scene, folder).main.source.read_bytes()


def one_block_changed(blend: bytes) -> bytes:
    # A small block, as a bone's pose channel is.
    start, end = next(span for span in block_spans(blend)[len(block_spans(blend)) // 2:] if 64 < span[1] - span[0] < 4096)
    middle = (start + end) // 2
    return blend[:middle] + bytes([blend[middle] ^ 0xFF]) + blend[middle + 1:]


def test_a_patch_decodes_against_its_base_and_a_broken_one_is_named_absent(tmp_path, sample_scene):
    root = tmp_path / "store"
    old = plain_blend(sample_scene, tmp_path / "pack")
    new = one_block_changed(old)
    base = put_object(root, old)
    (tmp_path / "old.blend").write_bytes(old)
    (tmp_path / "new.blend").write_bytes(new)
    patch = encode(tmp_path / "new.blend", tmp_path / "patch.zst", tmp_path / "old.blend")
    assert patch is not None and patch.stat().st_size < len(old) // 10  # one block travels, the rest is copied
    sha = hashlib.sha256(new).hexdigest()
    (root / "incoming").mkdir()
    (root / "incoming" / f"{sha}.from-{base}.zst").write_bytes(patch.read_bytes())
    listing = manifest(tmp_path, {"scene.blend": new})
    assert answer(store(root, "layout", str(listing), str(tmp_path / "job" / "scene")))["files"] == 1
    assert (tmp_path / "job" / "scene" / "scene.blend").read_bytes() == new
    # A patch against a base the store no longer has, a damaged patch, or bytes that do not match
    # their name: each dropped and its file named absent (the laptop then sends it whole).
    newer = one_block_changed(new)
    (tmp_path / "newer.blend").write_bytes(newer)
    encode(tmp_path / "newer.blend", tmp_path / "patch2.zst", tmp_path / "new.blend")
    newer_sha = hashlib.sha256(newer).hexdigest()
    (root / "objects" / base).unlink()
    (root / "incoming" / f"{newer_sha}.from-{base}.zst").write_bytes((tmp_path / "patch2.zst").read_bytes())
    (root / "incoming" / f"{'e' * 64}.zst").write_bytes(zstandard.ZstdCompressor().compress(b"not what the name says"))
    damaged = zstandard.ZstdCompressor().compress(b"PFDELTA1\nC" + (1 << 40).to_bytes(8, "big") + (5).to_bytes(8, "big"))
    third = hashlib.sha256(b"third").hexdigest()
    (root / "incoming" / f"{third}.from-{sha}.zst").write_bytes(damaged)  # a copy far past its base's end
    listing = manifest(tmp_path, {"scene.blend": newer, "x.bin": b"not what the name says", "y.bin": b"third"})
    laid = answer(store(root, "layout", str(listing), str(tmp_path / "job2" / "scene")))
    assert sorted(laid["absent"]) == sorted([newer_sha, hashlib.sha256(b"not what the name says").hexdigest(), third])
    assert any("past the end of its base" in problem for problem in laid["problems"]), laid["problems"]
    assert not list((root / "incoming").iterdir()) and not (tmp_path / "job2" / "scene" / "scene.blend").exists()
    assert not (root / "objects" / ("e" * 64)).exists()  # decoded bytes that do not match their name never land


def test_a_large_scene_with_one_block_changed_patches_to_kilobytes(tmp_path, sample_scene):
    """The patch does not grow with the scene: 40 MB of mesh data the edit did not touch are copied."""
    old = plain_blend(sample_scene, tmp_path / "pack")
    spans = block_spans(old)
    end_of_data = spans[-2][1]  # before ENDB
    filler = bytearray()
    for number in range(40):  # forty 1 MB blocks of incompressible "mesh" data, each a real block head
        data = os.urandom(1 << 20)
        filler += b"DATA" + (0).to_bytes(4, "little") + (0x1000 + number).to_bytes(8, "little") + \
            len(data).to_bytes(8, "little") + (1).to_bytes(8, "little") + data
    big = old[:end_of_data] + bytes(filler) + old[end_of_data:]
    changed = one_block_changed(old[:end_of_data]) + bytes(filler) + old[end_of_data:]
    (tmp_path / "old.blend").write_bytes(big)
    (tmp_path / "new.blend").write_bytes(changed)
    patch = encode(tmp_path / "new.blend", tmp_path / "patch.zst", tmp_path / "old.blend")
    assert patch is not None and patch.stat().st_size <= 64_000, patch.stat().st_size if patch else None


@pytest.mark.parametrize("path", ["../escape.png", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\..\\b", "a\0b", "",
                                  "x" * 300])
def test_a_hostile_path_in_the_manifest_is_refused_and_nothing_is_written(tmp_path, path):
    root = tmp_path / "store"
    put_object(root, b"data")
    listing = manifest(tmp_path, {"scene.blend": b"data"})
    raw = json.loads(listing.read_text())
    raw["files"].append({"path": path, "sha256": hashlib.sha256(b"data").hexdigest(), "size": 4})
    listing.write_text(json.dumps(raw))
    completed = store(root, "layout", str(listing), str(tmp_path / "job" / "scene"))
    assert completed.returncode == 1 and completed.stderr.startswith("scene_store: ") and \
        len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert not (tmp_path / "job").exists() and not (tmp_path / "escape.png").exists()


def test_a_link_planted_in_the_tree_cannot_carry_a_file_outside_it(tmp_path):
    root = tmp_path / "store"
    put_object(root, b"data")
    tree = tmp_path / "job" / "scene"
    tree.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "tex").symlink_to(outside)
    completed = store(root, "layout", str(manifest(tmp_path, {"scene.blend": b"data", "tex/a.png": b"data"})), str(tree))
    assert completed.returncode == 1 and "outside the job tree" in completed.stderr
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("bad", [[], {"blend": "scene.blend"}, {"blend": "scene.blend", "files": [{"path": "scene.blend"}]},
                                 {"blend": "other.blend", "files": []}, "not an object"])
def test_a_malformed_manifest_is_one_line(tmp_path, bad):
    listing = tmp_path / "scene-tree.json"
    listing.write_text(json.dumps(bad))
    completed = store(tmp_path / "store", "plan", str(listing))
    assert completed.returncode == 1 and len(completed.stderr.strip().splitlines()) == 1
    assert completed.stderr.startswith("scene_store: manifest")


def test_the_budget_drops_least_recently_used_objects_never_one_a_live_job_links(tmp_path):
    root, jobs = tmp_path / "store", tmp_path / "jobs"
    blobs = {name: os.urandom(1000) for name in ("live", "old", "older", "recent")}
    shas = {name: put_object(root, data) for name, data in blobs.items()}
    now = time.time()
    for age, name in enumerate(("recent", "old", "older", "live")):
        os.utime(root / "objects" / shas[name], (now - age * 3600, now - age * 3600))
    # A running job links "live" (the oldest); an ended job's tree linked "recent".
    for job, name, state in (("running", "live", "running"), ("ended", "recent", "done")):
        (jobs / job / "scene").mkdir(parents=True)
        (jobs / job / "state").write_text(state)
        os.link(root / "objects" / shas[name], jobs / job / "scene" / "a.png")
    result = answer(store(root, "gc", "--budget", "2500", "--jobs", str(jobs)))
    left = {name for name, sha in shas.items() if (root / "objects" / sha).exists()}
    assert left == {"live", "recent"}  # the two oldest unlinked ones went; the live job's stayed
    assert result["removed"] == 2 and result["trees"] == 1 and result["bytes"] == 2000
    assert (jobs / "running" / "scene" / "a.png").exists() and not (jobs / "ended" / "scene").exists()
    status = store(root, "status", "--line", env={"POSEFACTORY_STORE_BUDGET_GB": "1.5"})
    assert status.stdout.strip() == "store 2 file(s), 0.0 MB of 1.5 GB"
    refused = store(root, "status", env={"POSEFACTORY_STORE_BUDGET_GB": "lots"})
    assert refused.returncode == 1 and "is not a number" in refused.stderr


def test_old_per_scene_copies_move_into_the_store(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    data = b"BLENDER old scene"
    sha = hashlib.sha256(data).hexdigest()
    (scenes / f"{sha}.blend").write_bytes(data)
    (scenes / "not-a-hash.blend").write_bytes(b"x")
    assert answer(store(tmp_path / "store", "migrate", str(scenes))) == {"migrated": 1}
    assert (tmp_path / "store" / "objects" / sha).read_bytes() == data and not scenes.exists()


def test_the_store_tool_runs_on_the_python_the_pod_has():
    # The pod runs it with its own python3 (RunPod images: 3.10 and up), not this venv's.
    completed = subprocess.run(["python3", str(STORE_TOOL), "--help"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0 and "plan" in completed.stdout
    assert sys.version_info[:2] == (3, 11)  # the venv; the tool itself uses only the standard library
