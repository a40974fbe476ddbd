"""What a job cost: the ledger (who owns a job while it runs: :mod:`.job_lock`).

* **Exactly one ledger line per job that reached a terminal state** (done,
  failed, cancelled) once it reached the pod: written under the job lock,
  and only when neither the record says it was written nor the ledger holds
  a line for the job (so a crash between the two never charges twice).
* **What was spent**: GPU seconds from the pod's own timestamps (never more
  than the laptop saw pass since the start) and the AI generations the pod
  reports as accepted (never more than the job asked for), priced by the
  cost model. The pod's own figure is used when it passes
  :func:`remote.core.pod_output.check_cost`; otherwise the laptop's figure is
  charged and the line carries ``cost_flag`` saying why.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bridge.queue import append_record, read_records
from ..core.config import data_dir
from ..core.cost import CostConfigError, CostModel
from ..core.jobspec import RenderJob
from ..core.pod_output import MAX_GPU_SECONDS, PodManifest, PodStatus

log = logging.getLogger(__name__)

LEDGER = "ledger.jsonl"
# Clock skew between pod and laptop, and the pod's own start-up, tolerated on top of what the laptop saw.
GPU_SECONDS_SLACK = 120.0


def ledger_path() -> Path:
    return data_dir() / LEDGER


def append_ledger(entry: dict[str, Any]) -> None:
    """One line that is not a job's own (a pod started or stopped, a serverless item): appended as is."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    append_record(path, entry, durable=True)  # locked: several Blenders may write at once


def ledger_has(job_id: str) -> bool:
    return any(entry.get("job_id") == job_id for entry in read_records(ledger_path()))


def append_once(entry: dict[str, Any]) -> bool:
    """Append ``entry`` unless the ledger already has a line for its job (call under the job lock)."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if ledger_has(entry["job_id"]):
        log.warning("ledger already has job %s; not charging it again", entry["job_id"])
        return False
    append_record(path, entry, durable=True)  # locked: several Blenders may finish jobs at once
    log.info("ledger: job %s %s $%s%s", entry["job_id"], entry["status"], entry.get("cost_usd"),
             f" (flagged: {entry['cost_flag']})" if entry.get("cost_flag") else "")
    return True


@dataclass(frozen=True)
class Spend:
    cost_usd: float
    gpu_seconds: float
    images: int
    flag: str = ""  # why the pod's own figure was not charged


def variations_of(basis: dict[str, Any]) -> int:
    """The variations per item a job's cost basis holds ("batch" in records written before the name changed)."""
    value = basis.get("variations", basis.get("batch", 1))
    return max(int(value or 1), 1)


def _cost_job(basis: dict[str, Any]) -> RenderJob:
    known = {key: basis[key] for key in ("engine_id", "steps", "backend") if key in basis}
    return RenderJob(blend_path="-", output_dir="-", prompt="-", variations=variations_of(basis), **known)


def compute_spend(basis: dict[str, Any], status: PodStatus | None, manifest: PodManifest | None, *,
                  started_epoch: float | None, pod_type: str | None, now: float | None = None,
                  images_floor: int = 0) -> Spend:
    """What a job spent, from what the pod reports, bounded by what the laptop knows.

    ``images_floor``: AI images known paid whatever the manifest says (items already streamed back)."""
    now = time.time() if now is None else now
    observed = max(now - started_epoch, 0.0) + GPU_SECONDS_SLACK if started_epoch else MAX_GPU_SECONDS
    gpu = status.gpu_seconds if status is not None else None
    flags = []
    if gpu is None:
        # No usable pod timestamps: charge what the laptop saw pass since it started the job (safe side).
        gpu = max(now - started_epoch, 0.0) if started_epoch else 0.0
    elif gpu > observed:
        flags.append(f"the pod reported {gpu:.0f} GPU seconds, more than the {observed:.0f} s the job can have run")
        gpu = observed
    job = _cost_job(basis)
    images = max(manifest.images_generated if manifest is not None else 0, images_floor)
    asked = job.variations * max(int(basis.get("items", 1) or 1), 1) if job.backend != "none" else 0
    if images > asked:
        flags.append(f"the pod reported {images} AI images accepted, more than the {asked} asked for")
        images = asked
    try:
        own = CostModel.load().actual(job, pod_type if pod_type else None, gpu_seconds=gpu,
                                      images_generated=images).total_usd
    except CostConfigError as exc:
        log.error("cannot price job: %s", exc)
        own = 0.0
        flags.append(f"no price: {exc}")
    if manifest is not None and manifest.cost_flag:
        flags.append(manifest.cost_flag)
    reported = manifest.reported_usd if manifest is not None else None
    cost = reported if reported is not None and not flags else own
    return Spend(cost_usd=round(cost, 6), gpu_seconds=round(gpu, 3), images=images, flag="; ".join(flags))


def ledger_entry(job_id: str, host: str, status: str, spend: Spend, images_delivered: int, at: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"job_id": job_id, "host": host, "status": status, "cost_usd": spend.cost_usd,
                             "gpu_seconds": spend.gpu_seconds, "ai_images": spend.images,
                             "images": images_delivered, "at": at}
    if spend.flag:
        entry["cost_flag"] = spend.flag
    return entry


def read_ledger() -> list[dict[str, Any]]:
    return list(read_records(ledger_path()))
