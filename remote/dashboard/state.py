"""What the dashboard's views share: the data dir's readers and stores, one per app."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from flask import current_app

from .costs import Ledger
from .library import Library
from .readers import JobIndex, ManifestCache
from .scenes import SceneStore
from .submit import Submitter

JOBS_PER_PAGE = 24


@dataclass
class Dashboard:
    root: Path
    presets_folder: Path | None = None  # None: the user's config dir (remote.core.presets.presets_dir)
    hosts_file: Path | None = None
    monthly_budget: Decimal | None = None
    jobs: JobIndex = field(init=False)
    manifests: ManifestCache = field(init=False)
    ledger: Ledger = field(init=False)
    scenes: SceneStore = field(init=False)
    submitter: Submitter = field(init=False)
    library: Library = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = JobIndex(self.root)
        self.manifests = ManifestCache()
        self.ledger = Ledger(self.root / "ledger.jsonl")
        self.scenes = SceneStore(self.root)
        self.submitter = Submitter(self.root, self.hosts_file)
        self.library = Library(self.root)

    @property
    def own_dir(self) -> Path:
        return self.root / "dashboard"

    def backend_of(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        manifest = self.manifests.get(job) if job else None
        return manifest.backend if manifest else ""


def dashboard() -> Dashboard:
    return current_app.extensions["posefactory"]
