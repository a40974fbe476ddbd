"""Job tracking: each job runs ``remote.jobs.pipeline`` in a worker thread; the
UI channel's one persistent timer (:mod:`ui_channel`) hands this module what
the workers post (progress, finished jobs, connection checks); this module
shows progress in the status bar and imports finished results.

Each finished job is delivered in isolation: a delivery that raises (an
autosave folder that cannot be written, say) is logged with its traceback,
shown as the job's one-line error, and never stops the timer or the
delivery of other jobs.

Every job has a record under ``<data dir>/jobs/<job id>.json`` (written by
the pipeline); on start-up, records of jobs that were still running are
re-attached, so closing Blender loses nothing.
"""
from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import ui_channel
from .remote.core.config import data_dir
from .remote.core.jobspec import RenderJob
from .remote.core.logs import setup_logging
from .remote.jobs.job_lock import JobBusy, job_lock
from .remote.jobs.pipeline import reattach, run_job
from .remote.jobs.state import JobProgress, JobRecord, JobResult

log = logging.getLogger(__name__)


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
    delivery_error: str = ""  # importing the results failed (the files are kept)
    scene_summary: str = ""  # what the scene's upload moved ("scene: 3 files, 4.7 kB moved of 44.4 MB")
    item_notes: list[str] = field(default_factory=list)  # items that failed or came with a warning, one line each

    @property
    def status(self) -> str:
        if self.result is not None:
            return self.result.status
        return "cancelling" if self.cancel.is_set() else "running"

    def on_progress(self, progress: JobProgress) -> None:
        """Worker thread: the pipeline's progress goes to the UI channel, nothing else."""
        ui_channel.post(ui_channel.JobProgressed(self.job_id, progress))

    def apply(self, progress: JobProgress) -> None:
        """Main thread (the timer): show a progress report."""
        if progress.fraction >= 0:
            self.stage, self.fraction = progress.stage, progress.fraction
        self.message = progress.message
        if progress.scene_summary:
            self.scene_summary = progress.scene_summary


class JobManager:
    def __init__(self) -> None:
        self.jobs: dict[str, TrackedJob] = {}
        self.on_finished: list[Callable[[TrackedJob], None]] = []
        self.connection_checks: dict[str, str] = {}  # host -> last Test Connection outcome
        self._history: tuple[int, list[JobRecord]] = (-1, [])

    def records_dir(self) -> Path:
        return data_dir() / "jobs"

    def start(self, tracked: TrackedJob, work: Callable[[], JobResult]) -> TrackedJob:
        self.jobs[tracked.job_id] = tracked

        def worker() -> None:
            try:
                tracked.result = work()
            except Exception as exc:  # a bug must still end the job visibly, not hang the UI
                log.exception("job %s: internal error", tracked.job_id)
                tracked.result = JobResult(job_id=tracked.job_id, status="failed",
                                           error=f"internal error ({type(exc).__name__}); details in the log")
            finally:
                tracked.finished.set()
                ui_channel.post(ui_channel.JobFinished(tracked.job_id))

        threading.Thread(target=worker, name=f"posefactory-{tracked.job_id}", daemon=True).start()
        return tracked

    def submit(self, job: RenderJob, copy: Path, scene_key: str, *, host: str, hosts_file: Path | None,
               output_dir: Path, api_key: str | None, autosave_dir: str) -> TrackedJob:
        """Pack (in the worker) and run ``job``; ``copy`` is the saved copy of the open file,
        ``scene_key`` the scene it is a version of."""
        tracked = TrackedJob(job_id=job.job_id, prompt=job.prompt, host=host, autosave_dir=autosave_dir)
        record = self.records_dir() / f"{job.job_id}.json"

        def work() -> JobResult:
            try:
                return run_job(job, copy, host=host, hosts_file=hosts_file, local_output_dir=output_dir,
                               api_key=api_key, progress=tracked.on_progress, cancel=tracked.cancel,
                               record_path=record, scene_key=scene_key)
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
            try:
                job_lock(record.job_id, "checking").release()
            except JobBusy as exc:  # another Blender (or the CLI) follows it: leave it to that one
                log.info("not re-attaching: %s", exc)
                continue
            tracked = TrackedJob(job_id=record.job_id, prompt=record.prompt, host=record.host,
                                 stage="rendering", message="re-attaching")
            self.start(tracked, functools.partial(reattach, path, progress=tracked.on_progress, cancel=tracked.cancel))
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

    def apply(self, message: ui_channel.JobProgressed) -> None:
        """Main thread (the channel's timer): show a job's progress report."""
        if message.job_id in self.jobs:
            self.jobs[message.job_id].apply(message.progress)

    def check_connection(self, message: ui_channel.ConnectionChecked) -> None:
        self.connection_checks[message.host] = message.outcome

    def deliver(self, message: ui_channel.JobFinished | None = None) -> None:
        """Main thread: deliver finished jobs, each once and in isolation."""
        for tracked in list(self.jobs.values()):
            if tracked.finished.is_set() and not tracked.imported:
                tracked.imported = True
                self._deliver(tracked)

    def pump(self) -> None:
        """Main thread: apply what workers posted (every kind), then deliver finished jobs."""
        ui_channel.apply_pending()
        self.deliver()

    def _deliver(self, tracked: TrackedJob) -> None:
        for callback in self.on_finished:
            try:
                callback(tracked)
            except Exception as exc:  # one job's failure must not stop the timer or other jobs
                log.exception("job %s: delivering the results failed", tracked.job_id)
                tracked.delivery_error = f"results kept in {tracked.result.output_dir if tracked.result else '?'} " \
                                         f"but not imported: {exc}"

    def wait(self, tracked: TrackedJob, timeout: float | None = None) -> JobResult:
        """Block until ``tracked`` ends (for scripts and background mode), then deliver it."""
        if not tracked.finished.wait(timeout):
            self.pump()
            raise TimeoutError(f"job {tracked.job_id} still {tracked.stage} after {timeout}s")
        self.pump()
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


_last_status: list[str | None] = [None]


def show_status() -> bool:
    """A tick of the channel's timer: progress in the status bar; whether anything shows progress."""
    text = _status_text()
    if text is None and _last_status[0] is None:
        return False
    _last_status[0] = text
    for window in getattr(bpy.context.window_manager, "windows", []):
        window.workspace.status_text_set(text)
    return True


def new_copy_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="posefactory-pack-"))


def _reattach_on_start() -> None:
    MANAGER.reattach_pending()


def register() -> None:
    # This add-on's loggers (its copy of remote/ included) go to the rotating log in the data dir.
    setup_logging(__package__ or "posefactory_addon")
    ui_channel.on(ui_channel.JobProgressed, MANAGER.apply)
    ui_channel.on(ui_channel.JobFinished, MANAGER.deliver)
    ui_channel.on(ui_channel.ConnectionChecked, MANAGER.check_connection)
    ui_channel.on_tick(show_status)
    # After start-up, so that loading preferences and files is not slowed down.
    bpy.app.timers.register(_reattach_on_start, first_interval=1.0)


def unregister() -> None:
    for tracked in MANAGER.active():
        tracked.cancel.set()
    if bpy.app.timers.is_registered(_reattach_on_start):
        bpy.app.timers.unregister(_reattach_on_start)
