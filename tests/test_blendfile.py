"""remote/core/blendfile.py: .blend headers read without Blender, canonical bytes."""
from __future__ import annotations

import gzip
import json

import pytest

from remote.core.blendfile import BlendFileError, canonicalize, read_header, saved_version


def test_headers_of_both_layouts():
    legacy = read_header(b"BLENDER-v402REND")
    assert legacy.version == (4, 2) and legacy.pointer_size == 8 and legacy.header_size == 12
    assert read_header(b"BLENDER_v279").pointer_size == 4
    modern = read_header(b"BLENDER17-01v0501REND")
    assert modern.version == (5, 1) and modern.large_bheads and modern.header_size == 17


@pytest.mark.parametrize("data, reason", [
    (b"PK\x03\x04 a zip", "not a .blend"),
    (gzip.compress(b"BLENDER-v402"), "compressed"),
    (b"\x28\xb5\x2f\xfd zstd", "compressed"),
    (b"BLENDER-vABC", "unreadable"),
    (b"BLENDER17-02v0500", "unknown .blend header format"),
])
def test_unreadable_headers_say_why(data, reason):
    with pytest.raises(BlendFileError, match=reason):
        read_header(data)


def test_versions_of_compressed_and_plain_files(sample_scene, tmp_path):
    from remote.cli import scene_blender_version

    assert saved_version(sample_scene) == (5, 0)  # zstd, as Blender saves by default
    assert scene_blender_version(sample_scene) == "5.0"  # what the CLI's job carries
    assert scene_blender_version(tmp_path / "absent.blend") == ""
    legacy = tmp_path / "old.blend"
    legacy.write_bytes(gzip.compress(b"BLENDER-v293REND" + bytes(64)))
    assert saved_version(legacy) == (2, 93)


def test_canonical_bytes_are_stable(tmp_path):
    import subprocess
    import sys

    copy = tmp_path / "copy.blend"
    subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1], "
                    "compress=False)", str(copy)], check=True, capture_output=True, timeout=120)
    assert saved_version(copy) == (5, 0)
    canonicalize(copy)
    once = copy.read_bytes()
    assert canonicalize(copy) is False and copy.read_bytes() == once  # idempotent
    assert len(once) == copy.stat().st_size


SAVE_CAMERAS_THREE_TIMES = """
import sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
for name in ("Front", "Side", "Top"):
    camera = bpy.data.cameras.new(name)
    camera.fisheye_fov = len(name) / 10  # each camera's legacy Cycles group holds its own values
    bpy.context.scene.collection.objects.link(bpy.data.objects.new(name, camera))
for n in range(3):
    bpy.ops.wm.save_as_mainfile(filepath=f"{sys.argv[1]}-{n}.blend", compress=False, copy=True)
"""

READ_CAMERAS = """
import json
import sys
import bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
cameras = {c.name: c.bl_system_properties_get()["cycles"]["fisheye_fov"] for c in bpy.data.cameras}
print("CAMERAS " + json.dumps(cameras))
"""


def test_cameras_saved_several_times_in_one_session_canonicalize_to_the_same_bytes(tmp_path):
    """Blender writes each camera's system properties from a temporary copy; a later camera's copy
    can reuse a freed one's memory and so its address ids, differently in each save."""
    import subprocess
    import sys

    stem = tmp_path / "cameras"
    subprocess.run([sys.executable, "-c", SAVE_CAMERAS_THREE_TIMES, str(stem)], check=True, capture_output=True,
                   timeout=120)
    saves = [tmp_path / f"cameras-{n}.blend" for n in range(3)]
    for save in saves:
        canonicalize(save)
    assert len({save.read_bytes() for save in saves}) == 1
    read = subprocess.run([sys.executable, "-c", READ_CAMERAS, str(saves[0])], check=True, capture_output=True,
                          text=True, timeout=120)
    line = next(line for line in read.stdout.splitlines() if line.startswith("CAMERAS "))
    assert json.loads(line[len("CAMERAS "):]) == pytest.approx({"Front": 0.5, "Side": 0.4, "Top": 0.3})
