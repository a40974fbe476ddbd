"""Pose Factory: render the scene on a rented GPU, enhance it with Stability
SDXL image-to-image, and bring the images back. View3D ▸ Sidebar ▸ Pose Factory.

One module per concern: properties (scene settings), preferences (hosts,
storage, budget, API keys), operators, panels, pod_state, pod_catalog and pod_create (RunPod pods: state,
Start / Stop, the GPU catalog, Create / Terminate), jobs (worker threads), ui_channel (the one
worker→UI channel and its timer), view (what the panels show, computed off draw), packing (the self-contained copy of the scene),
pose_joints (which bone is each OpenPose joint, the control preview),
results (images into Blender), presets (the prompt preset menu) and api (the Python API for scripts).
"""
from types import ModuleType


def _modules() -> tuple[ModuleType, ...]:
    # Imported on registration, not with the package, so that
    # `python -m posefactory_addon` (the CLI) runs without bpy.
    from . import (
        batch,
        jobs,
        operators,
        panels,
        pod_catalog,
        pod_create,
        pod_state,
        pose_joints,
        preferences,
        presets,
        properties,
        results,
        ui_channel,
        view,
    )

    # ui_channel first: the others register their message handlers and timer hooks on it.
    return (ui_channel, properties, preferences, operators, presets, pod_state, pod_catalog, pod_create, view, panels,
            pose_joints, results, jobs, batch)


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
