"""Pose Factory: render the scene on a rented GPU, enhance it with Stability
SDXL image-to-image, and bring the images back. View3D ▸ Sidebar ▸ Pose Factory.

One module per concern: properties (scene settings), preferences (hosts,
storage, budget, API key), operators, panels, jobs (worker threads and the
timer that polls them), packing (the self-contained copy of the scene),
results (images into Blender) and api (the Python API for scripts).
"""
from . import jobs, operators, panels, preferences, properties, results

_MODULES = (properties, preferences, operators, panels, results, jobs)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
