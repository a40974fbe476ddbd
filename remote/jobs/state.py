"""The state of one job as the laptop keeps it: its state (:class:`JobState`,
one set of names for the record, the result and the ledger), its progress
stages and their fractions (declared once, for every executor), the final
result, and the record a restarted Blender re-attaches from (no secrets)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class JobState(StrEnum):
    """A job's state; str-valued, so records and ledger lines stay plain JSON strings."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUSY = "busy"  # another process follows the job; nothing was touched

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


# The stages a job reports, in order, and the fraction of the whole each starts at.
STAGE_FRACTIONS: dict[str, float] = {"connecting": 0.0, "setup": 0.2, "uploading": 0.4, "rendering": 0.6,
                                     "downloading": 0.8, "done": 1.0}
STAGES = tuple(STAGE_FRACTIONS)


def stage_fraction(stage: str, within: float = 0.0) -> float:
    """The fraction of the whole at ``within`` (0..1) of the way through ``stage``."""
    start = STAGE_FRACTIONS[stage]
    index = STAGES.index(stage)
    end = STAGE_FRACTIONS[STAGES[index + 1]] if index + 1 < len(STAGES) else 1.0
    return start + min(max(within, 0.0), 1.0) * (end - start)


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
    scene_summary: str = ""  # set on the one report that says what the scene's upload moved


@dataclass
class JobResult:
    job_id: str
    status: str  # a JobState: done | failed | cancelled | busy
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
    status: str = JobState.SUBMITTED  # a JobState
    stage: str = "connecting"
    error: str | None = None
    submitted_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    prompt: str = ""
    cost_usd: float | None = None
    images: list[str] = field(default_factory=list)
    # Batches (remote/jobs/items.py): items already on this machine, and those taken from earlier jobs.
    is_batch: bool = False
    settings_digest: str = ""
    items_order: list[str] = field(default_factory=list)
    items_done: list[str] = field(default_factory=list)
    items_reused: list[dict[str, Any]] = field(default_factory=list)
    # Render fidelity: the device the pod rendered on, e.g. "CUDA: NVIDIA A40".
    render_device: str = ""
    # The control images each render comes with (control-openpose.png, …): results like the images.
    control_files: list[str] = field(default_factory=list)
    # Accounting: what the ledger line is computed from, and whether it was written.
    cost_basis: dict[str, Any] = field(default_factory=dict)  # engine_id, steps, batch, backend
    estimate_usd: float | None = None
    started_epoch: float | None = None  # when this laptop started the job on the pod
    gpu_seconds: float | None = None
    cost_flag: str = ""
    ledgered: bool = False
    # What the scene's upload moved (files, total_bytes, bytes_moved, sent_files, delta).
    scene: dict[str, Any] = field(default_factory=dict)
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


