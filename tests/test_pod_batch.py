"""Pose batches on the pod, in real Blender: items = poses × cameras in one
Blender process, each pose verifiably applied, a bad item failing alone."""
from __future__ import annotations

import hashlib
import json

import pytest

from remote.core.batch_spec import check_item_entry
from remote.core.contact_sheet import THUMB_PX
from tests.fixtures.stability_server import png_size, png_text
from tests.test_pod_render_job import run_job


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_assets_on_two_cameras_render_six_posed_items(tmp_path, pose_scene, stability_server):
    completed, manifest = run_job(tmp_path, pose_scene, stability_server, poses="T-Pose,Kick,Bow",
                                  cameras="collection:Cameras", seed=0)
    assert completed.returncode == 0, completed.stderr
    out = tmp_path / "out"
    items = manifest["items"]
    assert [i["name"] for i in items] == [f"{p}--{c}" for p in ("T-Pose", "Kick", "Bow")
                                          for c in ("Camera", "CameraSide")]
    assert all(i["status"] == "done" and i["error"] is None for i in items)
    for item in items:
        check_item_entry(item)
        assert item["render"] == f"{item['name']}/render.png" and item["images"] == [f"{item['name']}/ai-render-1.png"]
        assert png_text((out / item["images"][0]).read_bytes())["init-sha256"] == digest(out / item["render"])
    # Six different renders: each pose on each camera.
    assert len({digest(out / i["render"]) for i in items}) == 6
    # Each pose applied: the same bone lands elsewhere per pose, and the same on both cameras.
    arm = [tuple(i["bones"]["Rig/ArmL"]) for i in items]
    assert arm[0] == arm[1] and arm[2] == arm[3] and arm[4] == arm[5] and len(set(arm)) == 3
    assert items[0]["bones"]["Rig/ArmL"][2] == pytest.approx(2.25, abs=0.05)  # T-Pose: arm out at shoulder height
    assert items[2]["bones"]["Rig/LegL"][1] < -0.5  # Kick: leg forward
    # One seed for the batch, drawn once and sent for every item.
    seeds = {i["seed"] for i in items}
    assert len(seeds) == 1 and seeds != {0}
    assert [r["fields"]["seed"] for r in stability_server.requests] == [str(items[0]["seed"])] * 6
    # Each item's thumbnail, at the sheet's cell size (the laptop lays the sheet out from them).
    assert png_size((out / items[0]["name"] / "thumb.png").read_bytes()) == (THUMB_PX, THUMB_PX)
    assert "contact_sheet" not in manifest
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert (progress["total"], progress["done"], progress["failed"]) == (6, 6, 0)


def test_a_bad_pose_asset_fails_its_items_only(tmp_path, pose_scene, stability_server):
    completed, manifest = run_job(tmp_path, pose_scene, stability_server, poses="Wave,Alien,Idle",
                                  backend="none", key=None)
    assert completed.returncode == 0, completed.stderr
    status = {i["name"]: i["status"] for i in manifest["items"]}
    assert status == {"Wave": "done", "Alien": "failed", "Idle": "done"}
    alien = manifest["items"][1]
    assert "'Alien' fits no armature" in alien["error"] and "Tail" in alien["error"]
    assert alien["render"] is None and not (tmp_path / "out" / "Alien" / "render.png").exists()
    assert "1 of 3 item(s) failed" in manifest["error"] and manifest["status"] == "done"
    assert manifest["items"][0]["bones"]["Rig/ArmR"][2] > 3  # Wave: right arm up
    assert manifest["items"][2]["bones"]["Rig/ArmR"][2] == pytest.approx(1.25, abs=0.01)  # Idle after: back at rest
    assert (tmp_path / "out" / "Wave" / "thumb.png").is_file() and not (tmp_path / "out" / "Alien" / "thumb.png").exists()


def test_a_frame_range_returns_the_sequence_in_frame_order(tmp_path, pose_scene, stability_server):
    completed, manifest = run_job(tmp_path, pose_scene, stability_server, poses="frames:5-20:5", variations=2, seed=3)
    assert completed.returncode == 0, completed.stderr
    names = [f"frame-{f:04d}" for f in (5, 10, 15, 20)]
    assert [i["name"] for i in manifest["items"]] == names
    assert [i["frame"] for i in manifest["items"]] == [5, 10, 15, 20]
    sequences = manifest["sequences"]
    assert sequences["render"] == [f"{n}/render.png" for n in names]
    assert sequences["ai-render-2"] == [f"{n}/ai-render-2.png" for n in names]
    assert all((tmp_path / "out" / path).is_file() for path in sequences["ai-render-1"])
    arm_r = [i["bones"]["Rig/ArmR"][2] for i in manifest["items"]]
    assert arm_r[0] < 2 and arm_r[1] > 3  # the animation: frame 10 is the Wave key
    assert {v["seed"] for v in manifest["variations"] if v["n"] == 1} == {3}  # variation n: same seed on every item


@pytest.mark.parametrize(("poses", "cameras", "message"), [
    ("Nope", "active", "unknown pose 'Nope'"),
    ("markers", "Lens", "unknown camera 'Lens'"),
    ("current", "collection:Nobody", "no collection named 'Nobody'"),
])
def test_unknown_names_fail_the_job_before_anything_renders(tmp_path, pose_scene, stability_server, poses,
                                                            cameras, message):
    completed, manifest = run_job(tmp_path, pose_scene, stability_server, poses=poses, cameras=cameras)
    assert completed.returncode == 2 and message in completed.stderr
    assert manifest["items"] == [] and stability_server.requests == []
