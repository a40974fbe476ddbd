"""Real scenes travel, end to end on real sshds: packed with
Blender's asset tracer from the CLI, rendered on a pod whose workspace is
elsewhere and whose originals are gone, re-submitted as a delta."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from remote.jobs.state import JobRecord
from tests.fixtures.blender_scene import REPO
from tests.fixtures.textured_scene import TEXTURE_COLOUR, blender_script

pytestmark = pytest.mark.slow

MOVE_ONE_BONE = textwrap.dedent("""
    import sys
    import bpy
    bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
    bpy.data.objects["Rig"].pose.bones["ArmL"].rotation_mode = "XYZ"
    bpy.data.objects["Rig"].pose.bones["ArmL"].rotation_euler[0] += 0.6
    bpy.ops.wm.save_mainfile()
""")


def cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    environment.update(POSEFACTORY_DATA_DIR=str(data), POSEFACTORY_BPY_PYTHON=sys.executable)
    return subprocess.run([sys.executable, "-m", "remote.cli", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def scene_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "moved of" in line]
    assert lines, output[-3000:]
    return lines[-1]


def last_record(data: Path) -> JobRecord:
    records = sorted((data / "jobs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return JobRecord.load(records[-1])


def test_the_cli_packs_a_textured_scene_and_a_one_bone_change_travels_as_a_small_delta(tmp_path, sshd_direct,
                                                                                        textured_character):
    data = tmp_path / "data"
    hosts = sshd_direct.write_hosts_file(tmp_path / "hosts.yaml", name="pod", workspace=str(tmp_path / "pod-ws"),
                                         env={"POSEFACTORY_BPY_PYTHON": sys.executable})
    common = ["--hosts", str(hosts), "--host", "pod", "--prompt", "x", "--backend", "none", "--samples", "1",
              ]
    first = cli("render", str(textured_character), *common, data=data)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    line = scene_line(first.stdout + first.stderr)
    assert "scene: 2 files" in line, line
    record = last_record(data)
    assert record.scene["files"] == 2 and record.scene["transport"] == "sftp"
    # The texture reached the pod (its store, hard-linked into the job's tree) and was rendered from there.
    tree = Path(record.remote_job_dir) / "scene"
    assert (tree / "textures" / "ground.png").read_bytes() == (textured_character.parent / "textures" / "ground.png").read_bytes()
    assert (tree / "textures" / "ground.png").stat().st_nlink >= 2
    render = Image.open(Path(record.local_output_dir) / "render.png").convert("RGB")
    width, height = render.size
    floor = render.getpixel((width // 2, height - 5))  # the ground, lit by nothing but its texture
    assert all(abs(a - b) < 40 for a, b in zip(floor, TEXTURE_COLOUR, strict=True)), floor

    # One bone moved and saved: the .blend goes as a patch against the pod's copy; the texture stays.
    blender_script(MOVE_ONE_BONE, str(textured_character))
    second = cli("render", str(textured_character), *common, data=data)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    record = last_record(data)
    assert record.scene["delta"] is True and 0 < record.scene["bytes_moved"] <= 64_000, record.scene
    assert record.scene["sent_files"] == 1
    assert "the .blend as a delta" in scene_line(second.stdout + second.stderr)

    # Unchanged: nothing moves.
    third = cli("render", str(textured_character), *common, data=data)
    assert third.returncode == 0
    assert last_record(data).scene["bytes_moved"] == 0 and "0 bytes moved of" in scene_line(third.stdout + third.stderr)
    store = tmp_path / "pod-ws" / "posefactory" / "store" / "objects"
    assert len([p for p in store.iterdir() if len(p.name) == 64]) == 3  # the texture once, two versions of the .blend

    # Saved As under a new name and one more bone moved: the patch follows the scene's content, not its path.
    saved_as = textured_character.with_name(f"shot-{tmp_path.name[-12:]}.blend")
    shutil.copy2(textured_character, saved_as)
    try:
        blender_script(MOVE_ONE_BONE, str(saved_as))
        fourth = cli("render", str(saved_as), *common, data=data)
    finally:
        saved_as.unlink()
    assert fourth.returncode == 0, fourth.stdout[-3000:] + fourth.stderr[-3000:]
    record = last_record(data)
    assert record.scene["delta"] is True and 0 < record.scene["bytes_moved"] <= 64_000, record.scene


def test_a_missing_texture_is_one_line_and_nothing_is_uploaded(tmp_path, sshd_direct, textured_character):
    data = tmp_path / "data"
    hosts = sshd_direct.write_hosts_file(tmp_path / "hosts.yaml", name="pod", workspace=str(tmp_path / "pod-ws"),
                                         env={"POSEFACTORY_BPY_PYTHON": sys.executable})
    texture = textured_character.parent / "textures" / "ground.png"
    texture.unlink()
    done = cli("render", str(textured_character), "--hosts", str(hosts), "--host", "pod", "--prompt", "x",
               "--backend", "none", data=data)
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "missing file:" in line]
    assert len(errors) == 1 and str(texture) in errors[0], done.stdout + done.stderr
    assert not (tmp_path / "pod-ws").exists()  # not even connected to: nothing uploaded or paid for


def test_a_file_deleted_after_tracing_stops_the_job_before_anything_is_sent(tmp_path, monkeypatch, sshd_proxy,
                                                                           textured_character):
    from tests.test_pipeline_e2e import Recorder, hosts_file, make_job, submit

    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    texture = textured_character.parent / "textures" / "ground.png"

    class DeleteAfterTracing(Recorder):
        def __call__(self, event):
            super().__call__(event)
            if event.stage == "setup" and texture.exists():  # traced and hashed; the upload is next
                texture.unlink()

    hosts = hosts_file(tmp_path, sshd_proxy, "runpod")
    result = submit(make_job(variations=1), textured_character, "runpod", hosts, tmp_path, DeleteAfterTracing())
    assert result.status == "failed" and result.error == f"{texture}: gone while the scene was being sent", result.error
    objects = tmp_path / "pod-ws" / "posefactory" / "store" / "objects"
    assert not objects.exists() or list(objects.iterdir()) == []


def test_the_scene_tree_never_lets_the_pod_read_outside_it(tmp_path, stability_server):
    """A tree whose .blend names a file outside it (a stale or hostile absolute path) renders nothing."""
    from tests.test_pod_render_job import run_job

    job_dir = tmp_path / "job"
    tree = job_dir / "scene"
    tree.mkdir(parents=True)
    blender_script(textwrap.dedent("""
        import sys
        import bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        image = bpy.data.images.new("hostname", 4, 4)
        image.source = "FILE"
        image.filepath = "/etc/hostname"
        image.use_fake_user = True
        bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
    """), str(tree / "scene.blend"))
    (job_dir / "scene-tree.json").write_text(json.dumps({"blend": "scene.blend", "files": []}))
    completed, manifest = run_job(tmp_path, tree / "scene.blend", stability_server, backend="none", key=None)
    assert completed.returncode == 4, completed.stderr[-2000:]
    assert "outside its job tree" in manifest["error"] and "/etc/hostname" in manifest["error"]
    assert stability_server.requests == []


def test_every_kind_of_dependency_reaches_a_pod_without_the_originals_and_is_used(tmp_path, monkeypatch, sshd_proxy,
                                                                                  dependency_scene):
    """Textures, UDIM tiles, an image sequence, an Alembic cache, a linked library with its own
    texture and a baked cloth cache: sent through the PTY-only proxy, the originals moved away
    before the pod renders, each found in the job's tree (its colour in the render where it shows)."""
    from tests.fixtures.dependency_scene import SEQUENCE_COLOURS, SKIN_COLOUR, TEXTURE_COLOUR, UDIM_COLOURS
    from tests.test_pipeline_e2e import Recorder, hosts_file, make_job, submit

    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    moved_away = tmp_path / "moved-away"

    class MoveOriginalsOnceSent(Recorder):
        def __call__(self, event):
            super().__call__(event)
            if " moved of " in event.message and dependency_scene.root.exists():
                dependency_scene.root.rename(moved_away)  # the pod renders from its tree alone

    hosts = hosts_file(tmp_path, sshd_proxy, "runpod")
    progress = MoveOriginalsOnceSent()
    result = submit(make_job(variations=1), dependency_scene.blend, "runpod", hosts, tmp_path, progress)
    assert result.status == "done", result.error
    assert result.manifest["status"] == "done" and not result.manifest.get("missing_files")  # nothing rendered without
    assert moved_away.exists() and not dependency_scene.root.exists()
    record = JobRecord.load(tmp_path / "record.json")
    tree = Path(record.remote_job_dir) / "scene"
    for relative in ("textures/flat.png", "textures/tex.1001.png", "textures/tex.1002.png", "seq/frame_0003.png",
                     "cache/shape.abc", "lib/character.blend", "lib/textures/skin.png"):
        assert (tree / relative).is_file(), relative
    assert len(list((tree / "blendcache_scene").glob("*.bphys"))) == 3
    render = Image.open(result.raw_render).convert("RGB")
    width, height = render.size

    def at(x: float, y: float) -> tuple[int, int, int]:  # the fixture's top-down orthographic camera
        return render.getpixel((int((x + 2) / 4 * width), int((2 - y) / 4 * height)))

    def near(colour, expected) -> bool:
        return all(abs(a - b) <= 12 for a, b in zip(colour, expected, strict=True))

    assert near(at(0, 0), TEXTURE_COLOUR), at(0, 0)
    assert near(at(-1.75, 1.5), UDIM_COLOURS[1001]) and near(at(-1.25, 1.5), UDIM_COLOURS[1002])
    assert near(at(1.5, 1.5), SEQUENCE_COLOURS[0])  # frame 1 of the sequence
    assert near(at(1.5, -1.5), SKIN_COLOUR), at(1.5, -1.5)  # the library's own texture, through the library
    summary = next(m for m in progress.messages("uploading") if " moved of " in m)
    assert summary.startswith(f"scene: {record.scene['files']} files, ") and summary.endswith("(inline)")
