"""Pose batches end to end: checked against the scene before upload, items
streamed back while the batch renders (through the proxy sshd with inline
transfer, and on `local`), kept across a dropped connection and a cancel,
and never rendered or paid for twice."""
from __future__ import annotations

import hashlib
import json
import threading

import pytest

from remote.core.config import data_dir
from remote.jobs.pipeline import run_job
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
    return make_job(server, batch=1, poses="markers", cameras="collection:Cameras", **overrides)


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
