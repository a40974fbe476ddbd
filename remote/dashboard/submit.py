"""Generate: run a job through the same pipeline as the CLI
(:func:`remote.jobs.pipeline.run_job`), in a background thread of the dashboard,
with the same record and output places (``<data dir>/jobs``, ``<data dir>/output``),
so the job list shows it live like any other job.

Cancel: a job this process runs is stopped through its cancel event (the
pipeline then cancels it on the pod too); a job another process runs (the
CLI, Blender) is cancelled on its pod with ``pod_agent.sh --cancel``, which
its owner then sees on its next poll.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from ..bridge.api import Bridge
from ..core.config import ConfigError, HostConfig, load_hosts
from ..core.cost import CostBreakdown, CostConfigError
from ..core.estimate import estimate as estimate_cost
from ..core.jobspec import STABILITY_KEY_BACKENDS, JobValidationError, RenderJob
from ..core.quoting import q
from ..jobs.pipeline import new_job_id, run_job
from ..jobs.state import JobProgress, JobRecord
from .readers import JobView

log = logging.getLogger(__name__)


class SubmitError(ValueError):
    """A job that cannot start; the message is for the user."""


def hosts(hosts_file: Path | None) -> dict[str, HostConfig]:
    try:
        return load_hosts(hosts_file)
    except ConfigError as exc:
        raise SubmitError(str(exc)) from None


def build_job(settings: dict[str, Any], job_id: str | None = None) -> RenderJob:
    """A checked RenderJob from form or saved settings; raises SubmitError naming the field."""
    known = {key: value for key, value in settings.items() if key in RenderJob.__dataclass_fields__}
    job = RenderJob(blend_path="-", output_dir="-", **{"prompt": "", **known})
    job.job_id = job_id or new_job_id()
    try:
        job.validate()
    except JobValidationError as exc:
        raise SubmitError(str(exc)) from None
    return job


def estimate(job: RenderJob, host: HostConfig) -> CostBreakdown:
    try:
        return estimate_cost(job, host.pod_type)
    except CostConfigError as exc:
        raise SubmitError(str(exc)) from None


PLAIN_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class Submitter:
    def __init__(self, root: Path, hosts_file: Path | None) -> None:
        self.root = root
        self.hosts_file = hosts_file
        self._cancels: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._progress: dict[str, JobProgress] = {}  # the latest report of each job this process runs
        self._lock = threading.Lock()

    def submit(self, job: RenderJob, scene: Path, host: str, api_key: str | None) -> str:
        """Start ``job`` on ``host`` in the background; returns its id once its record exists."""
        if host not in hosts(self.hosts_file):
            raise SubmitError(f"unknown host {host!r}")
        if job.backend in STABILITY_KEY_BACKENDS and not api_key:
            raise SubmitError("backend stability needs STABILITY_API_KEY in the dashboard's environment "
                              "(or choose backend none)")
        record_path = self.root / "jobs" / f"{job.job_id}.json"
        output = self.root / "output"
        # The record exists before the thread starts, so the job list shows the job at once.
        JobRecord(job_id=job.job_id, host=host, hosts_file=str(self.hosts_file) if self.hosts_file else None,
                  remote_job_dir="", local_output_dir=str(output / job.job_id), prompt=job.prompt).save(record_path)
        cancel = threading.Event()

        def work() -> None:
            try:
                result = run_job(job, scene, host=host, hosts_file=self.hosts_file, local_output_dir=output,
                                 api_key=api_key, progress=lambda p: self._on_progress(job.job_id, p), cancel=cancel,
                                 record_path=record_path)
                log.info("job %s ended: %s", job.job_id, result.status)
            finally:
                with self._lock:
                    self._cancels.pop(job.job_id, None)
                    self._threads.pop(job.job_id, None)
                    self._progress.pop(job.job_id, None)

        thread = threading.Thread(target=work, name=f"dashboard-{job.job_id}", daemon=True)
        with self._lock:
            self._cancels[job.job_id] = cancel
            self._threads[job.job_id] = thread
        thread.start()
        log.info("job %s submitted on %s", job.job_id, host)
        return job.job_id

    def _on_progress(self, job_id: str, progress: JobProgress) -> None:
        log.debug("job %s: %s %s", job_id, progress.stage, progress.message)
        with self._lock:
            previous = self._progress.get(job_id)
            if progress.fraction < 0 and previous is not None:  # a note (reconnecting…): keep the last fraction
                progress = JobProgress(previous.stage, previous.fraction, progress.message)
            self._progress[job_id] = progress

    def progress(self, job_id: str) -> JobProgress | None:
        """The latest progress of a job this process runs (None for others: their record is all there is)."""
        with self._lock:
            return self._progress.get(job_id)

    def owns(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancels

    def cancel(self, job: JobView) -> str:
        """Stop ``job``; returns a line for the user."""
        with self._lock:
            event = self._cancels.get(job.job_id)
        if event is not None:
            event.set()
            return f"cancelling {job.job_id}"
        if not job.remote_job_dir:
            raise SubmitError("the job has not reached its pod yet, and another program runs it: cancel it there")
        host, jobdir = self.cancel_target(job)
        threading.Thread(target=self._cancel_elsewhere, args=(job.job_id, host, jobdir), daemon=True).start()
        return f"cancel sent to {job.host} for {job.job_id}"

    def cancel_target(self, job: JobView) -> tuple[str, str]:
        """The host and pod job dir a cancel may act on, checked against the dashboard's own hosts.

        A record is input (anyone who can write the data dir can plant one): its
        host must be one of the dashboard's configured hosts, its remote_job_dir
        exactly ``<that host's workspace>/jobs/<job id>`` with a plain job id, and
        the hosts file it names is never used.
        """
        job_id = str(job.job_id)
        if not PLAIN_JOB_ID.fullmatch(job_id):
            raise SubmitError(f"refused to cancel: {job_id[:80]!r} is not a plain job id")
        configured = hosts(self.hosts_file)
        host = configured.get(str(job.host))
        if host is None:
            raise SubmitError(f"refused to cancel {job_id}: its record names host {str(job.host)[:80]!r}, "
                              "which is not one of the dashboard's hosts")
        expected = f"{host.workspace}/jobs/{job_id}"  # as the pipeline writes it
        if job.remote_job_dir not in (expected, f"{host.workspace.rstrip('/')}/jobs/{job_id}"):
            raise SubmitError(f"refused to cancel {job_id}: its record's pod job dir is not {expected}")
        return host.name, expected

    def _cancel_elsewhere(self, job_id: str, host: str, jobdir: str) -> None:
        try:
            with Bridge(hosts(self.hosts_file)) as bridge:
                workspace = bridge.host(host).workspace
                result = bridge.run(host, f"bash {q(workspace)}/posefactory/pod_setup/pod_agent.sh --cancel "
                                          f"{q(jobdir)}", timeout=60)
            log.info("cancel of %s on %s: %s", job_id, host, result.status)
        except Exception as exc:  # a background thread: the log is the only place left to say it
            log.warning("cancel of %s on %s failed: %s", job_id, host, exc)

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        """For tests and shutdown: block until the job's thread ends."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
