"""Build the bundled sample scene: the cube-to-character "golden" scene.

    python make_sample_scene.py OUT.blend [--samples N]     # with the bpy module
    blender --background --python make_sample_scene.py -- OUT.blend

A blocky character (body, head, arms, legs: cubes in one mesh) skinned to an
armature ("Rig"), on a ground plane, two cameras (the active front "Camera"
and "CameraSide", both in the "Cameras" collection) and a sun light; Cycles on
the CPU with few samples at 1024x1024, the SDXL size the AI step needs.

Poses for batches: timeline markers Idle (frame 1, the rest pose), Wave (10)
and Cheer (20) on the rig's animation, and three pose assets (actions marked
as assets, Blender 5.0 slotted actions): T-Pose, Kick and Bow.
"""
from __future__ import annotations

import argparse
import sys

import bpy

# part: (centre, half size, bone head, bone tail, parent bone)
PARTS = {
    "Body": ((0, 0, 1.6), (0.45, 0.25, 0.6), (0, 0, 1.0), (0, 0, 2.2), None),
    "Head": ((0, 0, 2.55), (0.3, 0.3, 0.3), (0, 0, 2.2), (0, 0, 2.85), "Body"),
    "ArmL": ((0.65, 0, 1.75), (0.15, 0.15, 0.5), (0.65, 0, 2.25), (0.65, 0, 1.25), "Body"),
    "ArmR": ((-0.65, 0, 1.75), (0.15, 0.15, 0.5), (-0.65, 0, 2.25), (-0.65, 0, 1.25), "Body"),
    "LegL": ((0.22, 0, 0.5), (0.18, 0.18, 0.5), (0.22, 0, 1.0), (0.22, 0, 0.0), None),
    "LegR": ((-0.22, 0, 0.5), (0.18, 0.18, 0.5), (-0.22, 0, 1.0), (-0.22, 0, 0.0), None),
}
# Bone rotations (Euler XYZ, radians) per pose; bones not named keep their rest.
Rotations = dict[str, tuple[float, float, float]]
MARKER_POSES: dict[str, tuple[int, Rotations]] = {
    "Idle": (1, {}),
    "Wave": (10, {"ArmR": (0, 0, -2.6)}),
    "Cheer": (20, {"ArmL": (0, 0, 2.6), "ArmR": (0, 0, -2.6), "Head": (-0.4, 0, 0)}),
}
POSE_ASSETS: dict[str, Rotations] = {
    "T-Pose": {"ArmL": (0, 0, -1.57), "ArmR": (0, 0, 1.57)},
    "Kick": {"LegL": (-1.2, 0, 0), "ArmR": (0.8, 0, 0)},
    "Bow": {"Body": (0.6, 0, 0), "Head": (0.3, 0, 0)},
}


def keyed_action(name: str, rig: bpy.types.Object, keys: dict[int, dict[str, tuple[float, float, float]]],
                 bones: list[str]) -> bpy.types.Action:
    """A slotted action (Blender 4.4+) keying ``bones``' rotations at each frame of ``keys``."""
    action = bpy.data.actions.new(name)
    slot = action.slots.new(id_type="OBJECT", name=rig.name)
    strip = action.layers.new("Layer").strips.new(type="KEYFRAME")
    channels = strip.channelbags.new(slot)
    for bone in bones:
        for axis in range(3):
            curve = channels.fcurves.new(f'pose.bones["{bone}"].rotation_euler', index=axis)
            for frame, rotations in keys.items():
                point = curve.keyframe_points.insert(frame, rotations.get(bone, (0, 0, 0))[axis])
                point.interpolation = "CONSTANT"
    return action


def build_rig(skin: bpy.types.Material) -> bpy.types.Object:
    """The character: one mesh of cubes, each weighted fully to its bone."""
    bpy.ops.object.armature_add(enter_editmode=True, location=(0, 0, 0))
    rig = bpy.context.active_object
    assert rig is not None, "armature_add makes the new armature the active object"
    rig.name = rig.data.name = "Rig"
    edit_bones = rig.data.edit_bones
    edit_bones.remove(edit_bones[0])
    for name, (_, _, head, tail, parent) in PARTS.items():
        bone = edit_bones.new(name)
        bone.head, bone.tail = head, tail
        if parent:
            bone.parent = edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    for bone in rig.pose.bones:
        bone.rotation_mode = "XYZ"
    parts = []
    for name, (location, scale, *_) in PARTS.items():
        bpy.ops.mesh.primitive_cube_add(location=location)
        part = bpy.context.active_object
        part.scale = scale
        group = part.vertex_groups.new(name=name)
        group.add(list(range(len(part.data.vertices))), 1.0, "REPLACE")
        parts.append(part)
    bpy.ops.object.select_all(action="DESELECT")
    for part in parts:
        part.select_set(True)
    bpy.context.view_layer.objects.active = parts[0]
    bpy.ops.object.join()
    character = bpy.context.active_object
    character.name = "Character"
    bpy.ops.object.transform_apply(scale=True)
    character.data.materials.append(skin)
    character.parent = rig
    character.modifiers.new("Rig", "ARMATURE").object = rig
    bones = list(PARTS)
    animation = keyed_action("CharacterAnim", rig, {f: pose for f, pose in MARKER_POSES.values()}, bones)
    rig.animation_data_create()
    rig.animation_data.action = animation
    rig.animation_data.action_slot = animation.slots[0]
    scene = bpy.context.scene
    for marker, (frame, _) in MARKER_POSES.items():
        scene.timeline_markers.new(marker, frame=frame)
    for asset, rotations in POSE_ASSETS.items():
        action = keyed_action(asset, rig, {1: rotations}, sorted(rotations))
        action.asset_mark()
        action.use_fake_user = True
    return rig


def build(samples: int) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "PoseFactorySample"
    skin = bpy.data.materials.new("CharacterClay")
    skin.diffuse_color = (0.8, 0.55, 0.4, 1.0)
    build_rig(skin)
    bpy.ops.mesh.primitive_plane_add(size=10)
    bpy.context.active_object.name = "Ground"
    cameras = bpy.data.collections.new("Cameras")
    scene.collection.children.link(cameras)
    for name, location, rotation in (("Camera", (0, -7, 2.2), (1.5, 0, 0)),
                                     ("CameraSide", (7, 0, 2.2), (1.5, 0, 1.5708))):
        camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        camera.location, camera.rotation_euler = location, rotation
        cameras.objects.link(camera)
    scene.camera = bpy.data.objects["Camera"]
    scene.frame_set(1)
    bpy.ops.object.light_add(type="SUN", location=(3, -3, 6))
    bpy.context.active_object.data.energy = 3.0
    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.05, 0.08)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 1024
    scene.render.resolution_percentage = 100


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the .blend to write")
    parser.add_argument("--samples", type=int, default=4, help="Cycles samples (default 4)")
    args = parser.parse_args(argv)
    build(args.samples)
    bpy.ops.wm.save_as_mainfile(filepath=args.output)


if __name__ == "__main__":
    main()
