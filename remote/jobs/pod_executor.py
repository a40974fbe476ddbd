"""The pod executor owns one job on a pod: the pod resumed and the bridge
opened (:func:`pod_connection`), then :class:`PodExecutor` prepares it (the
estimate and time limit, set-up, the idle watchdog, the scene and the job
uploaded), starts, polls (a batch's items streamed back as they finish),
fetches and cancels it. Its outcome — the manifest checked, exactly the files
it names brought back, or, when it was stopped, what its status, manifest and
streamed items show it made and spent — goes to :func:`.settle.follow`."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..bridge.api import Bridge
from ..core.config import HostConfig
from ..core.estimate import estimate as estimate_cost
from ..core.jobspec import RenderJob
from ..core.pod_output import ACTIVE_STATES, PodManifest, PodOutputError, PodStatus, output_path
from ..runpod.idle import arm_watchdog
from ..runpod.pods import prepare_host
from ..scene.pack import PackedScene
from .items import ItemCache, ItemStreamer, finish_manifest
from .ledger import append_ledger, compute_spend, variations_of
from .outcome import Outcome
from .pod_steps import POLL_S, JobRunner
from .scene_upload import SceneUploader
from .state import JobProgress, JobRecord, JobState, PipelineError, stage_fraction

log = logging.getLogger(__name__)


def default_time_limit(estimated_gpu_seconds: float) -> float:
    """Ten times the estimate, at least 15 minutes: generous for a slow pod, a stop for a stuck one."""
    return max(900.0, 10 * estimated_gpu_seconds)


@contextmanager
def pod_connection(hosts: dict[str, HostConfig], record: JobRecord, record_path: Path | None,
                   progress: Callable[[JobProgress], None], cancel: threading.Event) -> Iterator[JobRunner]:
    """The record's host ready for its job: a RunPod pod resumed (and ``hosts`` pointed at it), the bridge open."""
    prepare_host(hosts, record.host, lambda line: progress(JobProgress("connecting", 0.0, line)), append_ledger)
    with Bridge(hosts) as bridge:
        yield JobRunner(bridge, bridge.host(record.host), progress, cancel, record, record_path)


class PodExecutor:
    """One job on a pod over the bridge, from its set-up to its outcome.

    ``job`` and ``scene`` are what :meth:`prepare` sends; a re-attached job has neither (it is only followed).
    """

    def __init__(self, runner: JobRunner, *, job: RenderJob | None = None, scene: PackedScene | None = None,
                 api_key: str | None = None, time_limit_s: float | None = None) -> None:
        self.runner, self.job, self.scene, self.api_key, self.time_limit_s = runner, job, scene, api_key, time_limit_s
        self.record, self.record_path, self.progress = runner.record, runner.record_path, runner.progress
        self.pod_type: str | None = runner.host.pod_type
        self.status: PodStatus | None = None
        self.polling_since: float | None = None
        # A batch: each item is brought back (and remembered for reuse) as soon as the pod finishes it.
        self.streamer = (ItemStreamer(runner, Path(self.record.local_output_dir), ItemCache(),
                                      self.record.settings_digest) if self.record.is_batch else None)

    def prepare(self) -> None:
        """The estimate and time limit, the pod set up, its idle watchdog armed, the scene and the job uploaded."""
        assert self.job is not None and self.scene is not None, "a re-attached job is only followed"
        runner, record, host = self.runner, self.record, self.runner.host
        estimate = estimate_cost(self.job, host.pod_type, items=int(record.cost_basis.get("items", 1)))
        record.estimate_usd = estimate.total_usd
        record.time_limit_s = self.time_limit_s or default_time_limit(estimate.gpu_seconds)
        record.remote_job_dir = f"{host.workspace}/jobs/{record.job_id}"
        record.save(self.record_path)
        runner.stage("connecting", f"connecting to {host.name}")
        runner.run("true", "connecting")
        runner.set_up_pod(self.job.blender_version, self.job.backend)
        arm_watchdog(runner.run, host, append_ledger)
        blend_name = Path(self.scene.blend).name
        runner.stage("uploading", f"uploading {blend_name} and its files")
        shipment = SceneUploader(runner, self.scene).ship()
        record.scene = shipment.to_json_dict()
        record.save(self.record_path)
        self.progress(JobProgress("uploading", 0.5, shipment.summary(), scene_summary=shipment.summary()))
        runner.upload_job(self.job, self.scene.blend)

    def start(self) -> None:
        self.runner.start(self.api_key)

    def poll(self) -> bool:
        status = self.runner.poll()
        if status is not None and status.state not in ACTIVE_STATES:
            self.status = status
            return True
        if status is not None:
            self._report(status)
        self.runner.cancel.wait(POLL_S)
        return False

    def _report(self, status: PodStatus) -> None:
        """A running job's progress line (and a batch's finished items brought back)."""
        self.polling_since = self.polling_since or time.monotonic()
        elapsed = time.monotonic() - self.polling_since
        waiting = f", waiting for the GPU ({status.queue_position} ahead)" if status.queue_position else ""
        items = self.streamer.on_status(status) if self.streamer else None
        self.progress(JobProgress("rendering", stage_fraction("rendering", min(elapsed / (elapsed + 30), 0.9)),
                                  f"{status.state} on {self.runner.host.name} for {elapsed:.0f}s{waiting}"
                                  + (f": {items}" if items else "")))

    def fetch(self) -> Outcome:
        assert self.status is not None
        if self.status.state == "none":
            raise PipelineError(f"the pod has no job {self.record.job_id} (was its workspace wiped?); submit it again")
        return finish(self.runner, self.status, self.streamer)

    def cancel(self) -> None:
        self.runner.cancel_on_pod()

    def stopped(self, state: JobState, error: str) -> Outcome:
        return stopped_outcome(self.runner, state, error)


def finish(runner: JobRunner, status: PodStatus, streamer: ItemStreamer | None) -> Outcome:
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
    if manifest is not None and streamer is not None:
        # A batch: the streamer brings back (and remembers for reuse) each done item not streamed yet;
        # the contact sheet is laid out here from their thumbnails (finish_manifest).
        names = []
    try:
        if streamer is not None and manifest is not None:
            runner.stage("downloading", "bringing the remaining items back")
            streamer.fetch()
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
    if manifest is not None and streamer is not None:
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
    streamed = len(record.items_done) * variations_of(record.cost_basis)
    spend = compute_spend(record.cost_basis, status, manifest, started_epoch=record.started_epoch,
                          pod_type=runner.host.pod_type, images_floor=streamed)
    return Outcome(state, error, status=status, manifest=manifest, images=images, local_manifest=local_manifest,
                   spend=spend)


def _manifest_or_none(runner: JobRunner) -> PodManifest | None:
    try:
        return runner.read_manifest()
    except (PipelineError, PodOutputError):
        return None
