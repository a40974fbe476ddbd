"""Render from the command line, for pipelines without Blender's UI:

    python -m posefactory_addon render SCENE.blend --prompt "a knight" [--host local] [--variations 2] ...
    python -m posefactory_addon reattach RECORD.json
    python -m posefactory_addon estimate --steps 30 --variations 4

The same commands as ``python -m remote.cli`` (docs/pipeline.md), reached
through the add-on's bundled copy of the bridge, so an installed extension
folder is enough; bpy is not imported.
"""
import sys

from .remote.cli import main

sys.exit(main())
