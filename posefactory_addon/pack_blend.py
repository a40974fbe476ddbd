"""Run by a background Blender: make a .blend self-contained.

    python pack_blend.py IN.blend OUT.blend SCENE      (bpy module)
    blender -b --factory-startup --python pack_blend.py -- IN.blend OUT.blend SCENE
"""
import os
import sys
from pathlib import Path

import bpy

# The bridge package sits next to this script, in the repository and in the extension alike.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from remote.blendfile import canonicalize

LINKABLE = ("objects", "meshes", "materials", "collections", "node_groups", "images", "worlds", "cameras",
            "lights", "armatures", "actions", "textures", "curves", "fonts")


def main() -> int:
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    source, target, scene_name = args
    bpy.ops.wm.open_mainfile(filepath=source)
    # The copy opens on the scene the artist was looking at; the pod renders that one.
    if bpy.context.scene.name != scene_name:
        print(f"pack_blend: the saved copy opened on {bpy.context.scene.name!r}, not {scene_name!r}", file=sys.stderr)
        return 2
    # Linked data becomes part of this file: the pod has none of the libraries.
    for name in LINKABLE:
        for datablock in list(getattr(bpy.data, name)):
            if datablock.library is not None:
                datablock.make_local()
    missing = [image.filepath for image in bpy.data.images
               if image.source == "FILE" and image.packed_file is None and image.filepath
               and not os.path.exists(bpy.path.abspath(image.filepath))]
    if missing:
        print(f"pack_blend: missing image file(s): {', '.join(missing)}", file=sys.stderr)
        return 3
    bpy.ops.file.pack_all()
    # Uncompressed: the transfer layer checksums and dedupes by content, and the
    # file can be checked byte by byte for leaked secrets.
    bpy.ops.wm.save_as_mainfile(filepath=target, compress=False, relative_remap=False)
    # Same scene, same bytes: the pod stores scenes by their sha256, so a re-submit moves nothing.
    canonicalize(Path(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
