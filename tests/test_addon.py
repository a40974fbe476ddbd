"""The extension as an artist gets it: built by build.py, validated by Blender's
own tool, installed with bpy.ops.extensions.package_install_files into a temp
user repo of a real Blender (bpy 5.0.1, background mode), then driven."""
from __future__ import annotations

import json
import socket
import sys
import zipfile

import pytest

from remote.core.jobspec import SDXL_SIZES
from remote.core.platforms import TRANSPORTS
from tests.fixtures.stability_server import png_text
from tests.fixtures.textured_scene import TEXTURE_COLOUR


def test_zip_bundles_the_addon_bridge_pod_files_and_wheels(addon_zip):
    with zipfile.ZipFile(addon_zip) as archive:
        names = set(archive.namelist())
        manifest = archive.read("blender_manifest.toml").decode()
    for required in ("blender_manifest.toml", "__init__.py", "operators.py", "panels.py", "remote/bridge/shell.py",
                     "remote/jobs/pipeline.py", "pod_setup/render_job.py", "pod_setup/setup_pod.sh"):
        assert required in names
    wheels = sorted(n for n in names if n.startswith("wheels/"))
    assert any("pexpect" in w for w in wheels) and any("boto3" in w for w in wheels)
    # One compiled wheel per platform (win_amd64 included) and Python (3.11: Blender 4.2-5.0, 3.13: 5.1-5.3).
    assert sum("yaml" in w.lower() for w in wheels) == sum("pillow" in w.lower() for w in wheels) == 8
    assert sum("-cp313-" in w for w in wheels) == 8
    for wheel in wheels:
        assert f'"./{wheel}"' in manifest
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_installed_extension_registers_operators_panels_and_properties(blender):
    result = blender.run("""
        ops = {}
        for name in ("render_remote", "cancel_job", "test_connection", "estimate_cost", "import_results", "open_output"):
            rna = getattr(bpy.ops.posefactory, name).get_rna_type()
            ops[name] = [rna.name, rna.description, getattr(bpy.ops.posefactory, name).poll()]
        panels = {name: getattr(bpy.types, name).bl_category for name in
                  ("POSEFACTORY_PT_main", "POSEFACTORY_PT_prompt", "POSEFACTORY_PT_output",
                   "POSEFACTORY_PT_remote", "POSEFACTORY_PT_jobs")}
        settings = bpy.context.scene.posefactory
        items = [item.identifier for item in settings.bl_rna.properties["resolution"].enum_items]
        tooltips = {p.identifier: p.description for p in settings.bl_rna.properties if p.identifier != "rna_type"}
        report(ops=ops, panels=panels, resolutions=items, tooltips=tooltips,
               on_scene=[p.identifier for p in bpy.types.Scene.bl_rna.properties if "posefactory" in p.identifier])
    """)
    assert result["ops"]["render_remote"][0] == "Render on RunPod"
    assert all(label and description for label, description, _ in result["ops"].values())
    # Every operator can run on a scene with the settings, except Cancel: no job is running.
    assert {name for name, (_, _, runnable) in result["ops"].items() if not runnable} == {"cancel_job"}
    assert set(result["panels"].values()) == {"Pose Factory"}
    assert result["resolutions"] == ["AUTO"] + [f"{w}x{h}" for w, h in SDXL_SIZES]
    assert all(result["tooltips"].values()), [k for k, v in result["tooltips"].items() if not v]
    assert "api_key" not in result["tooltips"]  # the key lives in the preferences, never on the Scene


def test_panels_draw_with_a_recording_layout(blender):
    # Background mode has no window, region or UILayout, so Blender cannot call draw()
    # itself here; the panels' draw() runs against a recorder of layout calls instead,
    # which checks that every property and operator they reference exists.
    result = blender.run("""
        calls = []
        class Layout:
            def __getattr__(self, name):
                def call(*args, **kwargs):
                    calls.append(name)
                    if name == "prop":
                        data, prop = args[0], args[1]
                        assert prop in data.bl_rna.properties, prop
                    if name == "operator":
                        assert hasattr(bpy.ops.posefactory, args[0].split(".")[1]), args[0]
                        return type("OperatorProps", (), {})()
                    return Layout()
                return call
        bpy.context.scene.posefactory.prompt = "a knight"
        for name in ("POSEFACTORY_PT_main", "POSEFACTORY_PT_prompt", "POSEFACTORY_PT_output",
                     "POSEFACTORY_PT_remote", "POSEFACTORY_PT_jobs"):
            panel = getattr(bpy.types, name)
            holder = type("Holder", (), {"layout": Layout()})()
            panel.draw(holder, bpy.context)
        report(calls=sorted(set(calls)))
    """)
    assert {"prop", "operator", "label"} <= set(result["calls"])


def test_output_size_follows_the_camera_aspect_and_the_panel_says_what_a_size_crops(blender):
    result = blender.run("""
        scene = bpy.context.scene
        scene.posefactory.prompt = "a knight"
        scene.posefactory.use_ai = False
        scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
        auto, _ = api.build_job(scene, bpy.context)
        square, _ = api.build_job(scene, bpy.context, resolution="1024x1024", render_device="gpu")
        notes = [api.framing_note(auto, scene), api.framing_note(square, scene)]
        scene.render.pixel_aspect_x = 2.0  # anamorphic: 32:9 on screen
        wide, _ = api.build_job(scene, bpy.context)
        try:
            api.build_job(scene, bpy.context, render_device="fast")
            refused = ""
        except api.SubmitError as exc:
            refused = str(exc)
        report(auto=[auto.width, auto.height], notes=notes, device=square.render_device, version=auto.blender_version,
               wide=[wide.width, wide.height], refused=refused)
    """)
    assert result["auto"] == [1344, 768]  # 1.75, the SDXL aspect nearest 16:9
    assert result["notes"] == ["Crops 2 % of the camera frame (left and right)",
                               "Crops 44 % of the camera frame (left and right)"]
    assert result["device"] == "gpu" and result["wide"] == [1536, 640]
    assert result["version"] == "5.0.1"  # the artist's Blender travels with the job
    assert "render_device: 'fast' is not one of auto, gpu, cpu" in result["refused"]


PACK_IMPORTS = """
        import hashlib, shutil
        from pathlib import Path
        from bl_ext.user_default.posefactory.remote.scene.pack import pack_scene

        def lay_out(scene, folder):  # the tree as the pod's store lays it out, here by copying
            for entry in scene.files:
                target = folder / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry.source, target)
            return folder / scene.blend
"""


def test_packing_leaves_the_open_file_untouched_and_packs_without_the_key(blender, tmp_path):
    texture = tmp_path / "texture.png"
    texture.write_bytes(__import__("tests.fixtures.stability_server", fromlist=["make_png"]).make_png(
        8, 8, (200, 10, 10), {}))
    result = blender.run(PACK_IMPORTS + f"""
        secret = "sk-do-not-leak-0123456789"
        preferences.get().api_key = secret
        bpy.ops.mesh.primitive_cube_add()
        image = bpy.data.images.load({str(texture)!r})
        image.use_fake_user = True  # in use, so it is saved (a material would do the same)
        open_path = {str(tmp_path / "artist.blend")!r}
        bpy.ops.wm.save_as_mainfile(filepath=open_path)
        before = hashlib.sha256(Path(open_path).read_bytes()).hexdigest()
        bpy.context.scene.posefactory.prompt = "unsaved edit"   # the artist's unsaved change
        dirty_before = bpy.data.is_dirty
        copy = packing.write_copy(Path({str(tmp_path / "pack")!r}))
        scene = pack_scene(copy, Path({str(tmp_path / "work")!r}), key=packing.scene_key())
        report(path_same=bpy.data.filepath == open_path, dirty_before=dirty_before, dirty_after=bpy.data.is_dirty,
               bytes_same=hashlib.sha256(Path(open_path).read_bytes()).hexdigest() == before,
               key_in_tree=any(secret.encode() in entry.source.read_bytes() for entry in scene.files),
               files=[entry.path for entry in scene.files], scene_key=scene.key)
        pod_blend = lay_out(scene, Path({str(tmp_path / "pod")!r}))
        shutil.move({str(tmp_path)!r} + "/texture.png", {str(tmp_path)!r} + "/moved-away.png")
        bpy.ops.wm.open_mainfile(filepath=str(pod_blend))
        image = bpy.data.images["texture.png"]
        report(packed_images=[i.name for i in bpy.data.images if i.packed_file], texture_found=tuple(image.size) == (8, 8),
               prompt=bpy.context.scene.posefactory.prompt)
    """, env={"STABILITY_API_KEY": "sk-env-key-also-secret"})
    assert result["path_same"] and result["bytes_same"]
    assert result["dirty_before"] and result["dirty_after"]
    assert not result["key_in_tree"]
    assert result["scene_key"] == str(tmp_path / "artist.blend")  # versions of the artist's file share deltas
    # The texture travels as a file of the tree, not embedded in the .blend, and is found there.
    assert result["packed_images"] == [] and result["texture_found"]
    assert sorted(result["files"]) == sorted(["artist.blend", f"_outside_project{tmp_path}/texture.png"])
    assert result["prompt"] == "unsaved edit"  # the copy carries the unsaved state


def test_the_same_scene_packs_to_the_same_bytes_in_every_session(blender, tmp_path, sample_scene):
    texture = tmp_path / "texture.png"
    texture.write_bytes(__import__("tests.fixtures.stability_server", fromlist=["make_png"]).make_png(
        8, 8, (10, 200, 10), {}))
    body = PACK_IMPORTS + f"""
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        bpy.data.images.load({str(texture)!r}).use_fake_user = True
        digests = []
        for n in range(2):
            copy = packing.write_copy(Path({str(tmp_path)!r}) / f"pack-{{os.getpid()}}-{{n}}")
            scene = pack_scene(copy, copy.parent / "work")
            digests.append(scene.digest)
        bpy.ops.wm.open_mainfile(filepath=str(lay_out(scene, Path({str(tmp_path)!r}) / f"pod-{{os.getpid()}}")))
        report(digests=digests, scene=bpy.context.scene.name, camera=bpy.context.scene.camera.name,
               images=[i.name for i in bpy.data.images if i.size[0] > 0])
    """
    first, second = blender.run(body), blender.run(body)
    assert len(set(first["digests"] + second["digests"])) == 1  # within a session and across sessions
    assert first["scene"] == "PoseFactorySample" and first["camera"] and "texture.png" in first["images"]


def test_a_linked_library_travels_as_a_library_and_is_found_without_the_original(blender, tmp_path):
    result = blender.run(PACK_IMPORTS + f"""
        library = Path({str(tmp_path / "props library.blend")!r})
        bpy.ops.mesh.primitive_cube_add()
        bpy.context.active_object.name = "LinkedProp"
        bpy.data.libraries.write(str(library), {{bpy.context.active_object}})
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.ops.object.camera_add()
        with bpy.data.libraries.load(str(library), link=True) as (source, target):
            target.objects = ["LinkedProp"]
        bpy.context.scene.collection.objects.link(target.objects[0])
        linked_before = [o.name for o in bpy.data.objects if o.library]
        copy = packing.write_copy(Path({str(tmp_path / "pack")!r}))
        scene = pack_scene(copy, Path({str(tmp_path / "work")!r}))
        pod_blend = lay_out(scene, Path({str(tmp_path / "pod")!r}))
        library.unlink()  # the pod has only what the tree holds
        bpy.ops.wm.open_mainfile(filepath=str(pod_blend))
        prop = bpy.data.objects.get("LinkedProp")
        report(linked_before=linked_before, files=[entry.path for entry in scene.files],
               libraries=[bpy.path.abspath(lib.filepath) for lib in bpy.data.libraries],
               vertices=len(prop.data.vertices) if prop else 0, linked=prop is not None and prop.library is not None)
    """)
    assert result["linked_before"] == ["LinkedProp"]
    assert result["linked"] and result["vertices"] == 8  # still linked, from the tree's copy of the library
    assert len(result["libraries"]) == 1 and result["libraries"][0].startswith(str(tmp_path / "pod"))
    assert any(path.endswith("props library.blend") for path in result["files"])


def test_operators_refuse_bad_input_with_one_clear_line(blender, tmp_path):
    result = blender.run("""
        errors = {}
        def attempt(name, **kwargs):
            try:
                outcome = bpy.ops.posefactory.render_remote(**kwargs)
                errors[name] = str(outcome)
            except RuntimeError as exc:
                errors[name] = str(exc)
        scene = bpy.context.scene
        for obj in [o for o in bpy.data.objects if o.type == "CAMERA"]:
            bpy.data.objects.remove(obj)
        attempt("no_camera", prompt="x", skip_ai=True)
        bpy.ops.object.camera_add()
        scene.camera = bpy.context.active_object
        attempt("empty_prompt", skip_ai=True)
        attempt("unknown_host", prompt="x", host="mars", skip_ai=True)
        attempt("no_key", prompt="x")
        preferences.get().api_key = "sk-test-key-123456"
        preferences.get().budget_cap_usd = 0.05
        attempt("over_budget", prompt="x", variations=10)
        try:
            api.submit(prompt="x", resolution="512x512", use_ai=False)
        except api.SubmitError as exc:
            errors["bad_size"] = str(exc)
        try:
            api.submit(prompt="x", colour="red")
        except api.SubmitError as exc:
            errors["unknown_option"] = str(exc)
        report(errors=errors, jobs=len(jobs.MANAGER.jobs))
    """)
    errors = result["errors"]
    assert "no active camera" in errors["no_camera"]
    assert "prompt is empty" in errors["empty_prompt"]
    assert "Unknown host 'mars'" in errors["unknown_host"]
    assert "No Stability API key" in errors["no_key"]
    assert "Over budget" in errors["over_budget"]
    assert "512x512 is not an SDXL size" in errors["bad_size"]
    assert "colour" in errors["unknown_option"]
    assert result["jobs"] == 0  # nothing started, nothing spent


def test_render_remote_from_blender_to_the_local_pod_and_back(blender, tmp_path, sample_scene, stability_server):
    result = blender.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        prefs = preferences.get()
        prefs.api_key = {stability_server.api_key!r}
        prefs.api_base_url = {stability_server.base_url!r}
        settings = bpy.context.scene.posefactory
        settings.autosave_path = {str(tmp_path / "autosave")!r}
        outcome = bpy.ops.posefactory.render_remote(prompt="a knight 'in' $(armour)", variations=2, seed=5, host="local",
                                                    render_samples=1)
        tracked = jobs.MANAGER.latest()
        result = jobs.MANAGER.wait(tracked, timeout=240)
        images = [bpy.data.images[name] for name in tracked.image_names]
        report(outcome=list(outcome), status=result.status, error=result.error,
               images=[(i.name, i.get("posefactory_prompt"), i.get("posefactory_seed"), i.get("posefactory_cost_usd"),
                        i.size[:]) for i in images],
               files=[i.filepath for i in images], history=[r.status for r in jobs.MANAGER.history()],
               device=jobs.MANAGER.history()[0].render_device)
    """)
    assert result["outcome"] == ["FINISHED"] and result["status"] == "done", result["error"]
    assert result["device"].startswith("CPU: ") and result["device"].endswith("(fallback)")  # no GPU here
    names = [image[0] for image in result["images"]]
    assert len(names) == 2 and names[0].endswith("v1") and names[1].endswith("v2")
    assert {image[1] for image in result["images"]} == {"a knight 'in' $(armour)"}
    assert [image[2] for image in result["images"]] == [5, 6]
    assert all(image[3] is not None and image[4] == [1024, 1024] for image in result["images"])
    autosaved = sorted(p.name for p in (tmp_path / "autosave").rglob("*.png"))
    assert autosaved == ["ai-render-1.png", "ai-render-2.png"]
    assert result["history"] == ["done"]
    assert png_text(open(result["files"][0], "rb").read())["prompt"] == "a knight 'in' $(armour)"


@pytest.mark.parametrize("transport", TRANSPORTS)  # pipe: how a Windows artist's Blender reaches the pod
def test_python_api_through_the_proxy_sshd(blender, tmp_path, sample_scene, sshd_proxy, transport):
    hosts = sshd_proxy.write_hosts_file(tmp_path / "ssh_hosts.yaml", name="runpod", workspace=str(tmp_path / "pod"),
                                        env={"POSEFACTORY_BPY_PYTHON": sys.executable}, transport=transport)
    result = blender.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        preferences.get().hosts_file = {str(hosts)!r}
        bpy.ops.posefactory.test_connection(host="runpod")
        job = api.submit(prompt="console job", host="runpod", use_ai=False, render_samples=1)
        result = job.wait(timeout=240)
        from bl_ext.user_default.posefactory import operators
        import time
        for _ in range(100):
            jobs.MANAGER.pump()  # what the timer does in the UI
            if not operators.connection_status("runpod").endswith("…"):
                break
            time.sleep(0.1)
        report(status=result.status, error=result.error, images=[i.name for i in job.images],
               connection=operators.connection_status("runpod"),
               transport=api.resolve_host(bpy.context, "runpod").transport)
    """)
    assert result["status"] == "done", result["error"]
    assert result["transport"] == transport
    assert len(result["images"]) == 1  # without the AI step the render itself comes back
    assert result["connection"].startswith("connected")


def test_a_textured_scene_renders_from_blender_and_an_unsaved_pose_tweak_goes_as_a_delta(blender, tmp_path, sshd_proxy,
                                                                                          textured_character):
    hosts = sshd_proxy.write_hosts_file(tmp_path / "ssh_hosts.yaml", name="runpod", workspace=str(tmp_path / "pod"),
                                        env={"POSEFACTORY_BPY_PYTHON": sys.executable})
    result = blender.run(f"""
        import json
        bpy.ops.wm.open_mainfile(filepath={str(textured_character)!r})
        preferences.get().hosts_file = {str(hosts)!r}
        bpy.context.scene.posefactory.autosave = False
        records = []
        for tweak in (0.0, 0.5):
            bpy.data.objects["Rig"].pose.bones["ArmL"].rotation_euler[0] += tweak  # unsaved, as an artist works
            bpy.ops.posefactory.render_remote(prompt="textured", host="runpod", skip_ai=True, render_samples=1)
            tracked = jobs.MANAGER.latest()
            result = jobs.MANAGER.wait(tracked, timeout=240)
            record = json.loads((jobs.MANAGER.records_dir() / (tracked.job_id + ".json")).read_text())
            records.append(dict(status=result.status, error=result.error, scene=record["scene"],
                                render=str(result.raw_render), shown=tracked.scene_summary))
        report(records=records, dirty=bpy.data.is_dirty)
    """)
    first, second = result["records"]
    assert first["status"] == second["status"] == "done", (first["error"], second["error"])
    assert first["scene"]["files"] == 2 and first["shown"].startswith("scene: 2 files, ")  # the panel shows it
    render = __import__("PIL.Image", fromlist=["open"]).open(first["render"]).convert("RGB")
    floor = render.getpixel((render.size[0] // 2, render.size[1] - 5))
    assert all(abs(a - b) < 40 for a, b in zip(floor, TEXTURE_COLOUR, strict=True)), floor
    # The tweak was never saved: the copy carries it, and only its delta moves.
    assert second["scene"]["delta"] is True and 0 < second["scene"]["bytes_moved"] <= 64_000, second["scene"]
    assert result["dirty"]


def test_every_kind_of_dependency_travels_from_blender_with_unsaved_edits(blender, tmp_path, dependency_scene):
    """The add-on packs its copy of the open file: the disk cache Blender finds by the file's
    own name and folder travels too, and the local pod renders with nothing missing."""
    result = blender.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(dependency_scene.blend)!r})
        bpy.context.scene.posefactory.autosave = False
        bpy.data.objects["Screen"].location.z += 0.01  # an unsaved edit
        bpy.ops.posefactory.render_remote(prompt="all kinds", host="local", skip_ai=True, render_samples=1)
        tracked = jobs.MANAGER.latest()
        result = jobs.MANAGER.wait(tracked, timeout=240)
        report(status=result.status, error=result.error, manifest=result.manifest, shown=tracked.scene_summary)
    """)
    assert result["status"] == "done", result["error"]
    assert result["manifest"]["status"] == "done" and not result["manifest"].get("missing_files")
    assert result["shown"].startswith("scene: 13 files, "), result["shown"]


def test_render_remote_through_the_direct_port_with_s3_and_stability(blender, tmp_path, sample_scene, sshd_direct,
                                                                      s3_server, stability_server):
    bucket = s3_server.make_bucket()
    hosts = sshd_direct.write_hosts_file(tmp_path / "ssh_hosts.yaml", name="pod", workspace=str(tmp_path / "pod"),
                                         env={"POSEFACTORY_BPY_PYTHON": sys.executable}, transfer="s3",
                                         storage=s3_server.storage_entry(bucket))
    result = blender.run(f"""
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        prefs = preferences.get()
        prefs.hosts_file = {str(hosts)!r}
        prefs.api_key = {stability_server.api_key!r}
        prefs.api_base_url = {stability_server.base_url!r}
        prefs.storage_access_key_id = "testing-key-id"
        prefs.storage_secret_access_key = "testing-secret-key-1234"
        bpy.context.scene.posefactory.autosave = False
        bpy.ops.posefactory.render_remote(prompt="through R2", host="pod", render_samples=1, seed=9)
        tracked = jobs.MANAGER.latest()
        result = jobs.MANAGER.wait(tracked, timeout=240)
        report(status=result.status, error=result.error, images=tracked.image_names,
               seeds=[bpy.data.images[n]["posefactory_seed"] for n in tracked.image_names])
    """)
    assert result["status"] == "done", result["error"]
    assert len(result["images"]) == 1 and result["seeds"] == [9]
    assert len(stability_server.requests) == 1


def test_a_running_job_is_reattached_when_blender_starts_again(blender, tmp_path, sample_scene, stability_server):
    setup = f"""
        prefs = preferences.get()
        prefs.api_key = {stability_server.api_key!r}
        prefs.api_base_url = {stability_server.base_url!r}
    """
    # First Blender: submit, then vanish while the pod is still rendering.
    first = blender.run(setup + f"""
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        bpy.context.scene.posefactory.autosave = False
        bpy.ops.posefactory.render_remote(prompt="survives a restart", host="local", render_samples=40)
        tracked = jobs.MANAGER.latest()
        import time
        while not tracked.message.startswith("running"):
            assert not tracked.finished.is_set(), tracked.result
            time.sleep(0.05)
            jobs.MANAGER.pump()  # what the timer does in the UI
        report(job_id=tracked.job_id)
        finish()
        os._exit(0)  # gone without cleaning up, as a crash or a closed window would be
    """)
    # Second Blender: what the start-up timer does, then wait for the job it found.
    second = blender.run(setup + """
        count = jobs.MANAGER.reattach_pending()
        tracked = jobs.MANAGER.latest()
        result = jobs.MANAGER.wait(tracked, timeout=240)
        report(count=count, job_id=tracked.job_id, status=result.status, error=result.error,
               images=tracked.image_names)
    """)
    assert second["count"] == 1 and second["job_id"] == first["job_id"]
    assert second["status"] == "done", second["error"]
    assert len(second["images"]) == 1
    assert len(stability_server.requests) == 1  # rendered and paid for once


def test_a_refused_connection_fails_the_job_clearly_and_cancel_stops_a_rendering_job(blender, tmp_path, sample_scene):
    with socket.socket() as probe:  # a port nothing listens on: connecting is refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text(f"dead:\n  host: 127.0.0.1\n  port: {closed_port}\n  user: nobody\n  connect_timeout: 5\n"
                     f"  accept_new_host_keys: true\n")
    result = blender.run(f"""
        import time
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        preferences.get().hosts_file = {str(hosts)!r}
        bpy.context.scene.posefactory.autosave = False
        refused = api.submit(prompt="nobody home", host="dead", use_ai=False).wait(timeout=120)
        bpy.ops.posefactory.render_remote(prompt="stop me", host="local", skip_ai=True, render_samples=4000)
        tracked = jobs.MANAGER.latest()
        while not tracked.message.startswith("running"):
            assert not tracked.finished.is_set(), tracked.result
            time.sleep(0.05)
            jobs.MANAGER.pump()  # what the timer does in the UI
        assert bpy.ops.posefactory.cancel_job() == {{"FINISHED"}}
        started = time.monotonic()
        cancelled = jobs.MANAGER.wait(tracked, timeout=120)
        record = json.loads((jobs.MANAGER.records_dir() / (tracked.job_id + ".json")).read_text())
        report(refused=[refused.status, refused.error], cancelled=[cancelled.status, cancelled.error],
               cancel_s=time.monotonic() - started, record_status=record.get("status"),
               running=len(jobs.MANAGER.active()))
    """)
    status, error = result["refused"]
    # One line naming the host and ssh's own reason.
    assert status == "failed" and "dead" in error and "Connection refused" in error and "\n" not in error, error
    assert result["cancelled"][0] == "cancelled", result["cancelled"]
    assert result["cancel_s"] < 60 and result["running"] == 0
    assert result["record_status"] == "cancelled"


def _results_folder(folder, job_id, numbers, manifest_extra=None):
    from tests.fixtures.stability_server import make_png

    folder.mkdir(parents=True)
    names = []
    for n in numbers:
        (folder / f"ai-render-{n}.png").write_bytes(make_png(8, 8, (n * 40, 0, 0), {"n": str(n)}))
        names.append(f"ai-render-{n}.png")
    manifest = {"job_id": job_id, "prompt": "a \x1b[31mknight", "seed": 4, "images": names,
                "variations": [{"n": n, "seed": 100 + n, "finish_reason": "SUCCESS", "file": f"ai-render-{n}.png"}
                               for n in numbers], **(manifest_extra or {})}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_each_job_is_delivered_in_isolation_and_kept_with_the_file(blender, tmp_path):
    # Three finished jobs reach the timer at once: one whose autosave folder cannot be written,
    # one whose manifest names a file outside its folder, one that is fine.
    _results_folder(tmp_path / "out" / "job-a", "job-a", [1, 3])  # variation 2 was filtered
    _results_folder(tmp_path / "out" / "job-b", "job-b", [1], {"images": ["../job-a/ai-render-1.png"]})
    _results_folder(tmp_path / "out" / "job-c", "job-c", [2])
    (tmp_path / "not-a-folder").write_text("a file where the autosave folder should be")
    result = blender.run(f"""
        from pathlib import Path
        from bl_ext.user_default.posefactory.remote.jobs.pipeline import JobResult
        out = Path({str(tmp_path / "out")!r})
        preferences.get().output_dir = {str(tmp_path / "downloads")!r}
        autosave = {{"job-a": {str(tmp_path / "not-a-folder" / "renders")!r}, "job-b": "", "job-c": "//renders/"}}
        tracked = {{}}
        for job_id in ("job-a", "job-b", "job-c"):
            job = jobs.TrackedJob(job_id=job_id, prompt="p", host="local", autosave_dir=autosave[job_id])
            result = JobResult(job_id=job_id, status="done", output_dir=out / job_id)
            tracked[job_id] = jobs.MANAGER.start(job, lambda r=result: r)
        for job in tracked.values():
            job.finished.wait(10)
        from bl_ext.user_default.posefactory import ui_channel
        interval = ui_channel.tick()  # the timer, once: it must not raise
        images = {{j: [(n, bpy.data.images[n].use_fake_user, bpy.data.images[n]["posefactory_prompt"],
                        bpy.data.images[n]["posefactory_seed"]) for n in t.image_names] for j, t in tracked.items()}}
        report(images=images, errors={{j: t.delivery_error for j, t in tracked.items()}},
               interval=interval, registered=bpy.app.timers.is_registered(ui_channel.tick))
    """)
    images, errors = result["images"], result["errors"]
    # Named by variation number, not position; fake user so saving the .blend keeps them; text cleaned.
    assert images["job-a"] == [["PF job-a v1", True, "a knight", 101], ["PF job-a v3", True, "a knight", 103]]
    assert "autosave failed" in errors["job-a"]
    assert images["job-b"] == [] and "not a plain name" in errors["job-b"]
    assert images["job-c"] == [["PF job-c v2", True, "a knight", 102]] and errors["job-c"] == ""
    # An unsaved file's "//renders/" goes to the downloads folder's autosave, not the process's cwd.
    assert (tmp_path / "downloads" / "autosave" / "renders" / "job-c" / "ai-render-2.png").is_file()
    assert not (tmp_path / "renders").exists()


def test_main_panel_draw_never_raises_nor_builds_a_job(blender, tmp_path):
    bad_cost = tmp_path / "cost.yaml"
    bad_cost.write_text("gpu_usd_per_hour: {A40: .nan}\nimage_pricing: {}\n")
    result = blender.run(f"""
        from pathlib import Path
        from bl_ext.user_default.posefactory import view
        from bl_ext.user_default.posefactory.remote.core import cost
        labels = []
        class Layout:
            def __getattr__(self, name):
                def call(*args, **kwargs):
                    if name == "label":
                        labels.append(kwargs.get("text"))
                    return Layout()
                return call
        made = []
        original = api.new_job_id
        api.new_job_id = lambda: made.append(1) or original()
        bpy.context.scene.posefactory.prompt = "a knight"
        preferences.get().api_key = "sk-test-key-for-the-estimate"
        holder = type("Holder", (), {{"layout": Layout()}})()
        view.refresh_current()  # what the timer does when the settings changed
        for _ in range(3):
            panels.POSEFACTORY_PT_main.draw(holder, bpy.context)
        good = list(labels)
        labels.clear()
        cost.DEFAULT_CONFIG = Path({str(bad_cost)!r})
        api._cost_model = None
        view.refresh(bpy.context.scene, bpy.context, force=True)
        panels.POSEFACTORY_PT_main.draw(holder, bpy.context)
        report(good=good, bad=list(labels), jobs_made=len(made))
    """)
    assert result["jobs_made"] == 0
    assert all(label.startswith("Estimate: $") for label in result["good"]), result["good"]
    assert result["bad"] and "gpu_usd_per_hour.A40" in result["bad"][0]


def test_backend_selector_builds_each_backends_job_and_control_images_come_back(blender, tmp_path):
    from tests.fixtures.stability_server import make_png

    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("ai-render-1.png", "control-openpose.png", "control-depth.png"):
        (folder / name).write_bytes(make_png(64, 64, (1, 2, 3), {}))
    (folder / "manifest.json").write_text('{"job_id": "job-1", "images": ["ai-render-1.png"]}')
    result = blender.run(f"""
        from pathlib import Path
        from bl_ext.user_default.posefactory import results
        scene = bpy.context.scene
        bpy.ops.object.camera_add()
        scene.camera = bpy.context.active_object
        settings = scene.posefactory
        settings.prompt, settings.backend, settings.control, settings.depth_scale = "knight", "diffusers", "openpose+depth", 0.5
        job, _ = api.build_job(scene, bpy.context)
        estimate = api.estimate_job(job, None)
        settings.backend, settings.control_strength = "stability-structure", 0.4
        try:
            api.build_job(scene, bpy.context)
            refused = ""
        except api.SubmitError as exc:
            refused = str(exc)
        overridden, _ = api.build_job(scene, bpy.context, backend="diffusers", control="depth")
        results.import_folder(Path({str(folder)!r}), "job-1")
        controls = sorted([image.name, image["posefactory_control"]] for image in bpy.data.images
                          if "posefactory_control" in image)
        report(job=[job.backend, job.control, job.depth_scale], refused=refused,
               overridden=[overridden.backend, overridden.control], controls=controls,
               estimate=[estimate.backend, estimate.images, estimate.gpu_seconds > 60])
    """)
    assert result["job"] == ["diffusers", "openpose+depth", 0.5]
    assert "No Stability API key for backend stability-structure" in result["refused"]
    assert result["overridden"] == ["diffusers", "depth"]
    assert result["controls"] == [["PF job-1 depth", "depth"], ["PF job-1 openpose", "openpose"]]
    assert result["estimate"] == ["diffusers", 0, True]  # GPU time only: render, overhead and its denoising steps


def test_batch_panel_picks_poses_counts_caps_and_brings_back_named_images(blender, tmp_path, sample_scene,
                                                                          stability_server):
    result = blender.run(f"""
        from bl_ext.user_default.posefactory import batch, results
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        prefs = preferences.get()
        prefs.api_key = {stability_server.api_key!r}
        prefs.api_base_url = {stability_server.base_url!r}
        scene = bpy.context.scene
        settings = scene.posefactory
        settings.prompt = "a knight"
        settings.pose_source = "PICKED"
        bpy.ops.posefactory.refresh_poses()
        listed = [(p.name, p.kind) for p in settings.poses]
        for pose in settings.poses:
            pose.enabled = pose.name in ("Wave", "T-Pose")
        settings.pose_source, settings.camera_source = "MARKERS", "COLLECTION"
        settings.camera_collection = bpy.data.collections["Cameras"]
        job, _ = api.build_job(scene, bpy.context, variations=2)
        markers = (job.poses, job.cameras, batch.summary(batch.items_of(scene, job.poses, job.cameras), 2),
                   api.estimate_job(job, None, items=6).images)
        prefs.budget_cap_usd = 0.05
        try:
            api.build_job(scene, bpy.context, variations=2)
            over = ""
        except api.SubmitError as exc:
            over = str(exc)
        prefs.budget_cap_usd = 2.0
        settings.camera_collection = None
        try:
            api.build_job(scene, bpy.context)
            empty = ""
        except api.SubmitError as exc:
            empty = str(exc)
        settings.pose_source, settings.camera_source = "PICKED", "ACTIVE"
        outcome = bpy.ops.posefactory.render_remote(variations=1, seed=5, host="local", render_samples=1)
        tracked = jobs.MANAGER.latest()
        result = jobs.MANAGER.wait(tracked, timeout=400)
        record = jobs.MANAGER.history()[0]
        report(listed=listed, markers=markers, over=over, empty=empty, outcome=list(outcome), status=result.status,
               error=result.error, names=tracked.image_names, thumbnail=str(results.thumbnail_source(record)),
               message=tracked.message)
    """)
    assert result["listed"] == [["Idle", "Marker"], ["Wave", "Marker"], ["Cheer", "Marker"],
                                ["Bow", "Pose Asset"], ["Kick", "Pose Asset"], ["T-Pose", "Pose Asset"]]
    assert result["markers"] == ["markers", "collection:Cameras",
                                 "3 poses × 2 cameras × 2 variations = 12 images", 12]
    assert "Over budget: this job (6 item(s))" in result["over"]
    assert result["empty"] == "Batch: cameras: pick a collection of cameras"
    assert result["outcome"] == ["FINISHED"] and result["status"] == "done", result["error"]
    job_id = result["names"][0].split()[1]
    assert result["names"] == [f"PF {job_id} Wave Camera v1", f"PF {job_id} T-Pose Camera v1"]
    assert result["thumbnail"].endswith("contact-sheet.png")
    assert len(stability_server.requests) == 2
