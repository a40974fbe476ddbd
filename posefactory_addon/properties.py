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
from .remote.core.framing import display_aspect, nearest_sdxl_size
from .remote.core.jobspec import CONTROLS, SDXL_SIZES, STYLE_PRESETS

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
CONTROL_ITEMS = [(control, control.replace("+", " + ").title(), f"ControlNet input(s): {control}") for control in CONTROLS]
STYLE_ITEMS = [("NONE", "None", "No style preset")] + [
    (preset, preset.replace("-", " ").title(), f"Stability style preset '{preset}'") for preset in STYLE_PRESETS
]


class PosefactorySettings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What the AI step should make of the render")
    negative_prompt: StringProperty(name="Negative Prompt", description="What the AI step should avoid (sent with a negative weight)")
    style_preset: EnumProperty(name="Style", items=STYLE_ITEMS, default="NONE",
                               description="A Stability style preset that guides the look of the result")
    strength: FloatProperty(name="Keep Render", min=0.0, max=1.0, default=0.35, subtype="FACTOR",
                            description="How much of the render survives the AI step (Stability's image_strength): "
                                        "1 keeps it, 0 ignores it")
    steps: IntProperty(name="Steps", min=10, max=50, default=30,
                       description="Diffusion steps: more is slower and costs more per image")
    cfg_scale: FloatProperty(name="Prompt Strength", min=0.0, max=35.0, default=7.0,
                             description="How strictly the AI follows the prompt (cfg_scale)")
    seed: IntProperty(name="Seed", min=1, max=2**31 - 1, default=42,
                      description="Seed of the AI step: the same seed and settings give the same image")
    random_seed: BoolProperty(name="Random Seed", default=True,
                              description="Use a new random seed for every job instead of the seed above")
    batch: IntProperty(name="Variations", min=1, max=10, default=1,
                       description="How many AI variations of the render to make (each one is billed)")
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="AUTO",
                             description="Output size: only the sizes SDXL accepts are offered; a size of another "
                                         "aspect than the scene's is a centred crop of the camera's frame")
    render_device: EnumProperty(
        name="Render Device", default="auto",
        items=[("auto", "Auto", "The pod's best GPU (OptiX, CUDA, HIP, oneAPI); its CPU with a warning when it has none"),
               ("gpu", "GPU", "Fail in one line, before anything is billed for the AI step, when the pod has no GPU"),
               ("cpu", "CPU", "Render on the pod's CPU")],
        description="Which device Cycles renders on, on the pod")
    allow_missing_files: BoolProperty(
        name="Allow Missing Files", default=False,
        description="Render even when files the scene needs are missing on the pod; the job then ends "
                    "'done with warnings' listing them (off: such a job fails before rendering)")
    render_samples: IntProperty(name="Render Samples", min=0, max=4096, default=0,
                                description="Cycles samples on the pod (0 keeps the scene's own setting)")
    use_ai: BoolProperty(name="AI Enhance", default=True,
                         description="Send the render through Stability SDXL (off: only render on the pod)")
    # AI backends: the backend and its own settings.
    backend: EnumProperty(name="Backend", items=BACKEND_ITEMS, default="stability",
                          description="Where the AI step runs: Stability's API, the pod's GPU, or the AI Render add-on")
    control: EnumProperty(name="Control", items=CONTROL_ITEMS, default="openpose",
                          description="Diffusers: the ControlNet input(s) drawn from the scene (the armature's pose, "
                                      "the Z pass)")
    openpose_scale: FloatProperty(name="Pose Weight", min=0.0, max=2.0, default=1.0,
                                  description="Diffusers: how strongly the OpenPose skeleton steers the image")
    depth_scale: FloatProperty(name="Depth Weight", min=0.0, max=2.0, default=1.0,
                               description="Diffusers: how strongly the depth map steers the image")
    control_strength: FloatProperty(name="Keep Structure", min=0.0, max=1.0, default=0.7, subtype="FACTOR",
                                    description="Stability Structure: how closely the render's structure is kept")
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


def host_search(context: bpy.types.Context, text: str) -> list[str]:
    """The host field's suggestions: read from the hosts files each time, so a pod just created is there."""
    from .api import host_names  # api imports this module

    return [name for name in host_names(context) if text.lower() in name.lower()]


def scene_aspect(scene: bpy.types.Scene) -> float:
    """The display aspect of the scene's camera frame (pixel aspect included)."""
    render = scene.render
    return display_aspect(render.resolution_x, render.resolution_y, render.pixel_aspect_x, render.pixel_aspect_y)


def settings_of(scene: bpy.types.Scene | None) -> PosefactorySettings:
    """``scene.posefactory``, typed (fake-bpy cannot know a property registered at run time).
    Only where there is a scene: panels and operators (whose poll checks it) and the API."""
    assert scene is not None, "no scene (Blender is loading a file?)"
    return cast(PosefactorySettings, cast(Any, scene).posefactory)


def register() -> None:
    bpy.utils.register_class(PosefactoryPose)
    bpy.utils.register_class(PosefactorySettings)
    cast(Any, bpy.types.Scene).posefactory = PointerProperty(type=PosefactorySettings)


def unregister() -> None:
    del cast(Any, bpy.types.Scene).posefactory
    bpy.utils.unregister_class(PosefactorySettings)
    bpy.utils.unregister_class(PosefactoryPose)
