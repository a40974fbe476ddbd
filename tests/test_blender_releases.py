"""The built extension in every supported Blender: installed, enabled and running a job on the local
host in the oldest and newest Blender of each Python (4.2 LTS and 5.0 on Python 3.11, 5.2 LTS on
Python 3.13), each with a scene saved by that Blender; and Blender's *Allow Online Access* obeyed."""
from __future__ import annotations

import subprocess

from tests.fixtures.blender import BlenderRunner

SAVE_SCENE = """
import sys, bpy
bpy.ops.wm.read_factory_settings(use_empty=False)  # the default cube, camera and light
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 1
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


def test_each_release_installs_the_extension_and_runs_a_job(blender_release, addon_zip, tmp_path):
    scene = tmp_path / "saved-here.blend"
    script = tmp_path / "save.py"
    script.write_text(SAVE_SCENE)
    subprocess.run([blender_release, str(script), str(scene)], check=True, capture_output=True, timeout=120)
    runner = BlenderRunner(addon_zip, tmp_path, python=blender_release)
    result = runner.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(scene)!r})
        settings = bpy.context.scene.posefactory
        settings.use_ai = False
        handle = api.submit(bpy.context.scene, prompt="a cube", host="local", render_samples=1)
        done = jobs.MANAGER.wait(handle.tracked, timeout=240)
        report(version=bpy.app.version_string, python=sys.version.split()[0], status=done.status, error=done.error,
               rendered_by=[item.get("blender_version") for item in done.manifest.get("items", [])],
               saved_by=bpy.data.version)
    """)
    assert result["status"] == "done", result["error"]
    assert result["rendered_by"] == [result["version"]]  # the pod ran the artist's Blender and says so


def test_with_online_access_off_remote_work_is_refused_in_one_line_and_local_works(blender, tmp_path, sample_scene):
    result = blender.run(f"""
        bpy.context.preferences.system.use_online_access = False
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        bpy.context.scene.posefactory.use_ai = False
        refusals = {{}}
        try:
            api.submit(bpy.context.scene, prompt="x", host="runpod-a40")
        except api.SubmitError as exc:
            refusals["job"] = str(exc)
        for name, call in (("test", lambda: bpy.ops.posefactory.test_connection(host="runpod-a40")),
                           ("create", lambda: bpy.ops.posefactory.pod_create("INVOKE_DEFAULT"))):
            try:
                refusals[name] = str(call())
            except RuntimeError as exc:
                refusals[name] = str(exc)
        handle = api.submit(bpy.context.scene, prompt="x", host="local", render_samples=1)
        done = jobs.MANAGER.wait(handle.tracked, timeout=240)
        report(refusals=refusals, local=done.status, error=done.error, online=bpy.app.online_access)
    """)
    assert result["online"] is False
    for name, line in result["refusals"].items():
        assert "online access is off" in line and "Allow Online Access" in line and "\\n" not in line.strip(), (name, line)
    assert result["local"] == "done", result["error"]
