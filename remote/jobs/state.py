"""The state of one job as the laptop keeps it: progress reports, the final
result, and the record a restarted Blender re-attaches from (no secrets).
Split from :mod:`remote.jobs.pipeline`, which re-exports these names."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class PipelineError(RuntimeError):
    pass


class Cancelled(Exception):
    pass


class PodDiskFull(PipelineError):
    """The pod's disk is full; named as such."""


class TimeLimitReached(PipelineError):
    """The job ran past its time limit and was stopped."""


class StatusUnusable(PipelineError):
    """The pod's status stayed corrupt, stateless or of an unknown state past the grace time."""


@dataclass
class JobProgress:
    stage: str
    fraction: float
    message: str


@dataclass
class JobResult:
    job_id: str
    status: str  # done | failed | cancelled | busy (another process follows the job; nothing touched)
    images: list[Path] = field(default_factory=list)
    raw_render: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cost_usd: float | None = None
    output_dir: Path | None = None
    cost_flag: str = ""  # why the pod's own cost figure was not charged


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
    # Accounting: what the ledger line is computed from, and whether it was written.
    cost_basis: dict[str, Any] = field(default_factory=dict)  # engine_id, steps, batch, backend
    estimate_usd: float | None = None
    started_epoch: float | None = None  # when this laptop started the job on the pod
    gpu_seconds: float | None = None
    cost_flag: str = ""
    ledgered: bool = False
    # Pod side: this job's code bundle (its pod_agent.sh) and time limit.
    pod_code: str = ""
    time_limit_s: float | None = None

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> JobRecord:
        """Raises ValueError for a record that is not one (fields of other versions are ignored)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a job record")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as exc:
            raise ValueError(f"{path}: not a job record ({exc})") from None


