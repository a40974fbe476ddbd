"""The Pose joints panel in the installed extension: the map found on an artist's rig, a joint pointed
at another bone or at none, stored on the armature so the pod (without the add-on) draws the same;
and the control preview from the panel, on the local host, with no AI step."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_joints_are_found_shown_and_overridden_on_the_armature(blender, tmp_path, rig_scenes):
    saved = tmp_path / "overridden.blend"
    result = blender.run(f"""
        from bl_ext.user_default.posefactory import pose_joints
        bpy.ops.wm.open_mainfile(filepath={str(rig_scenes["mixamo"])!r})
        rig = bpy.data.objects["Body"]
        bpy.context.view_layer.objects.active = bpy.data.objects["Skin"]  # the mesh: its armature is found
        found = list(bpy.ops.posefactory.find_joints())
        before = pose_joints.MAPS["Body"].summary()
        bpy.ops.posefactory.set_joint(joint="left_wrist", bone="mixamorig1:LeftHandIndex1")
        bpy.ops.posefactory.set_joint(joint="left_ear", bone=pose_joints.NONE)
        after = pose_joints.MAPS["Body"]
        labels.clear()
        pose_joints.POSEFACTORY_PT_pose_joints.draw(type("P", (), {{"layout": Layout()}})(), bpy.context)
        shown = list(labels)
        bpy.ops.posefactory.set_joint(joint="nose", bone="mixamorig1:Head")
        bpy.ops.posefactory.set_joint(joint="nose", bone=pose_joints.AUTO)  # back to what was found
        stored = dict(rig.data["posefactory_joints"])
        refused = None
        try:
            bpy.ops.posefactory.set_joint(joint="elbow", bone="mixamorig1:Head")
        except RuntimeError as exc:
            refused = str(exc)
        bpy.ops.wm.save_as_mainfile(filepath={str(saved)!r}, copy=True)
        report(found=found, before=before, after=after.summary(), wrist=str(after.joints["left_wrist"]),
               ear="left_ear" in after.joints, shown=shown, stored=stored, refused=refused)
    """)
    assert result["found"] == ["FINISHED"] and result["before"].startswith("18 of 18 joints (+ 2 hands), Mixamo")
    assert result["after"].startswith("17 of 18") and not result["ear"]
    assert result["wrist"] == "mixamorig1:LeftHandIndex1:head"
    assert result["stored"] == {"left_wrist": "mixamorig1:LeftHandIndex1", "left_ear": ""}
    assert any(label.startswith("17 of 18 joints (+ 2 hands), Mixamo") for label in result["shown"]), result["shown"]
    assert result["refused"] and "'elbow' is not an OpenPose joint" in result["refused"]
    # The pod has no add-on: it reads the same choices from the armature in the .blend.
    pod = subprocess.run([sys.executable, "-c", f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
import bpy
from pod_setup import skeleton
bpy.ops.wm.open_mainfile(filepath={str(saved)!r})
mapping = skeleton.humanoid_map(bpy.data.objects["Body"])
print("POD:" + json.dumps(mapping.to_dict()))
"""], capture_output=True, text=True, timeout=120)
    line = next(line for line in pod.stdout.splitlines() if line.startswith("POD:"))
    mapping = json.loads(line[4:])
    assert mapping["joints"]["left_wrist"] == "mixamorig1:LeftHandIndex1:head" and "left_ear" not in mapping["joints"]
    assert mapping["source"]["left_wrist"] == "override"


def test_the_panel_previews_the_control_images_with_no_ai_step(blender, tmp_path, rig_scenes):
    result = blender.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(rig_scenes["unknown"])!r})
        settings = bpy.context.scene.posefactory
        settings.host = "local"
        settings.backend = "diffusers"
        settings.control = "openpose"
        settings.render_samples = 1
        outcome = list(bpy.ops.posefactory.preview_controls())
        tracked = jobs.MANAGER.latest()
        done = jobs.MANAGER.wait(tracked, timeout=240)
        controls = [image for image in bpy.data.images if image.get("posefactory_control")]
        report(outcome=outcome, status=done.status, error=done.error, controls=[image.name for image in controls],
               files=[image.filepath for image in controls], pixels=[max(image.pixels[:]) for image in controls])
    """)
    assert result["outcome"] == ["FINISHED"] and result["status"] == "done", result["error"]
    assert [Path(p).name for p in result["files"]] == ["control-openpose.png"]
    assert len(result["controls"]) == 1 and result["controls"][0].endswith("openpose")
    assert result["pixels"][0] > 0  # a skeleton drawn, not a black image


def test_a_preview_of_a_rig_with_no_skeleton_says_so_in_the_panel(blender, rig_scenes):
    result = blender.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(rig_scenes["chain"])!r})
        settings = bpy.context.scene.posefactory
        settings.host, settings.backend, settings.control, settings.render_samples = "local", "diffusers", "openpose", 1
        bpy.ops.posefactory.preview_controls()
        done = jobs.MANAGER.wait(jobs.MANAGER.latest(), timeout=240)
        labels.clear()
        panels.POSEFACTORY_PT_main.draw(type("P", (), {{"layout": Layout()}})(), bpy.context)
        report(status=done.status, notes=jobs.MANAGER.latest().item_notes, shown=list(labels))
    """)
    assert result["status"] == "done" and len(result["notes"]) == 1
    assert "0 of 18 body joints on screen: the OpenPose image would be empty" in result["notes"][0]
    assert any("0 of 18 body joints" in label for label in result["shown"]), result["shown"]
