"""Pose batches end to end on real bpy scenes and a real pod job (the built-in `local` host, and
a pod behind the RunPod-style proxy sshd): hostile marker names are delivered and reused by a
re-submit, and a settled batch re-attached twice lists the same images both times with one
ledger line."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from remote.core.batch_spec import item_name, unique_names
from remote.core.config import data_dir
from remote.jobs.pipeline import reattach
from remote.jobs.state import JobRecord
from tests.test_pipeline_e2e import Recorder, data, hosts_file, make_job, submit  # noqa: F401 (data: the fixture)

pytestmark = pytest.mark.usefixtures("data")  # a data dir of the test's own

HOSTILE_MARKERS = ["Jump...high", "\x1b[31mRed", "Wave\u202e"]

RENAME_MARKERS = textwrap.dedent("""
    import json, sys
    import bpy
    bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
    names = json.loads(sys.argv[3])
    markers = sorted(bpy.context.scene.timeline_markers, key=lambda m: m.frame)
    assert len(markers) >= len(names), [m.name for m in markers]
    for marker in markers[len(names):]:
        bpy.context.scene.timeline_markers.remove(marker)
    for marker, name in zip(markers, names):
        marker.name = name
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])
""")


@pytest.fixture(scope="module")
def hostile_scene(pose_scene, tmp_path_factory) -> Path:
    """The pose scene with its timeline markers (Idle, Wave, Cheer) renamed to :data:`HOSTILE_MARKERS`."""
    path = tmp_path_factory.mktemp("hostile-scene") / "hostile.blend"
    script = path.with_name("rename_markers.py")
    script.write_text(RENAME_MARKERS)
    completed = subprocess.run([sys.executable, str(script), str(pose_scene), str(path), json.dumps(HOSTILE_MARKERS)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return path


def ledger_lines() -> list[dict]:
    path = data_dir() / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def pod_jobs(workspace: Path) -> set[str]:
    """The jobs on the pod: each has its folder with a job.json under the pod's workspace."""
    return {p.parent.name for p in workspace.rglob("job.json")} if workspace.is_dir() else set()


@pytest.fixture(params=["local", "proxy"])
def pod(request, tmp_path, data):  # noqa: F811 (data: the fixture)
    """(host, hosts file, pod workspace): the built-in local host, or a pod behind the RunPod-style proxy sshd."""
    if request.param == "local":
        return "local", None, data / "local-pod" / "workspace"
    server = request.getfixturevalue("sshd_proxy")
    return "runpod", hosts_file(tmp_path, server, "runpod"), tmp_path / "pod-ws"


def test_hostile_marker_names_are_delivered_and_a_resubmit_reuses_every_item(tmp_path, hostile_scene, pod):
    host, hosts, workspace = pod
    expected = unique_names([item_name(m, None) for m in HOSTILE_MARKERS])
    assert expected == ["Jump.high", "31mRed", "Wave"]  # dots collapsed, the escape and the override dropped
    job = make_job(batch=1, poses="markers")
    result = submit(job, hostile_scene, host, hosts, tmp_path)
    assert result.status == "done", result.error
    items = result.manifest["items"]
    assert len(items) == len(HOSTILE_MARKERS)
    assert [i["name"] for i in items] == expected and {i["status"] for i in items} == {"done"}
    for name in expected:
        assert (result.output_dir / name / "render.png").is_file(), name
    for path in result.output_dir.rglob("*"):  # nothing escaped to a name with control or bidi characters
        assert path.name.isascii() and path.name.isprintable(), path
    assert JobRecord.load(tmp_path / "record.json").items_done == expected
    first_lines = ledger_lines()
    assert [line["job_id"] for line in first_lines].count(result.job_id) == 1
    pod_before = pod_jobs(workspace)
    assert result.job_id in pod_before

    # The same job again: every item is reused; nothing is uploaded or rendered on the pod, and it costs $0.
    again = Recorder()
    second = submit(make_job(batch=1, poses="markers"), hostile_scene, host, hosts, tmp_path, again,
                    record=tmp_path / "record2.json")
    assert second.status == "done", second.error
    assert [i["name"] for i in second.manifest["items"]] == expected
    assert [i["status"] for i in second.manifest["items"]] == ["reused"] * len(expected)
    assert second.cost_usd == 0
    assert not again.messages("uploading") and not again.messages("connecting")
    assert pod_jobs(workspace) == pod_before  # no new job on the pod
    for name in expected:
        assert (second.output_dir / name / "render.png").is_file(), name
    [line] = [line for line in ledger_lines() if line["job_id"] == second.job_id]
    assert line["cost_usd"] == 0 and line["items_reused"] == len(expected)


def test_a_settled_batch_reattached_twice_lists_its_images_both_times(tmp_path, pose_scene, stability_server, pod):
    host, hosts, _ = pod
    job = make_job(stability_server, batch=1, poses="markers")
    result = submit(job, pose_scene, host, hosts, tmp_path, api_key=stability_server.api_key)
    assert result.status == "done", result.error
    assert len(result.images) == 3
    paid = len(stability_server.requests)

    record = tmp_path / "record.json"
    first = reattach(record, progress=Recorder(), cancel=threading.Event())
    second = reattach(record, progress=Recorder(), cancel=threading.Event())
    for again in (first, second):
        assert again.status == "done", again.error
        assert again.job_id == result.job_id
        assert again.images, "a re-attached batch lists no images"
        for image in again.images:
            relative = image.relative_to(result.output_dir)
            assert len(relative.parts) == 2 and image.is_file(), image  # <item>/<file>
    assert first.images == second.images == result.images
    assert len(stability_server.requests) == paid  # nothing rendered or paid again
    assert [line["job_id"] for line in ledger_lines()].count(result.job_id) == 1
