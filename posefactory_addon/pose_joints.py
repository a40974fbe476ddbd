"""The Pose joints panel: which bone of the active armature is each OpenPose joint, and the artist's say.

The map is the pod's own (``pod_setup/skeleton.py`` over ``remote/core/humanoid.py``),
found from the rig's names, then its shape; each joint can be pointed at another bone
or at none. The choices are stored on the armature data (the ID property
``posefactory_joints``), so they travel with the .blend and the pod reads them
without this add-on. The map is computed by the operators (*Find Joints*, or a
joint's new bone), never in ``draw``.

*Preview Control Images* renders each item's control images on the host with no
AI step: a cheap look at the skeleton before paying for generations.
"""
from __future__ import annotations

from typing import Any, cast

import bpy
from bpy.props import EnumProperty, StringProperty

from . import api
from .errors import SubmitError
from .operators import OperatorResult
from .panels import PosefactoryPanel, layout_of
from .pod_setup import skeleton
from .properties import settings_of
from .remote.core.humanoid import BODY_JOINTS

AUTO, NONE = "__auto__", "__none__"
# Found maps by armature name; the operators fill it, draw reads it.
MAPS: dict[str, skeleton.HumanoidMap] = {}
UNDRAWN: set[str] = set()  # armatures found to deform no mesh the render shows (never drawn on the pod)
_bone_items: list[tuple[str, str, str]] = []  # Blender keeps only pointers to a dynamic enum's strings


def armature_of(context: bpy.types.Context) -> bpy.types.Object | None:
    """The active armature, or the armature that deforms the active mesh."""
    obj = context.active_object
    if obj is None:
        return None
    if obj.type == "ARMATURE":
        return obj
    if obj.type == "MESH":
        return next(iter(skeleton.deformed_by(obj)), None)
    return None


def refresh(armature: bpy.types.Object, scene: bpy.types.Scene | None) -> skeleton.HumanoidMap:
    MAPS[armature.name] = skeleton.humanoid_map(armature)
    if scene is None or skeleton.renders_through(scene, armature):
        UNDRAWN.discard(armature.name)
    else:
        UNDRAWN.add(armature.name)
    return MAPS[armature.name]


def _bones(self: Any, context: bpy.types.Context) -> list[tuple[str, str, str]]:
    armature = armature_of(context)
    _bone_items[:] = [(AUTO, "(found automatically)", "Let Pose Factory find this joint"),
                      (NONE, "(none: this rig has no such joint)", "Leave the joint out of the control image")]
    if armature is not None:
        _bone_items.extend((bone.name, bone.name, "") for bone in cast(Any, armature.data).bones)
    return _bone_items


class POSEFACTORY_OT_find_joints(bpy.types.Operator):
    bl_idname = "posefactory.find_joints"
    bl_label = "Find Joints"
    bl_description = "Find which bone of the active armature is each OpenPose joint (from its names, else its shape)"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return armature_of(context) is not None

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        armature = armature_of(context)
        assert armature is not None  # poll
        mapping = refresh(armature, context.scene)
        self.report({"INFO"}, f"{armature.name}: {mapping.summary()}")
        return {"FINISHED"}


class POSEFACTORY_OT_set_joint(bpy.types.Operator):
    bl_idname = "posefactory.set_joint"
    bl_label = "Set Joint Bone"
    bl_description = "Choose the bone for this joint (stored on the armature, so it travels with the .blend)"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "bone"

    joint: StringProperty(name="Joint", options={"SKIP_SAVE"})
    bone: EnumProperty(name="Bone", items=_bones)

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return armature_of(context) is not None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        cast(Any, context.window_manager).invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        armature = armature_of(context)
        assert armature is not None  # poll
        if self.joint not in BODY_JOINTS:
            self.report({"ERROR"}, f"{self.joint!r} is not an OpenPose joint ({', '.join(BODY_JOINTS)})")
            return {"CANCELLED"}
        data = cast(Any, armature.data)
        stored = dict(skeleton.overrides_of(armature))
        if self.bone == AUTO:
            stored.pop(self.joint, None)
        else:
            stored[self.joint] = "" if self.bone == NONE else self.bone
        data[skeleton.OVERRIDES_PROPERTY] = stored
        mapping = refresh(armature, context.scene)
        self.report({"INFO"}, f"{armature.name}: {self.joint} → {self.bone_label()}; {mapping.summary()}")
        return {"FINISHED"}

    def bone_label(self) -> str:
        return {AUTO: "found automatically", NONE: "none"}.get(self.bone, self.bone)


class POSEFACTORY_OT_preview_controls(bpy.types.Operator):
    bl_idname = "posefactory.preview_controls"
    bl_label = "Preview Control Images"
    bl_description = ("Render each item on the host and bring back its control images (OpenPose, depth) with no AI "
                      "step: check the skeleton before paying for generations")
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        settings = settings_of(context.scene)
        prompt = settings.prompt.strip() or "control image preview"
        try:
            handle = api.submit(context.scene, use_ai=False, control=settings.control, prompt=prompt)
        except SubmitError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Pose Factory: control preview {handle.job_id} submitted to {handle.tracked.host}")
        return {"FINISHED"}


class POSEFACTORY_PT_pose_joints(PosefactoryPanel, bpy.types.Panel):
    bl_label = "Pose Joints"
    bl_parent_id = "POSEFACTORY_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = layout_of(self)
        armature = armature_of(context)
        if armature is None:
            layout.label(text="Select the character's armature (or its mesh)", icon="INFO")
            return
        mapping = MAPS.get(armature.name)
        row = layout.row()
        row.label(text=armature.name, icon="ARMATURE_DATA")
        row.operator("posefactory.find_joints", text="", icon="FILE_REFRESH")
        if mapping is None:
            layout.operator("posefactory.find_joints", icon="VIEWZOOM")
            return
        layout.label(text=mapping.summary(), icon="CHECKMARK" if mapping.body_count >= 12 else "ERROR")
        if armature.name in UNDRAWN:
            layout.label(text="This armature deforms no mesh the render shows: it is not drawn", icon="ERROR")
        column = layout.column(align=True)
        for joint in BODY_JOINTS:
            row = column.row(align=True)
            row.label(text=joint.replace("_", " "))
            ref = mapping.joints.get(joint)
            source = mapping.source.get(joint, "")
            text = (ref.bone if ref else "—") + (f"  ({source})" if source and source != "name" else "")
            operator = row.operator("posefactory.set_joint", text=text, icon="BONE_DATA" if ref else "BLANK1")
            cast(Any, operator).joint = joint
        layout.operator("posefactory.preview_controls", icon="HIDE_OFF")


CLASSES = (POSEFACTORY_OT_find_joints, POSEFACTORY_OT_set_joint, POSEFACTORY_OT_preview_controls,
           POSEFACTORY_PT_pose_joints)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
