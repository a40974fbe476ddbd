"""One render job on a serverless host: the pipeline's job as a one-item batch.

``run_job`` hands a job here when its host has a ``serverless:`` section;
the result, record and ledger look as they do for a pod job, so the add-on
and the CLI need not know where it ran.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..core.config import HostConfig
from ..core.jobspec import RenderJob
from ..runpod.endpoint import EndpointError
from ..runpod.serverless import BatchItem, ItemResult, run_batch
from .ledger import append_ledger
from .state import JobProgress, JobRecord, JobResult, PipelineError

log = logging.getLogger(__name__)


def run_serverless_job(job: RenderJob, blend_file: Path, host: HostConfig, record: JobRecord, record_path: Path | None,
                       progress: Callable[[JobProgress], None], cancel: threading.Event) -> JobResult:
    """Render ``job`` on the host's endpoint; raises PipelineError for what stops it before it runs."""
    record.remote_job_dir = f"serverless:{host.name}"
    record.status, record.stage = "running", "rendering"
    record.save(record_path)
    progress(JobProgress("uploading", 0.4, f"sending {blend_file.name} to endpoint {host.serverless.endpoint_id}"
                         if host.serverless else "sending the scene"))
    item = BatchItem(record.job_id, RenderJob(**{**job.__dict__, "blend_path": str(blend_file)}))
    output_root = Path(record.local_output_dir).parent
    try:
        results = run_batch(host, [item], output_root, on_item=lambda result: None, cancel=cancel,
                            progress=lambda line: progress(JobProgress("rendering", 0.6, line)),
                            record_event=append_ledger, batch_id=record.job_id)
    except EndpointError as exc:
        raise PipelineError(str(exc)) from None
    return _finish(results[0], record, record_path, progress)


def _finish(item: ItemResult, record: JobRecord, record_path: Path | None,
            progress: Callable[[JobProgress], None]) -> JobResult:
    images = [path for path in item.files if path.name.startswith("ai-render-")]
    raw = next((path for path in item.files if path.name == "render.png"), None)
    record.status, record.error, record.cost_usd, record.stage = item.status, item.error, item.cost_usd, "done"
    record.images = [str(path) for path in images]
    record.save(record_path)
    append_ledger({"job_id": record.job_id, "host": record.host, "status": item.status, "cost_usd": item.cost_usd,
                   "images": len(images), "at": record.submitted_at, "requests": len(item.request_ids)})
    progress(JobProgress("done", 1.0, f"{len(images)} image(s), ${item.cost_usd:.4f}" if item.status == "done"
                         else f"{item.status}: {item.error}"))
    log.info("serverless job %s: %s", record.job_id, item.status)
    return JobResult(job_id=record.job_id, status=item.status, images=images, raw_render=raw, manifest=item.manifest,
                     error=item.error, cost_usd=item.cost_usd, output_dir=Path(record.local_output_dir))
