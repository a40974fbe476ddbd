"""The serverless executor: one render job on a RunPod Serverless host, as
a one-item batch of :mod:`remote.runpod.serverless`.

``run_job`` hands a job here when its host's kind is ``serverless``. It ends
through the same :func:`remote.jobs.settle.settle` as a pod job, so the
result, record and ledger line (once only, with the AI images, GPU seconds
and backend) look the same and the add-on and the CLI need not know where it
ran. Its record's ``remote_job_dir`` is ``serverless:<host>``: a re-attach
recognises it and never tries ssh (:func:`interrupted_outcome`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..core.config import HostConfig
from ..core.jobspec import RenderJob
from ..runpod.endpoint import EndpointError
from ..runpod.serverless import BatchItem, ItemResult, run_batch
from .ledger import Spend, append_ledger
from .settle import Outcome, end
from .state import JobProgress, JobRecord, JobResult, JobState, PipelineError, stage_fraction

log = logging.getLogger(__name__)
SERVERLESS_PREFIX = "serverless:"


def run_serverless_job(job: RenderJob, blend_file: Path, host: HostConfig, record: JobRecord, record_path: Path | None,
                       progress: Callable[[JobProgress], None], cancel: threading.Event) -> JobResult:
    """Render ``job`` on the host's endpoint; raises PipelineError for what stops it before it runs."""
    record.remote_job_dir = f"{SERVERLESS_PREFIX}{host.name}"
    record.status, record.stage = JobState.RUNNING, "rendering"
    record.started_epoch = time.time()
    record.save(record_path)
    progress(JobProgress("uploading", stage_fraction("uploading"),
                         f"sending {blend_file.name} to endpoint {host.serverless.endpoint_id}"
                         if host.serverless else "sending the scene"))
    item = BatchItem(record.job_id, RenderJob(**{**job.__dict__, "blend_path": str(blend_file)}))
    output_root = Path(record.local_output_dir).parent
    try:
        results = run_batch(host, [item], output_root, on_item=lambda result: None, cancel=cancel,
                            progress=lambda line: progress(JobProgress("rendering", stage_fraction("rendering"), line)),
                            record_event=append_ledger, batch_id=record.job_id)
    except EndpointError as exc:
        raise PipelineError(str(exc)) from None
    return end(record, record_path, item_outcome(results[0]), progress)


def item_outcome(item: ItemResult) -> Outcome:
    """The serverless item's result as the job's outcome (its AI images and raw render as files here)."""
    images = [path for path in item.files if path.name.startswith("ai-render-")]
    raw = next((path for path in item.files if path.name == "render.png"), None)
    state = JobState(item.status) if item.status in (JobState.DONE, JobState.CANCELLED) else JobState.FAILED
    log.info("serverless job %s: %s", item.item_id, item.status)
    return Outcome(state, item.error, item=item, images=images, raw_render=raw)


def interrupted_outcome(record: JobRecord) -> Outcome:
    """A serverless job whose process ended (kill -9, a closed Blender) before it settled.

    Its request's outputs are not tracked past the process, so it ends failed,
    asking for a re-submit; its one ledger line says the spend is unknown
    rather than leaving the job unsettled."""
    host = record.remote_job_dir.removeprefix(SERVERLESS_PREFIX) or record.host
    return Outcome(JobState.FAILED,
                   f"the serverless job on {host} was interrupted before it finished (its process ended); "
                   "submit it again",
                   spend=Spend(cost_usd=0.0, gpu_seconds=0.0, images=0,
                               flag=f"interrupted: what the endpoint billed is not known here; see {host}'s usage"))
