"""How a job that reached the pod ends: its manifest checked, exactly the
files it names downloaded, its record and its one ledger line written
together (:mod:`remote.jobs.ledger`). Used by :mod:`remote.jobs.pipeline` for
submitted and re-attached jobs alike, always under the job lock."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.jobspec import BACKENDS
from ..core.pod_output import PodManifest, PodOutputError, PodStatus, output_path
from .items import finish_manifest
from .ledger import Spend, append_once, compute_spend, ledger_entry
from .state import Cancelled, JobProgress, JobRecord, JobResult, PipelineError, PodDiskFull, StatusUnusable, TimeLimitReached

if TYPE_CHECKING:
    from .pod_executor import JobRunner

log = logging.getLogger(__name__)


def settle(runner: JobRunner, state: str, error: str | None, status: PodStatus | None,
           manifest: PodManifest | None, images: list[Path], local_manifest: dict[str, Any] | None = None) -> JobResult:
    """The job's terminal state: record and ledger, once, agreeing.

    ``local_manifest``: a batch's manifest as kept here (the pod's items and the reused ones)."""
    record = runner.record
    spend = compute_spend(record.cost_basis, status, manifest, started_epoch=record.started_epoch,
                          pod_type=runner.host.pod_type)
    output_dir = Path(record.local_output_dir)
    raw = output_dir / "render.png"
    result = JobResult(job_id=record.job_id, status=state, images=images,
                       raw_render=raw if raw.is_file() else None,
                       manifest=local_manifest if local_manifest is not None else manifest.raw if manifest else {},
                       error=error, cost_usd=spend.cost_usd, output_dir=output_dir, cost_flag=spend.flag)
    account(record, runner.record_path, result, spend)
    runner.progress(JobProgress("done", 1.0, f"{len(images)} image(s), ${spend.cost_usd:.4f}"
                                if state == "done" else f"{state}: {error}"))
    return result


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


def account(record: JobRecord, record_path: Path | None, result: JobResult, spend: Spend) -> None:
    """Write the record's terminal state and its one ledger line (the caller holds the job lock)."""
    record.status, record.error, record.cost_usd = result.status, result.error, spend.cost_usd
    record.gpu_seconds, record.cost_flag = spend.gpu_seconds, spend.flag
    record.images = [str(p) for p in result.images]
    record.render_device = device_summary(result.manifest) or record.render_device
    record.stage = "done"
    # A batch whose every item was reused never reaches the pod; it still gets its ($0) line.
    if not record.ledgered and (record.remote_job_dir or record.is_batch):
        entry = ledger_entry(record.job_id, record.host, result.status, spend, len(result.images), record.submitted_at)
        if record.render_device:
            entry["render_device"] = record.render_device
        backend = result.manifest.get("backend") if isinstance(result.manifest, dict) else None
        entry["backend"] = backend if backend in BACKENDS else record.cost_basis.get("backend", "unknown")
        if record.is_batch:
            entry.update(items_done=len(record.items_done), items_reused=len(record.items_reused))
        append_once(entry)
        record.ledgered = True
    record.save(record_path)


def finish(runner: JobRunner, status: PodStatus) -> JobResult:
    """The pod's job ended: check its manifest, download what it names, settle."""
    record = runner.record
    local_dir = Path(record.local_output_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        manifest = runner.read_manifest()
    except PodOutputError as exc:
        log.warning("job %s: manifest refused: %s", record.job_id, exc)
        return settle(runner, "failed", str(exc), status, None, [])
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
            return settle(runner, "failed", f"{exc} (the images are still in {runner.record.remote_job_dir} on the pod)",
                           status, manifest, [])
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
    state, error = ("done", None) if status.state == "done" else (status.state, status.error or
                                                                   (manifest.error if manifest else "") or None)
    if state == "done" and (missing or manifest is None):
        state, error = "failed", (f"the pod reported done but {', '.join(missing)} did not arrive" if missing
                                  else "the pod reported done but wrote no manifest")
    if state == "failed" and error is None:
        error = "the job failed on the pod without saying why; see render.log there"
    return settle(runner, state, error, status, manifest, [p for p in images if p.is_file()], local_manifest)


def follow(runner: JobRunner, start: Callable[[], PodStatus]) -> JobResult:
    """Start or wait for the pod's job and settle it whatever happens once it was started."""
    try:
        status = start()
    except Cancelled:
        # Also when the cancel landed mid-download (a batch streaming its items), not only between polls.
        runner.cancel_on_pod()
        final = runner.final_status()
        manifest = _manifest_or_none(runner)
        return settle(runner, "cancelled", "cancelled by the user", final, manifest, [])
    except PodDiskFull as exc:
        return settle(runner, "failed", str(exc), None, None, [])
    except (StatusUnusable, TimeLimitReached) as exc:
        runner.cancel_on_pod()
        return settle(runner, "failed", str(exc), None, None, [])
    if status.state == "none":
        raise PipelineError(f"the pod has no job {runner.record.job_id} (was its workspace wiped?); submit it again")
    return finish(runner, status)


def _manifest_or_none(runner: JobRunner) -> PodManifest | None:
    try:
        return runner.read_manifest()
    except (PipelineError, PodOutputError):
        return None




def result_from_record(record: JobRecord) -> JobResult:
    """A settled job's result as its record and checked local outputs say."""
    output_dir = Path(record.local_output_dir)
    images = []
    for name in (Path(image).name for image in record.images):
        try:
            path = output_path(output_dir, name)
        except PodOutputError:
            continue
        if path.is_file():
            images.append(path)
    raw = output_dir / "render.png"
    return JobResult(job_id=record.job_id, status=record.status, images=images, raw_render=raw if raw.is_file() else None,
                     error=record.error, cost_usd=record.cost_usd, output_dir=output_dir, cost_flag=record.cost_flag)
