"""A batch on RunPod Serverless: items split over up to K concurrent requests.

Each item is one request to the host's endpoint (``serverless:`` in the
hosts file): the scene goes to the bucket once, content-addressed
(``<prefix>objects/<sha256>``), and reaches the worker as a presigned GET URL;
each output comes back through a presigned PUT URL, so a request carries only
URLs and settings (far below /run's 10 MB) and never a key. Results stream:
``on_item`` is called as each item finishes. A FAILED, timed-out or stuck
request is retried once; a request no worker picks up within
``queue_timeout_s`` fails with a clear error (and is cancelled); cancelling
the batch cancels every outstanding request. Each request's cost
(execution seconds × the endpoint's price per second) goes to the ledger.

An item is an id plus a :class:`RenderJob` whose ``blend_path`` is the local
scene; the unit stays this small so a batch contract can map onto it. A job
that is itself a batch (poses × cameras, ``<item>/…`` files named from the
scene) gets URLs for ``manifest.json`` and ``outputs.tar``: the worker packs
every item file into the archive, and it is unpacked here through the same
item-name rule (``remote/core/batch_spec.py``) and path checks
(``remote/core/pod_output.py``) as a pod's files.

A request that COMPLETED with ``item_error`` (an upload that failed after the
job ran) fails its item and is not re-run: its AI images may be paid already.
Ctrl-C (or any exception) while the batch runs cancels every in-flight
request on the endpoint before it propagates.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..bridge.transfer.common import TransferError
from ..core.batch_spec import MAX_ITEMS, ItemEntryError, check_item_path, is_single
from ..core.config import HostConfig, StorageConfig
from ..core.jobspec import RenderJob
from ..core.pod_output import PodOutputError, clean_text, output_path
from ..scene.pack import PackedScene, SceneChanged, SceneError, pack_scene
from ..scene.shipment import SceneShipment
from .endpoint import EndpointClient, EndpointError, check_health

log = logging.getLogger(__name__)

POLL_S = 0.5
ITEM_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
RETRIED_STATES = ("FAILED", "TIMED_OUT")
ARCHIVE = "outputs.tar"
SHEET = "contact-sheet.png"
MAX_MEMBERS = MAX_ITEMS * 16  # render, thumb and up to 10 variations an item, and the sheet
MAX_MEMBER_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class BatchItem:
    item_id: str
    job: RenderJob  # blend_path: the local scene
    scene: PackedScene | None = None  # its job tree, when packed already (else run_batch packs blend_path)


@dataclass
class ItemResult:
    item_id: str
    status: str  # done | failed | cancelled
    files: list[Path] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    request_ids: list[str] = field(default_factory=list)
    execution_s: float = 0.0
    cost_usd: float = 0.0


def output_names(job: RenderJob) -> list[str]:
    """The files a job sends back, each of which gets a presigned PUT URL.

    The one-image job: its flat files. A batch: its manifest and one archive
    of its ``<item>/…`` files (item names are only known from the scene).
    """
    if not is_single(job.poses, job.cameras):
        return ["manifest.json", ARCHIVE]
    names = ["render.png", "manifest.json"]
    if job.backend != "none":
        names += [f"ai-render-{n}.png" for n in range(1, job.variations + 1)]
    return names


class _Storage:
    """The bucket side: scenes up once, URLs signed, outputs fetched and tidied."""

    def __init__(self, storage: StorageConfig, batch_id: str) -> None:
        from ..bridge.transfer import s3

        self.storage, self.s3_module = storage, s3
        try:
            self.s3 = s3.client(storage)
        except TransferError as exc:
            raise EndpointError(str(exc)) from None
        self.batch_prefix = f"{storage.prefix}serverless/{batch_id}"

    def scene_payload(self, scene: PackedScene) -> tuple[dict[str, Any], SceneShipment]:
        """The scene's tree for the worker (each file up once, by content, each with a signed URL), and what moved."""
        urls: dict[str, str] = {}
        uploaded = sent = 0
        try:
            for entry in scene.files:
                if entry.sha256 in urls:
                    continue
                key = f"{self.storage.prefix}objects/{entry.sha256}"
                if not self.s3_module._object_exists(self.s3, self.storage, key):
                    self.s3.upload_file(str(entry.source), self.storage.bucket, key, Config=self.s3_module.MULTIPART)
                    uploaded += entry.size
                    sent += 1
                urls[entry.sha256] = self.presign("get_object", key)
        except Exception as exc:  # boto3's errors have no common base; explained below
            raise EndpointError(f"uploading the scene: {self.s3_module._explain(exc, self.storage)}") from None
        try:
            scene.check_unchanged()
        except SceneChanged as exc:
            raise EndpointError(str(exc)) from None
        shipment = SceneShipment(len(scene.files), scene.total_bytes, uploaded, sent, delta=False, transport="s3")
        log.info("scene %s: %s", scene.blend, shipment.summary())
        return {"blend": scene.blend, "files": [{"path": f.path, "sha256": f.sha256, "size": f.size,
                                                  "url": urls[f.sha256]} for f in scene.files]}, shipment

    def presign(self, operation: str, key: str) -> str:
        return self.s3.generate_presigned_url(operation, Params={"Bucket": self.storage.bucket, "Key": key},
                                              ExpiresIn=self.storage.presign_expiry_s)

    def output_key(self, item_id: str, name: str) -> str:
        return f"{self.batch_prefix}/{item_id}/{name}"

    def fetch(self, item_id: str, names: list[str], target: Path) -> list[Path]:
        target.mkdir(parents=True, exist_ok=True)
        fetched = []
        for name in names:
            key = self.output_key(item_id, name)
            try:
                self.s3.download_file(self.storage.bucket, key, str(target / name))
                self.s3.delete_object(Bucket=self.storage.bucket, Key=key)
            except Exception as exc:
                raise EndpointError(f"downloading {item_id}/{name}: {self.s3_module._explain(exc, self.storage)}") from None
            fetched.append(target / name)
        return fetched


def unpack(archive: Path, target: Path) -> list[Path]:
    """The item files of a worker's ``outputs.tar``, each name checked, written inside ``target`` only.

    Only regular files named ``<item>/<render|thumb|ai-render-N>.png`` (the
    item-name rule) or ``contact-sheet.png``; anything else is skipped with a
    log line, never written.
    """
    files: list[Path] = []
    try:
        with tarfile.open(archive, "r:") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    log.warning("%s: more than %d files; the rest are ignored", archive.name, MAX_MEMBERS)
                    break
                name = member.name
                try:
                    if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                        raise ItemEntryError(f"{clean_text(name, 80)!r} is not a plain file of a sane size")
                    if name != SHEET:
                        check_item_path(name)
                    path = output_path(target, name, allow_item_dirs=True)
                except (ItemEntryError, PodOutputError) as exc:
                    log.warning("ignoring a file of the worker's archive: %s", exc)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out)
                files.append(path)
    except (tarfile.TarError, OSError) as exc:
        raise EndpointError(f"unpacking the worker's files: {clean_text(exc, 120)}") from None
    return files


class BatchRun:
    """One batch on one serverless host."""

    def __init__(self, host: HostConfig, local_output_dir: Path, cancel: threading.Event,
                 progress: Callable[[str], None], record_event: Callable[[dict[str, Any]], None], batch_id: str) -> None:
        if host.serverless is None or host.storage is None:
            raise EndpointError(f"{host.name} is not a serverless host with storage")
        self.host, self.config = host, host.serverless
        self.local_output_dir, self.user_cancel = local_output_dir, cancel
        self.stop = threading.Event()  # set by run_batch when it is interrupted (Ctrl-C, an error)
        self.progress, self.record_event, self.batch_id = progress, record_event, batch_id
        self.client = EndpointClient(self.config)
        self.storage = _Storage(host.storage, batch_id)
        self.outstanding: set[str] = set()
        self.lock = threading.Lock()

    def cancelled(self) -> bool:
        return self.user_cancel.is_set() or self.stop.is_set()

    def payload(self, item: BatchItem, scene: dict[str, Any]) -> dict[str, Any]:
        job = {k: v for k, v in asdict(item.job).items() if k not in ("blend_path", "output_dir")}
        outputs = {name: self.storage.presign("put_object", self.storage.output_key(item.item_id, name))
                   for name in output_names(item.job)}
        return {"item": item.item_id, "job": job, "scene": scene, "outputs": outputs}

    def run_item(self, item: BatchItem, payload: dict[str, Any]) -> ItemResult:
        result = ItemResult(item.item_id, "failed")
        for attempt in (1, 2):
            if self.cancelled():
                result.status, result.error = "cancelled", "cancelled by the user"
                return result
            state = self.one_request(item, payload, result)
            if state == "COMPLETED" or state in ("CANCELLED", "NEVER_PICKED") or attempt == 2:
                return result
            log.info("item %s: request %s ended %s; retrying once", item.item_id, result.request_ids[-1], state)
            self.progress(f"{item.item_id}: {state.lower().replace('_', ' ')}, retrying once")
        return result

    def one_request(self, item: BatchItem, payload: dict[str, Any], result: ItemResult) -> str:
        request_id = self.client.run(payload)
        result.request_ids.append(request_id)
        with self.lock:
            self.outstanding.add(request_id)
        submitted = time.monotonic()
        started: float | None = None
        status: dict[str, Any] = {}
        try:
            while True:
                if self.cancelled():
                    self.client.cancel(request_id)
                    result.status, result.error = "cancelled", "cancelled by the user"
                    return "CANCELLED"
                status = self.client.status(request_id)
                state = status["status"]
                if state == "IN_PROGRESS" and started is None:
                    started = time.monotonic()
                if state == "COMPLETED":
                    self.completed(item, status, result)
                    return state
                if state in ("FAILED", "TIMED_OUT", "CANCELLED"):
                    result.status = "cancelled" if state == "CANCELLED" else "failed"
                    result.error = status.get("error") or f"request {state.lower()}"
                    return state
                if state == "IN_QUEUE" and time.monotonic() - submitted > self.config.queue_timeout_s:
                    self.client.cancel(request_id)
                    result.error = (f"no worker picked up the request within {self.config.queue_timeout_s:.0f}s "
                                    f"(endpoint {self.config.endpoint_id}: no GPU free or max workers 0?)")
                    return "NEVER_PICKED"
                if started is not None and time.monotonic() - started > self.config.execution_timeout_s:
                    self.client.cancel(request_id)
                    result.error = f"the request ran over {self.config.execution_timeout_s:.0f}s and was cancelled"
                    return "TIMED_OUT"
                if self.stop.wait(POLL_S):
                    continue  # interrupted: cancel at the top of the loop
        finally:
            with self.lock:
                self.outstanding.discard(request_id)
            self.bill(item, request_id, status, result)

    def completed(self, item: BatchItem, status: dict[str, Any], result: ItemResult) -> None:
        output = status.get("output")
        names = output_names(item.job)
        files = output.get("files") if isinstance(output, dict) else None
        if not isinstance(files, list) or not all(isinstance(n, str) and n in names for n in files):
            result.status, result.error = "failed", "the worker's answer names files this item does not have"
            return
        target = self.local_output_dir / item.item_id
        fetched = self.storage.fetch(item.item_id, files, target)
        if ARCHIVE in files:
            fetched = [path for path in fetched if path.name != ARCHIVE] + unpack(target / ARCHIVE, target)
            (target / ARCHIVE).unlink(missing_ok=True)
        manifest_path = target / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        except ValueError:
            manifest = {}
        result.files = fetched
        result.manifest = manifest if isinstance(manifest, dict) else {}
        problem = output.get("item_error") if isinstance(output, dict) else None
        if problem:  # the job ran (and may have paid); a re-run would pay again: failed, not retried
            result.status, result.error = "failed", clean_text(problem, 500)
        else:
            result.status, result.error = "done", None

    def bill(self, item: BatchItem, request_id: str, status: dict[str, Any], result: ItemResult) -> None:
        execution_s = (status.get("executionTime") or 0) / 1000
        cost = round(execution_s * self.config.gpu_usd_per_second, 6)
        result.execution_s += execution_s
        result.cost_usd = round(result.cost_usd + cost, 6)
        self.record_event({"event": "serverless_request", "host": self.host.name, "endpoint_id": self.config.endpoint_id,
                           "batch_id": self.batch_id, "item": item.item_id, "request_id": request_id,
                           "status": status.get("status", "unknown"), "execution_s": round(execution_s, 3),
                           "delay_s": round((status.get("delayTime") or 0) / 1000, 3), "cost_usd": cost,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})


def check_items(items: list[BatchItem]) -> None:
    seen = set()
    for item in items:
        if not ITEM_ID.match(item.item_id) or item.item_id in seen:
            raise EndpointError(f"item id {item.item_id!r}: ids must be unique letters, digits, '.', '_' or '-'")
        seen.add(item.item_id)
        if not Path(item.job.blend_path).is_file():
            raise EndpointError(f"{item.item_id}: scene file not found: {item.job.blend_path}")
        replace(item.job, output_dir="-").validate()


def run_batch(host: HostConfig, items: list[BatchItem], local_output_dir: Path, *,
              on_item: Callable[[ItemResult], None], cancel: threading.Event, progress: Callable[[str], None],
              record_event: Callable[[dict[str, Any]], None], batch_id: str,
              on_scene: Callable[[SceneShipment], None] | None = None) -> list[ItemResult]:
    """Run ``items`` on ``host``'s endpoint, at most K at once; results stream to ``on_item``.

    Raises :class:`EndpointError` (one line) for what stops the whole batch
    before anything is paid: no key, an unhealthy or unknown endpoint, storage.
    """
    check_items(items)
    batch = BatchRun(host, local_output_dir, cancel, progress, record_event, batch_id)
    check_health(batch.client.health(), batch.config.endpoint_id)
    payloads = []
    with tempfile.TemporaryDirectory(prefix="posefactory-pack-") as work:
        packed: dict[str, PackedScene] = {}
        scenes: dict[str, dict[str, Any]] = {}
        for number, item in enumerate(items):
            scene = item.scene or packed.get(item.job.blend_path)
            if scene is None:
                try:
                    scene = pack_scene(Path(item.job.blend_path), Path(work) / str(number))
                except SceneError as exc:
                    raise EndpointError(f"{item.item_id}: {exc}") from None
                packed[item.job.blend_path] = scene
            if scene.digest not in scenes:
                scenes[scene.digest], shipment = batch.storage.scene_payload(scene)
                progress(shipment.summary())
                if on_scene is not None:
                    on_scene(shipment)
            payloads.append(batch.payload(item, scenes[scene.digest]))
    progress(f"{len(items)} item(s) on endpoint {batch.config.endpoint_id}, {batch.config.max_concurrent} at a time")
    results = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=batch.config.max_concurrent,
                                                 thread_name_prefix="serverless")
    try:
        futures = {pool.submit(_guarded_item, batch, item, payload): item for item, payload in zip(items, payloads)}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            on_item(result)
            progress(f"{len(results)}/{len(items)} item(s) finished ({result.item_id}: {result.status})")
    except BaseException:
        # Ctrl-C or a failing callback: every in-flight request is cancelled on the endpoint (each
        # item's thread sends its /cancel at once), queued items never start, then this propagates.
        batch.stop.set()
        log.warning("batch %s interrupted: cancelling its in-flight requests", batch_id)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _guarded_item(batch: BatchRun, item: BatchItem, payload: dict[str, Any]) -> ItemResult:
    try:
        return batch.run_item(item, payload)
    except EndpointError as exc:
        return ItemResult(item.item_id, "failed", error=str(exc))

