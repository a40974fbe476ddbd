"""Every file a scene needs reaches the pod, or the job says which did not:
packing (pack_blend.py, as the add-on runs it) and the pod's render job."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.blender_scene import REPO
from tests.fixtures.stability_server import make_png
from tests.test_pod_render_job import run_job

PACK = REPO / "posefactory_addon" / "pack_blend.py"

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


def pack(source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PACK), str(source), str(source.with_name("packed.blend")), "Shot"],
                          capture_output=True, text=True, timeout=180)


def refusal(completed: subprocess.CompletedProcess) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.startswith("pack_blend:")]
    assert completed.returncode == 3 and len(lines) == 1, completed.stderr[-2000:]
    return lines[0]


def test_an_alembic_cache_is_refused_by_name(tmp_path):
    scene = build(tmp_path, """
        bpy.ops.wm.alembic_export(filepath=str(folder / "crowd.abc"), start=1, end=1)
        bpy.ops.wm.alembic_import(filepath=str(folder / "crowd.abc"), always_add_cache_reader=True)
        assert bpy.data.cache_files["crowd.abc"].users
    """)
    line = refusal(pack(scene))
    assert "Alembic/USD cache 'crowd.abc'" in line and str(tmp_path / "crowd.abc") in line


def test_an_image_sequence_is_refused_by_name(tmp_path):
    for frame in (1, 2):
        (tmp_path / f"flames.{frame:04d}.png").write_bytes(make_png(4, 4, (250, 120, 0), {}))
    scene = build(tmp_path, """
        image = bpy.data.images.load(str(folder / "flames.0001.png"))
        image.source = "SEQUENCE"
        textured(image)
    """)
    assert "image sequence 'flames.0001.png'" in refusal(pack(scene))


def test_a_baked_particle_disk_cache_is_refused_by_name(tmp_path):
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
    line = refusal(pack(scene))
    assert "disk cache 'Cube/ParticleSystem'" in line


def test_a_missing_texture_is_refused_before_upload(tmp_path):
    texture = tmp_path / "skin.png"
    texture.write_bytes(make_png(4, 4, (200, 150, 120), {}))
    scene = build(tmp_path, """
        textured(bpy.data.images.load(str(folder / "skin.png")))
    """)
    texture.unlink()
    line = refusal(pack(scene))
    assert "missing file(s): image 'skin.png'" in line and "missing)" in line


def test_a_linked_collection_instance_is_made_local_and_renders_without_its_library(tmp_path):
    library = build(tmp_path, """
        bpy.ops.mesh.primitive_uv_sphere_add(location=(3, 0, 0))
        character = bpy.data.collections.new("Character")
        character.objects.link(bpy.context.active_object)
        bpy.context.active_object.name = "Hero"
        bpy.context.active_object.data.name = "HeroMesh"
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
    completed = pack(scene)
    assert completed.returncode == 0, completed.stderr[-2000:]
    library.unlink()  # the pod has no library
    check = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import bpy
        bpy.ops.wm.open_mainfile(filepath={str(tmp_path / "packed.blend")!r})
        hero = bpy.data.objects["Hero"]
        assert hero.library is None and hero.data.library is None and not bpy.data.libraries
        assert bpy.data.objects["Hero instance"].instance_collection.library is None
        print("LOCAL")
    """)], capture_output=True, text=True, timeout=120)
    assert "LOCAL" in check.stdout, check.stderr[-2000:]


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
