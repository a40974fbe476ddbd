"""One job's steps on a pod over the bridge — ship the code
bundle and set the pod up, upload the scene and the job, start it, poll it,
cancel it, read its manifest and bring its files back — with retries across
dropped connections, backing off (exponentially, capped) so an sshd gone
for a few seconds does not fail the job, and stopping at once on cancel.
:mod:`.pod_executor` drives these steps as an executor; how the job then
ends is :mod:`.settle`'s.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..bridge.api import Bridge
from ..bridge.shell import CommandResult
from ..bridge.transfer.common import RemoteDiskFull, TransferError, TransferInterrupted, TransferResult
from ..core.config import HostConfig
from ..core.jobspec import BACKEND_SETUP_ENV, RenderJob
from ..core.pod_output import (
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
from ..core.quoting import q
from .ledger import variations_of
from .state import (
    Cancelled,
    JobProgress,
    JobRecord,
    JobState,
    PipelineError,
    PodDiskFull,
    StatusUnusable,
    TimeLimitReached,
    stage_fraction,
)

log = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds remote/ and pod_setup/
DISK_FULL = "No space left on device"  # the C library's words for ENOSPC, whatever wrote them
POLL_S = 0.25  # a status poll is one cheap command; polling often keeps the overhead low
RECONNECT_ATTEMPTS = 6
# Waits between reconnect attempts: 0.5, 1, 2, 4, 8 s (15.5 s in all before the job fails).
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 8.0
# A command run after a cancel (stopping the pod's job) retries quickly: the user is waiting.
CLEANUP_BACKOFF_CAP_S = 1.0


def backoff_s(attempt: int) -> float:
    """The wait after the ``attempt``-th dropped connection (1-based)."""
    return min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_CAP_S)
# The pod enforces a job's time limit itself; the laptop steps in this long after it.
TIME_LIMIT_GRACE_S = 60.0
# A status the laptop cannot use (corrupt, no state, unknown state) fails the job after this long.
STATUS_GRACE_S = 20.0


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
    """Commands and transfers of one job on one host, with retries across dropped connections and typed errors."""

    def __init__(self, bridge: Bridge, host: HostConfig, progress: Callable[[JobProgress], None],
                 cancel: threading.Event, record: JobRecord, record_path: Path | None) -> None:
        self.bridge = bridge
        self.host = host
        self.progress = progress
        self.cancel = cancel
        self.record = record
        self.record_path = record_path
        self._unusable_since: float | None = None

    # -- helpers ---------------------------------------------------------------
    def stage(self, stage: str, message: str) -> None:
        if self.cancel.is_set():
            raise Cancelled()
        self.record.stage = stage
        self.record.save(self.record_path)
        self.progress(JobProgress(stage, stage_fraction(stage), message))

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
        A cancel stops the retries at once, but for the commands run after it (stopping the job).
        """
        cleanup = self.cancel.is_set()
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            result = self.bridge.run(self.host.name, f"export {self.pod_settings()}; {command}", env=secrets,
                                     timeout=timeout)
            if result.status != "disconnected":
                break
            if attempt == RECONNECT_ATTEMPTS:
                raise PipelineError(f"{what}: lost the connection to {self.host.name} {attempt} times ({result.error})")
            self.progress(JobProgress(self.record.stage, -1, f"reconnecting to {self.host.name} ({attempt})"))
            if cleanup:
                time.sleep(min(backoff_s(attempt), CLEANUP_BACKOFF_CAP_S))
            elif self.cancel.wait(backoff_s(attempt)):
                raise Cancelled()
        if DISK_FULL in result.stderr:  # even where the command's exit status is a pipe's last part
            raise PodDiskFull(f"pod disk full: {what} on {self.host.name} ({DISK_FULL})")
        if not result.ok:
            detail = (result.stderr.strip() or result.error or f"exit code {result.exit_code}").splitlines()[-1]
            raise PipelineError(f"{what} failed on {self.host.name}: {detail}")
        return result

    def transfer(self, direction: str, src: Any, dst: Any, what: str) -> TransferResult:
        """``put`` or ``get``; a dropped connection resumes the transfer, anything else is an error."""
        move = self.bridge.put if direction == "put" else self.bridge.get
        return self._resuming(lambda: move(self.host.name, src, dst), what)

    def transfer_many(self, pairs: list[tuple[Path, str]], what: str) -> TransferResult:
        """``put`` of each ``(local file, pod path)``, in one go where the transport can, resumed likewise."""
        return self._resuming(lambda: self.bridge.put_many(self.host.name, pairs), what)

    def _resuming(self, move: Callable[[], TransferResult], what: str) -> TransferResult:
        attempt = 1
        while True:
            if self.cancel.is_set():
                raise Cancelled()
            try:
                return move()
            except TransferInterrupted as exc:
                if attempt == RECONNECT_ATTEMPTS:
                    raise PipelineError(f"{what}: {exc}") from None
                self.progress(JobProgress(self.record.stage, -1, f"{what}: connection lost, resuming ({attempt})"))
                if self.cancel.wait(backoff_s(attempt)):
                    raise Cancelled() from None
                attempt += 1
            except RemoteDiskFull as exc:
                raise PodDiskFull(f"pod disk full: {what}: {exc}") from None
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
        self.progress(JobProgress("setup", stage_fraction("setup"), f"scripts: {shipped.bytes_moved} bytes moved"))
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

    def upload_job(self, job: RenderJob, blend_in_tree: str) -> RenderJob:
        """``job.json`` for the pod, rendering ``blend_in_tree`` of the job's scene tree (uploaded before)."""
        jobdir = self.record.remote_job_dir
        pod_job = replace(job, job_id=self.record.job_id, blend_path=f"{jobdir}/scene/{blend_in_tree}",
                          output_dir=f"{jobdir}/output")
        with tempfile.TemporaryDirectory() as tmp:
            job_file = Path(tmp) / "job.json"
            pod_job.write(job_file)
            self.transfer("put", job_file, f"{jobdir}/job.json", "uploading the job")
        return pod_job

    @property
    def agent(self) -> str:
        code = self.record.pod_code or f"{self.host.workspace}/posefactory"  # records of earlier versions
        return f"bash {q(code)}/pod_setup/pod_agent.sh"

    def job_status(self) -> PodStatus:
        """The pod's status of the job, checked; at most MAX_STATUS_BYTES are pulled, whatever the pod holds."""
        result = self.run(f"{self.agent} --status {q(self.record.remote_job_dir)} | head -c {MAX_STATUS_BYTES + 1}",
                          "polling the job")
        lines = result.stdout.strip().splitlines()
        if not lines:
            detail = clean_text(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "", 200)
            raise PodOutputError(f"the pod printed no status{f' ({detail})' if detail else ''}")
        return parse_status(lines[-1])

    def start(self, api_key: str | None) -> None:
        """Start the job on the pod (``pod_agent.sh`` never starts a job dir twice)."""
        self.stage("rendering", "starting the render on the pod")
        secrets = {"STABILITY_API_KEY": api_key} if api_key else None
        self.record.started_epoch = time.time()
        self.record.save(self.record_path)
        limit = f"POSEFACTORY_TIME_LIMIT_S={int(self.record.time_limit_s)} " if self.record.time_limit_s else ""
        self.run(f"{limit}{self.agent} {q(self.record.remote_job_dir)}", "starting the job", secrets=secrets)

    def poll(self) -> PodStatus | None:
        """One look at the pod's job, checked: its status (running or ended), None while it cannot be used.

        A status that cannot be used (corrupt, without a state, an unknown
        state) is polled again for STATUS_GRACE_S, then fails the job; a
        cancel raises :class:`Cancelled` (the caller stops the pod's job); a
        job well past its time limit is stopped (:class:`TimeLimitReached`).
        """
        if self.cancel.is_set():
            log.info("job %s cancelled on %s", self.record.job_id, self.host.name)
            raise Cancelled()
        if self.record.status != JobState.RUNNING:
            self.record.status = JobState.RUNNING
            self.record.save(self.record_path)
        try:
            status = self.job_status()
        except PodOutputError as exc:
            self._unusable_since = self._unusable_since or time.monotonic()
            if time.monotonic() - self._unusable_since >= STATUS_GRACE_S:
                log.warning("job %s: status unusable for %.0fs: %s", self.record.job_id, STATUS_GRACE_S, exc)
                raise StatusUnusable(f"{exc}; gave up after {STATUS_GRACE_S:.0f}s") from None
            return None
        self._unusable_since = None
        self._check_time_limit(status)
        if status.state not in ACTIVE_STATES:
            log.info("job %s on %s: %s", self.record.job_id, self.host.name, status.state)
        return status

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
                              max_images=variations_of(self.record.cost_basis) * 10 * items)

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
