"""The scene's skeletons in bpy: which armatures count, their humanoid maps, posed joint positions.

An armature counts when it deforms a mesh that renders (an Armature modifier
enabled for render, or an armature parent), whether or not the armature object
itself is hidden: a hidden Rigify metarig or a control rig that deforms
nothing never draws a second skeleton. The map itself is :mod:`humanoid`'s;
the artist's per-joint choices live on the armature data as the ID property
``posefactory_joints`` (joint → ``bone``, ``bone:head``, ``bone:tail``, or
``""`` for "this rig has no such joint"), so they travel with the .blend.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

try:  # inside the Blender extension, remote/ is a sibling subpackage: the add-on's own copy, one module
    from ..remote.core.humanoid import BODY_JOINTS, Bone, HumanoidMap, JointRef, infer  # type: ignore[import-not-found]
except ImportError:  # on the pod, pod_setup/ and remote/ are top-level packages
    from remote.core.humanoid import BODY_JOINTS, Bone, HumanoidMap, JointRef, infer

log = logging.getLogger(__name__)
OVERRIDES_PROPERTY = "posefactory_joints"


def _rendering_collections(view_layer: Any) -> set[str]:
    names: set[str] = set()

    def walk(layer_collection: Any) -> None:
        if layer_collection.exclude or layer_collection.collection.hide_render:
            return
        names.add(layer_collection.collection.name)
        for child in layer_collection.children:
            walk(child)

    walk(view_layer.layer_collection)
    return names


def renders(obj: Any, collections: set[str]) -> bool:
    return not obj.hide_render and any(collection.name in collections for collection in obj.users_collection)


def deformed_by(mesh: Any) -> Iterator[Any]:
    for modifier in mesh.modifiers:
        if modifier.type == "ARMATURE" and modifier.show_render and modifier.object is not None:
            yield modifier.object
    if mesh.parent is not None and mesh.parent.type == "ARMATURE" and mesh.parent_type == "ARMATURE":
        yield mesh.parent


def armatures(scene: Any) -> list[Any]:
    """The armatures that deform a mesh the render shows, in the scene's object order."""
    collections = set().union(*(_rendering_collections(layer) for layer in scene.view_layers if layer.use))
    deforming = {arm.name for obj in scene.objects if obj.type == "MESH" and renders(obj, collections)
                 for arm in deformed_by(obj)}
    return [obj for obj in scene.objects if obj.type == "ARMATURE" and obj.name in deforming]


def renders_through(scene: Any, armature: Any) -> bool:
    """Whether ``armature`` counts: it deforms a mesh the render shows."""
    return any(counted.name == armature.name for counted in armatures(scene))


def bones_of(armature: Any) -> list[Bone]:
    world = armature.matrix_world
    rotation = world.to_3x3()
    records = []
    for bone in armature.data.bones:
        axes = (rotation @ bone.matrix_local.to_3x3()).transposed()  # rows: the bone's axes in world space
        records.append(Bone(bone.name, bone.parent.name if bone.parent else None,
                            tuple(world @ bone.head_local), tuple(world @ bone.tail_local), bool(bone.use_deform),
                            (tuple(axes[0]), tuple(axes[1]), tuple(axes[2]))))
    return records


def overrides_of(armature: Any) -> dict[str, str]:
    stored = armature.data.get(OVERRIDES_PROPERTY)
    if stored is None or not hasattr(stored, "items"):
        return {}
    return {str(joint): str(bone) for joint, bone in stored.items() if joint in BODY_JOINTS and isinstance(bone, str)}


def vrm_humanoid(armature: Any) -> dict[str, str]:
    """VRM humanoid name → bone name from the VRM add-on's data on the armature, when it is there."""
    extension = getattr(armature.data, "vrm_addon_extension", None)
    if extension is None:
        return {}
    declared: dict[str, str] = {}
    try:
        for entry in extension.vrm0.humanoid.human_bones:
            if entry.node.bone_name:
                declared[str(entry.bone)] = str(entry.node.bone_name)
        human_bones = extension.vrm1.humanoid.human_bones
        for vrm_name in ("hips", "neck", "head", "leftEye", "rightEye", "leftUpperArm", "rightUpperArm",
                         "leftLowerArm", "rightLowerArm", "leftHand", "rightHand", "leftUpperLeg", "rightUpperLeg",
                         "leftLowerLeg", "rightLowerLeg", "leftFoot", "rightFoot"):
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in vrm_name)
            entry = getattr(human_bones, snake, None)
            if entry is not None and entry.node.bone_name:
                declared[vrm_name] = str(entry.node.bone_name)
    except AttributeError as exc:  # another version of the add-on's data: its names are not read
        log.info("armature %s: VRM data not read (%s)", armature.name, exc)
    return declared


def humanoid_map(armature: Any, job_overrides: Mapping[str, str] | None = None) -> HumanoidMap:
    """The armature's map; the job's ``bone_map`` wins over the armature's own overrides."""
    overrides = {**overrides_of(armature), **(job_overrides or {})}
    return infer(armature.name, bones_of(armature), declared=vrm_humanoid(armature), overrides=overrides)


def point(armature: Any, ref: JointRef) -> Any:
    """The world position of ``ref`` in the armature's current (evaluated) pose; None without the bone."""
    from mathutils import Vector

    pose_bone = armature.pose.bones.get(ref.bone)
    if pose_bone is None:
        return None
    if ref.end == "offset":
        return armature.matrix_world @ pose_bone.matrix @ Vector(ref.offset)
    return armature.matrix_world @ (pose_bone.tail if ref.end == "tail" else pose_bone.head)


def posed_joints(armature: Any, mapping: HumanoidMap) -> tuple[list[Any], dict[str, list[Any]]]:
    """The 18 body joints (None where unmapped) and each mapped hand's 21 keypoints, world space."""
    body = [point(armature, mapping.joints[joint]) if joint in mapping.joints else None for joint in BODY_JOINTS]
    hands = {side: [point(armature, ref) for ref in refs] for side, refs in mapping.hands.items()}
    return body, hands
