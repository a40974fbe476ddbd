"""The add-on's job lifecycle on Blender's side (issue "One job lifecycle…"): one
typed worker→UI channel with one persistent timer that survives File ▸ Open,
panels whose draw only reads, one estimate for the add-on, dashboard and CLI,
and backends that draw their own settings."""
from __future__ import annotations

import contextlib
import io

from remote.core.config import HostConfig
from remote.core.estimate import EXPECTED_RENDER_S, estimate
from remote.core.jobspec import RenderJob


def test_one_persistent_timer_survives_file_open_and_applies_posted_messages(blender, tmp_path):
    saved = tmp_path / "other.blend"
    result = blender.run(f"""
        import threading
        from bl_ext.user_default.posefactory import pod_state, ui_channel
        registered = [bpy.app.timers.is_registered(ui_channel.tick)]
        bpy.ops.wm.save_as_mainfile(filepath={str(saved)!r})
        bpy.ops.wm.read_homefile(use_empty=True)
        registered.append(bpy.app.timers.is_registered(ui_channel.tick))
        bpy.ops.wm.open_mainfile(filepath={str(saved)!r})
        registered.append(bpy.app.timers.is_registered(ui_channel.tick))
        # Even if Blender dropped it, the load_post handler re-arms it.
        bpy.app.timers.unregister(ui_channel.tick)
        bpy.ops.wm.open_mainfile(filepath={str(saved)!r})
        registered.append(bpy.app.timers.is_registered(ui_channel.tick))
        # A worker thread posts; the timer, once, applies it.
        worker = threading.Thread(target=lambda: (
            ui_channel.post(ui_channel.PodUpdated("gpu", "refresh", info={{"state": "RUNNING"}})),
            ui_channel.post(ui_channel.ConnectionChecked("local", "connected: test"))))
        worker.start(); worker.join()
        interval = ui_channel.tick()
        timers = [name for name in ("tick", "poll") if hasattr(jobs, name) or hasattr(pod_state, name)]
        report(registered=registered, interval=interval, pod=pod_state.VIEWS["gpu"].info,
               check=jobs.MANAGER.connection_checks.get("local"), other_timers=timers)
    """)
    assert result["registered"] == [True, True, True, True]
    assert result["interval"] > 0
    assert result["pod"] == {"state": "RUNNING"} and result["check"] == "connected: test"
    assert result["other_timers"] == []  # jobs and pod_state have no timer of their own


def test_panel_draw_only_reads_what_the_timer_computed(blender):
    result = blender.run("""
        from bl_ext.user_default.posefactory import view
        calls = []
        class Layout:
            def __getattr__(self, name):
                def call(*args, **kwargs):
                    if name == "label":
                        calls.append(kwargs.get("text"))
                    return Layout()
                return call
        made, built = [], []
        original = api.new_job_id
        api.new_job_id = lambda: made.append(1) or original()
        original_build = api.build_job
        api.build_job = lambda *a, **k: built.append(1) or original_build(*a, **k)
        settings = bpy.context.scene.posefactory
        settings.prompt = "a knight"
        settings.use_ai = False
        settings.seed = 0  # a random seed for each job
        bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y = 1920, 1080
        holder = type("Holder", (), {"layout": Layout()})()
        before = list(calls)
        panels.POSEFACTORY_PT_output.draw(holder, bpy.context)
        unset = [c for c in calls if c and c.startswith("Crops")]
        changed = [view.refresh_current()]
        changed.append(view.refresh_current())  # nothing changed since: not recomputed
        shown = []
        for _ in range(5):
            calls.clear()
            for name in ("POSEFACTORY_PT_main", "POSEFACTORY_PT_output", "POSEFACTORY_PT_batch"):
                getattr(panels, name).draw(holder, bpy.context)
            shown.append(list(calls))
        seed = settings.seed
        settings.resolution = "1024x1024"
        changed.append(view.refresh_current())
        calls.clear()
        panels.POSEFACTORY_PT_output.draw(holder, bpy.context)
        report(unset=unset, changed=changed, shown=shown, made=len(made), built=len(built),
               seed_same=settings.seed == seed, after=list(calls))
    """)
    assert result["unset"] == []  # before the timer computed it, draw shows nothing it would have to compute
    assert result["changed"] == [True, False, True]
    assert result["made"] == 0 and result["built"] == 0 and result["seed_same"]
    assert all(shown == result["shown"][0] for shown in result["shown"])
    assert "Crops 2 % of the camera frame (left and right)" in result["shown"][0]
    assert any(label.startswith("Estimate: $") for label in result["shown"][0])
    assert "Crops 44 % of the camera frame (left and right)" in result["after"]


def test_each_backend_draws_its_own_settings(blender):
    result = blender.run("""
        from bl_ext.user_default.posefactory import backends
        shown = {}
        for backend in backends.BACKENDS:
            props = []
            class Layout:
                def __getattr__(self, name):
                    def call(*args, **kwargs):
                        if name == "prop":
                            props.append(args[1])
                        return Layout()
                    return call
            settings = bpy.context.scene.posefactory
            settings.backend = backend
            settings.control = "openpose+depth"
            backends.draw(Layout(), settings)
            shown[backend] = sorted(props)
        items = [i.identifier for i in bpy.context.scene.posefactory.bl_rna.properties["backend"].enum_items]
        report(shown=shown, owned={b: sorted(backends.own_settings(b)) for b in backends.BACKENDS}, items=items)
    """)
    assert sorted(result["shown"]) == sorted(result["items"])  # every backend of the menu has an entry
    assert result["shown"] == result["owned"]  # each draws exactly the settings it owns
    assert result["shown"]["diffusers"] == ["control", "depth_scale", "openpose_scale"]


def test_the_addon_dashboard_and_cli_estimate_the_same_job_alike(blender):
    from remote import cli
    from remote.dashboard import submit

    job = RenderJob(blend_path="-", output_dir="-", prompt="-", steps=30, variations=4, backend="stability")
    expected = estimate(job, None)
    assert expected.gpu_seconds >= EXPECTED_RENDER_S
    dashboard = submit.estimate(job, HostConfig(name="local"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["estimate", "--steps", "30", "--batch", "4", "--backend", "stability"]) == 0
    result = blender.run("""
        from bl_ext.user_default.posefactory.remote.core.jobspec import RenderJob
        job = RenderJob(blend_path="-", output_dir="-", prompt="-", steps=30, variations=4, backend="stability")
        cost = api.estimate_job(job, None)
        report(total=cost.total_usd, gpu=cost.gpu_seconds)
    """)
    assert dashboard.total_usd == expected.total_usd
    assert f"${expected.total_usd:.4f}" in out.getvalue()
    assert result["total"] == expected.total_usd and result["gpu"] == expected.gpu_seconds
