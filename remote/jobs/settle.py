"""How every job ends, whatever ended it: done, failed, cancelled, time
limit, disk full, all items reused, re-attached, serverless. Each end is an
:class:`Outcome`; :func:`settle` (pure: no I/O) turns the record and the
outcome into the job's result and its one ledger line, and :func:`account`
writes the record and appends that line once (:func:`ledger.append_once`),
under the job lock. Before there was one end path per way a job ended, each
with its own idea of the ledger, the images and the record.

An :class:`Executor` runs the job somewhere (start, poll, fetch, cancel):
:class:`PodExecutor` on a pod over the bridge, or
:class:`remote.jobs.serverless.ServerlessExecutor` on a RunPod Serverless
endpoint, chosen by the host's kind; :func:`follow` drives either to its
outcome, and stops and settles the job whatever stops it once started.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.jobspec import BACKENDS
from ..core.pod_output import PodManifest, PodOutputError, PodStatus, output_path
from .items import finish_manifest
from .ledger import Spend, append_once, compute_spend, ledger_entry
from .pod_executor import POLL_S
from .state import (
    Cancelled,
    JobProgress,
    JobRecord,
    JobResult,
    JobState,
    PipelineError,
    PodDiskFull,
    StatusUnusable,
    TimeLimitReached,
)

if TYPE_CHECKING:
    from ..runpod.serverless import ItemResult
    from .pod_executor import JobRunner

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a job ended, as its executor saw it (what :func:`settle` needs, nothing it must look up)."""

    state: JobState
    error: str | None = None
    status: PodStatus | None = None  # the pod's last status
    manifest: PodManifest | None = None  # the pod's manifest, checked
    item: ItemResult | None = None  # a serverless job's one item
    images: list[Path] = field(default_factory=list)
    raw_render: Path | None = None
    local_manifest: dict[str, Any] | None = None  # a batch's manifest as kept here (pod items + reused)
    spend: Spend | None = None  # when already known (all reused, serverless, interrupted)


class Executor(Protocol):
    """Where a job runs. ``poll`` raises :class:`Cancelled` on a cancel and a
    :class:`PipelineError` for what ends the job there; ``stopped`` is the
    outcome of a job stopped (cancelled or given up on) after ``cancel``."""

    record: JobRecord
    record_path: Path | None
    progress: Callable[[JobProgress], None]
    pod_type: str | None

    def start(self) -> None: ...
    def poll(self) -> bool: ...  # True once the job ended; waits a moment (or until a cancel) while it runs
    def fetch(self) -> Outcome: ...  # what it made, brought here, as its outcome
    def cancel(self) -> None: ...
    def stopped(self, state: JobState, error: str) -> Outcome: ...


@dataclass
class Settlement:
    result: JobResult
    entry: dict[str, Any] | None  # the job's ledger line; None when it gets none (never reached a pod, or has one)


def serverless_spend(item: ItemResult, images: int) -> Spend:
    generated = item.manifest.get("images_generated") if isinstance(item.manifest, dict) else None
    ai_images = generated if isinstance(generated, int) and 0 <= generated <= 1000 else images
    return Spend(cost_usd=round(item.cost_usd, 6), gpu_seconds=round(item.execution_s, 3), images=ai_images)


def settle(record: JobRecord, outcome: Outcome, *, pod_type: str | None = None,
           now: float | None = None) -> Settlement:
    """The job's result and its ledger line from its record and outcome (pure: writes nothing)."""
    item = outcome.item
    if outcome.spend is not None:
        spend = outcome.spend
    elif item is not None:
        spend = serverless_spend(item, len(outcome.images))
    else:
        spend = compute_spend(record.cost_basis, outcome.status, outcome.manifest, started_epoch=record.started_epoch,
                              pod_type=pod_type, now=now)
    if outcome.local_manifest is not None:
        manifest = outcome.local_manifest
    elif outcome.manifest is not None:
        manifest = outcome.manifest.raw
    else:
        manifest = item.manifest if item is not None else {}
    result = JobResult(job_id=record.job_id, status=JobState(outcome.state), images=list(outcome.images),
                       raw_render=outcome.raw_render, manifest=manifest, error=outcome.error,
                       cost_usd=spend.cost_usd, output_dir=Path(record.local_output_dir), cost_flag=spend.flag)
    entry = None
    # A batch whose every item was reused never reaches the pod; it still gets its ($0) line.
    if not record.ledgered and (record.remote_job_dir or (record.is_batch and outcome.state == JobState.DONE)):
        entry = ledger_entry(record.job_id, record.host, str(result.status), spend, len(result.images),
                             record.submitted_at)
        device = device_summary(manifest) or record.render_device
        if device:
            entry["render_device"] = device
        backend = manifest.get("backend") if isinstance(manifest, dict) else None
        entry["backend"] = backend if backend in BACKENDS else record.cost_basis.get("backend", "unknown")
        if record.is_batch:
            entry.update(items_done=len(record.items_done), items_reused=len(record.items_reused))
        if item is not None:
            entry["requests"] = len(item.request_ids)
    return Settlement(result, entry)


def account(record: JobRecord, record_path: Path | None, settlement: Settlement) -> JobResult:
    """Write the record's terminal state and its one ledger line (the caller holds the job lock)."""
    result = settlement.result
    record.status, record.error, record.cost_usd = result.status, result.error, result.cost_usd
    if settlement.entry is not None:
        record.gpu_seconds = settlement.entry["gpu_seconds"]
    record.cost_flag = result.cost_flag
    record.images = [str(p) for p in result.images]
    record.render_device = device_summary(result.manifest) or record.render_device
    record.stage = "done"
    if settlement.entry is not None:
        append_once(settlement.entry)
        record.ledgered = True
    record.save(record_path)
    log.info("job %s %s%s", record.job_id, result.status, f": {result.error}" if result.error else "")
    return result


def end(record: JobRecord, record_path: Path | None, outcome: Outcome, progress: Callable[[JobProgress], None],
        *, pod_type: str | None = None) -> JobResult:
    """Settle, account and report: the one way every job ends."""
    result = account(record, record_path, settle(record, outcome, pod_type=pod_type, now=time.time()))
    progress(JobProgress("done", 1.0, f"{len(result.images)} image(s), ${result.cost_usd or 0:.4f}"
                         if result.status == JobState.DONE else f"{result.status}: {result.error}"))
    return result


def follow(executor: Executor, *, start: bool = True) -> JobResult:
    """Start the job (or, re-attached, only follow it), wait for it, fetch and settle it.

    Whatever stops it once started (a cancel, a full disk, its time limit, an
    unusable status) stops it there and settles it with what it spent."""
    try:
        if start:
            executor.start()
        while not executor.poll():
            pass
    except Cancelled:
        # Also when the cancel landed mid-download (a batch streaming its items), not only between polls.
        executor.cancel()
        outcome = executor.stopped(JobState.CANCELLED, "cancelled by the user")
    except (PodDiskFull, StatusUnusable, TimeLimitReached) as exc:
        # The laptop gives up on the job: it must not go on spending, and what it spent is charged.
        executor.cancel()
        outcome = executor.stopped(JobState.FAILED, str(exc))
    else:
        outcome = executor.fetch()
    if outcome.raw_render is None and (Path(executor.record.local_output_dir) / "render.png").is_file():
        outcome.raw_render = Path(executor.record.local_output_dir) / "render.png"
    return end(executor.record, executor.record_path, outcome, executor.progress, pod_type=executor.pod_type)


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


def device_summary(manifest: dict[str, Any]) -> str:
    """The manifest's render device as one short line ("CUDA: NVIDIA A40 x2"); '' when it has none.

    The manifest comes from the pod: only text of a bounded length is used.
    """
    device = manifest.get("render_device")
    if not isinstance(device, dict) or not isinstance(device.get("kind"), str):
        return ""
    names = [n for n in device.get("names", []) if isinstance(n, str)] if isinstance(device.get("names"), list) else []
    counted = [f"{name} x{names.count(name)}" if names.count(name) > 1 else name for name in dict.fromkeys(names)]
    summary = f"{device['kind']}: {', '.join(counted)}" if counted else device["kind"]
    summary = "".join(ch for ch in summary if ch.isprintable())[:120]
    return f"{summary} (fallback)" if device.get("warning") else summary


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
    names = ([*manifest.images, *([manifest.render] if manifest.render else [])]) if manifest else []
    if manifest is not None and runner.streamer is not None:
        # A batch: the streamer brings back (and remembers for reuse) each done item not streamed yet;
        # besides them only the contact sheet, by its fixed name (never a path taken from the manifest).
        names = ["contact-sheet.png"] if isinstance(manifest.raw.get("contact_sheet"), dict) else []
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
    missing = [p.name for p in images if not p.is_file()]
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


def result_from_record(record: JobRecord) -> JobResult:
    """A settled job's result as its record and checked local outputs say."""
    output_dir = Path(record.local_output_dir)
    images = []
    for name in (_relative(image, output_dir) for image in record.images):
        try:
            path = output_path(output_dir, name, allow_item_dirs=True)
        except PodOutputError:
            continue
        if path.is_file():
            images.append(path)
    raw = output_dir / "render.png"
    return JobResult(job_id=record.job_id, status=record.status, images=images, raw_render=raw if raw.is_file() else None,
                     error=record.error, cost_usd=record.cost_usd, output_dir=output_dir, cost_flag=record.cost_flag)


def _relative(image: str, output_dir: Path) -> str:
    """A record's image as ``<file>`` or ``<item>/<file>`` under the job's output folder."""
    path = Path(image)
    if path.is_absolute():
        try:
            return path.relative_to(output_dir).as_posix()
        except ValueError:
            return path.name
    return path.as_posix()
