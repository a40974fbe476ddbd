"""Job tracking: each job runs ``remote.pipeline`` in a worker thread; a
``bpy.app.timers`` function polls them on the main thread, shows progress
in the status bar, redraws the sidebar and imports finished results.

Every job has a record under ``<data dir>/jobs/<job id>.json`` (written by
the pipeline); on start-up, records of jobs that were still running are
re-attached, so closing Blender loses nothing.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .remote.config import data_dir
from .remote.jobspec import RenderJob
from .remote.pipeline import JobProgress, JobRecord, JobResult, reattach, run_job

POLL_INTERVAL_S = 0.5


@dataclass
class TrackedJob:
    job_id: str
    prompt: str
    host: str
    stage: str = "packing"
    fraction: float = 0.0
    message: str = "packing the scene"
    result: JobResult | None = None
    imported: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.time)
    image_names: list[str] = field(default_factory=list)
    autosave_dir: str = ""

    @property
    def status(self) -> str:
        if self.result is not None:
            return self.result.status
        return "cancelling" if self.cancel.is_set() else "running"

    def on_progress(self, progress: JobProgress) -> None:
        # Called from the worker thread: plain attribute writes only, no bpy.
        if progress.fraction >= 0:
            self.stage, self.fraction = progress.stage, progress.fraction
        self.message = progress.message


class JobManager:
    def __init__(self) -> None:
        self.jobs: dict[str, TrackedJob] = {}
        self.on_finished: list[Callable[[TrackedJob], None]] = []
        self._history: tuple[int, list[JobRecord]] = (-1, [])

    def records_dir(self) -> Path:
        return data_dir() / "jobs"

    def start(self, tracked: TrackedJob, work: Callable[[], JobResult]) -> TrackedJob:
        self.jobs[tracked.job_id] = tracked

        def worker() -> None:
            try:
                tracked.result = work()
            except Exception as exc:  # a bug must still end the job visibly, not hang the UI
                tracked.result = JobResult(job_id=tracked.job_id, status="failed", error=f"internal error: {exc!r}")
            finally:
                tracked.finished.set()

        threading.Thread(target=worker, name=f"posefactory-{tracked.job_id}", daemon=True).start()
        ensure_timer()
        return tracked

    def submit(self, job: RenderJob, copy: Path, scene_name: str, *, host: str, hosts_file: Path | None,
               output_dir: Path, api_key: str | None, autosave_dir: str) -> TrackedJob:
        """Pack (in the worker) and run ``job``; ``copy`` is the saved copy of the open file."""
        from .packing import make_self_contained

        tracked = TrackedJob(job_id=job.job_id, prompt=job.prompt, host=host, autosave_dir=autosave_dir)
        record = self.records_dir() / f"{job.job_id}.json"

        def work() -> JobResult:
            try:
                packed = make_self_contained(copy, scene_name)
                return run_job(job, packed, host=host, hosts_file=hosts_file, local_output_dir=output_dir,
                               api_key=api_key, progress=tracked.on_progress, cancel=tracked.cancel,
                               record_path=record)
            finally:
                shutil.rmtree(copy.parent, ignore_errors=True)

        return self.start(tracked, work)

    def reattach_pending(self) -> int:
        """Resume waiting for jobs a previous Blender session left running."""
        count = 0
        for path in sorted(self.records_dir().glob("*.json")):
            try:
                record = JobRecord.load(path)
            except (ValueError, TypeError, OSError):
                continue
            if record.status not in ("submitted", "running") or not record.remote_job_dir or record.job_id in self.jobs:
                continue
            tracked = TrackedJob(job_id=record.job_id, prompt=record.prompt, host=record.host,
                                 stage="rendering", message="re-attaching")
            self.start(tracked, lambda p=path, t=tracked: reattach(p, progress=t.on_progress, cancel=t.cancel))
            count += 1
        return count

    def active(self) -> list[TrackedJob]:
        return [job for job in self.jobs.values() if not job.finished.is_set()]

    def latest(self) -> TrackedJob | None:
        return max(self.jobs.values(), key=lambda job: job.started_at, default=None)

    def history(self) -> list[JobRecord]:
        """Past jobs from their records, newest first (re-read only when a record changed)."""
        folder = self.records_dir()
        # Records are replaced by rename, which touches the folder: its mtime says when to re-read.
        stamp = folder.stat().st_mtime_ns if folder.is_dir() else 0
        if self._history[0] != stamp:
            self._history = (stamp, self._read_records(folder))
        return self._history[1]

    @staticmethod
    def _read_records(folder: Path) -> list[JobRecord]:
        records = []
        for path in folder.glob("*.json"):
            try:
                records.append(JobRecord.load(path))
            except (ValueError, TypeError, OSError):
                continue
        return sorted(records, key=lambda record: record.submitted_at, reverse=True)

    def deliver_finished(self) -> None:
        """Main thread: import the results of jobs that ended since the last call."""
        for tracked in list(self.jobs.values()):
            if tracked.finished.is_set() and not tracked.imported:
                tracked.imported = True
                for callback in self.on_finished:
                    callback(tracked)

    def wait(self, tracked: TrackedJob, timeout: float | None = None) -> JobResult:
        """Block until ``tracked`` ends (for scripts and background mode), then deliver it."""
        if not tracked.finished.wait(timeout):
            raise TimeoutError(f"job {tracked.job_id} still {tracked.stage} after {timeout}s")
        self.deliver_finished()
        assert tracked.result is not None
        return tracked.result


MANAGER = JobManager()


def _status_text() -> str | None:
    active = MANAGER.active()
    if not active:
        return None
    job = active[0]
    more = f" (+{len(active) - 1} more)" if len(active) > 1 else ""
    return f"Pose Factory: {job.stage} {job.fraction * 100:.0f}% — {job.message}{more}"


def poll() -> float | None:
    """The timer: deliver finished jobs, show progress, redraw the sidebar."""
    MANAGER.deliver_finished()
    text = _status_text()
    window_manager = bpy.context.window_manager
    for window in getattr(window_manager, "windows", []):
        window.workspace.status_text_set(text)
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR"):
                area.tag_redraw()
    return POLL_INTERVAL_S if text else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=POLL_INTERVAL_S)


def new_copy_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="posefactory-pack-"))


def _reattach_on_start() -> None:
    if MANAGER.reattach_pending():
        ensure_timer()


def register() -> None:
    # After start-up, so that loading preferences and files is not slowed down.
    bpy.app.timers.register(_reattach_on_start, first_interval=1.0)


def unregister() -> None:
    for tracked in MANAGER.active():
        tracked.cancel.set()
    if bpy.app.timers.is_registered(poll):
        bpy.app.timers.unregister(poll)
    if bpy.app.timers.is_registered(_reattach_on_start):
        bpy.app.timers.unregister(_reattach_on_start)
