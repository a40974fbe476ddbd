"""How every job ends, whatever ended it: done, failed, cancelled, time
limit, disk full, all items reused, re-attached, serverless. Each end is an
:class:`Outcome`; :func:`settle` (pure: no I/O) turns the record and the
outcome into the job's result and its one ledger line, and :func:`account`
writes the record and appends that line once (:func:`ledger.append_once`),
under the job lock.

An executor (:mod:`.outcome`) runs the job somewhere (start, poll, fetch,
cancel): :class:`remote.jobs.pod_executor.PodExecutor` on a pod over the
bridge, or :class:`remote.jobs.serverless.ServerlessExecutor` on a RunPod
Serverless endpoint, chosen by the host's kind; :func:`follow` drives either
to its outcome, and stops and settles the job whatever stops it once started.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.jobspec import BACKENDS
from ..core.pod_output import PodOutputError, device_summary, output_path
from .ledger import Spend, append_once, compute_spend, ledger_entry
from .outcome import Executor, Outcome
from .state import (
    Cancelled,
    JobProgress,
    JobRecord,
    JobResult,
    JobState,
    PodDiskFull,
    StatusUnusable,
    TimeLimitReached,
)

if TYPE_CHECKING:
    from ..runpod.serverless import ItemResult

log = logging.getLogger(__name__)


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
    """Prepare and start the job (or, re-attached, only follow it), wait for it, fetch and settle it.

    Whatever stops it once started (a cancel, a full disk, its time limit, an
    unusable status) stops it there and settles it with what it spent."""
    if start:
        executor.prepare()  # what stops it here is settled by the caller: nothing runs there yet to stop
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
