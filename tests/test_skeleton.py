"""The humanoid map on the rigs artists bring: each joint where the bone that truly is that joint
projects, in three views, in real Blender."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from remote.core.humanoid import BODY_JOINTS, Bone, JointRef, infer, split_name

REPO = Path(__file__).resolve().parents[1]
MARKER = "SKELETON-TEST:"

# Projects the map's joints the way the control image does (control_images.project) and the truth's
# bones through the camera's own matrices, for every camera of every rig scene.
SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import bpy
from mathutils import Vector
from pod_setup import control_images, skeleton

results = {}
for kind, path in json.loads(sys.argv[2]).items():
    bpy.ops.wm.open_mainfile(filepath=path)
    scene = bpy.context.scene
    truth = json.loads(scene["posefactory_truth"])
    depsgraph = bpy.context.evaluated_depsgraph_get()
    rigs = skeleton.armatures(scene)
    maps = {rig.name: skeleton.humanoid_map(rig) for rig in rigs}
    views = []
    width, height = control_images.render_size(scene)
    for camera in sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name):
        scene.camera = camera
        projection = camera.calc_matrix_camera(depsgraph, x=width, y=height) @ camera.matrix_world.inverted()

        def pixel(world):
            clip = projection @ Vector((*world, 1.0))
            return [(clip.x / clip.w + 1) / 2 * width, (1 - (clip.y / clip.w + 1) / 2) * height]

        def true_point(rig, ref):
            bone, end = ref.rsplit(":", 1) if ref.endswith((":head", ":tail")) else (ref, "head")
            pose_bone = rig.pose.bones[bone]
            return pixel(rig.matrix_world @ (pose_bone.tail if end == "tail" else pose_bone.head))

        view = {"camera": camera.name, "maps": {}}
        for rig in rigs:
            evaluated = rig.evaluated_get(depsgraph)
            body, hands = skeleton.posed_joints(evaluated, maps[rig.name])
            view["maps"][rig.name] = {
                "found": dict(zip(skeleton.BODY_JOINTS, control_images.project(scene, body))),
                "hands": {side: control_images.project(scene, points) for side, points in hands.items()},
                "truth": {joint: true_point(rig, bone) for joint, bone in truth.items()
                          if not joint.endswith("_hand") and joint != "head"},
                "truth_hands": {side.split("_")[0]: [true_point(rig, ref) for ref in refs]
                                for side, refs in truth.items() if side.endswith("_hand")},
                "head": true_point(rig, truth["head"]) if "head" in truth else None,
            }
        views.append(view)
    results[kind] = {"armatures": [rig.name for rig in rigs], "all_armatures": [o.name for o in scene.objects
                     if o.type == "ARMATURE"], "maps": {name: m.to_dict() for name, m in maps.items()},
                     "summaries": {name: m.summary() for name, m in maps.items()}, "views": views,
                     "size": [width, height]}
print("SKELETON-TEST:" + json.dumps(results))
'''


@pytest.fixture(scope="module")
def mapped(rig_scenes, tmp_path_factory) -> dict:
    script = tmp_path_factory.mktemp("skeleton") / "map.py"
    script.write_text(SCRIPT)
    completed = subprocess.run([sys.executable, str(script), str(REPO), json.dumps({k: str(v) for k, v in rig_scenes.items()})],
                               capture_output=True, text=True, timeout=600)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(MARKER)]
    assert completed.returncode == 0 and lines, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(lines[-1][len(MARKER):])


def _distance(a, b) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


HUMANOIDS = ("mixamo", "unreal", "cc", "daz", "arp", "metarig", "unknown", "cesium", "rigify")


@pytest.mark.parametrize("kind", HUMANOIDS)
def test_every_body_joint_lands_on_the_bone_that_is_that_joint(mapped, kind):
    result = mapped[kind]
    assert result["armatures"] == ["Body"], result  # one skeleton per deforming armature
    for view in result["views"]:
        skeleton = view["maps"]["Body"]
        for joint, expected in skeleton["truth"].items():
            found = skeleton["found"][joint]
            assert found is not None, (kind, view["camera"], joint, result["maps"]["Body"])
            assert _distance(found, expected) <= 1.0, (kind, view["camera"], joint, found, expected)
        if kind != "unknown":  # the named rigs have the same body: all 18 joints on screen
            assert sum(point is not None for point in skeleton["found"].values()) >= 16, (kind, skeleton["found"])


@pytest.mark.parametrize("kind", HUMANOIDS)
def test_the_face_sits_on_the_head_not_off_it(mapped, kind):
    result = mapped[kind]
    width, height = result["size"]
    tolerance = 0.03 * math.hypot(width, height)
    front = result["views"][0]["maps"]["Body"]
    for joint in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        found = front["found"][joint]
        assert found is not None, (kind, joint)
        # Near the head bone: no face point floats off it (the head bone is ~0.23 m here, ~50 px).
        assert _distance(found, front["head"]) <= 3 * tolerance, (kind, joint, found, front["head"])
    # Left is the character's left: on the image's right in a front view.
    assert front["found"]["left_eye"][0] > front["found"]["right_eye"][0]
    assert front["found"]["left_ear"][0] > front["found"]["right_ear"][0]


def test_rigify_ignores_the_hidden_metarig_and_the_eye_controls(mapped):
    result = mapped["rigify"]
    assert set(result["all_armatures"]) == {"Body", "metarig"} and result["armatures"] == ["Body"]
    joints = result["maps"]["Body"]["joints"]
    assert joints["left_eye"].startswith(("ORG-eye.L", "DEF-eye.L")), joints  # never the eye.L control
    assert all(ref.split(":")[0].startswith(("DEF-", "ORG-")) or "@" in ref for ref in joints.values()), joints
    assert result["maps"]["Body"]["convention"].startswith("Rigify")


@pytest.mark.parametrize("kind", [kind for kind in HUMANOIDS if kind != "cesium"])
def test_hands_land_on_the_finger_bones(mapped, kind):
    result = mapped[kind]
    for view in result["views"][:1]:
        skeleton = view["maps"]["Body"]
        assert set(skeleton["hands"]) == {"left", "right"}, (kind, result["maps"]["Body"]["hands"])
        for side, points in skeleton["hands"].items():
            expected = skeleton["truth_hands"][side]
            assert len(points) == len(expected) == 21
            for index, (found, want) in enumerate(zip(points, expected)):
                assert found is not None and _distance(found, want) <= 1.0, (kind, side, index, found, want)


@pytest.mark.parametrize("kind, convention", [("mixamo", "Mixamo"), ("unreal", "Unreal mannequin"),
                                              ("cc", "Character Creator"), ("daz", "Daz Genesis"), ("arp", "Auto-Rig Pro"),
                                              ("metarig", "Blender metarig"), ("unknown", "inferred from structure"),
                                              ("cesium", "inferred from structure")])
def test_the_convention_is_named(mapped, kind, convention):
    assert mapped[kind]["maps"]["Body"]["convention"].startswith(convention)
    assert "18 of 18 joints" in mapped[kind]["summaries"]["Body"] or kind == "unknown"


def test_a_glTF_character_like_cesiumman_maps_its_limbs_and_neck_from_its_structure(mapped):
    mapping = mapped["cesium"]["maps"]["Body"]
    structural = {joint for joint, source in mapping["source"].items() if source == "structure"}
    assert structural == {"neck", *(f"{side}_{part}" for side in ("left", "right")
                                    for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))}
    assert mapping["hands"] == {}  # no finger bones: no hands drawn, rather than guessed
    assert mapping["joints"]["left_shoulder"] == "Skeleton_arm_joint_L__4_:head"


def test_a_chain_of_bones_is_not_a_humanoid(mapped):
    result = mapped["chain"]
    assert result["maps"]["Body"]["joints"] == {} and result["maps"]["Body"]["convention"] == "not a humanoid"


# --- the names, without Blender ---------------------------------------------------------------------

@pytest.mark.parametrize("name, parsed", [
    ("mixamorig:LeftForeArm", ("left", "forearm", None)), ("mixamorig12:RightUpLeg", ("right", "upleg", None)),
    ("upperarm_l", ("left", "upperarm", None)), ("DEF-upper_arm.L.001", ("left", "upperarm", 1)),
    ("CC_Base_R_Calf", ("right", "calf", None)), ("lShldrBend", ("left", "shldrbend", None)),
    ("r_forearm", ("right", "forearm", None)), ("neck.x", ("", "neck", None)), ("spine.004", ("", "spine004", None)),
    ("f_index.01.L", ("left", "findex01", None)), ("leftUpperArm", ("left", "upperarm", None)),
])
def test_names_are_read_the_way_each_convention_writes_them(name, parsed):
    assert split_name(name) == parsed


def test_an_override_wins_and_an_empty_one_removes_the_joint():
    bones = [Bone("root", None, (0, 0, 1), (0, 0, 1.2)), Bone("upper_arm.L", "root", (0.2, 0, 1.4), (0.4, 0, 1.4)),
             Bone("thing", "root", (0.3, 0, 1.4), (0.35, 0, 1.4))]
    mapping = infer("A", bones, overrides={"left_shoulder": "thing:tail", "left_eye": ""})
    assert str(mapping.joints["left_shoulder"]) == "thing:tail" and mapping.source["left_shoulder"] == "override"
    assert "left_eye" not in mapping.joints
    assert JointRef.parse("a:b:tail") == JointRef("a:b", "tail") and JointRef.parse("x@1,2,3").offset == (1, 2, 3)


def test_vrm_humanoid_data_names_the_joints_whatever_the_bones_are_called():
    bones = [Bone("J_Bip_C_Hips", None, (0, 0, 0.95), (0, 0, 1.05)), Bone("J_Bip_C_Neck", "J_Bip_C_Hips", (0, 0, 1.42), (0, 0, 1.55)),
             Bone("J_Bip_C_Head", "J_Bip_C_Neck", (0, 0, 1.55), (0, 0, 1.78)),
             Bone("J_Bip_L_UpperArm", "J_Bip_C_Hips", (0.17, 0, 1.42), (0.45, 0, 1.32)),
             Bone("J_Bip_L_LowerArm", "J_Bip_L_UpperArm", (0.45, 0, 1.32), (0.7, 0, 1.23))]
    declared = {"hips": "J_Bip_C_Hips", "neck": "J_Bip_C_Neck", "head": "J_Bip_C_Head", "leftUpperArm": "J_Bip_L_UpperArm",
                "leftLowerArm": "J_Bip_L_LowerArm", "rightHand": "NotInThisRig"}
    mapping = infer("Avatar", bones, declared=declared)
    assert mapping.convention.startswith("VRM humanoid")
    assert str(mapping.joints["left_shoulder"]) == "J_Bip_L_UpperArm:head" and mapping.source["left_shoulder"] == "VRM humanoid"
    assert str(mapping.joints["left_elbow"]) == "J_Bip_L_LowerArm:head" and "right_wrist" not in mapping.joints
    assert mapping.joints["nose"].bone == "J_Bip_C_Head"  # the face from the declared head's shape


def test_a_200_bone_rig_maps_its_body_and_hands():
    # A spine, two legs, two arms with five three-bone fingers each, and 150 extra leaf bones.
    bones = [Bone("b0", None, (0, 0, 1.0), (0, 0, 1.1))]
    for i in range(1, 5):
        bones.append(Bone(f"b{i}", f"b{i - 1}", (0, 0, 1.0 + 0.1 * i), (0, 0, 1.1 + 0.1 * i)))
    for side in (1, -1):
        bones += [Bone(f"l{side}0", "b0", (0.1 * side, 0, 1.0), (0.1 * side, 0, 0.5)),
                  Bone(f"l{side}1", f"l{side}0", (0.1 * side, 0, 0.5), (0.1 * side, 0, 0.1)),
                  Bone(f"l{side}2", f"l{side}1", (0.1 * side, 0, 0.1), (0.1 * side, -0.15, 0.02)),
                  Bone(f"a{side}0", "b3", (0.15 * side, 0, 1.35), (0.45 * side, 0, 1.35)),
                  Bone(f"a{side}1", f"a{side}0", (0.45 * side, 0, 1.35), (0.7 * side, 0, 1.35)),
                  Bone(f"a{side}2", f"a{side}1", (0.7 * side, 0, 1.35), (0.78 * side, 0, 1.35))]
        for f in range(5):
            parent = f"a{side}2"
            for k in range(3):
                name = f"f{side}{f}{k}"
                bones.append(Bone(name, parent, ((0.78 + 0.03 * k) * side, -0.04 + 0.02 * f, 1.35),
                                  ((0.81 + 0.03 * k) * side, -0.04 + 0.02 * f, 1.35)))
                parent = name
    # Twist, corrective and accessory bones hang along every bone that has children, as riggers add them.
    parents = [bone for bone in bones if any(other.parent == bone.name for other in bones)]
    while len(bones) < 200:
        parent = parents[len(bones) % len(parents)]
        along = tuple(h + 0.3 * (t - h) for h, t in zip(parent.head, parent.tail))
        bones.append(Bone(f"x{len(bones)}", parent.name, parent.head, along))
    mapping = infer("Big", bones)
    assert mapping.body_count >= 13 and set(mapping.hands) == {"left", "right"}, mapping.summary()
    assert set(BODY_JOINTS) >= set(mapping.joints)
    assert str(mapping.joints["left_wrist"]) == "a12:head" and str(mapping.joints["right_knee"]) == "l-11:head"
