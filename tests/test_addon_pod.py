"""The Remote panel's pod box in real Blender: state, $/h, uptime, Start / Stop,
all through worker threads and the one channel the timer drains; against the
REST v2 stand-in, without the runpod SDK (Blender's Python cannot have it)."""
from __future__ import annotations

import yaml


def test_remote_panel_shows_starts_and_stops_the_pod(blender, tmp_path, runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", cost_per_hr=0.44, boot_s=0.2)
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text(yaml.safe_dump({"gpu": {"runpod_pod_id": "abc123", "idle_stop_minutes": 7.5},
                                     "plain": {"host": "example.org"}}))
    result = blender.run(f"""
        import sys, time
        sys.modules["runpod"] = None  # as in a user's Blender: the SDK is not there
        from bl_ext.user_default.posefactory import pod_state
        preferences.get().hosts_file = {str(hosts)!r}
        settings = bpy.context.scene.posefactory
        settings.host = "plain"
        polls = {{"plain": bpy.ops.posefactory.pod_start.poll()}}
        settings.host = "gpu"
        polls["gpu"] = bpy.ops.posefactory.pod_start.poll()

        def settle():
            deadline = time.time() + 60
            while time.time() < deadline:
                pod_state.drain()  # what the timer does on the main thread
                view = pod_state.VIEWS.get("gpu")
                if view is not None and view.busy is None and view.updated_at:
                    return view
                time.sleep(0.05)
            raise AssertionError("no answer from the worker thread")

        seen = []
        for op in ("pod_refresh", "pod_start", "pod_stop"):
            assert getattr(bpy.ops.posefactory, op)() == {{"FINISHED"}}
            busy = pod_state.VIEWS["gpu"].busy
            view = settle()
            seen.append([op, busy, view.info.get("state"), view.info.get("cost_per_hr"), view.error])
            pod_state.VIEWS["gpu"].updated_at = 0  # the next settle() waits for a fresh answer

        labels.clear()
        holder = type("Holder", (), {{"layout": Layout()}})()
        bpy.types.POSEFACTORY_PT_remote.draw(holder, bpy.context)
        report(polls=polls, seen=seen, labels=labels)
    """)
    assert result["polls"] == {"plain": False, "gpu": True}
    refresh, start, stop = result["seen"]
    assert refresh == ["pod_refresh", "refresh", "EXITED", 0.0, None]  # a stopped pod costs no compute
    assert start[1:4] == ["start", "RUNNING", 0.44] and start[4] is None
    assert stop[1:3] == ["stop", "EXITED"]
    assert pod.events == ["start", "stop"]
    assert "Pod abc123: EXITED" in result["labels"] and "Auto-stop after 7.5 idle min" in result["labels"]
    assert any(label.startswith("$0.000/h, up 0m 00s, 1× NVIDIA A40") for label in result["labels"])


def test_remote_panel_shows_a_refused_key_as_one_line(blender, tmp_path, runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022)
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text(yaml.safe_dump({"gpu": {"runpod_pod_id": "abc123"}}))
    result = blender.run(f"""
        import sys, time
        sys.modules["runpod"] = None
        from bl_ext.user_default.posefactory import pod_state
        preferences.get().hosts_file = {str(hosts)!r}
        bpy.context.scene.posefactory.host = "gpu"
        bpy.ops.posefactory.pod_start()
        deadline = time.time() + 60
        while time.time() < deadline and not pod_state.drain():
            time.sleep(0.05)
        report(error=pod_state.VIEWS["gpu"].error)
    """, env={"RUNPOD_API_KEY": "rp-not-the-key"})
    assert result["error"].startswith("RunPod refused the API key (401 Unauthorized)")
    assert "rp-not-the-key" not in result["error"]


def test_refresh_stops_a_pod_the_laptop_sees_idle_past_its_limit(blender, tmp_path, runpod_api, sshd_direct):
    import getpass
    import os
    import time
    from pathlib import Path

    pod = runpod_api.add_pod("abc123", ssh_port=sshd_direct.port, status="RUNNING", cost_per_hr=0.4)
    pod.started_at -= 300  # up for 5 minutes, past the 0.5 minute limit
    workspace = tmp_path / "pod-ws"
    (workspace / "posefactory").mkdir(parents=True)
    os.symlink(Path(__file__).resolve().parent.parent / "pod_setup", workspace / "posefactory" / "pod_setup")
    (workspace / "jobs" / "old-job").mkdir(parents=True)
    (workspace / "jobs" / "old-job" / "state").write_text("done\n")
    old = time.time() - 600
    os.utime(workspace / "jobs" / "old-job" / "state", (old, old))
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text(yaml.safe_dump({"gpu": {
        "runpod_pod_id": "abc123", "idle_stop_minutes": 0.5, "user": getpass.getuser(),
        "identity_file": sshd_direct.identity_file, "known_hosts": sshd_direct.known_hosts,
        "workspace": str(workspace)}}))
    result = blender.run(f"""
        import sys, time
        sys.modules["runpod"] = None
        from bl_ext.user_default.posefactory import pod_state
        preferences.get().hosts_file = {str(hosts)!r}
        bpy.context.scene.posefactory.host = "gpu"
        bpy.ops.posefactory.pod_refresh()
        deadline = time.time() + 120
        while time.time() < deadline and not pod_state.drain():
            time.sleep(0.05)
        view = pod_state.VIEWS["gpu"]
        report(state=view.info.get("state"), idle_check=view.info.get("idle_check"), error=view.error)
    """)
    assert result == {"state": "EXITED", "idle_check": "stopped (idle past the limit)", "error": None}
    assert pod.events == ["stop"]
