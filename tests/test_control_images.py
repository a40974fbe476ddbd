"""ControlNet inputs from Blender's own data: OpenPose from the posed armature, depth from the Z pass."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pod_setup.control_images import COLORS, LIMBS, depth_to_image, draw_openpose
from remote.core.jobspec import COCO18_JOINTS

REPO = Path(__file__).resolve().parents[1]
MARKER = "CONTROL-TEST:"

# The test computes the expected joints itself: camera matrices, not bpy_extras' helper the module uses.
SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[-3])
import bpy
from mathutils import Vector
from pathlib import Path
from remote.core.jobspec import RenderJob
from pod_setup import control_images
from pod_setup.scene_render import configure_output, open_scene, render_still

out = Path(sys.argv[-1])
job = RenderJob(blend_path=sys.argv[-2], output_dir=str(out), prompt="x", backend="diffusers", width=512,
                height=512, steps=10, control="openpose+depth", bone_map={"nose": "spine.006:tail"})
setup = open_scene(job)
settings = configure_output(job, setup)
control_images.prepare(job)
render = render_still(out / "render.png", settings)
made = control_images.write(job, out)
written, skeletons = made.paths, made.skeletons
scene = bpy.context.scene
rig = scene.objects["Character"]
depsgraph = bpy.context.evaluated_depsgraph_get()
camera = scene.camera
projection = camera.calc_matrix_camera(depsgraph, x=512, y=512) @ camera.matrix_world.inverted()

def pixel(world):
    clip = projection @ Vector((*world, 1.0))
    return [(clip.x / clip.w + 1) / 2 * 512, (1 - (clip.y / clip.w + 1) / 2) * 512]

refs = {"nose": ("spine.006", "tail"), "neck": ("spine.004", "head"), "right_shoulder": ("upper_arm.R", "head"),
        "right_elbow": ("forearm.R", "head"), "right_wrist": ("hand.R", "head"), "left_shoulder": ("upper_arm.L", "head"),
        "left_elbow": ("forearm.L", "head"), "left_wrist": ("hand.L", "head"), "right_hip": ("thigh.R", "head"),
        "right_knee": ("shin.R", "head"), "right_ankle": ("foot.R", "head"), "left_hip": ("thigh.L", "head"),
        "left_knee": ("shin.L", "head"), "left_ankle": ("foot.L", "head"), "right_eye": ("eye.R", "head"),
        "left_eye": ("eye.L", "head"), "right_ear": ("ear.R", "head"), "left_ear": ("ear.L", "head")}
posed, rest = {}, {}
for joint, (bone, end) in refs.items():
    pose_bone = rig.pose.bones[bone]
    posed[joint] = pixel(rig.matrix_world @ getattr(pose_bone, end))
    rest[joint] = pixel(rig.matrix_world @ getattr(rig.data.bones[bone], f"{end}_local"))
image_settings = scene.render.image_settings
print("CONTROL-TEST:" + json.dumps({
    "written": {k: str(v) for k, v in written.items()}, "skeletons": skeletons, "problems": made.problems, "posed": posed, "rest": rest,
    "torso": pixel((0, -0.12, 1.2)), "prop": pixel((-0.9, -1.7, 0.6)), "backdrop": pixel((1.5, 2.5, 2.2)),
    "settings": [image_settings.media_type, image_settings.file_format, image_settings.color_mode,
                 image_settings.color_depth],
    "fix": render.render_result_fix_applied, "render_result": list(bpy.data.images["Render Result"].size)}))
'''


@pytest.fixture(scope="module")
def controls(posed_scene, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("controls")
    script = out / "controls.py"
    script.write_text(SCRIPT)
    completed = subprocess.run([sys.executable, str(script), str(REPO), str(posed_scene), str(out)],
                               capture_output=True, text=True, timeout=300)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(MARKER)]
    assert completed.returncode == 0 and lines, completed.stdout[-3000:] + completed.stderr[-3000:]
    return {**json.loads(lines[-1][len(MARKER):]), "out": out}


def test_openpose_joints_land_on_the_posed_bones_in_the_standard_colours(controls):
    image = np.asarray(Image.open(controls["written"]["openpose"]).convert("RGB"))
    assert image.shape == (512, 512, 3)
    for index, joint in enumerate(COCO18_JOINTS):
        x, y = controls["posed"][joint]
        ys, xs = np.nonzero(np.all(image == COLORS[index], axis=-1))
        assert len(xs), f"{joint}: no pixel in {COLORS[index]}"
        centre = (xs.mean() + 0.5, ys.mean() + 0.5)
        assert abs(centre[0] - x) <= 2 and abs(centre[1] - y) <= 2, (joint, centre, (x, y))
    # The pose moved the left elbow: the skeleton follows the pose, not the rest position.
    posed, rest = controls["posed"]["left_elbow"], controls["rest"]["left_elbow"]
    assert abs(posed[1] - rest[1]) > 20
    # A limb between two joints is drawn in 0.6 x its colour (neck -> right shoulder is limb 0).
    (ax, ay), (bx, by) = controls["posed"]["neck"], controls["posed"]["right_shoulder"]
    mid = image[int((ay + by) / 2), int((ax + bx) / 2)]
    assert tuple(mid) == tuple(int(c * 0.6) for c in COLORS[0])
    # Background is black.
    assert tuple(image[2, 2]) == (0, 0, 0)
    # What the item's entry says was drawn: one armature, named by its convention, all 18 on screen.
    assert controls["problems"] == []
    [report] = controls["skeletons"]
    assert report["armature"] == "Character" and report["on_screen"] == 18 and report["missing"] == []
    assert report["convention"].startswith("Blender metarig")


def test_depth_from_the_z_pass_nearer_is_brighter(controls):
    depth = np.asarray(Image.open(controls["written"]["depth"]).convert("L"))
    assert depth.shape == (512, 512)

    def at(point):
        return int(depth[int(point[1]), int(point[0])])

    assert at(controls["prop"]) > at(controls["torso"]) > at(controls["backdrop"]) > 0
    assert at(controls["prop"]) == 255


def test_render_is_unchanged_and_output_settings_restored(controls):
    render = Image.open(controls["out"] / "render.png")
    assert render.size == (512, 512) and render.mode == "RGB"
    assert controls["settings"] == ["IMAGE", "PNG", "RGB", "8"]
    # Add-ons that read 'Render Result' find the render's pixels, also after the Z pass was saved from it.
    assert controls["fix"] is True and controls["render_result"] == [512, 512]
    assert not list(controls["out"].glob("*.exr"))  # the captured passes are not left with the outputs


def test_drawing_omits_missing_joints_and_limbs():
    joints: list = [None] * 18
    joints[1], joints[2] = (10.0, 10.0), (30.0, 10.0)  # neck, right shoulder; the right elbow is off-screen
    image = draw_openpose([joints], 40, 20)
    assert tuple(image[10, 10]) == COLORS[1] and tuple(image[10, 30]) == COLORS[2]
    assert tuple(image[10, 20]) == tuple(int(c * 0.6) for c in COLORS[LIMBS.index((1, 2))])
    assert {tuple(p) for p in image.reshape(-1, 3)} <= {(0, 0, 0), COLORS[1], COLORS[2], (153, 0, 0)}


def test_hands_are_drawn_as_the_openpose_hand_renderer_draws_them():
    from pod_setup.control_images import HAND_COLORS, HAND_EDGES, HAND_POINT_COLOR

    assert len(HAND_EDGES) == 20 and HAND_EDGES[:5] == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5))
    assert HAND_COLORS[0] == (255, 0, 0) and len(set(HAND_COLORS)) == 20  # a hue per edge, red first
    hand: list = [None] * 21
    hand[0], hand[1] = (10.0, 30.0), (50.0, 30.0)  # wrist and the thumb's first joint, the rest unmapped
    image = draw_openpose([[None] * 18], 60, 60, [hand])
    assert tuple(image[30, 30]) == HAND_COLORS[0]  # the edge, two pixels wide
    assert tuple(image[27, 30]) == (0, 0, 0)
    assert tuple(image[30, 10]) == tuple(image[30, 50]) == HAND_POINT_COLOR


def test_depth_image_normalises_inverse_depth_and_leaves_misses_black():
    z = np.array([[2.0, 4.0], [8.0, 1e10]], dtype=np.float32)
    image = depth_to_image(z, far=100.0)[..., 0]
    assert image[0, 0] == 255 and image[1, 1] == 0 and image[0, 0] > image[0, 1] > image[1, 0] > 0
    assert not depth_to_image(np.full((2, 2), 1e10, dtype=np.float32), far=100.0).any()
