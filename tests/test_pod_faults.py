"""The pod side under stress, on the real ``local`` host: the key never sits in
a process's environment or argv, a full disk is named as such (uploads and
renders) and still ends with a ledger line, the code bundle is
byte-reproducible and swapped in beside the old one, never deleted under a job."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from remote.jobs.ledger import read_ledger
from remote.jobs.pipeline import run_job
from remote.jobs.pod_steps import pod_bundle
from remote.jobs.state import JobRecord
from tests.test_hostile_pod import fake_pod  # noqa: F401 - the fixture
from tests.test_pipeline_e2e import Recorder, make_job


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSEFACTORY_BPY_PYTHON", sys.executable)
    return tmp_path / "data"


def submit(tmp_path, scene, api_key=None, progress=None, **job):
    return run_job(make_job(**job), scene, host="local", hosts_file=None, local_output_dir=tmp_path / "results",
                   api_key=api_key, progress=progress or Recorder(), cancel=threading.Event(),
                   record_path=tmp_path / "record.json")


def processes_holding(secret: bytes, workspace: Path) -> list[str]:
    """Processes of this test's pod (their command line or working folder is in its workspace) holding ``secret``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            ours = str(workspace).encode() in (proc / "cmdline").read_bytes() or \
                os.readlink(proc / "cwd").startswith(str(workspace))
        except OSError:
            continue
        if not ours:
            continue
        for name in ("environ", "cmdline"):
            try:
                if secret in (proc / name).read_bytes():
                    found.append(f"{proc.name}/{name}: {(proc / 'cmdline').read_bytes()[:120]!r}")
            except OSError:
                continue
    return found


def test_the_key_is_in_no_process_environment_or_argv_on_the_pod(data, tmp_path, sample_scene, stability_server):
    stability_server.then(200, delay_s=4)
    seen: list[list[str]] = []

    def look_while_the_api_works() -> None:
        deadline = time.monotonic() + 120
        while not stability_server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        workspace = data / "local-pod" / "workspace"
        seen.append((processes_holding(stability_server.api_key.encode(), workspace), processes_holding(b"", workspace)))

    watcher = threading.Thread(target=look_while_the_api_works)
    watcher.start()
    result = submit(tmp_path, sample_scene, stability_server.api_key,
                    **{"backend": "stability", "api_base_url": stability_server.base_url, "variations": 1})
    watcher.join()
    assert result.status == "done", result.error
    (holding, pod_processes), = seen
    assert holding == [] and pod_processes  # the job's processes were there, and none held the key
    jobdir = Path(JobRecord.load(tmp_path / "record.json").remote_job_dir)
    assert not list(jobdir.glob(".secret*"))  # read and deleted by the job
    for path in jobdir.rglob("*"):
        if path.is_file():
            assert stability_server.api_key.encode() not in path.read_bytes(), path


def test_a_render_that_cannot_write_is_failed_as_pod_disk_full(fake_pod, tmp_path, sample_scene):  # noqa: F811
    fake_pod("""
        with open("/dev/full", "wb") as handle:  # every write: ENOSPC, as on a full disk
            handle.write(b"render" * 1000)
            handle.flush()
    """)
    result = submit(tmp_path, sample_scene)
    assert result.status == "failed" and result.error.startswith("pod disk full"), result.error
    (line,) = [entry for entry in read_ledger() if entry["job_id"] == result.job_id]
    assert line["status"] == "failed" and line["cost_usd"] is not None
    assert JobRecord.load(tmp_path / "record.json").status == "failed"


def test_an_upload_to_a_full_pod_disk_is_named_and_charged_once(data, tmp_path, sample_scene):
    scenes = data / "local-pod" / "workspace" / "posefactory" / "store"  # where the scene's files land
    scenes.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(scenes)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"a small tmpfs is needed to fill the pod's disk (run as root): {mounted.stderr.strip()}")
    try:
        result = submit(tmp_path, sample_scene)
    finally:
        subprocess.run(["umount", str(scenes)], check=True)
    assert result.status == "failed" and "pod disk full" in result.error and "corrupted" not in result.error
    (line,) = [entry for entry in read_ledger() if entry["job_id"] == result.job_id]
    assert line["status"] == "failed"


def test_the_bundle_is_byte_reproducible_and_an_unchanged_one_is_not_extracted_again(data, tmp_path, sample_scene):
    first, digest = pod_bundle()
    time.sleep(1.1)  # the gzip header would carry a new time
    assert pod_bundle() == (first, digest)
    assert submit(tmp_path, sample_scene).status == "done"
    code = data / "local-pod" / "workspace" / "posefactory" / "code" / digest[:16]
    stamp = (code / "pod_setup" / "pod_agent.sh").stat().st_ino
    progress = Recorder()
    assert submit(tmp_path, sample_scene, progress=progress).status == "done"
    assert (code / "pod_setup" / "pod_agent.sh").stat().st_ino == stamp  # not re-extracted
    assert any("scripts: 0 bytes moved" in m for m in progress.messages("setup"))
    links = data / "local-pod" / "workspace" / "posefactory"
    assert (links / "pod_setup").resolve() == (code / "pod_setup").resolve()


def test_two_addon_versions_keep_their_bundles_side_by_side(data, tmp_path, sample_scene, monkeypatch):
    import remote.jobs.pod_steps

    assert submit(tmp_path, sample_scene).status == "done"
    _, old = pod_bundle()
    real = remote.jobs.pod_steps.pod_bundle

    def other_version() -> tuple[bytes, str]:
        # Another add-on version: the same files plus one more, so another digest.
        import gzip
        import hashlib
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(real()[0]))) as tar:
            members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as out:
            for member, content in members:
                out.addfile(member, io.BytesIO(content) if content is not None else None)
            extra = tarfile.TarInfo("pod_setup/VERSION")
            extra.size = 2
            out.addfile(extra, io.BytesIO(b"2\n"))
        data_ = buffer.getvalue()
        return data_, hashlib.sha256(data_).hexdigest()

    monkeypatch.setattr(remote.jobs.pod_steps, "pod_bundle", other_version)
    assert submit(tmp_path, sample_scene).status == "done"
    code = data / "local-pod" / "workspace" / "posefactory" / "code"
    assert {old[:16], other_version()[1][:16]} <= {p.name for p in code.iterdir()}


def test_a_job_past_its_time_limit_fails_with_its_ledger_line(fake_pod, tmp_path, sample_scene):  # noqa: F811
    fake_pod("""
        time.sleep(120)
    """)
    started = time.monotonic()
    result = run_job(make_job(), sample_scene, host="local", hosts_file=None, local_output_dir=tmp_path / "results",
                     api_key=None, progress=Recorder(), cancel=threading.Event(), record_path=tmp_path / "record.json",
                     time_limit_s=3)
    assert result.status == "failed" and result.error.startswith("time limit"), result.error
    assert time.monotonic() - started < 90
    (line,) = [entry for entry in read_ledger() if entry["job_id"] == result.job_id]
    assert line["status"] == "failed" and line["gpu_seconds"] >= 3


def test_two_jobs_on_one_pod_take_turns_on_the_gpu_and_the_second_waits_visibly(fake_pod, tmp_path, sample_scene):  # noqa: F811
    fake_pod("""
        time.sleep(4)
        (out / "render.png").write_bytes(b"png")
        manifest(status="done", images=[], render="render.png")
    """)
    results, second_progress = {}, Recorder()

    def run(name: str, progress) -> None:
        results[name] = run_job(make_job(), sample_scene, host="local", hosts_file=None,
                                local_output_dir=tmp_path / name, api_key=None, progress=progress,
                                cancel=threading.Event(), record_path=tmp_path / f"{name}.json")

    first = threading.Thread(target=run, args=("first", Recorder()))
    first.start()
    deadline = time.monotonic() + 120
    while not (tmp_path / "first.json").exists() or JobRecord.load(tmp_path / "first.json").started_epoch is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run("second", second_progress)
    first.join()
    assert results["first"].status == results["second"].status == "done"
    assert any("waiting for the GPU (1 ahead)" in m for m in second_progress.messages("rendering"))
    jobs = [Path(JobRecord.load(tmp_path / f"{n}.json").remote_job_dir) for n in ("first", "second")]
    import json as json_
    times = [json_.loads((job / "status.json").read_text()) for job in jobs]
    assert times[1]["started_at"] >= times[0]["finished_at"]  # never both on the GPU


def test_retention_removes_old_downloaded_jobs_never_a_running_one(data, tmp_path, sample_scene):
    workspace = data / "local-pod" / "workspace"
    old = time.time() - 10 * 86400  # past the 7 days, within the 28 for jobs never downloaded
    for name, state, downloaded in [("old-done", "done", True), ("old-not-downloaded", "failed", False),
                                    ("old-running", "running", False)]:
        job = workspace / "jobs" / name
        job.mkdir(parents=True)
        (job / "state").write_text(state + "\n")
        (job / "job.json").write_text('{"blend_path": "scene/kept.blend"}')
        (job / "pid").write_text(f"{os.getpid()}\n")  # a live process: the running job's stand-in
        if downloaded:
            (job / "downloaded").touch()
        os.utime(job, (old, old))
    (workspace / "scenes").mkdir(parents=True)  # an earlier version's per-scene copies
    earlier = hashlib.sha256(b"BLENDER").hexdigest()
    (workspace / "scenes" / f"{earlier}.blend").write_bytes(b"BLENDER")
    progress = Recorder()
    assert submit(tmp_path, sample_scene, progress=progress).status == "done"
    left = {p.name for p in (workspace / "jobs").iterdir()}
    assert "old-done" not in left and "old-running" in left
    assert "old-not-downloaded" in left  # kept four times as long: the laptop may still re-attach
    # The old copies moved into the content store, once.
    assert not (workspace / "scenes").exists()
    assert (workspace / "posefactory" / "store" / "objects" / earlier).read_bytes() == b"BLENDER"
