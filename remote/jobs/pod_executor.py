"""The pod executor: :class:`~remote.jobs.pod_steps.JobRunner`'s steps as an
:class:`~remote.jobs.outcome.Executor`, and the outcome of a pod job — its
manifest checked, exactly the files it names brought back, or, when it was
stopped, what its status, manifest and streamed items show it made and spent."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..core.pod_output import PodManifest, PodOutputError, PodStatus, output_path
from .items import finish_manifest
from .ledger import compute_spend
from .outcome import Outcome
from .pod_steps import POLL_S, JobRunner
from .state import JobState, PipelineError

log = logging.getLogger(__name__)


class PodExecutor:
    """A job on a pod over the bridge: :class:`~remote.jobs.pod_executor.JobRunner`'s steps as an executor."""

    def __init__(self, runner: JobRunner, api_key: str | None = None) -> None:
        self.runner, self.api_key = runner, api_key
        self.record, self.record_path, self.progress = runner.record, runner.record_path, runner.progress
        self.pod_type: str | None = runner.host.pod_type
        self.status: PodStatus | None = None

    def start(self) -> None:
        self.runner.start(self.api_key)

    def poll(self) -> bool:
        self.status = self.runner.poll()
        if self.status is None:
            self.runner.cancel.wait(POLL_S)
        return self.status is not None

    def fetch(self) -> Outcome:
        assert self.status is not None
        if self.status.state == "none":
            raise PipelineError(f"the pod has no job {self.record.job_id} (was its workspace wiped?); submit it again")
        return finish(self.runner, self.status)

    def cancel(self) -> None:
        self.runner.cancel_on_pod()

    def stopped(self, state: JobState, error: str) -> Outcome:
        return stopped_outcome(self.runner, state, error)


def finish(runner: JobRunner, status: PodStatus) -> Outcome:
    """The pod's job ended: check its manifest, download what it names; its outcome."""
    record = runner.record
    local_dir = Path(record.local_output_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        manifest = runner.read_manifest()
    except PodOutputError as exc:
        log.warning("job %s: manifest refused: %s", record.job_id, exc)
        return Outcome(JobState.FAILED, str(exc), status=status)
    names = [*manifest.images, *([manifest.render] if manifest.render else []), *record.control_files] if manifest else []
    if manifest is not None and runner.streamer is not None:
        # A batch: the streamer brings back (and remembers for reuse) each done item not streamed yet;
        # the contact sheet is laid out here from their thumbnails (finish_manifest).
        names = []
    try:
        if runner.streamer is not None and manifest is not None:
            runner.stage("downloading", "bringing the remaining items back")
            runner.streamer.fetch()
        runner.download(local_dir, names)
        runner.mark_downloaded()
    except PipelineError as exc:
        if status.state == "done":
            return Outcome(JobState.FAILED,
                           f"{exc} (the images are still in {runner.record.remote_job_dir} on the pod)",
                           status=status, manifest=manifest)
        # A failed job may have left less than its manifest names; its error says why.
    image_names: list[str] = list(manifest.images) if manifest else []
    local_manifest: dict[str, Any] | None = None
    if manifest is not None and runner.streamer is not None:
        # A batch: the pod's items and those reused from earlier jobs, in the batch's order, in one manifest.
        local_manifest = finish_manifest(dict(manifest.raw), record.items_reused, local_dir, record.items_order)
        image_names = local_manifest["images"]
    elif manifest is not None:
        (local_dir / "manifest.json").write_text(json.dumps(manifest.raw, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    images = [output_path(local_dir, name, allow_item_dirs=record.is_batch) for name in image_names]
    controls = [] if record.is_batch else [local_dir / name for name in record.control_files]  # items: the streamer's
    missing = [p.name for p in [*images, *controls] if not p.is_file()]
    state = JobState(status.state) if status.state in (JobState.DONE, JobState.CANCELLED) else JobState.FAILED
    error = None if state == JobState.DONE else (status.error or (manifest.error if manifest else "") or None)
    if state == JobState.DONE and (missing or manifest is None):
        state, error = JobState.FAILED, (f"the pod reported done but {', '.join(missing)} did not arrive" if missing
                                         else "the pod reported done but wrote no manifest")
    if state == JobState.FAILED and error is None:
        error = "the job failed on the pod without saying why; see render.log there"
    return Outcome(state, error, status=status, manifest=manifest, images=[p for p in images if p.is_file()],
                   local_manifest=local_manifest)


def stopped_outcome(runner: JobRunner, state: JobState, error: str) -> Outcome:
    """A pod job stopped: what its status, manifest and the streamed items show it made and spent."""
    status = runner.final_status()
    manifest = _manifest_or_none(runner)
    record = runner.record
    images: list[Path] = []
    local_manifest = None
    if record.is_batch:
        local_dir = Path(record.local_output_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        try:
            local_manifest = finish_manifest(dict(manifest.raw) if manifest else {"items": []}, record.items_reused,
                                             local_dir, record.items_order)
            images = [p for p in (output_path(local_dir, n, allow_item_dirs=True) for n in local_manifest["images"])
                      if p.is_file()]
        except (OSError, ValueError) as exc:
            log.warning("job %s: the items back could not be listed: %s", record.job_id, exc)
    # The pod's manifest may be unreadable (a full disk): each item streamed back had its AI images paid.
    streamed = len(record.items_done) * int(record.cost_basis.get("batch", 1) or 1)
    spend = compute_spend(record.cost_basis, status, manifest, started_epoch=record.started_epoch,
                          pod_type=runner.host.pod_type, images_floor=streamed)
    return Outcome(state, error, status=status, manifest=manifest, images=images, local_manifest=local_manifest,
                   spend=spend)


def _manifest_or_none(runner: JobRunner) -> PodManifest | None:
    try:
        return runner.read_manifest()
    except (PipelineError, PodOutputError):
        return None
