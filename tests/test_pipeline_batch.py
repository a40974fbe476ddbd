"""Pose batches end to end, on real bpy scenes and real pod jobs (the built-in `local` host, and a
pod behind the RunPod-style proxy sshd with inline transfer): checked against the scene before
upload, items streamed back while the batch renders, kept across a dropped connection and a cancel,
never rendered or paid for twice; hostile marker names delivered and reused by a re-submit; a
settled batch re-attached twice lists the same images both times with one ledger line."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from remote.core.batch_spec import item_name, unique_names
from remote.core.config import data_dir
from remote.jobs.pipeline import reattach, run_job
from remote.jobs.state import JobRecord
from tests.test_pipeline_e2e import Recorder, data, hosts_file, make_job, submit  # noqa: F401 (data: the fixture)

pytestmark = pytest.mark.usefixtures("data")  # a data dir of the test's own

MARKERS = ["Idle", "Wave", "Cheer"]
SIX = [f"{p}--{c}" for p in MARKERS for c in ("Camera", "CameraSide")]


class WhenItemsBack(Recorder):
    """Acts once when ``count`` items are complete in the job's local folder; snapshots what was there."""

    def __init__(self, results, count: int, action) -> None:
        super().__init__()
        self.results, self.count, self.action = results, count, action
        self.snapshot: list[str] | None = None

    def __call__(self, progress) -> None:
        super().__call__(progress)
        if self.snapshot is None and self.results.is_dir():
            back = sorted(p.parent.name for p in self.results.glob("*/*/ai-render-1.png"))
            if len(back) >= self.count:
                self.snapshot = back
                self.action()


def batch_job(server, **overrides):
    return make_job(server, variations=1, poses="markers", cameras="collection:Cameras", **overrides)


def test_three_poses_on_two_cameras_through_the_proxy_then_resubmitted_for_free(
        tmp_path, sshd_proxy, pose_scene, stability_server):
    hosts = hosts_file(tmp_path, sshd_proxy, "runpod")
    progress = Recorder()
    result = submit(batch_job(stability_server), pose_scene, "runpod", hosts, tmp_path, progress,
                    api_key=stability_server.api_key)
    assert result.status == "done", result.error
    items = result.manifest["items"]
    assert [i["name"] for i in items] == SIX and {i["status"] for i in items} == {"done"}
    renders = {hashlib.sha256((result.output_dir / i["render"]).read_bytes()).hexdigest() for i in items}
    assert len(renders) == 6  # three poses × two cameras, each different
    assert len({(*i["bones"]["Rig/ArmL"], *i["bones"]["Rig/ArmR"]) for i in items}) == 3  # each marker's pose
    assert sorted(p.relative_to(result.output_dir).as_posix() for p in result.images) == sorted(
        f"{n}/ai-render-1.png" for n in SIX)
    assert (result.output_dir / "contact-sheet.png").is_file()
    assert any("items 1/6 done" in m for m in progress.messages("rendering"))  # progress while it ran
    assert JobRecord.load(tmp_path / "record.json").items_done == [n for n in SIX]
    requests = len(stability_server.requests)
    assert requests == 6

    # The same batch again: every item comes from the first job; nothing is uploaded, rendered or paid.
    again = Recorder()
    second = submit(batch_job(stability_server), pose_scene, "runpod", hosts, tmp_path, again,
                    api_key=stability_server.api_key, record=tmp_path / "record2.json")
    assert second.status == "done", second.error
    assert len(stability_server.requests) == requests
    assert not again.messages("uploading") and not again.messages("connecting")
    assert [i["status"] for i in second.manifest["items"]] == ["reused"] * 6 and second.cost_usd == 0
    assert len(second.images) == 6 and all(p.is_file() for p in second.images)
    assert (second.output_dir / "contact-sheet.png").is_file()
    ledger = [json.loads(line) for line in (data_dir() / "ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["items_reused"] == 6 and ledger[-1]["cost_usd"] == 0

    # Asked fresh, it renders everything again.
    fresh = run_job(batch_job(stability_server), pose_scene, host="runpod", hosts_file=hosts,
                    local_output_dir=tmp_path / "results", api_key=stability_server.api_key, progress=Recorder(),
                    cancel=threading.Event(), fresh=True)
    assert fresh.status == "done" and len(stability_server.requests) == 12


def test_a_dropped_connection_after_two_items_keeps_them_and_finishes(tmp_path, sshd_proxy, pose_scene,
                                                                      stability_server):
    hosts = hosts_file(tmp_path, sshd_proxy, "runpod")
    progress = WhenItemsBack(tmp_path / "results", 2, sshd_proxy.drop_connections)
    result = submit(batch_job(stability_server), pose_scene, "runpod", hosts, tmp_path, progress,
                    api_key=stability_server.api_key)
    assert progress.snapshot is not None and len(progress.snapshot) >= 2  # on the laptop before the drop
    assert result.status == "done", result.error
    assert [i["status"] for i in result.manifest["items"]] == ["done"] * 6
    assert len(stability_server.requests) == 6  # each item paid once


def test_cancel_after_three_keeps_three_and_a_resubmit_renders_the_rest(tmp_path, pose_scene,
                                                                        stability_server):
    cancel = threading.Event()
    progress = WhenItemsBack(tmp_path / "results", 3, cancel.set)
    result = submit(batch_job(stability_server), pose_scene, "local", None, tmp_path, progress,
                    cancel=cancel, api_key=stability_server.api_key)
    assert result.status == "cancelled"
    record = JobRecord.load(tmp_path / "record.json")
    assert record.status == "cancelled" and len(record.items_done) >= 3
    kept = record.items_done
    for name in kept:
        assert (result.output_dir / name / "render.png").is_file() and (result.output_dir / name / "ai-render-1.png").is_file()
    paid = len(stability_server.requests)
    assert paid < 6

    again = submit(batch_job(stability_server), pose_scene, "local", None, tmp_path, Recorder(),
                   api_key=stability_server.api_key, record=tmp_path / "record2.json")
    assert again.status == "done", again.error
    status = {i["name"]: i["status"] for i in again.manifest["items"]}
    assert list(status) == SIX
    assert {n for n, s in status.items() if s == "reused"} == set(kept)
    assert len(stability_server.requests) - paid == 6 - len(kept)  # only the rest was rendered and paid
    seeds = {i["seed"] for i in again.manifest["items"]}
    assert len(seeds) == 1  # the reused items' seed carried over: one look across the batch


@pytest.mark.parametrize(("poses", "cameras", "message"), [
    ("Idle,Nope", "active", "unknown pose 'Nope'"),
    ("markers", "collection:Nobody", "no collection named 'Nobody'"),
    ("frames:20-10", "active", "reversed range"),
    ("frames:1-600", "active", "at most 500"),
])
def test_a_wrong_batch_is_one_line_before_upload(tmp_path, pose_scene, stability_server, poses, cameras,
                                                 message):
    progress = Recorder()
    result = submit(make_job(stability_server, poses=poses, cameras=cameras), pose_scene, "local", None, tmp_path,
                    progress, api_key=stability_server.api_key)
    assert result.status == "failed" and message in result.error and "\n" not in result.error
    assert not progress.messages("uploading") and stability_server.requests == []


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
    job = make_job(variations=1, poses="markers")
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
    second = submit(make_job(variations=1, poses="markers"), hostile_scene, host, hosts, tmp_path, again,
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
    job = make_job(stability_server, variations=1, poses="markers")
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
