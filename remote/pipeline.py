"""One render job end to end: upload, pod set-up, headless render + SDXL,
download. Runs in a worker thread of the add-on, in the CLI and in tests.

Stages (reported through ``progress``): connecting, setup, uploading,
rendering, downloading, done. The pod side is ``pod_setup/`` (shipped to
``$WORKSPACE/posefactory`` as a content-addressed bundle and set up by
``setup_pod.sh`` before every job, which is quick when nothing changed and
repairs a restarted or wiped pod). The scene goes to
``$WORKSPACE/scenes/<sha256>.blend``, so an unchanged scene moves 0 bytes.

Nothing is rendered or paid for twice: a job has one job dir on the pod and
``pod_agent.sh JOBDIR`` never starts a job dir that already has a status.
A job record (JSON) on the laptop lets a restarted Blender re-attach
(:func:`reattach`). The Stability key travels only as an environment value of
the one command that starts the job (redacted from results, never written
to the pod's disk or the record).

Everything the pod sends back is checked by :mod:`remote.pod_output` before
it is used; every job that reached the pod ends with exactly one ledger line
(:mod:`remote.accounting`), written by the one process holding the job lock.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import secrets
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .accounting import JobBusy, Spend, append_ledger, compute_spend, job_lock
from .api import Bridge, UnknownHost
from .batch import MAX_ITEMS, BatchSpecError
from .batch_local import BatchPlan, ItemCache, ItemStreamer, copy_reused, finish_manifest, is_batch, plan_batch
from .blendfile import NotABlendFile, check_blend_file
from .config import ConfigError, HostConfig, load_hosts
from .cost import CostConfigError, CostModel
from .job_settle import account, device_summary, follow, result_from_record
from .job_state import (
    Cancelled,
    JobProgress,
    JobRecord,
    JobResult,
    PipelineError,
    PodDiskFull,
    StatusUnusable,
    TimeLimitReached,
)
from .jobspec import BACKEND_SETUP_ENV, STABILITY_KEY_BACKENDS, JobValidationError, RenderJob
from .pod_output import (
    ACTIVE_STATES,
    MAX_MANIFEST_BYTES,
    MAX_STATUS_BYTES,
    PodManifest,
    PodOutputError,
    PodStatus,
    bounded_cat,
    clean_text,
    output_path,
    parse_manifest,
    parse_status,
)
from .runpod_idle import arm_watchdog
from .runpod_pods import RunPodError, prepare_host
from .shell import CommandResult
from .transfer import TransferError, TransferInterrupted, TransferResult
from .transfer.common import q, sha256_file

log = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # holds remote/ and pod_setup/
POLL_S = 0.25  # a status poll is one cheap command; polling often keeps the overhead low
RECONNECT_ATTEMPTS = 5
__all__ = ["Cancelled", "JobProgress", "JobRecord", "JobResult", "JobRunner", "PipelineError", "PodDiskFull",
           "append_ledger", "device_summary", "new_job_id", "pod_bundle", "reattach", "run_job"]
STAGES = ("connecting", "setup", "uploading", "rendering", "downloading", "done")
# The pod enforces a job's time limit itself; the laptop steps in this long after it.
TIME_LIMIT_GRACE_S = 60.0
# A status the laptop cannot use (corrupt, no state, unknown state) fails the job after this long.
STATUS_GRACE_S = 20.0



def new_job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def pod_bundle() -> tuple[bytes, str]:
    """``remote/`` and ``pod_setup/`` as a byte-reproducible tar.gz, and its sha256.

    Fixed times in the tar entries *and* the gzip header (which otherwise holds
    the current time), so an unchanged tree gives the same bytes: 0 bytes moved
    and nothing re-extracted on the pod.
    """
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("remote", "pod_setup"):
            for path in sorted((PACKAGE_ROOT / folder).rglob("*")):
                if "__pycache__" in path.parts or not path.is_file():
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(PACKAGE_ROOT)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


class JobRunner:
    """The steps of one job on one host, with retries across dropped connections."""

    def __init__(self, bridge: Bridge, host: HostConfig, progress: Callable[[JobProgress], None],
                 cancel: threading.Event, record: JobRecord, record_path: Path | None) -> None:
        self.bridge = bridge
        self.host = host
        self.progress = progress
        self.cancel = cancel
        self.record = record
        self.record_path = record_path
        self.streamer: ItemStreamer | None = None  # a batch: brings items back while it runs
        if record.is_batch:
            self.streamer = ItemStreamer(self, Path(record.local_output_dir), ItemCache(), record.settings_digest)

    # -- helpers ---------------------------------------------------------------
    def stage(self, stage: str, message: str) -> None:
        if self.cancel.is_set():
            raise Cancelled()
        self.record.stage = stage
        self.record.save(self.record_path)
        index = STAGES.index(stage)
        self.progress(JobProgress(stage, index / (len(STAGES) - 1), message))

    def pod_settings(self) -> str:
        """Plain settings for pod-side scripts, as a command prefix (not secret, so not redacted)."""
        settings = {"WORKSPACE": self.host.workspace, "POSEFACTORY_POD_TYPE": self.host.pod_type}
        if self.host.is_local:
            # The local "pod" renders with this machine's bpy module unless told otherwise.
            settings["POSEFACTORY_BPY_PYTHON"] = os.environ.get("POSEFACTORY_BPY_PYTHON", sys.executable)
        return " ".join(f"{key}={q(value)}" for key, value in settings.items())

    def run(self, command: str, what: str, *, secrets: dict[str, str] | None = None,
            timeout: float = 600) -> CommandResult:
        """Run on the pod; a dropped connection is retried, anything else is an error.

        ``secrets`` reach the command as environment variables and are redacted from its output.
        """
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            result = self.bridge.run(self.host.name, f"export {self.pod_settings()}; {command}", env=secrets,
                                     timeout=timeout)
            if result.status != "disconnected":
                break
            if attempt == RECONNECT_ATTEMPTS:
                raise PipelineError(f"{what}: lost the connection to {self.host.name} {attempt} times ({result.error})")
            self.progress(JobProgress(self.record.stage, -1, f"reconnecting to {self.host.name} ({attempt})"))
            time.sleep(min(2 ** attempt, 10) * 0.25)
        if not result.ok:
            detail = (result.stderr.strip() or result.error or f"exit code {result.exit_code}").splitlines()[-1]
            raise PipelineError(f"{what} failed on {self.host.name}: {detail}")
        return result

    def transfer(self, direction: str, src: Any, dst: Any, what: str) -> TransferResult:
        """``put`` or ``get``; a dropped connection resumes the transfer, anything else is an error."""
        move = self.bridge.put if direction == "put" else self.bridge.get
        attempt = 1
        while True:
            if self.cancel.is_set():
                raise Cancelled()
            try:
                return move(self.host.name, src, dst)
            except TransferInterrupted as exc:
                if attempt == RECONNECT_ATTEMPTS:
                    raise PipelineError(f"{what}: {exc}") from None
                self.progress(JobProgress(self.record.stage, -1, f"{what}: connection lost, resuming ({attempt})"))
                attempt += 1
            except TransferError as exc:
                raise PipelineError(f"{what}: {exc}") from None

    # -- stages ----------------------------------------------------------------
    def set_up_pod(self, blender_version: str = "", backend: str = "none") -> None:
        """Ship the code bundle (0 bytes when unchanged) and run ``setup_pod.sh``;
        ``blender_version``: the artist's Blender to install there;
        ``backend``: the job's, whose own pod parts (diffusers venv + models, AI Render) are set up only when used.

        Each bundle has its own ``posefactory/code/<digest>/``: extracted beside
        the others under a temporary name and renamed into place, never
        extracted again while present, never deleted under a running job (two
        add-on versions keep theirs side by side; retention removes old ones).
        ``posefactory/remote`` and ``posefactory/pod_setup`` are links to the
        latest, swapped atomically; this job uses its own bundle's path.
        """
        base = f"{self.host.workspace}/posefactory"
        setup_env = BACKEND_SETUP_ENV.get(backend, "")
        bundle, digest = pod_bundle()
        short = digest[:16]
        self.stage("setup", "checking the pod's set-up")
        with tempfile.TemporaryDirectory() as tmp:
            local_bundle = Path(tmp) / f"bundle-{short}.tar.gz"
            local_bundle.write_bytes(bundle)
            self.run(f"mkdir -p {q(base)}/code", "creating the workspace")
            shipped = self.transfer("put", local_bundle, f"{base}/code/{local_bundle.name}", "shipping the pod scripts")
        self.progress(JobProgress("setup", STAGES.index("setup") / (len(STAGES) - 1),
                                  f"scripts: {shipped.bytes_moved} bytes moved"))
        new = f".new-{short}-$$"
        self.run(
            f"cd {q(base)}/code && if [ ! -d {short} ]; then rm -rf {new} && mkdir {new} && "
            f"tar -xzf bundle-{short}.tar.gz -C {new} && {{ mv -T {new} {short} 2>/dev/null || rm -rf {new}; }}; fi && "
            f"cd .. && for name in remote pod_setup; do "
            f"if [ -e \"$name\" ] && [ ! -L \"$name\" ]; then mv \"$name\" \".old-$name-$$\"; fi && "
            f"ln -sfn \"code/{short}/$name\" \".$name.new-$$\" && mv -T \".$name.new-$$\" \"$name\"; done && "
            f"{setup_env + ' ' if setup_env else ''}"
            f"{f'POSEFACTORY_BLENDER_VERSION={q(blender_version)} ' if blender_version else ''}"
            f"bash code/{short}/pod_setup/setup_pod.sh",
            "pod set-up", timeout=1800)
        self.record.pod_code = f"{base}/code/{short}"
        self.record.save(self.record_path)

    def upload(self, job: RenderJob, blend_file: Path) -> RenderJob:
        ws, jobdir = self.host.workspace, self.record.remote_job_dir
        self.stage("uploading", f"uploading {blend_file.name}")
        scene_sha = sha256_file(blend_file)  # cached: the transfer hashes the same file
        scene = self.transfer("put", blend_file, f"{ws}/scenes/{scene_sha}.blend", "uploading the scene")
        self.record.stage = "uploading"
        pod_job = replace(job, job_id=self.record.job_id, blend_path=f"{ws}/scenes/{scene_sha}.blend",
                          output_dir=f"{jobdir}/output")
        with tempfile.TemporaryDirectory() as tmp:
            job_file = Path(tmp) / "job.json"
            pod_job.write(job_file)
            self.transfer("put", job_file, f"{jobdir}/job.json", "uploading the job")
        self.progress(JobProgress("uploading", 0.45, f"scene: {scene.bytes_moved} bytes moved ({scene.transport})"))
        return pod_job

    @property
    def agent(self) -> str:
        code = self.record.pod_code or f"{self.host.workspace}/posefactory"  # records of earlier versions
        return f"bash {q(code)}/pod_setup/pod_agent.sh"

    def job_status(self) -> PodStatus:
        """The pod's status of the job, checked; at most MAX_STATUS_BYTES are pulled, whatever the pod holds."""
        result = self.run(f"{self.agent} --status {q(self.record.remote_job_dir)} | head -c {MAX_STATUS_BYTES + 1}",
                          "polling the job")
        if "No space left on device" in result.stderr:
            raise PodDiskFull("pod disk full: the job's status cannot be written")
        lines = result.stdout.strip().splitlines()
        if not lines:
            detail = clean_text(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "", 200)
            raise PodOutputError(f"the pod printed no status{f' ({detail})' if detail else ''}")
        return parse_status(lines[-1])

    def render(self, api_key: str | None) -> PodStatus:
        self.stage("rendering", "starting the render on the pod")
        secrets = {"STABILITY_API_KEY": api_key} if api_key else None
        self.record.started_epoch = time.time()
        self.record.save(self.record_path)
        limit = f"POSEFACTORY_TIME_LIMIT_S={int(self.record.time_limit_s)} " if self.record.time_limit_s else ""
        self.run(f"{limit}{self.agent} {q(self.record.remote_job_dir)}", "starting the job", secrets=secrets)
        return self.wait()

    def wait(self) -> PodStatus:
        """Poll the pod's job until it ends; cancel it when asked to.

        A status that cannot be used (corrupt, without a state, an unknown
        state) is polled again for STATUS_GRACE_S, then fails the job.
        """
        self.record.status = "running"
        self.record.save(self.record_path)
        started = time.monotonic()
        unusable_since: float | None = None
        while True:
            if self.cancel.is_set():
                log.info("job %s cancelled on %s", self.record.job_id, self.host.name)
                raise Cancelled()  # follow() stops the pod's job
            try:
                status = self.job_status()
            except PodOutputError as exc:
                unusable_since = unusable_since or time.monotonic()
                if time.monotonic() - unusable_since >= STATUS_GRACE_S:
                    log.warning("job %s: status unusable for %.0fs: %s", self.record.job_id, STATUS_GRACE_S, exc)
                    raise StatusUnusable(f"{exc}; gave up after {STATUS_GRACE_S:.0f}s") from None
                self.cancel.wait(POLL_S)
                continue
            unusable_since = None
            self._check_time_limit(status)
            if status.state not in ACTIVE_STATES:
                log.info("job %s on %s: %s", self.record.job_id, self.host.name, status.state)
                return status
            elapsed = time.monotonic() - started
            waiting = f", waiting for the GPU ({status.queue_position} ahead)" if status.queue_position else ""
            items = self.streamer.on_status(status) if self.streamer else None
            self.progress(JobProgress("rendering", (3 + min(elapsed / (elapsed + 30), 0.9)) / 5,
                                      f"{status.state} on {self.host.name} for {elapsed:.0f}s{waiting}"
                                      + (f": {items}" if items else "")))
            self.cancel.wait(POLL_S)

    def _check_time_limit(self, status: PodStatus) -> None:
        """The laptop's side of the time limit: a job still active well past it is stopped."""
        limit, started = self.record.time_limit_s, self.record.started_epoch
        if not limit or not started or status.state not in ACTIVE_STATES:
            return
        if time.time() - started > limit + TIME_LIMIT_GRACE_S:
            log.warning("job %s: past its %ss time limit; stopping it", self.record.job_id, limit)
            self.cancel_on_pod()
            raise TimeLimitReached(f"time limit: the job ran past its {limit:.0f}s limit and was stopped")

    def cancel_on_pod(self) -> None:
        """Stop the pod's job, best effort (a job the laptop gave up on must not go on spending)."""
        try:
            self.run(f"{self.agent} --cancel {q(self.record.remote_job_dir)} >/dev/null", "cancelling the job")
        except PipelineError as exc:
            log.warning("job %s: could not cancel on the pod: %s", self.record.job_id, exc)

    def final_status(self) -> PodStatus | None:
        """The job's status after it ended, best effort (None when it cannot be had)."""
        try:
            return self.job_status()
        except (PipelineError, PodOutputError):
            return None

    def read_manifest(self) -> PodManifest | None:
        """The pod's manifest, size-bounded and checked (None when the job wrote none)."""
        path = f"{self.record.remote_job_dir}/output/manifest.json"
        result = self.run(bounded_cat(path, MAX_MANIFEST_BYTES), "reading the manifest")
        data = result.stdout_bytes
        if not data.strip():
            return None
        items = max(int(self.record.cost_basis.get("items", 1) or 1), 1)
        return parse_manifest(data, estimate_usd=self.record.estimate_usd, allow_item_dirs=self.record.is_batch,
                              max_images=max(int(self.record.cost_basis.get("batch", 10) or 10), 1) * 10 * items)

    def mark_downloaded(self) -> None:
        """Tell the pod's retention that this job's outputs are safe on the laptop."""
        self.run(f"touch {q(self.record.remote_job_dir)}/downloaded", "marking the job downloaded")

    def download(self, local_dir: Path, names: list[str]) -> None:
        """Bring back exactly the checked ``names`` (nothing else the pod's output folder may hold)."""
        self.stage("downloading", "bringing the images back")
        self.download_files(local_dir, names, "downloading the results")

    def download_files(self, local_dir: Path, names: list[str], what: str) -> None:
        """``names`` (plain, or ``<item>/<file>`` in a batch) from the job's output folder, one ``get`` each."""
        for name in names:
            target = output_path(local_dir, name, allow_item_dirs=self.record.is_batch)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.transfer("get", f"{self.record.remote_job_dir}/output/{name}", target.parent, what)


def _reuse_everything(record: JobRecord, record_path: Path | None, plan: BatchPlan,
                      progress: Callable[[JobProgress], None]) -> JobResult:
    """Every item of the batch is already here: nothing is uploaded, rendered or paid for (one $0 ledger line)."""
    local_dir = Path(record.local_output_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"job_id": record.job_id, "status": "done", "prompt": record.prompt, "poses": plan.job.poses,
                "cameras": plan.job.cameras, "actual_cost": {"total_usd": 0.0}, "items": []}
    finish_manifest(manifest, record.items_reused, local_dir, record.items_order)
    images = [p for p in (output_path(local_dir, name, allow_item_dirs=True) for name in manifest["images"])
              if p.is_file()]
    result = JobResult(job_id=record.job_id, status="done", images=images, manifest=manifest, cost_usd=0.0,
                       output_dir=local_dir)
    account(record, record_path, result, Spend(cost_usd=0.0, gpu_seconds=0.0, images=0))
    progress(JobProgress("done", 1.0, f"all {len(record.items_reused)} item(s) reused from earlier jobs, $0"))
    return result


def _plan(job: RenderJob, blend_file: Path, record: JobRecord, *, fresh: bool) -> BatchPlan:
    """A batch's items, checked against the scene, and those reused; kept in the record."""
    try:
        plan = plan_batch(job, blend_file, sha256_file(blend_file), fresh=fresh, cache=ItemCache())
    except BatchSpecError as exc:
        raise PipelineError(str(exc)) from None
    record.is_batch, record.settings_digest = True, plan.digest
    record.items_order = [i["name"] for i in plan.items or []]
    record.items_reused = copy_reused(plan, Path(record.local_output_dir))
    # Reused items cost nothing: the bound on what the pod may bill counts only those it renders.
    record.cost_basis["items"] = len(plan.items) - len(plan.reused) if plan.items is not None else MAX_ITEMS
    return plan


def _guarded(record: JobRecord, record_path: Path | None, body: Callable[[], JobResult]) -> JobResult:
    try:
        return body()
    except Cancelled:
        record.status, record.error = "cancelled", "cancelled by the user"
    except (PipelineError, ConfigError, UnknownHost, JobValidationError, CostConfigError, RunPodError,
            OSError) as exc:
        record.status, record.error = "failed", clean_text(exc)
    log.info("job %s %s: %s", record.job_id, record.status, record.error)
    result = JobResult(job_id=record.job_id, status=record.status, error=record.error,
                       output_dir=Path(record.local_output_dir))
    if record.remote_job_dir:
        # The job reached the pod: it gets its ledger line, with what the laptop knows was spent.
        spend = compute_spend(record.cost_basis, None, None, started_epoch=record.started_epoch, pod_type=None)
        result.cost_usd, result.cost_flag = spend.cost_usd, spend.flag
        account(record, record_path, result, spend)
    else:
        record.save(record_path)
    return result


def _disk_full(exc: Exception) -> bool:
    return "No space left on device" in str(exc) or "disk is full" in str(exc)


def run_job(job: RenderJob, blend_file: Path, *, host: str, hosts_file: Path | None, local_output_dir: Path,
            api_key: str | None, progress: Callable[[JobProgress], None], cancel: threading.Event,
            record_path: Path | None = None, time_limit_s: float | None = None, fresh: bool = False) -> JobResult:
    """Render ``blend_file`` on ``host`` with ``job``'s settings and bring the images back.

    ``time_limit_s``: the job's limit on the pod (default: :func:`default_time_limit`).
    A batch (poses × cameras) is checked against the scene first; its items
    already done by an earlier job are reused (not rendered or paid again)
    unless ``fresh``, and finished items come back while it runs.

    Never raises for a failure of the job: the result's status and error say
    what happened, and the record (when given) is kept up to date.
    """
    job_id = job.job_id or new_job_id()
    record = JobRecord(job_id=job_id, host=host, hosts_file=str(hosts_file) if hosts_file else None,
                       remote_job_dir="", local_output_dir=str(Path(local_output_dir) / job_id),
                       prompt=clean_text(job.prompt, one_line=False),
                       cost_basis={"engine_id": job.engine_id, "steps": job.steps, "batch": job.batch,
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
        hosts = load_hosts(hosts_file)
        pod_job = job
        if is_batch(job):
            plan = _plan(job, Path(blend_file), record, fresh=fresh)
            if plan.all_reused:
                return _reuse_everything(record, record_path, plan, progress)
            pod_job = plan.job
        if host in hosts and hosts[host].kind == "serverless":  # RunPod Serverless: no pod, no ssh
            from .serverless_job import run_serverless_job
            return run_serverless_job(pod_job, Path(blend_file), hosts[host], record, record_path, progress, cancel)
        prepare_host(hosts, host, lambda line: progress(JobProgress("connecting", 0.0, line)), append_ledger)
        with Bridge(hosts) as bridge:
            config = bridge.host(host)
            estimate = CostModel.load().estimate(job, _known_pod_type(config), expected_render_s=60,
                                                 items=int(record.cost_basis.get("items", 1)))
            record.estimate_usd = estimate.total_usd
            record.time_limit_s = time_limit_s or default_time_limit(estimate.gpu_seconds)
            record.remote_job_dir = f"{config.workspace}/jobs/{job_id}"
            record.save(record_path)
            runner = JobRunner(bridge, config, progress, cancel, record, record_path)
            runner.stage("connecting", f"connecting to {host}")
            runner.run("true", "connecting")
            try:
                runner.set_up_pod(job.blender_version, job.backend)
                arm_watchdog(runner.run, config, append_ledger)
                runner.upload(pod_job, Path(blend_file))
            except PipelineError as exc:
                if _disk_full(exc):
                    raise PodDiskFull(f"pod disk full: {exc}") from None
                raise
            return follow(runner, lambda: runner.render(api_key))

    with job_lock(job_id, "submitting"):
        return _guarded(record, record_path, body)


def default_time_limit(estimated_gpu_seconds: float) -> float:
    """Ten times the estimate, at least 15 minutes: generous for a slow pod, a stop for a stuck one."""
    return max(900.0, 10 * estimated_gpu_seconds)


def _known_pod_type(config: HostConfig) -> str | None:
    try:
        CostModel.load().gpu_rate(config.pod_type)
    except CostConfigError:
        return None
    return config.pod_type


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
        if record.status == "cancelled" or record.stage == "done":
            return result_from_record(record)

        def body() -> JobResult:
            if not record.remote_job_dir:
                raise PipelineError("the job never reached the pod; submit it again")
            hosts = load_hosts(hosts_file or record.hosts_file)
            prepare_host(hosts, record.host, lambda line: progress(JobProgress("connecting", 0.0, line)),
                         append_ledger)
            with Bridge(hosts) as bridge:
                runner = JobRunner(bridge, bridge.host(record.host), progress, cancel, record, record_path)
                runner.stage("rendering", f"re-attaching to {record.job_id} on {record.host}")
                return follow(runner, runner.wait)

        return _guarded(record, record_path, body)
