"""What an executor is, and what it reports when a job ends: the
:class:`Outcome` that :func:`remote.jobs.settle.settle` turns into the job's
result and ledger line."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.pod_output import PodManifest, PodStatus
from .ledger import Spend
from .state import JobProgress, JobRecord, JobState

if TYPE_CHECKING:
    from ..runpod.serverless import ItemResult


@dataclass
class Outcome:
    """How a job ended, as its executor saw it (what :func:`settle` needs, nothing it must look up)."""

    state: JobState
    error: str | None = None
    status: PodStatus | None = None  # the pod's last status
    manifest: PodManifest | None = None  # the pod's manifest, checked
    item: ItemResult | None = None  # a serverless job's one item
    images: list[Path] = field(default_factory=list)
    raw_render: Path | None = None
    local_manifest: dict[str, Any] | None = None  # a batch's manifest as kept here (pod items + reused)
    spend: Spend | None = None  # when already known (all reused, serverless, interrupted)


class Executor(Protocol):
    """Where a job runs. ``poll`` raises :class:`Cancelled` on a cancel and a
    :class:`PipelineError` for what ends the job there; ``stopped`` is the
    outcome of a job stopped (cancelled or given up on) after ``cancel``."""

    record: JobRecord
    record_path: Path | None
    progress: Callable[[JobProgress], None]
    pod_type: str | None

    def prepare(self) -> None: ...  # everything before the job runs there (set-up, uploads)
    def start(self) -> None: ...
    def poll(self) -> bool: ...  # True once the job ended; waits a moment (or until a cancel) while it runs
    def fetch(self) -> Outcome: ...  # what it made, brought here, as its outcome
    def cancel(self) -> None: ...
    def stopped(self, state: JobState, error: str) -> Outcome: ...
