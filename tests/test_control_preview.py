"""The OpenPose skeleton of artists' rigs through the CLI on the local host: previewed for free with
--backend none (the control images come back), refused before anything is spent when it is empty."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_cli import cli


def _output_dir(stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if "render:" in line or "contact sheet:" in line)
    return Path(line.split(": ", 1)[1].strip()).parent


def test_a_preview_of_an_unknown_rig_brings_its_skeleton_back(tmp_path, rig_scenes):
    done = cli("render", str(rig_scenes["unknown"]), "--prompt", "x", "--backend", "none", "--control", "openpose",
               "--samples", "1", data=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = _output_dir(done.stdout)
    control = np.asarray(Image.open(folder / "control-openpose.png").convert("RGB"))
    assert (control.sum(axis=-1) > 0).sum() > 500  # a skeleton, not a black image
    [entry] = json.loads((folder / "manifest.json").read_text())["items"]
    [skeleton] = entry["skeletons"]
    assert skeleton["armature"] == "Body" and skeleton["convention"] == "inferred from structure"
    assert skeleton["on_screen"] >= 12 and skeleton["hands"] == ["left", "right"]
    assert entry["blender_version"].startswith(("4.", "5."))


def test_an_empty_skeleton_is_refused_before_anything_is_spent(tmp_path, rig_scenes):
    data = tmp_path / "data"
    refused = cli("render", str(rig_scenes["chain"]), "--prompt", "x", "--backend", "diffusers", "--control",
                  "openpose", "--steps", "10", data=data)
    assert refused.returncode != 0
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if "openpose control" in line]
    assert lines and "0 of 18 body joints on screen: the OpenPose image would be empty" in lines[0], \
        refused.stdout + refused.stderr
    assert not (data / "local-pod").exists()  # no host was reached


def test_a_batch_preview_brings_each_items_control_images(tmp_path, rig_scenes):
    bone_map = tmp_path / "joints.yaml"
    bone_map.write_text("left_wrist: 'mixamorig1:LeftHand:tail'\n")
    done = cli("render", str(rig_scenes["mixamo"]), "--prompt", "x", "--backend", "none", "--control",
               "openpose+depth", "--cameras", "Camera,Camera.1", "--samples", "1", "--bone-map", str(bone_map),
               data=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = _output_dir(done.stdout)
    for item in ("current--Camera", "current--Camera.1"):
        for kind in ("openpose", "depth"):
            image = np.asarray(Image.open(folder / item / f"control-{kind}.png").convert("L"))
            assert image.max() > 0, (item, kind)
    entries = json.loads((folder / "manifest.json").read_text())["items"]
    assert {entry["name"] for entry in entries} == {"current--Camera", "current--Camera.1"}
    for entry in entries:
        [skeleton] = entry["skeletons"]
        assert skeleton["convention"].startswith("Mixamo") and skeleton["on_screen"] == 18
        assert skeleton["joints"]["left_wrist"] == "mixamorig1:LeftHand:tail"  # the artist's override


def test_a_bone_map_file_that_is_wrong_is_one_line(tmp_path, rig_scenes):
    missing = cli("render", str(rig_scenes["mixamo"]), "--prompt", "x", "--bone-map", str(tmp_path / "no.yaml"),
                  data=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"elbow": "LeftForeArm"}')
    refused = cli("render", str(rig_scenes["mixamo"]), "--prompt", "x", "--backend", "none", "--control", "openpose",
                  "--bone-map", str(wrong), data=tmp_path)
    assert refused.returncode == 2 and "bone_map: 'elbow' is not a COCO-18 joint" in refused.stderr


PORTRAIT = """
import sys, bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[-2])
camera = bpy.data.objects["Camera"]
camera.location, camera.data.lens = (0, -1.6, 1.5), 50  # head and shoulders
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


def test_a_portrait_goes_on_and_says_its_skeleton_is_partial_an_empty_one_is_refused(tmp_path, rig_scenes):
    import subprocess
    import sys

    from remote.core.jobspec import RenderJob
    from remote.jobs.items import openpose_checks

    scene, script = tmp_path / "portrait.blend", tmp_path / "portrait.py"
    script.write_text(PORTRAIT)
    subprocess.run([sys.executable, str(script), str(rig_scenes["mixamo"]), str(scene)], check=True,
                   capture_output=True, timeout=120)
    job = RenderJob(blend_path=str(scene), output_dir="-", prompt="x", backend="diffusers", control="openpose")
    [portrait] = openpose_checks(scene, job)
    assert not portrait.empty and "fewer than 12: the pose is only partly conditioned" in portrait.line
    assert "left_knee" in portrait.line  # named among the joints out of the frame
    [chain] = openpose_checks(rig_scenes["chain"], job)
    assert chain.empty and "would be empty" in chain.line
    done = cli("render", str(scene), "--prompt", "x", "--backend", "none", "--control", "openpose", "--samples", "1",
               data=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: openpose control" in done.stdout + done.stderr
    [entry] = json.loads((_output_dir(done.stdout) / "manifest.json").read_text())["items"]
    assert entry["status"] == "done" and "fewer than 12" in entry["warning"]


SKY_SCENE = """
import math, sys, bpy
bpy.ops.wm.read_factory_settings(use_empty=False)
scene = bpy.context.scene
scene.camera.location, scene.camera.rotation_euler = (0, 0, 5), (math.pi, 0, 0)  # straight up, at nothing
scene.render.engine = "CYCLES"
scene.cycles.samples = 1
scene.render.resolution_x = scene.render.resolution_y = 256
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


def test_an_empty_depth_image_is_said_not_passed_off(tmp_path):
    import subprocess
    import sys

    scene, script = tmp_path / "sky.blend", tmp_path / "sky.py"
    script.write_text(SKY_SCENE)
    subprocess.run([sys.executable, str(script), str(scene)], check=True, capture_output=True, timeout=120)
    done = cli("render", str(scene), "--prompt", "x", "--backend", "none", "--control", "depth", "--samples", "1",
               data=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = _output_dir(done.stdout)
    [entry] = json.loads((folder / "manifest.json").read_text())["items"]
    assert "depth control: the camera sees nothing" in entry["warning"]
    assert not np.asarray(Image.open(folder / "control-depth.png")).any()
