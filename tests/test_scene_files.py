"""Every file a scene needs reaches the pod, or the job says which did not:
packing (remote.scene.pack, as the CLI and the add-on run it) and the pod's render job."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remote.scene.pack import MissingFiles, PackedScene, SceneChanged, SceneError, pack_scene
from tests.fixtures.stability_server import make_png
from tests.test_pod_render_job import run_job

SCENE = textwrap.dedent("""
    import sys
    from pathlib import Path
    import bpy
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "Shot"
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    camera.location = (0, -8, 0)
    camera.rotation_euler = (1.5708, 0, 0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    def textured(image):
        material = bpy.data.materials.new(image.name)
        material.use_nodes = True
        node = material.node_tree.nodes.new("ShaderNodeTexImage")
        node.image = image
        cube.data.materials.append(material)
""")


def build(tmp_path: Path, body: str, name: str = "scene.blend") -> Path:
    script = tmp_path / f"{name}.py"
    script.write_text(SCENE + textwrap.dedent(body) + "\nbpy.ops.wm.save_as_mainfile(filepath=str(out))\n")
    completed = subprocess.run([sys.executable, str(script), str(tmp_path / name), str(tmp_path)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return tmp_path / name


def pack(source: Path, tmp_path: Path) -> PackedScene:
    return pack_scene(source, tmp_path / "work")


def lay_out(scene: PackedScene, folder: Path) -> Path:
    """The tree as the pod's store lays it out (here by copying), for opening without the originals."""
    for entry in scene.files:
        target = folder / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.source, target)
    return folder / scene.blend


def in_blender(blend: Path, check: str) -> str:
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import bpy
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
    """) + textwrap.dedent(check)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_an_alembic_cache_travels_and_is_found_in_the_tree(tmp_path):
    scene = build(tmp_path, """
        bpy.ops.wm.alembic_export(filepath=str(folder / "crowd.abc"), start=1, end=1)
        bpy.ops.wm.alembic_import(filepath=str(folder / "crowd.abc"), always_add_cache_reader=True)
        assert bpy.data.cache_files["crowd.abc"].users
    """)
    packed = pack(scene, tmp_path)
    assert "crowd.abc" in [f.path for f in packed.files]
    blend = lay_out(packed, tmp_path / "pod")
    (tmp_path / "crowd.abc").unlink()
    out = in_blender(blend, """
        import os
        print("CACHE", os.path.isfile(bpy.path.abspath(bpy.data.cache_files["crowd.abc"].filepath)))
    """)
    assert "CACHE True" in out


def test_an_image_sequence_travels_frame_by_frame(tmp_path):
    for frame in (1, 2):
        (tmp_path / f"flames.{frame:04d}.png").write_bytes(make_png(4, 4, (250, 120, 0), {}))
    scene = build(tmp_path, """
        image = bpy.data.images.load(str(folder / "flames.0001.png"))
        image.source = "SEQUENCE"
        textured(image)
    """)
    assert {"flames.0001.png", "flames.0002.png"} <= {f.path for f in pack(scene, tmp_path).files}


def test_a_baked_particle_disk_cache_travels(tmp_path):
    scene = build(tmp_path, """
        bpy.ops.wm.save_as_mainfile(filepath=str(out))  # a disk cache lives next to a saved file
        bpy.ops.object.particle_system_add()
        cache = cube.particle_systems[0].point_cache
        cache.use_disk_cache = True
        cache.frame_end = 3
        with bpy.context.temp_override(point_cache=cache):
            bpy.ops.ptcache.bake(bake=True)
        assert cache.is_baked
    """)
    cached = sorted(f.path for f in pack(scene, tmp_path).files if f.path.startswith("blendcache_scene/"))
    assert cached and all(path.endswith(".bphys") for path in cached)


def test_a_missing_texture_is_named_before_anything_is_uploaded(tmp_path):
    texture = tmp_path / "skin.png"
    texture.write_bytes(make_png(4, 4, (200, 150, 120), {}))
    scene = build(tmp_path, """
        textured(bpy.data.images.load(str(folder / "skin.png")))
    """)
    texture.unlink()
    with pytest.raises(MissingFiles) as refused:
        pack(scene, tmp_path)
    assert str(refused.value) == f"missing file: {texture}"


def test_a_linked_collection_instance_travels_with_its_library_and_the_librarys_texture(tmp_path):
    (tmp_path / "skin.png").write_bytes(make_png(4, 4, (200, 150, 120), {}))
    library = build(tmp_path, """
        bpy.ops.mesh.primitive_uv_sphere_add(location=(3, 0, 0))
        cube = bpy.context.active_object
        textured(bpy.data.images.load(str(folder / "skin.png")))
        character = bpy.data.collections.new("Character")
        character.objects.link(bpy.context.active_object)
        bpy.context.active_object.name = "Hero"
        scene.collection.children.link(character)
    """, name="character.blend")
    scene = build(tmp_path, f"""
        with bpy.data.libraries.load({str(library)!r}, link=True) as (data_from, data_to):
            data_to.collections = ["Character"]
        instance = bpy.data.objects.new("Hero instance", None)
        instance.instance_type = "COLLECTION"
        instance.instance_collection = data_to.collections[0]
        scene.collection.objects.link(instance)
    """)
    packed = pack(scene, tmp_path)
    assert {"scene.blend", "character.blend", "skin.png"} <= {f.path for f in packed.files}
    blend = lay_out(packed, tmp_path / "pod")
    library.unlink()
    (tmp_path / "skin.png").unlink()
    out = in_blender(blend, """
        hero = bpy.data.objects["Hero"]
        image = hero.active_material.node_tree.nodes["Image Texture"].image
        print("LINKED", hero.library is not None, tuple(image.size))
    """)
    assert "LINKED True (4, 4)" in out


@pytest.mark.parametrize("hostile", ["//../../../../../../etc/passwd", "/etc/hostname", "~/.ssh/id_ed25519"])
def test_a_scene_naming_a_system_or_private_file_is_refused(tmp_path, hostile, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    path = hostile.replace("~", str(home))
    scene = build(tmp_path, f"""
        image = bpy.data.images.new("stolen", 4, 4)
        image.source = "FILE"
        image.filepath = {path!r}
        textured(image)
    """)
    with pytest.raises(SceneError) as refused:
        pack(scene, tmp_path)
    assert str(refused.value).startswith("refusing to send ") and len(str(refused.value).splitlines()) == 1


def test_a_file_that_changes_after_packing_refuses_the_job_by_name(tmp_path):
    texture = tmp_path / "skin.png"
    texture.write_bytes(make_png(4, 4, (200, 150, 120), {}))
    scene = build(tmp_path, """
        textured(bpy.data.images.load(str(folder / "skin.png")))
    """)
    packed = pack(scene, tmp_path)
    packed.check_unchanged()  # nothing changed yet
    texture.write_bytes(make_png(4, 4, (10, 10, 10), {}))
    with pytest.raises(SceneChanged) as refused:
        packed.check_unchanged()
    assert str(texture) in str(refused.value) and "changed" in str(refused.value)


def test_the_pod_refuses_a_scene_with_missing_files_or_renders_it_with_warnings(tmp_path, stability_server):
    texture = tmp_path / "skin.png"
    texture.write_bytes(make_png(4, 4, (200, 150, 120), {}))
    scene = build(tmp_path, """
        textured(bpy.data.images.load(str(folder / "skin.png")))
    """)
    texture.unlink()  # a scene sent without packing (a script's job, say)
    completed, manifest = run_job(tmp_path, scene, stability_server)
    assert completed.returncode == 4 and "file(s) this pod does not have" in completed.stderr
    assert "image 'skin.png'" in manifest["error"] and manifest["status"] == "failed"
    assert stability_server.requests == [] and not (tmp_path / "out" / "render.png").exists()
    completed, manifest = run_job(tmp_path, scene, stability_server, backend="none", key=None,
                                  allow_missing_files=True)
    assert completed.returncode == 0, completed.stderr
    assert manifest["status"] == "done with warnings"
    assert any("skin.png" in entry for entry in manifest["missing_files"])
    assert any("missing file(s)" in warning for warning in manifest["warnings"])


def test_a_missing_linked_library_is_named_before_anything_is_uploaded(tmp_path):
    library = build(tmp_path, """
        bpy.ops.mesh.primitive_uv_sphere_add()
        character = bpy.data.collections.new("Character")
        character.objects.link(bpy.context.active_object)
        scene.collection.children.link(character)
    """, name="character.blend")
    scene = build(tmp_path, f"""
        with bpy.data.libraries.load({str(library)!r}, link=True, relative=True) as (data_from, data_to):
            data_to.collections = ["Character"]
        instance = bpy.data.objects.new("Hero instance", None)
        instance.instance_type = "COLLECTION"
        instance.instance_collection = data_to.collections[0]
        scene.collection.objects.link(instance)
    """)
    library.unlink()
    with pytest.raises(MissingFiles) as refused:
        pack(scene, tmp_path)
    assert str(refused.value) == f"missing file: {library}"
