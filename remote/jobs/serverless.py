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
from ..scene.pack import PackedScene
from ..scene.shipment import SceneShipment
from .ledger import Spend, append_ledger
from .outcome import Outcome
from .state import JobProgress, JobRecord, JobState, PipelineError, stage_fraction

log = logging.getLogger(__name__)
SERVERLESS_PREFIX = "serverless:"


class ServerlessExecutor:
    """A job on the host's endpoint. Its batch runner follows the request to
    its end within ``start`` (a cancel reaches it through the same event), so
    ``poll`` finds it ended and ``fetch`` has its files here."""

    def __init__(self, job: RenderJob, blend_file: Path, scene: PackedScene, host: HostConfig, record: JobRecord,
                 record_path: Path | None, progress: Callable[[JobProgress], None], cancel: threading.Event) -> None:
        self.job, self.blend_file, self.scene, self.host, self.cancel_event = job, blend_file, scene, host, cancel
        self.record, self.record_path, self.progress = record, record_path, progress
        self.pod_type: str | None = None
        self.item: ItemResult | None = None

    def prepare(self) -> None:
        """The record says where the job runs (a re-attach knows it has no ssh to follow)."""
        record = self.record
        record.remote_job_dir = f"{SERVERLESS_PREFIX}{self.host.name}"
        record.status, record.stage = JobState.RUNNING, "rendering"
        record.started_epoch = time.time()
        record.save(self.record_path)

    def start(self) -> None:
        """Sends the scene and follows the request to its end; raises PipelineError for what stops it before it runs."""
        record, blend_file = self.record, self.blend_file
        self.progress(JobProgress("uploading", stage_fraction("uploading"),
                                  f"sending {blend_file.name} to endpoint {self.host.serverless.endpoint_id}"
                                  if self.host.serverless else "sending the scene"))
        item = BatchItem(record.job_id, RenderJob(**{**self.job.__dict__, "blend_path": str(blend_file)}), self.scene)
        try:
            results = run_batch(self.host, [item], Path(record.local_output_dir).parent, on_item=lambda result: None,
                                cancel=self.cancel_event, record_event=append_ledger, batch_id=record.job_id,
                                on_scene=self._scene_sent,
                                progress=lambda line: self.progress(
                                    JobProgress("rendering", stage_fraction("rendering"), line)))
        except EndpointError as exc:
            raise PipelineError(str(exc)) from None
        self.item = results[0]

    def _scene_sent(self, shipment: SceneShipment) -> None:
        self.record.scene = shipment.to_json_dict()
        self.record.save(self.record_path)

    def poll(self) -> bool:
        return True  # start() returned: the request ended

    def fetch(self) -> Outcome:
        assert self.item is not None
        return item_outcome(self.item)

    def cancel(self) -> None:
        self.cancel_event.set()

    def stopped(self, state: JobState, error: str) -> Outcome:
        return item_outcome(self.item) if self.item is not None else Outcome(state, error)


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
