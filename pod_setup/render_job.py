"""The headless render job that runs on the pod.

    blender --background --python render_job.py -- JOB.json
    python render_job.py JOB.json            # with the ``bpy`` module
    python render_job.py --worker            # warm worker: job paths on stdin

Reads a ``remote.jobspec.RenderJob`` (``job.json``), opens the scene and
renders it (``scene_render``: the job's SDXL size, the Render Result fix),
sends the render through the job's AI backend (``backends/``: one module per
backend) and writes into the job's output dir:

* ``render.png``: the raw render (the init image);
* ``ai-render-<n>.png``: one per usable variation, n from 1;
* ``control-openpose.png`` / ``control-depth.png``: the ControlNet inputs the
  job asked for (``control_images``), drawn from the scene itself;
* ``manifest.json``: prompt, seeds, engine, steps, size, finish reasons,
  timings, estimated and actual cost, and the error if any.

Exit codes: 0 done; 2 invalid job (nothing rendered, nothing paid);
3 the backend is not ready: no API key, models or add-on (nothing rendered);
4 render failed; 5 the AI step failed
(the render is kept); 6 every variation was content-filtered.

A backend's key (Stability's: ``STABILITY_API_KEY`` or ``$WORKSPACE/.env``)
never comes from the job file and is never printed.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

# On the pod ``remote/`` sits next to ``pod_setup/`` (both under
# $WORKSPACE/posefactory); in the repository they are siblings too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# A downloaded Blender's Python gets pyyaml and requests from the folder
# setup_pod.sh filled; Blender ignores PYTHONPATH unless told otherwise.
if os.environ.get("POSEFACTORY_PYLIB"):
    sys.path.insert(1, os.environ["POSEFACTORY_PYLIB"])

from pod_setup import backends, control_images
from pod_setup.job_errors import (
    EXIT_AI,
    EXIT_FILTERED,
    EXIT_INVALID,
    EXIT_NO_KEY,
    EXIT_RENDER,
    JobFailed,
)
from pod_setup.scene_render import configure_output, open_scene, render_still
from remote.cost import CostModel
from remote.jobspec import JobValidationError, RenderJob

__all__ = ["EXIT_AI", "EXIT_FILTERED", "EXIT_INVALID", "EXIT_NO_KEY", "EXIT_RENDER", "main", "run"]
WORKER_RESULT_PREFIX = "render_job-result"


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(job_path: Path) -> int:
    """Run one job; returns the exit code (see the module docstring)."""
    started = time.monotonic()
    manifest: dict = {"job_file": str(job_path), "status": "failed", "images": [], "variations": []}
    try:
        job = RenderJob.read(job_path)
    except (OSError, JobValidationError) as exc:
        # Nothing is written: without a valid job there is no output dir to trust.
        print(f"render_job: invalid job: {exc}", file=sys.stderr)
        return EXIT_INVALID
    output_dir = Path(job.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    costs = CostModel.load()
    pod_type = os.environ.get("POSEFACTORY_POD_TYPE") or None
    manifest.update(
        job_id=job.job_id, prompt=job.prompt, negative_prompt=job.negative_prompt, engine=job.engine_id,
        steps=job.steps, cfg_scale=job.cfg_scale, strength=job.strength, sampler=job.sampler,
        style_preset=job.style_preset, seed=job.seed, batch=job.batch, size=[job.width, job.height],
        backend=job.backend, estimated_cost=costs.estimate(job, pod_type, expected_render_s=0).to_dict(),
    )
    backend = backends.create(job)
    try:
        if backend is not None:
            backend.check_ready()
        open_scene(job)
        configure_output(job)
        control_images.prepare(job)
        outcome = render_still(output_dir / "render.png")
        manifest.update(render=outcome.path.name, render_seconds=round(outcome.seconds, 3),
                        render_result_fix_applied=outcome.render_result_fix_applied)
        controls = control_images.write(job, output_dir)
        manifest["control_images"] = {kind: path.name for kind, path in controls.items()}
        if backend is not None:
            generate(backend, outcome.path, manifest, controls)
        manifest["status"] = "done"
        return 0
    except JobFailed as exc:
        manifest["error"] = str(exc)
        print(f"render_job: {exc}", file=sys.stderr)
        return exc.code
    finally:
        wall = time.monotonic() - started
        manifest["wall_seconds"] = round(wall, 3)
        if backend is not None:
            manifest.update(backend.stats())
        generated = sum(1 for v in manifest["variations"] if v["finish_reason"] in ("SUCCESS", "CONTENT_FILTERED"))
        manifest["actual_cost"] = costs.actual(job, pod_type, gpu_seconds=wall, images_generated=generated).to_dict()
        write_json_atomically(output_dir / "manifest.json", manifest)


def generate(backend: backends.Backend, rendered: Path, manifest: dict, controls: dict[str, Path]) -> None:
    """Run the AI step; save the usable variations, record all of them."""
    started = time.monotonic()
    try:
        variations = backend.generate(rendered, controls)
    finally:
        manifest["ai_seconds"] = round(time.monotonic() - started, 3)
    output_dir = rendered.parent
    for variation in variations:
        entry: dict = {"n": variation.n, "seed": variation.seed, "finish_reason": variation.finish_reason}
        if variation.usable and variation.png is not None:
            name = f"ai-render-{variation.n}.png"
            (output_dir / name).write_bytes(variation.png)
            entry["file"] = name
            manifest["images"].append(name)
        manifest["variations"].append(entry)
    if not manifest["images"]:
        reasons = sorted({v.finish_reason for v in variations})
        raise JobFailed(EXIT_FILTERED, f"no usable image: every variation came back {', '.join(reasons)}")


def serve_jobs(lines: Iterable[str], results: TextIO) -> None:
    """Warm worker: one Blender process runs every job named on ``lines``.

    Each job reopens its own scene, so nothing carries over from the previous
    one but the already-started Blender. One result line per job on ``results``:
    ``render_job-result {"job": PATH, "exit_code": N}``.
    """
    for line in lines:
        job_path = line.strip()
        if not job_path:
            continue
        code = run(Path(job_path))
        results.write(f"{WORKER_RESULT_PREFIX} {json.dumps({'job': job_path, 'exit_code': code})}\n")
        results.flush()


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    if args == ["--worker"]:
        serve_jobs(sys.stdin, sys.stdout)
        return 0
    if len(args) != 1 or args[0].startswith("-"):
        print("render_job: usage: render_job.py JOB.json | --worker "
              "(or blender -b -P render_job.py -- JOB.json)", file=sys.stderr)
        return EXIT_INVALID
    return run(Path(args[0]))


if __name__ == "__main__":
    code = main(sys.argv)
    # Under `blender --background --python`, sys.exit inside the script is the
    # way to hand the exit code back to the shell.
    sys.exit(code)
