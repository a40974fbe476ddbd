"""Run by a background Blender: make a .blend self-contained.

    python pack_blend.py IN.blend OUT.blend SCENE      (bpy module)
    blender -b --factory-startup --python pack_blend.py -- IN.blend OUT.blend SCENE

Linked data of every kind (collection instances of a linked character
included) is made local; images, sounds, fonts and volumes are packed. A
scene that needs files the .blend cannot carry (Alembic/USD caches, image
sequences, movie textures, disk caches of simulations) or files that are
missing is refused, naming each one, before anything is uploaded: the pod
would render without them.
"""
import os
import sys
from pathlib import Path

import bpy

# The bridge package sits next to this script, in the repository and in the extension alike.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pod_setup.scene_files import external_files, linked_ids
from remote.core.blendfile import canonicalize

MAKE_LOCAL_PASSES = 4  # making one ID local can expose others it uses


def make_everything_local() -> list[str]:
    """Make every linked datablock local; returns the names of those that stay linked."""
    for _ in range(MAKE_LOCAL_PASSES):
        linked = linked_ids(bpy)
        if not linked:
            break
        for datablock in linked:
            try:
                datablock.make_local()
            except RuntimeError:
                pass  # reported below if it stays linked
    for library in list(bpy.data.libraries):
        if not any(d.library == library for d in linked_ids(bpy)):
            bpy.data.libraries.remove(library)
    return [f"{type(d).__name__} {d.name!r}" for d in linked_ids(bpy)]


def main() -> int:
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    source, target, scene_name = args
    bpy.ops.wm.open_mainfile(filepath=source)
    # The copy opens on the scene the artist was looking at; the pod renders that one.
    opened = bpy.context.scene.name if bpy.context.scene else None
    if opened != scene_name:
        print(f"pack_blend: the saved copy opened on {opened!r}, not {scene_name!r}", file=sys.stderr)
        return 2
    # Linked data becomes part of this file: the pod has none of the libraries.
    still_linked = make_everything_local()
    if still_linked:
        print(f"pack_blend: cannot make linked data local: {', '.join(still_linked)}", file=sys.stderr)
        return 3
    missing = [f for f in external_files(bpy) if not f.exists]
    if missing:
        print(f"pack_blend: missing file(s): {'; '.join(f.describe() for f in missing)}", file=sys.stderr)
        return 3
    bpy.ops.file.pack_all()
    unpackable = external_files(bpy)
    if unpackable:
        print("pack_blend: the scene needs file(s) that are not carried to the pod yet: "
              f"{'; '.join(f.describe() for f in unpackable)}", file=sys.stderr)
        return 3
    # Uncompressed: the transfer layer checksums and dedupes by content, and the
    # file can be checked byte by byte for leaked secrets.
    bpy.ops.wm.save_as_mainfile(filepath=target, compress=False, relative_remap=False)
    # Same scene, same bytes: the pod stores scenes by their sha256, so a re-submit moves nothing.
    canonicalize(Path(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
