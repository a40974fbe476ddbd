"""A batch's items in the open scene: which poses on which cameras, and how
each item's pose and camera are applied before it renders.

Pose sources (``remote/core/batch_spec.py`` parses the spec): the scene as it is
(``current``), timeline markers (each a frame; a marker's bound camera is
respected), pose assets (Blender 5.0 slotted actions marked as assets, applied
to the armature whose bones they key), a frame range, or a list of marker or
pose-asset names. Cameras: the active one, every camera of a collection, or
named cameras.

Every item starts from the scene as it was opened: the frame, the camera and
every armature's pose and animation are put back first, so an item never
inherits the previous item's pose.

    python poses.py --list SCENE.blend POSES CAMERAS   # the items as JSON (the laptop's pre-check)
    python poses.py --list SCENE.blend POSES CAMERAS --openpose BONE_MAP_JSON
        # … each with what its OpenPose control image would show (skeletons, joints on screen)
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: remote/ sits next to pod_setup/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bpy

try:
    from remote.core.batch_spec import BatchSpecError, check_item_count, item_name, parse_cameras, parse_poses, unique_names
except ImportError:  # inside the Blender extension, where remote/ is a sibling subpackage
    from ..remote.core.batch_spec import (  # type: ignore[no-redef, import-not-found]
        BatchSpecError,
        check_item_count,
        item_name,
        parse_cameras,
        parse_poses,
        unique_names,
    )

log = logging.getLogger(__name__)
TRANSFORMS = ("location", "rotation_quaternion", "rotation_euler", "rotation_axis_angle", "scale")
BONES_RECORDED = 32  # bone positions kept per item in the manifest (proof the pose was applied)


class ItemFailed(Exception):
    """This item cannot be rendered (its pose does not fit); the batch goes on."""


@dataclass(frozen=True)
class Item:
    name: str  # file-system-safe, unique in the batch: the item's folder
    pose: str  # "current", a marker's or pose asset's name, or "frame N"
    kind: str  # current | marker | asset | frame
    camera: str  # the camera object's name
    frame: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Pose:
    label: str
    kind: str
    frame: int
    camera: str | None  # a marker's bound camera


def pose_assets(scene: bpy.types.Scene) -> list[bpy.types.Action]:
    """Actions marked as assets, by name."""
    return sorted((a for a in bpy.data.actions if a.asset_data is not None), key=lambda a: a.name)


def armatures(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    return sorted((o for o in scene.objects if o.type == "ARMATURE"), key=lambda o: o.name)


def _asset_curves(action: bpy.types.Action) -> list[bpy.types.FCurve]:
    """The F-curves of an action's first slot (Blender 4.4+ layered actions)."""
    curves: list[bpy.types.FCurve] = []
    if not action.slots:
        return curves
    slot = action.slots[0]
    for layer in action.layers:
        for strip in layer.strips:
            bag = strip.channelbag(slot)
            if bag is not None:
                curves.extend(bag.fcurves)
    return curves


def _bone_of(path: str) -> str | None:
    if not path.startswith('pose.bones["'):
        return None
    return path[len('pose.bones["'):].split('"]', 1)[0].replace('\\"', '"')


def missing_bones(action: bpy.types.Action, rig: bpy.types.Object) -> list[str]:
    """Bones the action keys that ``rig`` lacks (an action keying no bone lacks everything)."""
    bones = {_bone_of(c.data_path) for c in _asset_curves(action)} - {None}
    if not bones:
        return ["(no bone keyed)"]
    return sorted(str(b) for b in bones if b not in rig.pose.bones)


def fitting_armature(action: bpy.types.Action, scene: bpy.types.Scene) -> bpy.types.Object | None:
    return next((rig for rig in armatures(scene) if not missing_bones(action, rig)), None)


def _bound_camera(scene: bpy.types.Scene, frame: int) -> str | None:
    """The camera a marker binds at ``frame`` (the last bound marker at or before it), as Blender switches."""
    bound = [m for m in scene.timeline_markers if m.camera is not None and m.frame <= frame]
    return max(bound, key=lambda m: m.frame).camera.name if bound else None


def _poses(scene: bpy.types.Scene, spec_text: str) -> list[_Pose]:
    spec = parse_poses(spec_text)
    markers = sorted(scene.timeline_markers, key=lambda m: (m.frame, m.name))
    assets = {a.name: a for a in pose_assets(scene)}
    if spec.kind == "current":
        return [_Pose("current", "current", scene.frame_current, None)]
    if spec.kind == "frames":
        return [_Pose(f"frame {f}", "frame", f, _bound_camera(scene, f)) for f in spec.frame_list]
    if spec.kind == "markers":
        if not markers:
            raise BatchSpecError(f"poses: scene {scene.name!r} has no timeline markers")
        return [_Pose(m.name, "marker", m.frame, m.camera.name if m.camera else _bound_camera(scene, m.frame))
                for m in markers]
    if spec.kind == "assets":
        if not armatures(scene):
            raise BatchSpecError(f"poses: scene {scene.name!r} has no armature to apply pose assets to")
        fitting = [name for name, action in assets.items() if fitting_armature(action, scene)]
        skipped = sorted(set(assets) - set(fitting))
        if skipped:
            log.info("pose assets that fit no armature, left out: %s", ", ".join(skipped))
        if not fitting:
            raise BatchSpecError(f"poses: no pose asset fits an armature of scene {scene.name!r}"
                                 + (f" (assets: {', '.join(sorted(assets))})" if assets else " (it has none)"))
        return [_Pose(name, "asset", scene.frame_current, None) for name in fitting]
    poses = []
    by_marker = {m.name: m for m in markers}
    for name in spec.names:
        if name in by_marker:
            marker = by_marker[name]
            camera = marker.camera.name if marker.camera else _bound_camera(scene, marker.frame)
            poses.append(_Pose(name, "marker", marker.frame, camera))
        elif name in assets:
            poses.append(_Pose(name, "asset", scene.frame_current, None))
        else:
            known = ", ".join([*by_marker, *assets][:20]) or "none"
            raise BatchSpecError(f"poses: unknown pose {name!r}: not a timeline marker or pose asset of "
                                 f"scene {scene.name!r} (known: {known})")
    return poses


def _cameras(scene: bpy.types.Scene, spec_text: str) -> list[str] | None:
    """Camera names, or None for the active camera."""
    spec = parse_cameras(spec_text)
    if spec.kind == "active":
        return None
    if spec.kind == "collection":
        collection = bpy.data.collections.get(spec.names[0])
        if collection is None:
            raise BatchSpecError(f"cameras: no collection named {spec.names[0]!r}")
        names = sorted(o.name for o in collection.all_objects if o.type == "CAMERA")
        if not names:
            raise BatchSpecError(f"cameras: collection {spec.names[0]!r} holds no camera")
        return names
    for name in spec.names:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "CAMERA":
            known = ", ".join(sorted(o.name for o in bpy.data.objects if o.type == "CAMERA")[:20]) or "none"
            raise BatchSpecError(f"cameras: unknown camera {name!r} (cameras: {known})")
    return list(spec.names)


def resolve_items(scene: bpy.types.Scene, poses: str, cameras: str) -> list[Item]:
    """Every item of the batch, in order (poses, then cameras); raises BatchSpecError."""
    pose_list = _poses(scene, poses)
    camera_list = _cameras(scene, cameras)
    camera_slots: list[str | None] = list(camera_list) if camera_list else [None]  # None: the active camera
    check_item_count(len(pose_list), len(camera_slots))
    pairs: list[tuple[_Pose, str | None]] = [(p, c) for p in pose_list for c in camera_slots]
    items = []
    names = unique_names([item_name(_safe_label(p), c) for p, c in pairs])
    for name, (pose, camera) in zip(names, pairs):
        chosen = camera or pose.camera or (scene.camera.name if scene.camera else None)
        if chosen is None:
            raise BatchSpecError(f"cameras: scene {scene.name!r} has no active camera")
        items.append(Item(name, pose.label, pose.kind, chosen, pose.frame))
    log.info("batch: %d item(s) from poses=%s cameras=%s", len(items), poses, cameras)
    return items


def _safe_label(pose: _Pose) -> str:
    return f"frame-{pose.frame:04d}" if pose.kind == "frame" else pose.label


@dataclass
class SceneState:
    """The opened scene's frame, camera and armatures, to start every item from."""

    frame: int
    camera: str | None
    animation: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # rig: (action, slot)
    bones: dict[str, dict[str, dict[str, tuple[float, ...]]]] = field(default_factory=dict)

    @classmethod
    def capture(cls, scene: bpy.types.Scene) -> SceneState:
        state = cls(scene.frame_current, scene.camera.name if scene.camera else None)
        for rig in armatures(scene):
            data = rig.animation_data
            state.animation[rig.name] = (data.action, data.action_slot) if data else (None, None)
            state.bones[rig.name] = {b.name: {t: tuple(getattr(b, t)) for t in TRANSFORMS} for b in rig.pose.bones}
        return state

    def restore(self, scene: bpy.types.Scene) -> None:
        for rig in armatures(scene):
            action, slot = self.animation.get(rig.name, (None, None))
            if rig.animation_data is not None and rig.animation_data.action != action:
                rig.animation_data.action = action
                if slot is not None:
                    rig.animation_data.action_slot = slot
            for bone_name, values in self.bones.get(rig.name, {}).items():
                bone = rig.pose.bones.get(bone_name)
                for transform, value in values.items():
                    setattr(bone, transform, value)


def apply_item(item: Item, state: SceneState, scene: bpy.types.Scene) -> None:
    """Pose the scene for ``item`` and make its camera active; raises ItemFailed."""
    state.restore(scene)
    scene.frame_set(state.frame if item.kind in ("current", "asset") else item.frame)
    if item.kind == "asset":
        _apply_pose_asset(item.pose, scene)
    camera = bpy.data.objects.get(item.camera)
    if camera is None or camera.type != "CAMERA":
        raise ItemFailed(f"camera {item.camera!r} is not in the scene")
    scene.camera = camera  # after frame_set: a marker-bound camera switch happens there
    bpy.context.view_layer.update()


def _apply_pose_asset(name: str, scene: bpy.types.Scene) -> None:
    action = bpy.data.actions.get(name)
    if action is None:
        raise ItemFailed(f"pose asset {name!r} is not in the scene")
    rig = fitting_armature(action, scene)
    if rig is None:
        details = "; ".join(f"{r.name} lacks {', '.join(missing_bones(action, r)[:8])}" for r in armatures(scene))
        raise ItemFailed(f"pose asset {name!r} fits no armature ({details or 'the scene has none'})")
    if rig.animation_data is not None:
        # The rig's own animation would overwrite the asset's bones at render time.
        rig.animation_data.action = None
    start = action.frame_range[0]
    for curve in _asset_curves(action):
        target = rig.path_resolve(curve.data_path, False)
        value = curve.evaluate(start)
        if hasattr(target, "__setitem__"):
            target[curve.array_index] = value
        else:  # a single-valued property: set it on its owner
            owner_path, _, prop = curve.data_path.rpartition(".")
            setattr(rig.path_resolve(owner_path), prop, value)
    log.info("pose asset %s applied to %s", name, rig.name)


def bone_positions(scene: bpy.types.Scene) -> dict[str, list[float]]:
    """World positions of bone tails (``rig/bone``), a few per armature: the pose as rendered."""
    positions = {}
    for rig in armatures(scene):
        for bone in list(rig.pose.bones)[:BONES_RECORDED]:
            positions[f"{rig.name}/{bone.name}"] = [round(v, 4) for v in rig.matrix_world @ bone.tail]
    return positions


def skeletons_per_item(scene: bpy.types.Scene, items: list[Item], bone_map: dict[str, str]) -> dict[str, Any]:
    """Each item's OpenPose report (``control_images.openpose_on_screen``), the item posed as the pod poses it."""
    from pod_setup import control_images

    state = SceneState.capture(scene)
    reports: dict[str, Any] = {}
    for item in items:
        try:
            apply_item(item, state, scene)
        except ItemFailed as exc:
            reports[item.name] = {"error": str(exc)}
            continue
        reports[item.name] = control_images.openpose_on_screen(scene, bone_map)[2]
    state.restore(scene)
    return reports


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    bone_map: dict[str, str] | None = None
    if len(args) == 6 and args[4] == "--openpose":
        bone_map, args = json.loads(args[5]), args[:4]
    if len(args) != 4 or args[0] != "--list":
        print("usage: poses.py --list SCENE.blend POSES CAMERAS [--openpose BONE_MAP_JSON]", file=sys.stderr)
        return 2
    try:
        bpy.ops.wm.open_mainfile(filepath=args[1])
    except RuntimeError as exc:
        print(json.dumps({"error": f"cannot open scene {args[1]}: {str(exc).strip().splitlines()[-1]}"}))
        return 2
    try:
        items = resolve_items(bpy.context.scene, args[2], args[3])
    except BatchSpecError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    answer: dict[str, Any] = {"items": [i.to_dict() for i in items]}
    if bone_map is not None:
        answer["skeletons"] = skeletons_per_item(bpy.context.scene, items, bone_map)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
