"""One render job end to end: upload, pod set-up, headless render + SDXL,
download. Runs in a worker thread of the add-on, in the CLI and in tests.

Stages (reported through ``progress``): connecting, setup, uploading,
rendering, downloading, done. The pod side is ``pod_setup/`` (shipped to
``$WORKSPACE/posefactory`` as a content-addressed bundle and set up by
``setup_pod.sh`` before every job, which is quick when nothing changed and
repairs a restarted or wiped pod). The scene is packed first (its files
traced by Blender's asset tracer, :mod:`remote.scene`; a missing one is named
before anything is uploaded), then only the files the pod's store lacks
travel, the .blend as a delta (:mod:`.scene_upload`): an unchanged scene
moves 0 bytes.

Nothing is rendered or paid for twice: a job has one job dir on the pod and
``pod_agent.sh JOBDIR`` never starts a job dir that already has a status.
A job record (JSON) on the laptop lets a restarted Blender re-attach
(:func:`reattach`). The Stability key travels only as an environment value of
the one command that starts the job (redacted from results, never written
to the pod's disk or the record).

Everything the pod sends back is checked by :mod:`remote.core.pod_output` before
it is used; every job that reached the pod ends with exactly one ledger line
(:mod:`remote.jobs.ledger`), written by the one process holding the job lock.
"""
from __future__ import annotations

import logging
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..bridge.api import UnknownHost
from ..core.batch_spec import MAX_ITEMS, BatchSpecError
from ..core.blendfile import NotABlendFile, check_blend_file
from ..core.config import ConfigError, load_hosts
from ..core.cost import CostConfigError
from ..core.jobspec import STABILITY_KEY_BACKENDS, JobValidationError, RenderJob, control_files
from ..core.pod_output import WIRE_VERSION, clean_text, output_path
from ..runpod.pods import RunPodError
from ..scene.pack import PackedScene, SceneError, pack_scene
from .items import BatchPlan, ItemCache, copy_reused, finish_manifest, is_batch, openpose_checks, plan_batch
from .job_lock import JobBusy, job_lock
from .ledger import Spend, compute_spend
from .outcome import Outcome
from .pod_executor import PodExecutor, pod_connection
from .serverless import SERVERLESS_PREFIX, ServerlessExecutor, interrupted_outcome
from .settle import end, follow, result_from_record
from .state import Cancelled, JobProgress, JobRecord, JobResult, JobState, PipelineError

log = logging.getLogger(__name__)


def new_job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _reuse_everything(record: JobRecord, record_path: Path | None, plan: BatchPlan,
                      progress: Callable[[JobProgress], None]) -> JobResult:
    """Every item of the batch is already here: nothing is uploaded, rendered or paid for (one $0 ledger line)."""
    local_dir = Path(record.local_output_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"version": WIRE_VERSION, "job_id": record.job_id, "status": "done",
                                "prompt": record.prompt, "poses": plan.job.poses, "cameras": plan.job.cameras,
                                "actual_cost": {"total_usd": 0.0}, "items": []}
    finish_manifest(manifest, record.items_reused, local_dir, record.items_order)
    images = [p for p in (output_path(local_dir, name, allow_item_dirs=True) for name in manifest["images"])
              if p.is_file()]
    progress(JobProgress("rendering", -1, f"all {len(record.items_reused)} item(s) reused from earlier jobs, $0"))
    return end(record, record_path, Outcome(JobState.DONE, images=images, local_manifest=manifest,
                                            spend=Spend(cost_usd=0.0, gpu_seconds=0.0, images=0)), progress)


def _plan(job: RenderJob, blend_file: Path, scene: PackedScene, record: JobRecord, *, fresh: bool) -> BatchPlan:
    """A batch's items, checked against the scene, and those reused; kept in the record.

    An item is reused only for the same tree (a changed texture is a changed scene).
    """
    try:
        plan = plan_batch(job, blend_file, scene.digest, fresh=fresh, cache=ItemCache())
    except BatchSpecError as exc:
        raise PipelineError(str(exc)) from None
    record.is_batch, record.settings_digest = True, plan.digest
    record.items_order = [i["name"] for i in plan.items or []]
    record.items_reused = copy_reused(plan, Path(record.local_output_dir))
    # Reused items cost nothing: the bound on what the pod may bill counts only those it renders.
    record.cost_basis["items"] = len(plan.items) - len(plan.reused) if plan.items is not None else MAX_ITEMS
    return plan


def _guarded(record: JobRecord, record_path: Path | None, body: Callable[[], JobResult]) -> JobResult:
    """Run ``body``; whatever stops it before the job settled on its own settles here, once."""
    try:
        return body()
    except Cancelled:
        state, error = JobState.CANCELLED, "cancelled by the user"
    except (PipelineError, ConfigError, UnknownHost, JobValidationError, CostConfigError, RunPodError,
            OSError) as exc:
        state, error = JobState.FAILED, clean_text(exc)
    except Exception as exc:  # a fault of ours (or a library's) still ends the job once, with its ledger line
        log.exception("job %s: unexpected %s", record.job_id, type(exc).__name__)
        state, error = JobState.FAILED, f"internal error ({type(exc).__name__}: {clean_text(exc, 200)}); details in the log"
    # A job that reached the pod is charged what the laptop knows was spent (settle gives it its one line).
    spend = compute_spend(record.cost_basis, None, None, started_epoch=record.started_epoch, pod_type=None)
    # No "done" progress: the caller reports the failure from the result.
    return end(record, record_path, Outcome(state, error, spend=spend), lambda report: None)


def _check_openpose(job: RenderJob, blend_file: Path, progress: Callable[[JobProgress], None]) -> None:
    """An OpenPose job whose skeleton would be empty stops here, before anything is spent; a thin one
    (a portrait) goes on and says so, and so does a preview (showing the skeleton is what it is for)."""
    if "openpose" not in job.control:
        return
    try:
        checks = openpose_checks(blend_file, job)
    except BatchSpecError as exc:
        raise PipelineError(str(exc)) from None
    empty = [check.line for check in checks or [] if check.empty]
    if empty and job.backend != "none":
        raise PipelineError(empty[0] + (f" (and {len(empty) - 1} more item(s))" if len(empty) > 1 else ""))
    for check in checks or []:
        progress(JobProgress("packing", 0.0, f"warning: {check.line}"))


def run_job(job: RenderJob, blend_file: Path, *, host: str, hosts_file: Path | None, local_output_dir: Path,
            api_key: str | None, progress: Callable[[JobProgress], None], cancel: threading.Event,
            record_path: Path | None = None, time_limit_s: float | None = None, fresh: bool = False,
            scene_key: str | None = None) -> JobResult:
    """Render ``blend_file`` on ``host`` with ``job``'s settings and bring the images back.

    ``blend_file`` is packed with the files it needs (not changed itself);
    ``scene_key`` names the scene it is a version of (default: its path), whose
    last version on the pod the new .blend is sent as a delta against.

    ``time_limit_s``: the job's limit on the pod (default: :func:`.pod_executor.default_time_limit`).
    A batch (poses × cameras) is checked against the scene first; its items
    already done by an earlier job are reused (not rendered or paid again)
    unless ``fresh``, and finished items come back while it runs.

    Never raises for a failure of the job: the result's status and error say
    what happened, and the record (when given) is kept up to date.
    """
    job_id = job.job_id or new_job_id()
    record = JobRecord(job_id=job_id, host=host, hosts_file=str(hosts_file) if hosts_file else None,
                       remote_job_dir="", local_output_dir=str(Path(local_output_dir) / job_id),
                       prompt=clean_text(job.prompt, one_line=False), control_files=control_files(job.control),
                       cost_basis={"engine_id": job.engine_id, "steps": job.steps, "variations": job.variations,
                                   "backend": job.backend})

    def body() -> JobResult:
        # The paths are the pod's, filled in at upload; everything else is checked now.
        replace(job, blend_path=str(blend_file), output_dir=str(local_output_dir)).validate()
        if job.backend in STABILITY_KEY_BACKENDS and not api_key:
            raise PipelineError(f"no Stability API key for backend {job.backend}: set STABILITY_API_KEY or the key "
                                "in the add-on preferences (or use backend 'diffusers' or 'none')")
        if not Path(blend_file).is_file():
            raise PipelineError(f"scene file not found: {blend_file}")
        try:
            check_blend_file(blend_file)  # before anything is uploaded or paid for
        except NotABlendFile as exc:
            raise PipelineError(str(exc)) from None
        progress(JobProgress("packing", 0.0, f"packing {Path(blend_file).name}"))  # on this machine, before any host
        try:
            scene = pack_scene(Path(blend_file), Path(work), key=scene_key, cancel=cancel,
                               leave_out=Path(local_output_dir))
        except SceneError as exc:
            raise PipelineError(str(exc)) from None
        _check_openpose(job, Path(blend_file), progress)
        hosts = load_hosts(hosts_file)
        pod_job = job
        if is_batch(job):
            plan = _plan(job, Path(blend_file), scene, record, fresh=fresh)
            if plan.all_reused:
                return _reuse_everything(record, record_path, plan, progress)
            pod_job = plan.job
        if host in hosts and hosts[host].kind == "serverless":  # RunPod Serverless: no pod, no ssh
            return follow(ServerlessExecutor(pod_job, Path(blend_file), scene, hosts[host], record, record_path,
                                             progress, cancel))
        with pod_connection(hosts, record, record_path, progress, cancel) as runner:
            return follow(PodExecutor(runner, job=pod_job, scene=scene, api_key=api_key, time_limit_s=time_limit_s))

    with job_lock(job_id, "submitting"), tempfile.TemporaryDirectory(prefix="posefactory-pack-") as work:
        return _guarded(record, record_path, body)


def reattach(record_path: Path, *, hosts_file: Path | None = None, progress: Callable[[JobProgress], None],
             cancel: threading.Event) -> JobResult:
    """Pick up a job a previous session started: wait for it, then download.

    Only one process follows a job: when another holds it, the result is
    ``busy`` and nothing (record, ledger, downloads) is touched.
    """
    record = JobRecord.load(record_path)
    try:
        lock = job_lock(record.job_id, "re-attaching")
    except JobBusy as exc:
        return JobResult(job_id=record.job_id, status="busy", error=str(exc), output_dir=Path(record.local_output_dir))
    with lock:
        record = JobRecord.load(record_path)  # as the previous holder left it
        if record.status == JobState.CANCELLED or record.stage == "done":
            return result_from_record(record)
        if record.remote_job_dir.startswith(SERVERLESS_PREFIX):
            # Nothing to ssh to: the process that followed the endpoint's request is gone.
            return end(record, record_path, interrupted_outcome(record), progress)

        def body() -> JobResult:
            if not record.remote_job_dir:
                raise PipelineError("the job never reached the pod; submit it again")
            hosts = load_hosts(hosts_file or record.hosts_file)
            with pod_connection(hosts, record, record_path, progress, cancel) as runner:
                runner.stage("rendering", f"re-attaching to {record.job_id} on {record.host}")
                return follow(PodExecutor(runner), start=False)

        return _guarded(record, record_path, body)
