"""Send a packed scene's tree to the pod: only the files its store lacks,
the .blend as a patch against the newest version of that scene it holds,
then the job's tree laid out there from the store with hard links.

What the pod answers (which files it lacks, what it laid out) is checked
like any pod output: only hashes of this tree are sent, and a tree the pod
says it made must have every file.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from ..core.pod_output import clean_text
from ..core.quoting import q
from ..scene.delta import Versions, encode
from ..scene.pack import PackedScene, SceneChanged, SceneFile
from ..scene.shipment import SceneShipment
from .pod_steps import JobRunner
from .state import JobProgress, PipelineError, stage_fraction

log = logging.getLogger(__name__)
MAX_ANSWER_BYTES = 8 << 20


def _answer(stdout: str, what: str) -> dict:
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    try:
        answer = json.loads(line[:MAX_ANSWER_BYTES])
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PipelineError(f"{what}: the pod's answer is unusable ({clean_text(line, 120)!r})")
    return answer


def _shas(value: object, allowed: set[str], what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s in allowed for s in value):
        raise PipelineError(f"{what}: the pod named files that are not this scene's")
    return list(value)


class SceneUploader:
    """The scene's part of one job's upload on one pod."""

    def __init__(self, runner: JobRunner, scene: PackedScene, versions: Versions | None = None) -> None:
        self.runner, self.scene = runner, scene
        self.versions = versions or Versions()
        self.store = f"{runner.host.workspace}/posefactory/store"
        self.jobdir = runner.record.remote_job_dir
        self.bytes_moved = 0
        self.sent = 0
        self.transport = ""

    @property
    def tool(self) -> str:
        code = self.runner.record.pod_code or f"{self.runner.host.workspace}/posefactory"
        return f"python3 {q(code)}/pod_setup/scene_store.py --store {q(self.store)}"

    def ship(self) -> SceneShipment:
        """Upload what the pod lacks and lay out ``JOBDIR/scene``; returns what moved."""
        scene = self.scene
        self._check_unchanged()  # a file deleted or edited since it was traced: nothing is sent
        # By content: the kept versions (of this scene or any other) holding most of the new .blend's blocks.
        bases = [(sha, path) for sha, path in self.versions.closest(scene.main.source) if sha != scene.main.sha256]
        manifest = {**scene.manifest(), "bases": [sha for sha, _ in bases]}
        by_sha: dict[str, SceneFile] = {}
        for entry in scene.files:
            by_sha.setdefault(entry.sha256, entry)
        with tempfile.TemporaryDirectory(prefix="posefactory-send-") as tmp:
            work = Path(tmp)
            listing = work / "scene-tree.json"
            listing.write_text(json.dumps(manifest, sort_keys=True))
            # The list is the job's own metadata, like job.json: not counted as the scene's bytes.
            self.transport = self.runner.transfer("put", listing, f"{self.jobdir}/scene-tree.json",
                                                  "uploading the scene's file list").transport
            plan = _answer(self.runner.run(f"{self.tool} plan {q(self.jobdir)}/scene-tree.json",
                                           "checking the pod's scene store").stdout, "checking the pod's scene store")
            missing = _shas(plan.get("missing"), set(by_sha), "checking the pod's scene store")
            base = plan.get("base")
            base_path = dict(bases).get(base) if isinstance(base, str) else None
            can_decode = plan.get("zstd") is True
            sends = [self._encoded(by_sha[sha], work, base_path if by_sha[sha].path == scene.blend else None,
                                   base, can_decode) for sha in missing]
            delta = any(is_delta for _, _, is_delta in sends)
            if sends:
                self.runner.progress(JobProgress("uploading", stage_fraction("uploading", 0.1),
                                                 f"scene: sending {len(sends)} of {len(scene.files)} file(s)"))
                self._put([(source, destination) for source, destination, _ in sends], "uploading the scene's files")
            absent = self._layout()
            if absent:  # a patch that did not decode (or a base the store dropped): those go whole
                log.info("scene: %d file(s) did not decode on the pod; sending them whole", len(absent))
                self._put([(by_sha[sha].source, f"{self.store}/objects/{sha}") for sha in absent],
                          "uploading the scene's files whole")
                delta = False
                if self._layout():
                    raise PipelineError("the pod's store is missing files of this scene after sending them whole")
        self._check_unchanged()
        self.versions.remember(scene.key, scene.main)
        shipment = SceneShipment(len(scene.files), scene.total_bytes, self.bytes_moved, self.sent, delta, self.transport)
        log.info("job %s: %s", self.runner.record.job_id, shipment.summary())
        return shipment

    def _check_unchanged(self) -> None:
        try:
            self.scene.check_unchanged()
        except SceneChanged as exc:
            raise PipelineError(str(exc)) from None

    def _encoded(self, entry: SceneFile, work: Path, base_path: Path | None, base: object,
                 can_decode: bool) -> tuple[Path, str, bool]:
        """What to send for one file the store lacks, and where: (file here, path on the pod, a patch?)."""
        if can_decode:
            encoded = encode(entry.source, work / f"{entry.sha256}.zst", base_path)
            if encoded is not None:
                name = f"{entry.sha256}.from-{base}.zst" if base_path is not None else f"{entry.sha256}.zst"
                return encoded, f"{self.store}/incoming/{name}", base_path is not None
        return entry.source, f"{self.store}/objects/{entry.sha256}", False

    def _put(self, pairs: list[tuple[Path, str]], what: str) -> None:
        moved = self.runner.transfer_many(pairs, what)
        self.bytes_moved += moved.bytes_moved
        self.sent += len(pairs)

    def _layout(self) -> list[str]:
        result = self.runner.run(f"{self.tool} layout {q(self.jobdir)}/scene-tree.json {q(self.jobdir)}/scene",
                                 "laying out the scene on the pod")
        answer = _answer(result.stdout, "laying out the scene on the pod")
        if "absent" in answer:
            return _shas(answer["absent"], {f.sha256 for f in self.scene.files}, "laying out the scene on the pod")
        if answer.get("files") != len(self.scene.files) or answer.get("blend") != self.scene.blend:
            raise PipelineError("laying out the scene on the pod: the pod's tree does not match the scene")
        return []
