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
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .api import Bridge, UnknownHost
from .batch import BatchSpecError, ItemEntryError, check_item_path
from .batch_local import BatchPlan, ItemCache, ItemStreamer, copy_reused, finish_manifest, is_batch, plan_batch
from .config import ConfigError, HostConfig, data_dir, load_hosts
from .jobspec import BACKEND_SETUP_ENV, BACKENDS, STABILITY_KEY_BACKENDS, JobValidationError, RenderJob
from .queue import append_record
from .runpod_idle import arm_watchdog
from .runpod_pods import RunPodError, prepare_host
from .shell import CommandResult
from .transfer import TransferError, TransferInterrupted, TransferResult
from .transfer.common import q, sha256_file

log = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # holds remote/ and pod_setup/
POLL_S = 0.25  # a status poll is one cheap command; polling often keeps the overhead low
RECONNECT_ATTEMPTS = 5
STAGES = ("connecting", "setup", "uploading", "rendering", "downloading", "done")


@dataclass
class JobProgress:
    stage: str
    fraction: float
    message: str


@dataclass
class JobResult:
    job_id: str
    status: str  # done | failed | cancelled
    images: list[Path] = field(default_factory=list)
    raw_render: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cost_usd: float | None = None
    output_dir: Path | None = None


@dataclass
class JobRecord:
    """What a restarted Blender needs to find its job again (no secrets)."""

    job_id: str
    host: str
    hosts_file: str | None
    remote_job_dir: str
    local_output_dir: str
    status: str = "submitted"  # submitted | running | done | failed | cancelled
    stage: str = "connecting"
    error: str | None = None
    submitted_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    prompt: str = ""
    cost_usd: float | None = None
    images: list[str] = field(default_factory=list)
    # Batches (remote/batch_local.py): items already on this machine, and those taken from earlier jobs.
    is_batch: bool = False
    settings_digest: str = ""
    items_order: list[str] = field(default_factory=list)
    items_done: list[str] = field(default_factory=list)
    items_reused: list[dict[str, Any]] = field(default_factory=list)
    # Render fidelity (issue 9): the device the pod rendered on, e.g. "CUDA: NVIDIA A40".
    render_device: str = ""

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> JobRecord:
        return cls(**json.loads(path.read_text()))


class PipelineError(RuntimeError):
    pass


class Cancelled(Exception):
    pass


def new_job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def pod_bundle() -> tuple[bytes, str]:
    """``remote/`` and ``pod_setup/`` as a reproducible tar.gz, and its sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for folder in ("remote", "pod_setup"):
            for path in sorted((PACKAGE_ROOT / folder).rglob("*")):
                if "__pycache__" in path.parts or not path.is_file():
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(PACKAGE_ROOT)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def append_ledger(entry: dict[str, Any]) -> None:
    """Every job's cost, one JSON line each, in the data dir."""
    ledger = data_dir() / "ledger.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    append_record(ledger, entry)  # locked: several Blenders may finish jobs at once


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
        """Ship the pod scripts and run setup_pod.sh; ``blender_version``: the artist's Blender to install there;
        ``backend``: the job's, whose own pod parts (diffusers venv + models, AI Render) are set up only when used."""
        ws = self.host.workspace
        setup_env = BACKEND_SETUP_ENV.get(backend, "")
        bundle, digest = pod_bundle()
        self.stage("setup", "checking the pod's set-up")
        with tempfile.TemporaryDirectory() as tmp:
            local_bundle = Path(tmp) / f"bundle-{digest[:16]}.tar.gz"
            local_bundle.write_bytes(bundle)
            self.run(f"mkdir -p {q(ws)}/posefactory", "creating the workspace")
            self.transfer("put", local_bundle, f"{ws}/posefactory/{local_bundle.name}", "shipping the pod scripts")
        self.run(
            f"cd {q(ws)}/posefactory && if [ \"$(cat .bundle 2>/dev/null)\" != {digest} ]; then "
            f"rm -rf remote pod_setup && tar -xzf bundle-{digest[:16]}.tar.gz && echo {digest} > .bundle; fi && "
            f"rm -f $(ls bundle-*.tar.gz | grep -v {digest[:16]}) && {setup_env} "
            f"{f'POSEFACTORY_BLENDER_VERSION={q(blender_version)} ' if blender_version else ''}bash pod_setup/setup_pod.sh",
            "pod set-up", timeout=1800)

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
        return f"bash {q(self.host.workspace)}/posefactory/pod_setup/pod_agent.sh"

    def job_status(self) -> dict[str, Any]:
        result = self.run(f"{self.agent} --status {q(self.record.remote_job_dir)}", "polling the job")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def render(self, api_key: str | None) -> dict[str, Any]:
        self.stage("rendering", "starting the render on the pod")
        secrets = {"STABILITY_API_KEY": api_key} if api_key else None
        self.run(f"{self.agent} {q(self.record.remote_job_dir)}", "starting the job", secrets=secrets)
        return self.wait()

    def wait(self) -> dict[str, Any]:
        """Poll the pod's job until it ends; cancel it when asked to."""
        self.record.status = "running"
        self.record.save(self.record_path)
        started = time.monotonic()
        while True:
            if self.cancel.is_set():
                self.run(f"{self.agent} --cancel {q(self.record.remote_job_dir)}", "cancelling the job")
                raise Cancelled()
            status = self.job_status()
            if status["state"] in ("done", "failed", "cancelled", "none"):
                return status
            elapsed = time.monotonic() - started
            items = self.streamer.on_status(status) if self.streamer else None
            self.progress(JobProgress("rendering", (3 + min(elapsed / (elapsed + 30), 0.9)) / 5,
                                      f"{status['state']} on {self.host.name} for {elapsed:.0f}s"
                                      + (f": {items}" if items else "")))
            self.cancel.wait(POLL_S)

    def download(self, local_dir: Path) -> None:
        self.stage("downloading", "bringing the images back")
        self.transfer("get", f"{self.record.remote_job_dir}/output/*", local_dir, "downloading the results")


def _result_from_outputs(record: JobRecord, status: dict[str, Any]) -> JobResult:
    output_dir = Path(record.local_output_dir)
    manifest_path = output_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    images = [output_dir / name for name in manifest.get("images", []) if _safe_path(name)]
    raw = output_dir / "render.png"
    cost = manifest.get("actual_cost", {}).get("total_usd")
    state = "done" if status["state"] == "done" else "failed"
    return JobResult(job_id=record.job_id, status=state, images=images, raw_render=raw if raw.is_file() else None,
                     manifest=manifest, error=None if state == "done" else status.get("error") or manifest.get("error"),
                     cost_usd=cost, output_dir=output_dir)


def _safe_path(name: Any) -> bool:
    """A manifest's image path (data from the pod) that stays inside the job's folder."""
    try:
        check_item_path(name)
    except ItemEntryError as exc:
        log.warning("ignoring an image path from the pod: %s", exc)
        return False
    return True


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


def _finish(runner: JobRunner, status: dict[str, Any]) -> JobResult:
    record = runner.record
    local_dir = Path(record.local_output_dir)
    try:
        runner.download(local_dir)
    except PipelineError:
        if status["state"] == "done":
            raise
        # A failed job may have left nothing to download; its error says why.
    if runner.streamer is not None and (local_dir / "manifest.json").is_file():
        finish_manifest(runner.streamer.fetch(), record.items_reused, local_dir, record.items_order)
    result = _result_from_outputs(record, status)
    record.status, record.error, record.cost_usd = result.status, result.error, result.cost_usd
    record.images = [str(p) for p in result.images]
    record.render_device = device_summary(result.manifest)
    record.stage = "done"
    record.save(runner.record_path)
    _ledger(record, result)
    runner.progress(JobProgress("done", 1.0, f"{len(result.images)} image(s), ${result.cost_usd or 0:.4f}"
                                if result.status == "done" else f"failed: {result.error}"))
    return result


def _ledger(record: JobRecord, result: JobResult) -> None:
    entry = {"job_id": record.job_id, "host": record.host, "status": result.status, "cost_usd": result.cost_usd,
             "images": len(result.images), "at": record.submitted_at, "render_device": record.render_device}
    backend = result.manifest.get("backend") if isinstance(result.manifest, dict) else None
    entry["backend"] = backend if backend in BACKENDS else "unknown"  # the manifest is the pod's word
    if record.is_batch:
        entry.update(items_done=len(record.items_done), items_reused=len(record.items_reused))
    append_ledger(entry)


def _reuse_everything(record: JobRecord, record_path: Path | None, plan: BatchPlan,
                      progress: Callable[[JobProgress], None]) -> JobResult:
    """Every item of the batch is already here: nothing is uploaded, rendered or paid for."""
    local_dir = Path(record.local_output_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"job_id": record.job_id, "status": "done", "prompt": record.prompt, "poses": plan.job.poses,
                "cameras": plan.job.cameras, "actual_cost": {"total_usd": 0.0}, "items": []}
    finish_manifest(manifest, record.items_reused, local_dir, record.items_order)
    result = _result_from_outputs(record, {"state": "done"})
    record.status, record.stage, record.cost_usd = "done", "done", 0.0
    record.images = [str(p) for p in result.images]
    record.save(record_path)
    _ledger(record, result)
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
    return plan


def _guarded(record: JobRecord, record_path: Path | None, body: Callable[[], JobResult]) -> JobResult:
    try:
        return body()
    except Cancelled:
        record.status, record.error = "cancelled", "cancelled by the user"
    except (PipelineError, ConfigError, UnknownHost, JobValidationError, RunPodError, OSError) as exc:
        record.status, record.error = "failed", str(exc)
    record.save(record_path)
    return JobResult(job_id=record.job_id, status=record.status, error=record.error,
                     output_dir=Path(record.local_output_dir))


def run_job(job: RenderJob, blend_file: Path, *, host: str, hosts_file: Path | None, local_output_dir: Path,
            api_key: str | None, progress: Callable[[JobProgress], None], cancel: threading.Event,
            record_path: Path | None = None, fresh: bool = False) -> JobResult:
    """Render ``blend_file`` on ``host`` with ``job``'s settings and bring the images back.

    A batch (poses × cameras) is checked against the scene first; its items
    already done by an earlier job are reused (not rendered or paid again)
    unless ``fresh``, and finished items come back while it runs.
    Never raises for a failure of the job: the result's status and error say
    what happened, and the record (when given) is kept up to date.
    """
    job_id = job.job_id or new_job_id()
    record = JobRecord(job_id=job_id, host=host, hosts_file=str(hosts_file) if hosts_file else None,
                       remote_job_dir="", local_output_dir=str(Path(local_output_dir) / job_id), prompt=job.prompt)

    def body() -> JobResult:
        # The paths are the pod's, filled in at upload; everything else is checked now.
        replace(job, blend_path=str(blend_file), output_dir=str(local_output_dir)).validate()
        if job.backend in STABILITY_KEY_BACKENDS and not api_key:
            raise PipelineError(f"no Stability API key for backend {job.backend}: set STABILITY_API_KEY or the key "
                                "in the add-on preferences (or use backend 'diffusers' or 'none')")
        if not Path(blend_file).is_file():
            raise PipelineError(f"scene file not found: {blend_file}")
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
            record.remote_job_dir = f"{config.workspace}/jobs/{job_id}"
            record.save(record_path)
            runner = JobRunner(bridge, config, progress, cancel, record, record_path)
            runner.stage("connecting", f"connecting to {host}")
            runner.run("true", "connecting")
            runner.set_up_pod(job.blender_version, job.backend)
            arm_watchdog(runner.run, config, append_ledger)
            runner.upload(pod_job, Path(blend_file))
            return _finish(runner, runner.render(api_key))

    return _guarded(record, record_path, body)


def reattach(record_path: Path, *, hosts_file: Path | None = None, progress: Callable[[JobProgress], None],
             cancel: threading.Event) -> JobResult:
    """Pick up a job a previous session started: wait for it, then download."""
    record = JobRecord.load(record_path)
    if record.status == "cancelled" or record.stage == "done":
        return _result_from_outputs(record, {"state": record.status, "error": record.error})

    def body() -> JobResult:
        if not record.remote_job_dir:
            raise PipelineError("the job never reached the pod; submit it again")
        hosts = load_hosts(hosts_file or record.hosts_file)
        prepare_host(hosts, record.host, lambda line: progress(JobProgress("connecting", 0.0, line)), append_ledger)
        with Bridge(hosts) as bridge:
            runner = JobRunner(bridge, bridge.host(record.host), progress, cancel, record, record_path)
            runner.stage("rendering", f"re-attaching to {record.job_id} on {record.host}")
            status = runner.wait()
            if status["state"] == "none":
                raise PipelineError(f"the pod has no job {record.job_id} (was its workspace wiped?); submit it again")
            return _finish(runner, status)

    return _guarded(record, record_path, body)
