"""Create Pod and Terminate Pod in real Blender: the key from the preferences (never in a .blend, the
log or a report), the request checked before anything is spent, the GPU catalog in the dialog, and
from a key to images and back to nothing against the RunPod v2 stand-in (its created pods real sshds)."""
from __future__ import annotations

import textwrap

import yaml

from remote.core.config import created_hosts_file
from tests.fixtures.runpod_v2_standin import VALID_KEY

# Prefixed to the scripts: what the channel's timer does on the main thread, until `done()` holds.
HELPERS = """
import time
from bl_ext.user_default.posefactory import host_lookup, pod_catalog, pod_create, pod_state, ui_channel

def settle(done, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        pod_state.drain()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("no answer from the worker thread")

def attempt(**kwargs):
    try:
        return str(sorted(bpy.ops.posefactory.pod_create(**kwargs)))
    except RuntimeError as exc:  # an ERROR report: Blender raises it with the report's text
        return str(exc)

"""


def script(body: str) -> str:
    return HELPERS + textwrap.dedent(body)


def test_without_a_key_create_is_refused_in_one_line_and_asks_runpod_nothing(blender, runpod_api):
    result = blender.run(script("""
        outcome = attempt(max_price=0.5, gpu_id="NVIDIA A40")
        reports = []
        class Invoker:  # the dialog's invoke, as a click runs it (background Blender runs execute only)
            cloud, gpu_count, max_price = "SECURE", 1, 0.5
            def report(self, kind, text):
                reports.append([sorted(kind), text])
        invoked = bpy.types.POSEFACTORY_OT_pod_create.invoke(Invoker(), bpy.context, None)
        time.sleep(0.5)
        report(outcome=outcome, invoked=sorted(invoked), reports=reports, busy=pod_create.CREATE.busy,
               fetching=pod_catalog.CATALOG.loading, messages=pod_state.drain())
    """), env={"RUNPOD_API_KEY": ""})  # an empty variable counts as unset
    assert result["outcome"].startswith("Error: No RunPod API key: set RUNPOD_API_KEY or the RunPod key in Preferences")
    assert len(result["outcome"].strip().splitlines()) == 1
    assert result["invoked"] == ["CANCELLED"] and result["reports"][0][0] == ["ERROR"]
    assert result["reports"][0][1].startswith("No RunPod API key")
    assert (result["busy"], result["fetching"], result["messages"]) == (False, False, 0)
    assert runpod_api.requests == []  # nothing asked, nothing spent


def test_bad_requests_and_a_ceiling_under_every_price_are_one_line_naming_alternatives(blender, runpod_api):
    result = blender.run(script("""
        outcomes = {"workspace": attempt(max_price=0.5, workspace="relative/path")}  # refused on the main thread
        def create(**kwargs):
            outcome = attempt(**kwargs)
            settle(lambda: not pod_create.CREATE.busy)
            return [outcome, pod_create.CREATE.error, pod_create.CREATE.lines]
        outcomes["nothing_fits"] = create(max_price=0.1)
        outcomes["over_the_ceiling"] = create(max_price=0.5, gpu_id="NVIDIA L40S")
        outcomes["unavailable"] = create(max_price=5.0, gpu_id="NVIDIA GeForce RTX 4090")
        report(outcomes=outcomes, host=bpy.context.scene.posefactory.host)
    """))
    outcomes = result["outcomes"]
    assert outcomes["workspace"].startswith("Error: Create Pod: workspace 'relative/path': an absolute path")
    outcome, error, _ = outcomes["nothing_fits"]
    assert outcome == "['FINISHED']"
    assert error.startswith("no GPU available in SECURE at or under $0.10/h for 1 GPU(s); raise the $/h ceiling")
    assert "cheapest available: NVIDIA A40 ($0.44/h), NVIDIA L40S ($0.86/h), NVIDIA H100 80GB HBM3 ($2.99/h)" in error
    _, error, _ = outcomes["over_the_ceiling"]
    assert error.startswith("no NVIDIA L40S for $0.50/h in SECURE: NVIDIA L40S ($0.86/h, low), over the ceiling")
    assert error.endswith("available at or under the ceiling: NVIDIA A40 ($0.44/h, high)")
    assert "not available now" in outcomes["unavailable"][1]
    assert all("\n" not in outcome[1] for outcome in list(outcomes.values())[1:])
    assert runpod_api.calls("POST", "/v2/pods") == [] and result["host"] == "local"


def test_the_dialog_lists_the_catalog_read_with_the_preferences_key(blender, runpod_api):
    result = blender.run(script(f"""
        preferences.get().runpod_api_key = {VALID_KEY!r}
        class Dialog:  # what the dialog's draw reads: its layout and properties
            layout = Layout()
            max_price, gpu_count = 0.5, 1
        assert preferences.runpod_environment()
        pod_catalog.fetch("SECURE", 1, 0.5)
        bpy.types.POSEFACTORY_OT_pod_create.draw(Dialog(), bpy.context)
        while_loading = list(labels)
        settle(lambda: not pod_catalog.CATALOG.loading)
        labels.clear()
        bpy.types.POSEFACTORY_OT_pod_create.draw(Dialog(), bpy.context)
        search = pod_catalog.gpu_search(Dialog(), bpy.context, "l40")
        report(while_loading=while_loading, labels=labels, search=search, error=pod_catalog.CATALOG.error)
    """), env={"RUNPOD_API_KEY": ""})
    assert "Refreshing the GPU catalog…" in result["while_loading"] and result["error"] is None
    rows = [label for label in result["labels"] if " GB: $" in label]
    assert rows == ["A40 (NVIDIA A40), 48 GB: $0.44/h for 1, high",  # what fits first, then by price
                    "RTX 4090 (NVIDIA GeForce RTX 4090), 24 GB: $0.69/h for 1, none  unavailable",
                    "L40S (NVIDIA L40S), 48 GB: $0.86/h for 1, low  over the ceiling",
                    "H100 SXM (NVIDIA H100 80GB HBM3), 80 GB: $2.99/h for 1, medium  over the ceiling"]
    assert result["search"] == [["NVIDIA L40S", rows[2]]]
    (call,) = runpod_api.calls("GET", "/v2/catalog/gpus")  # made with the key from the preferences
    assert call["query"]["include"] == "AVAILABILITY"


def test_the_key_is_never_in_the_blend_the_log_nor_a_report(blender, runpod_api, tmp_path):
    saved, printed = tmp_path / "saved.blend", tmp_path / "printed.txt"
    result = blender.run(script(f"""
        preferences.get().runpod_api_key = {VALID_KEY!r}
        out = open({str(printed)!r}, "w")
        kept = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)  # every report Blender prints, and whatever else is printed
        os.dup2(out.fileno(), 2)
        try:
            outcome = attempt(max_price=0.1)
            settle(lambda: not pod_create.CREATE.busy)
            error = pod_create.CREATE.error
            panel = type("Panel", (), {{"layout": Layout()}})()
            bpy.types.POSEFACTORY_PT_remote.draw(panel, bpy.context)
            bpy.ops.wm.save_as_mainfile(filepath={str(saved)!r})
        finally:
            import ctypes
            sys.stdout.flush(); sys.stderr.flush(); ctypes.CDLL(None).fflush(None)  # Blender's C stdio too
            os.dup2(kept[0], 1); os.dup2(kept[1], 2)
            out.close()
        from bl_ext.user_default.posefactory.remote.core.logs import log_path
        report(outcome=outcome, error=error, labels=labels, log=str(log_path()))
    """), env={"RUNPOD_API_KEY": ""})
    assert result["outcome"] == "['FINISHED']" and result["error"].startswith("no GPU available")
    assert any(label.startswith("no GPU available") for label in result["labels"])  # the Remote panel shows it
    log = open(result["log"], "rb").read()
    assert b"Create Pod failed: no GPU available" in log  # the log was written: the key is not in it
    printed_text = printed.read_bytes()
    assert b"Creating a RunPod pod at up to $0.10/h" in printed_text
    for name, data in {"blend": saved.read_bytes(), "log": log, "printed": printed_text,
                       "reported": repr(result).encode()}.items():
        assert VALID_KEY.encode() not in data, name
    assert runpod_api.calls("GET", "/v2/catalog/gpus")  # the key did reach RunPod, from the preferences


def test_terminate_is_only_for_created_pods(blender, tmp_path, runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022)
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text(yaml.safe_dump({"gpu": {"runpod_pod_id": "abc123"}}))
    result = blender.run(script(f"""
        preferences.get().hosts_file = {str(hosts)!r}
        polls = {{"local": bpy.ops.posefactory.pod_terminate.poll()}}
        bpy.context.scene.posefactory.host = "gpu"
        polls["hand-written pod"] = bpy.ops.posefactory.pod_terminate.poll()
        report(polls=polls)
    """))
    assert result["polls"] == {"local": False, "hand-written pod": False}
    assert runpod_api.actions("abc123") == []


def test_from_a_key_in_the_preferences_to_images_and_back_to_nothing(blender, tmp_path, sample_scene, runpod_pods,
                                                                      user_config_dir):
    api = runpod_pods
    workspace = tmp_path / "pod-ws"
    result = blender.run(script(f"""
        bpy.ops.wm.open_mainfile(filepath={str(sample_scene)!r})
        preferences.get().runpod_api_key = {VALID_KEY!r}
        settings = bpy.context.scene.posefactory
        seen = {{"create": attempt(max_price=0.5, gpu_id="NVIDIA A40", workspace={str(workspace)!r}, volume_gb=20)}}
        settle(lambda: not pod_create.CREATE.busy, timeout=240)
        seen.update(error=pod_create.CREATE.error, lines=pod_create.CREATE.lines, host=settings.host,
                    hosts=host_lookup.host_names(bpy.context))
        labels.clear()
        bpy.types.POSEFACTORY_PT_remote.draw(type("Panel", (), {{"layout": Layout()}})(), bpy.context)
        seen["panel"] = list(labels)
        seen["terminate_poll"] = bpy.ops.posefactory.pod_terminate.poll()

        def render():
            job = api.submit(prompt="a knight", use_ai=False, render_samples=1)
            result = job.wait(timeout=240)
            return [result.status, result.error, len(job.images), job.tracked.host]

        def pod(action):
            assert getattr(bpy.ops.posefactory, action)() == {{"FINISHED"}}
            settle(lambda: pod_state.VIEWS.get(settings.host) is None or pod_state.VIEWS[settings.host].busy is None,
                   timeout=120)
            view = pod_state.VIEWS.get(settings.host)
            return view and [view.info.get("state"), view.error]

        seen["render1"] = render()
        seen["stop"] = pod("pod_stop")
        seen["start"] = pod("pod_start")
        seen["render2"] = render()
        host = settings.host
        seen["terminate"] = pod("pod_terminate")
        seen.update(after=[settings.host, host in host_lookup.host_names(bpy.context), host in pod_state.VIEWS,
                           pod_create.CREATE.lines])
        report(**seen)
    """), env={"RUNPOD_API_KEY": "", "XDG_CONFIG_HOME": str(user_config_dir.parent)}, timeout=600)
    (pod,) = api.pods.values()
    assert result["create"] == "['FINISHED']" and result["error"] is None, result
    assert result["host"] == "posefactory-a40" and "posefactory-a40" in result["hosts"]
    assert result["lines"][-1].startswith(f"posefactory-a40 is ready: pod {pod.id}, $0.440/h")
    assert any(label.startswith(f"Pod {pod.id}: ") for label in result["panel"]) and result["terminate_poll"]
    body = api.calls("POST", "/v2/pods")[0]["body"]
    assert body["env"]["PUBLIC_KEY"].startswith("ssh-ed25519 ") and body["mounts"]["persistent"]["path"] == str(workspace)
    assert result["render1"] == ["done", None, 1, "posefactory-a40"]
    assert result["stop"] == ["EXITED", None] and result["start"] == ["RUNNING", None]
    assert result["render2"] == ["done", None, 1, "posefactory-a40"]
    assert result["terminate"] is None  # the pod's view is gone with it
    assert result["after"] == ["local", False, False, [f"terminated {pod.id} (posefactory-a40); removed host posefactory-a40"]]
    assert pod.status == "TERMINATED" and pod.events == ["create", "stop", "start", "terminate"]
    assert "posefactory-a40" not in (created_hosts_file().read_text() if created_hosts_file().exists() else "")
