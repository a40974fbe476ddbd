"""The dependency scene (tests/fixtures/dependency_scene.py) is well-formed: every
external file exists, the .blend files name them (as BAT traces them), nothing
is packed, and a render shows the external texture's colour in the centre."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dependency_scene import KINDS, DependencyScene

pytestmark = pytest.mark.slow

RENDER_CENTRE = """
import sys
import bpy
from PIL import Image
bpy.ops.wm.open_mainfile(filepath=sys.argv[-2])
bpy.context.scene.render.filepath = sys.argv[-1]
bpy.ops.render.render(write_still=True)
image = Image.open(sys.argv[-1]).convert("RGB")
print("CENTRE:%d,%d,%d" % image.getpixel((image.width // 2, image.height // 2)))
"""


def traced(blend: Path) -> dict[Path, bool]:
    """BAT's dependencies of ``blend``: absolute path -> is_sequence."""
    from blender_asset_tracer import blendfile, trace

    try:
        return {usage.abspath: usage.is_sequence for usage in trace.deps(blend)}
    finally:
        blendfile.close_all_cached()


def test_every_kind_of_dependency_exists_and_is_small(dependency_scene: DependencyScene) -> None:
    scene = dependency_scene
    assert scene.blend.is_file() and scene.blend.parent == scene.root
    assert set(scene.files) == set(KINDS)
    for kind, path in scene.files.items():
        assert path.is_file(), kind
        assert path.is_relative_to(scene.root), kind
    assert (scene.root / "textures" / "tex.1002.png").is_file()
    assert len(list((scene.root / "seq").glob("frame_*.png"))) == 3
    assert len(list((scene.root / "blendcache_scene").glob("*.bphys"))) == 3
    assert not list(scene.root.rglob("*.blend1"))
    total = sum(path.stat().st_size for path in scene.root.rglob("*") if path.is_file())
    assert total < 2_000_000


def test_the_blend_files_reference_every_dependency(dependency_scene: DependencyScene) -> None:
    scene = dependency_scene
    files = scene.files
    main = traced(scene.blend)
    assert main[files["texture"]] is False
    assert main[files["udim"].with_name("tex.<UDIM>.png")] is True
    assert main[files["sequence"]] is True
    assert main[files["alembic"]] is False
    assert main[files["library"]] is False
    caches = [path for path in main if path.parent == files["disk_cache"].parent]
    assert len(caches) == 1 and files["disk_cache"].match(caches[0].name), main
    # The library's own texture, traced in the library itself (linked-ID tracing misses it with
    # stock BAT 1.23 on Blender 5.0 files: remote/scene/pack.py's _fix_node_trees works around that).
    assert traced(files["library"]) == {files["library_texture"]: False}


def test_a_render_shows_the_external_texture_in_the_centre(dependency_scene: DependencyScene, tmp_path: Path) -> None:
    completed = subprocess.run([sys.executable, "-c", RENDER_CENTRE, str(dependency_scene.blend), str(tmp_path / "render.png")],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("CENTRE:")]
    assert completed.returncode == 0 and lines, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert tuple(int(value) for value in lines[0][len("CENTRE:"):].split(",")) == dependency_scene.expected_colour
