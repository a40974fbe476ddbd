"""The Batch settings: which poses (current, timeline markers, pose assets, a
frame range, or the poses ticked in a list) on which cameras (the active one
or a collection's), turned into the job's ``poses``/``cameras`` specs and
counted against the open scene for the panel's live estimate.
"""
from __future__ import annotations

import os
from typing import Any, cast

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from .pod_setup.poses import Item, pose_assets, resolve_items
from .remote.core.batch_spec import BatchSpecError

POSE_SOURCES = [
    ("CURRENT", "Current Pose", "The scene as it is: one image per camera"),
    ("MARKERS", "Timeline Markers", "Each timeline marker is a pose at its frame (marker-bound cameras respected)"),
    ("ASSETS", "Pose Assets", "Each pose asset that fits the scene's armature"),
    ("FRAMES", "Frame Range", "Each frame of a range is an item (an animation as an image sequence)"),
    ("PICKED", "Picked Poses", "The markers and pose assets ticked in the list"),
]
CAMERA_SOURCES = [
    ("ACTIVE", "Active Camera", "The scene's camera (or a marker's bound camera)"),
    ("COLLECTION", "Collection", "Every camera in a collection"),
]


class PosefactoryPose(bpy.types.PropertyGroup):
    """One row of the Batch panel's pose list (a marker or a pose asset)."""

    kind: StringProperty(name="Kind", description="Marker or pose asset")
    enabled: BoolProperty(name="Render", default=True, description="Render this pose in the batch")


def refresh_pose_list(scene: bpy.types.Scene) -> int:
    """Fill the pose list from the scene's markers and pose assets, keeping the ticks; returns its length."""
    settings = cast(Any, scene).posefactory  # the scene's settings (properties.py)
    ticked = {pose.name: pose.enabled for pose in settings.poses}
    settings.poses.clear()
    names = [(m.name, "Marker") for m in sorted(scene.timeline_markers, key=lambda m: (m.frame, m.name))]
    names += [(a.name, "Pose Asset") for a in pose_assets(scene)]
    for name, kind in names:
        pose = settings.poses.add()
        pose.name, pose.kind, pose.enabled = name, kind, ticked.get(name, True)
    return len(names)


def poses_spec(settings: Any) -> str:
    source = settings.pose_source
    if source == "FRAMES":
        step = f":{settings.frame_step}" if settings.frame_step > 1 else ""
        return f"frames:{settings.frame_start}-{settings.frame_end}{step}"
    if source == "PICKED":
        return ",".join(pose.name for pose in settings.poses if pose.enabled)
    return source.lower()


def cameras_spec(settings: Any) -> str:
    if settings.camera_source == "COLLECTION":
        collection = settings.camera_collection
        return f"collection:{collection.name if collection else ''}"
    return "active"


def items_of(scene: bpy.types.Scene, poses: str, cameras: str) -> list[Item]:
    """The batch's items in the open scene; BatchSpecError with one line when it cannot be rendered."""
    if not poses:
        raise BatchSpecError("poses: no pose is ticked in the list")
    if cameras == "collection:":
        raise BatchSpecError("cameras: pick a collection of cameras")
    return resolve_items(scene, poses, cameras)


def summary(items: list[Item], variations: int) -> str:
    """``12 poses × 2 cameras × 2 variations = 48 images``."""
    poses = len({item.pose for item in items})
    cameras = len({item.camera for item in items})
    return (f"{poses} pose{'s' * (poses != 1)} × {cameras} camera{'s' * (cameras != 1)} × {variations} "
            f"variation{'s' * (variations != 1)} = {len(items) * variations} images")


def pose_source_property() -> EnumProperty:
    return EnumProperty(name="Poses", items=POSE_SOURCES, default="CURRENT",
                        description="Which poses the job renders, each one an item")


def camera_source_property() -> EnumProperty:
    return EnumProperty(name="Cameras", items=CAMERA_SOURCES, default="ACTIVE",
                        description="Which cameras every pose is rendered from")


def register() -> None:
    # The laptop-side check of a batch runs poses.py in a background Blender: this one's executable.
    binary = bpy.app.binary_path
    if binary and os.path.isfile(binary) and not os.environ.get("POSEFACTORY_BPY_PYTHON"):
        os.environ.setdefault("POSEFACTORY_BLENDER", binary)


def unregister() -> None:
    pass
