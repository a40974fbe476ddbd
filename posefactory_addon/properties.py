"""The per-scene settings (``scene.posefactory``). Never holds a secret: the
Scene is saved into the .blend that is shipped to the pod."""
from __future__ import annotations

from typing import Any, cast

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .batch import PosefactoryPose, camera_source_property, pose_source_property
from .host_lookup import host_names
from .remote.core.framing import display_aspect, nearest_sdxl_size
from .remote.core.jobspec import SDXL_SIZES, SETTINGS, STYLE_PRESETS, Setting

RESOLUTION_ITEMS = [("AUTO", "Camera Aspect", "The SDXL size nearest the scene's aspect ratio: keeps the camera's "
                                              "framing (a few percent cropped, centred)")] + [
    (f"{w}x{h}", f"{w} × {h}", f"{w}×{h} pixels, a size the SDXL 1024 engine accepts ({'square' if w == h else 'landscape' if w > h else 'portrait'})")
    for w, h in SDXL_SIZES
]
# The AI backends; "AI Enhance" off is backend none.
BACKEND_ITEMS = [
    ("stability", "Stability SDXL (v1)", "Stability's v1 SDXL image-to-image API, priced per image by steps"),
    ("stability-structure", "Stability Structure", "Stability's v2beta structure control: keeps the render's "
                                                   "pose and silhouette; 5 credits ($0.05) per image"),
    ("diffusers", "SDXL on the Pod (diffusers)", "SDXL with ControlNet on the pod's own GPU: OpenPose and depth "
                                                 "drawn from the scene; costs GPU time only"),
    ("ai-render", "AI Render Add-on", "The AI Render add-on (Stability v1) run on the pod, as the original pipeline did"),
]
STYLE_ITEMS = [("NONE", "None", "No style preset")] + [
    (preset, preset.replace("-", " ").title(), f"Stability style preset '{preset}'") for preset in STYLE_PRESETS
]
RENDER_DEVICE_ITEMS = [
    ("auto", "Auto", "The pod's best GPU (OptiX, CUDA, HIP, oneAPI); its CPU with a warning when it has none"),
    ("gpu", "GPU", "Fail in one line, before anything is billed for the AI step, when the pod has no GPU"),
    ("cpu", "CPU", "Render on the pod's CPU"),
]
# How the add-on shows a job setting beyond its table entry (remote/core/jobspec.py): its enum's labels
# (a Blender enum item cannot be empty: style "" is NONE here), a slider's subtype.
ENUM_ITEMS: dict[str, list[tuple[str, str, str]]] = {
    "backend": BACKEND_ITEMS, "style_preset": STYLE_ITEMS, "render_device": RENDER_DEVICE_ITEMS}
EMPTY_ENUM = "NONE"
FACTORS = ("strength", "control_strength")
# Blender's integer properties are 32-bit signed.
BLENDER_INT_MAX = 2**31 - 1
# The settings the add-on sets through its own UI instead of a property of theirs (the Batch panel's lists).
BUILT_ELSEWHERE = ("poses", "cameras")


def job_property(each: Setting, **options: Any) -> Any:
    """``each`` as a Blender property: its table's label, help, default, range and choices."""
    common: dict[str, Any] = dict(name=each.label, description=each.help[:1].upper() + each.help[1:], **options)
    if each.kind is bool:
        return BoolProperty(default=each.default, **common)
    if each.kind is int:
        return IntProperty(default=each.default, min=int(each.low or 0), max=min(int(each.high or 0), BLENDER_INT_MAX),
                           **common)
    if each.kind is float:
        return FloatProperty(default=each.default, min=float(each.low or 0), max=float(each.high or 0),
                             subtype="FACTOR" if each.name in FACTORS else "NONE", **common)
    if each.choices:
        items = ENUM_ITEMS.get(each.name) or [(choice, choice.replace("+", " + ").title(), f"{each.label}: {choice}")
                                              for choice in each.choices]
        return EnumProperty(items=items, default=each.default or EMPTY_ENUM, **common)
    return StringProperty(default=each.default, **common)


def to_blender(name: str, value: Any) -> Any:
    """A job's value as the property's (the empty choice is NONE in Blender's enums)."""
    return EMPTY_ENUM if name in ENUM_ITEMS and value == "" else value


def to_job(name: str, value: Any) -> Any:
    """A property's value as the job's (the empty choice is NONE in Blender's enums)."""
    return "" if name in ENUM_ITEMS and value == EMPTY_ENUM else value


class PosefactorySettings(bpy.types.PropertyGroup):
    """Every job setting of the table (added below), and what only the add-on keeps: AI on or off, the size,
    the output folder, the host, the Batch panel's lists."""

    use_ai: BoolProperty(name="AI Enhance", default=True,
                         description="Send the render through the AI step (off: only render on the pod)")
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="AUTO",
                             description="Output size: only the sizes SDXL accepts are offered; a size of another "
                                         "aspect than the scene's is a centred crop of the camera's frame")
    autosave: BoolProperty(name="Autosave", default=True,
                           description="Also save every resulting image into the folder below")
    autosave_path: StringProperty(name="Save To", subtype="DIR_PATH", default="//posefactory_renders/",
                                  description="Folder for autosaved results (// is relative to the .blend)")
    host: StringProperty(name="Host", default="local", search=lambda self, context, text: host_search(context, text),
                         description="Host from the hosts file (Preferences) or a pod made with Create Pod to "
                                     "render on; 'local' is this machine")
    # Batch: items = poses × cameras, each with every variation.
    pose_source: pose_source_property()
    poses: CollectionProperty(type=PosefactoryPose, name="Poses",
                              description="The scene's markers and pose assets; the ticked ones are rendered")
    pose_index: IntProperty(name="Active Pose", default=0, description="The pose selected in the list")
    frame_start: IntProperty(name="Start", min=0, default=1, description="First frame of the range")
    frame_end: IntProperty(name="End", min=0, default=24, description="Last frame of the range")
    frame_step: IntProperty(name="Step", min=1, default=1, description="Render every n-th frame")
    camera_source: camera_source_property()
    camera_collection: PointerProperty(type=bpy.types.Collection, name="Camera Collection",
                                       description="Every camera in this collection renders every pose")

    def size(self, scene: bpy.types.Scene) -> tuple[int, int]:
        """The output size; Camera Aspect resolves to the SDXL size nearest ``scene``'s aspect."""
        if self.resolution == "AUTO":
            return nearest_sdxl_size(scene_aspect(scene))
        width, height = self.resolution.split("x")
        return int(width), int(height)


# Blender reads a property group's properties from its annotations when the class is registered.
PosefactorySettings.__annotations__.update(
    {each.name: job_property(each) for each in SETTINGS if each.name not in BUILT_ELSEWHERE})


def host_search(context: bpy.types.Context, text: str) -> list[str]:
    """The host field's suggestions: read from the hosts files each time, so a pod just created is there."""
    return [name for name in host_names(context) if text.lower() in name.lower()]


def scene_aspect(scene: bpy.types.Scene) -> float:
    """The display aspect of the scene's camera frame (pixel aspect included)."""
    render = scene.render
    return display_aspect(render.resolution_x, render.resolution_y, render.pixel_aspect_x, render.pixel_aspect_y)


def settings_of(scene: bpy.types.Scene | None) -> Any:
    """``scene.posefactory``. Any: most of its properties are built from the job settings table at import
    time, which a type checker cannot see. Only where there is a scene: panels and operators (whose poll
    checks it) and the API."""
    assert scene is not None, "no scene (Blender is loading a file?)"
    return cast(Any, scene).posefactory


def register() -> None:
    bpy.utils.register_class(PosefactoryPose)
    bpy.utils.register_class(PosefactorySettings)
    cast(Any, bpy.types.Scene).posefactory = PointerProperty(type=PosefactorySettings)


def unregister() -> None:
    del cast(Any, bpy.types.Scene).posefactory
    bpy.utils.unregister_class(PosefactorySettings)
    bpy.utils.unregister_class(PosefactoryPose)
