"""The headless render job that runs on the pod.

    blender --background --python render_job.py -- JOB.json
    python render_job.py JOB.json            # with the ``bpy`` module
    python render_job.py --serve SOCKET [--idle-s N]   # the warm Blender (warm_blender.py)

Reads a ``remote.core.jobspec.RenderJob`` (``job.json``), opens the scene once
and renders every item of its batch in turn (``poses``: the item's pose and
camera; ``scene_render``: the job's SDXL size, the Render Result fix), sends
each render through the job's AI backend (``backends/``: one module per
backend) on a worker thread while the next item renders, and writes into the
job's output dir (layout: ``batch_items``):

* ``render.png``: the raw render (the init image), ``<item>/render.png`` in a batch;
* ``ai-render-<n>.png``: one per usable variation, n from 1 (``<item>/…`` in a batch);
* ``control-openpose.png`` / ``control-depth.png``: the ControlNet inputs the
  job asked for (``control_images``), drawn from the scene itself, next to each render;
* ``<item>/thumb.png`` (batches): each item's first image, small: the laptop lays them out as
  the batch's labelled contact sheet;
* ``manifest.json``: prompt, seeds, engine, steps, size, finish reasons,
  timings, estimated and actual cost, the error if any, and ``items``: one
  entry per item (name, pose, camera, frame, status, render, images, seed,
  error, bone positions), rewritten after every item.

``progress.json`` next to ``job.json`` says items total/done/failed and the
current item (``pod_agent.sh --status`` includes it).

Exit codes: 0 done (in a batch: at least one item done; failed items carry
their reason); 2 invalid job (nothing rendered, nothing paid); 3 the backend
is not ready: no API key, models or add-on (nothing rendered); 4 render
failed; 5 the AI step failed (the render is kept); 6 every variation was
content-filtered. A batch where no item is done exits with its first item's code.

A backend's key (Stability's: ``STABILITY_API_KEY`` or ``$WORKSPACE/.env``)
never comes from the job file and is never printed.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# On the pod ``remote/`` sits next to ``pod_setup/`` (both under
# $WORKSPACE/posefactory); in the repository they are siblings too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# A downloaded Blender's Python gets pyyaml and requests from the folder
# setup_pod.sh filled; Blender ignores PYTHONPATH unless told otherwise.
if os.environ.get("POSEFACTORY_PYLIB"):
    sys.path.insert(1, os.environ["POSEFACTORY_PYLIB"])

import bpy

from pod_setup import backends, control_images, job_secrets, warm_blender
from pod_setup.batch_items import PROGRESS_FILE, BatchBook, with_batch_seed, write_json_atomically
from pod_setup.init_image import RenderSettings
from pod_setup.job_errors import (
    EXIT_AI,
    EXIT_FILTERED,
    EXIT_INVALID,
    EXIT_NO_KEY,
    EXIT_RENDER,
    JobFailed,
)
from pod_setup.poses import Item, ItemFailed, SceneState, apply_item, bone_positions, resolve_items
from pod_setup.scene_render import configure_output, open_scene, render_still
from pod_setup.thumbnails import write_thumbnail
from remote.core.batch_spec import BatchSpecError
from remote.core.cost import CostModel
from remote.core.jobspec import JobValidationError, RenderJob
from remote.core.pod_output import WIRE_VERSION

__all__ = ["EXIT_AI", "EXIT_FILTERED", "EXIT_INVALID", "EXIT_NO_KEY", "EXIT_RENDER", "main", "run"]
log = logging.getLogger(__name__)


def run(job_path: Path) -> int:
    """Run one job, every item of its batch; returns the exit code (see the module docstring)."""
    started = time.monotonic()
    manifest: dict = {"version": WIRE_VERSION, "job_file": str(job_path), "status": "failed", "images": [],
                      "variations": [], "items": []}
    try:
        job = RenderJob.read(job_path)
    except (OSError, JobValidationError) as exc:
        # Nothing is written: without a valid job there is no output dir to trust.
        print(f"render_job: invalid job: {exc}", file=sys.stderr)
        return EXIT_INVALID
    job_secrets.take(Path(job_path).parent)  # the keys pod_agent.sh handed over, read and deleted
    output_dir = Path(job.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    job = with_batch_seed(job)
    costs = CostModel.load()
    pod_type = os.environ.get("POSEFACTORY_POD_TYPE") or None
    manifest.update(
        job_id=job.job_id, prompt=job.prompt, negative_prompt=job.negative_prompt, engine=job.engine_id,
        steps=job.steps, cfg_scale=job.cfg_scale, strength=job.strength, sampler=job.sampler,
        style_preset=job.style_preset, seed=job.seed, variations_per_item=job.variations, size=[job.width, job.height],
        backend=job.backend, poses=job.poses, cameras=job.cameras,
        # 1 for a fresh Blender; more when the warm Blender ran jobs before this one in the same process.
        blender_jobs_in_process=int(os.environ.get("POSEFACTORY_BLENDER_JOBS", "1")),
        estimated_cost=costs.estimate(job, pod_type, expected_render_s=0).to_dict(),
    )
    book = BatchBook(job, output_dir, job_path.parent / PROGRESS_FILE)
    backend = backends.create(job)
    try:
        if backend is not None:
            backend.check_ready()
        setup = open_scene(job)
        manifest.update(setup.to_manifest())
        for warning in setup.warnings:
            print(f"render_job: warning: {warning}", file=sys.stderr)
            manifest.setdefault("warnings", []).append(warning)
        settings = configure_output(job, setup)
        manifest.update(settings.to_manifest())
        scene = bpy.context.scene
        try:
            book.items = [i for i in resolve_items(scene, job.poses, job.cameras)
                          if not job.only_items or i.name in job.only_items]
        except BatchSpecError as exc:
            raise JobFailed(EXIT_INVALID, str(exc)) from None
        manifest["items_total"] = len(book.items)
        manifest["estimated_cost"] = costs.estimate(job, pod_type, expected_render_s=0, items=len(book.items)).to_dict()
        failures = render_items(book, backend, manifest, SceneState.capture(scene), settings, started)
        done = [e for e in manifest["items"] if e["status"] == "done"]
        if failures and not done:
            code, message = failures[0]
            raise JobFailed(code, message)
        if failures:
            manifest["error"] = f"{len(failures)} of {len(book.items)} item(s) failed; first: {failures[0][1]}"
        # A render without some of the scene's files is never a plain "done".
        manifest["status"] = "done with warnings" if manifest.get("missing_files") else "done"
        return 0
    except JobFailed as exc:
        manifest["error"] = str(exc)
        print(f"render_job: {exc}", file=sys.stderr)
        return exc.code
    finally:
        if book.items and manifest["items"]:
            sequences = book.sequences(manifest["items"])
            if sequences:
                manifest["sequences"] = sequences
        try:
            write_manifest(manifest, book, costs, pod_type, backend, started)
        finally:
            job_secrets.forget()  # a warm Blender runs the next job: this job's keys end with it


def write_manifest(manifest: dict, book: BatchBook, costs: CostModel, pod_type: str | None,
                   backend: backends.Backend | None, started: float) -> None:
    """Totals over the items so far, the cost, and the file (after every item: a cancel keeps them)."""
    wall = time.monotonic() - started
    manifest["wall_seconds"] = round(wall, 3)
    if backend is not None:
        manifest.update(backend.stats())
    items = manifest["items"]
    rendered = [e for e in items if e.get("render")]
    if rendered:
        manifest.update(render=rendered[0]["render"],
                        render_seconds=round(sum(e["render_seconds"] for e in rendered), 3),
                        render_result_fix_applied=any(e["render_result_fix_applied"] for e in rendered))
    if any("ai_seconds" in e for e in items):
        manifest["ai_seconds"] = round(sum(e.get("ai_seconds", 0) for e in items), 3)
    generated = sum(1 for v in manifest["variations"] if v["finish_reason"] in ("SUCCESS", "CONTENT_FILTERED"))
    manifest["actual_cost"] = costs.actual(book.job, pod_type, gpu_seconds=wall, images_generated=generated).to_dict()
    write_json_atomically(book.output_dir / "manifest.json", manifest)


def render_items(book: BatchBook, backend: backends.Backend | None, manifest: dict, state: SceneState,
                 settings: RenderSettings, started: float) -> list[tuple[int, str]]:
    """Render every item in turn; item k's AI step runs on a worker thread while item k+1 renders.

    Blender is only touched from this (the main) thread: the worker only calls
    the backend. A failing item is recorded with its reason and the batch goes
    on. Each entry's ``timeline`` holds its render's and its AI step's
    [start, end] in seconds since the job started, which shows the overlap.
    Returns the failures as (exit code, message), in item order.
    """

    def since_start(moment: float) -> float:
        return round(moment - started, 3)

    scene = bpy.context.scene
    failures: list[tuple[int, str]] = []
    pending: tuple[Item, dict, Future] | None = None

    def finish(item: Item, entry: dict, outcome: Future | None) -> None:
        try:
            if outcome is not None:
                began, ended, variations = outcome.result()
                entry["ai_seconds"] = round(ended - began, 3)
                entry.setdefault("timeline", {})["ai"] = [since_start(began), since_start(ended)]
                book.save_variations(item, entry, variations, manifest)
                if not entry["images"]:
                    reasons = sorted({v["finish_reason"] for v in entry["variations"]})
                    raise JobFailed(EXIT_FILTERED, f"no usable image: every variation came back {', '.join(reasons)}")
            entry["status"] = "done"
            if not book.flat:
                first = entry["images"][0] if entry["images"] else entry["render"]
                write_thumbnail(book.output_dir / first, book.item_dir(item) / "thumb.png")
        except JobFailed as exc:
            fail(item, entry, exc.code, str(exc))
        log.info("item %s: %s", item.name, entry["status"])

    def fail(item: Item, entry: dict, code: int, message: str) -> None:
        entry.update(status="failed", error=message)
        failures.append((code, message if book.flat else f"{item.name}: {message}"))

    def published(current: str | None) -> None:
        # The manifest first: whoever sees the new count in progress.json finds the item in it.
        # "running" until write_manifest writes the outcome: a job killed now is read as stopped mid-way.
        write_json_atomically(book.output_dir / "manifest.json", {**manifest, "status": "running"})
        book.write_progress(manifest["items"], current)

    def before_paid_call() -> None:
        # Written before each paid call: a job killed during it (cancel, time limit) still tells the
        # laptop what may have been billed.
        manifest["ai_images_requested"] = manifest.get("ai_images_requested", 0) + book.job.variations
        published(None)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ai-step") as ai_step:
        for item in book.items:
            entry = {**book.new_entry(item), "blender_version": bpy.app.version_string}
            manifest["items"].append(entry)
            published(item.name)
            try:
                apply_item(item, state, scene)
                entry["bones"] = bone_positions(scene)
                control_images.prepare(book.job)
                render_began = time.monotonic()
                outcome = render_still(book.item_dir(item) / "render.png", settings)
                entry.update(render=book.relative(item, outcome.path.name), render_seconds=round(outcome.seconds, 3),
                             render_result_fix_applied=outcome.render_result_fix_applied,
                             timeline={"render": [since_start(render_began), since_start(time.monotonic())]})
                written = control_images.write(book.job, book.item_dir(item))
                controls = written.paths
                entry["control_images"] = {kind: book.relative(item, path.name) for kind, path in controls.items()}
                if written.skeletons is not None:
                    entry["skeletons"] = written.skeletons
                if written.problems and backend is not None:  # never pay for a generation conditioned on nothing
                    raise JobFailed(EXIT_RENDER, "; ".join(written.problems))
                if written.problems or written.warnings:  # a preview shows what would be drawn
                    entry["warning"] = "; ".join([*written.problems, *written.warnings])
            except (ItemFailed, JobFailed) as exc:
                fail(item, entry, getattr(exc, "code", EXIT_RENDER), str(exc))
                published(None)
                continue
            if pending is not None:
                finish(*pending)
                published(item.name)
                pending = None
            if backend is None:
                finish(item, entry, None)
                published(None)
            elif getattr(backend, "uses_blender", False):
                # A backend that drives Blender itself (AI Render reads 'Render Result') runs here, in turn.
                before_paid_call()
                finish(item, entry, run_now(timed_generate, backend, outcome.path, controls))
                published(None)
            else:
                before_paid_call()
                pending = (item, entry, ai_step.submit(timed_generate, backend, outcome.path, controls))
        if pending is not None:
            finish(*pending)
            published(None)
    return failures


def timed_generate(backend: backends.Backend, rendered: Path,
                   controls: dict[str, Path]) -> tuple[float, float, list[backends.Variation]]:
    """The AI step of one item and when it began and ended, on the worker thread (which touches no
    manifest entry: the main thread owns them)."""
    began = time.monotonic()
    variations = backend.generate(rendered, controls)
    return began, time.monotonic(), variations


def run_now(function: Callable[..., Any], *args: Any) -> Future:
    """``function(*args)`` on this thread, as a finished Future (its exception kept for ``result()``)."""
    done: Future = Future()
    try:
        done.set_result(function(*args))
    except Exception as exc:  # re-raised by result(), where the caller handles JobFailed
        done.set_exception(exc)
    return done


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    if args[:1] == ["--serve"] and len(args) in (2, 4) and args[2:3] in ([], ["--idle-s"]):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        return warm_blender.serve(args[1], float(args[3]) if len(args) == 4 else 900.0, run)
    if len(args) != 1 or args[0].startswith("-"):
        print("render_job: usage: render_job.py JOB.json | --serve SOCKET [--idle-s N] "
              "(or blender -b -P render_job.py -- JOB.json)", file=sys.stderr)
        return EXIT_INVALID
    return run(Path(args[0]))


if __name__ == "__main__":
    code = main(sys.argv)
    # Under `blender --background --python`, sys.exit inside the script is the
    # way to hand the exit code back to the shell.
    sys.exit(code)
