"""The headless render job that runs on the pod.

    blender --background --python render_job.py -- JOB.json
    python render_job.py JOB.json            # with the ``bpy`` module
    python render_job.py --worker            # warm worker: job paths on stdin

Reads a ``remote.jobspec.RenderJob`` (``job.json``), opens the scene, renders
it at the job's SDXL size, applies the Render Result fix, sends the render
through Stability's SDXL image-to-image (backend ``stability``) and writes
into the job's output dir:

* ``render.png``: the raw render (the init image);
* ``ai-render-<n>.png``: one per usable variation, n from 1;
* ``manifest.json``: prompt, seeds, engine, steps, size, finish reasons,
  timings, estimated and actual cost, and the error if any.

Exit codes: 0 done; 2 invalid job (nothing rendered, nothing paid);
3 no API key (nothing rendered); 4 render failed; 5 the AI step failed
(the render is kept); 6 every variation was content-filtered.

The Stability key comes from ``STABILITY_API_KEY`` or ``$WORKSPACE/.env``,
never from the job file, and is never printed.
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

from remote.cost import CostModel  # noqa: E402
from remote.jobspec import JobValidationError, RenderJob  # noqa: E402
from remote.stability import StabilityClient, StabilityError  # noqa: E402

EXIT_INVALID, EXIT_NO_KEY, EXIT_RENDER, EXIT_AI, EXIT_FILTERED = 2, 3, 4, 5, 6
WORKER_RESULT_PREFIX = "render_job-result"


class JobFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (quotes stripped, comments ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def stability_key() -> str:
    key = os.environ.get("STABILITY_API_KEY", "")
    if not key:
        workspace = Path(os.environ.get("WORKSPACE", "/workspace"))
        key = read_dotenv(workspace / ".env").get("STABILITY_API_KEY", "")
    return key


def render(job: RenderJob, output_dir: Path) -> tuple[Path, float, bool]:
    """Render the scene; returns the PNG written, Blender's render seconds and
    whether the Render Result fix had to be applied."""
    import bpy

    blend = Path(job.blend_path)
    if not blend.is_file():
        raise JobFailed(EXIT_RENDER, f"scene file not found: {blend}")
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend))
    except RuntimeError as exc:  # bpy reports an unreadable .blend this way
        raise JobFailed(EXIT_RENDER, f"cannot open scene {blend}: {str(exc).strip().splitlines()[-1]}") from None
    scene = bpy.context.scene
    if scene.camera is None:
        raise JobFailed(EXIT_RENDER, f"scene {scene.name!r} has no active camera")
    render_settings = scene.render
    render_settings.resolution_x, render_settings.resolution_y = job.width, job.height
    render_settings.resolution_percentage = 100
    render_settings.image_settings.file_format = "PNG"
    render_settings.image_settings.color_mode = "RGB"
    if job.render_samples and scene.render.engine == "CYCLES":
        scene.cycles.samples = job.render_samples
    target = output_dir / "render.png"
    render_settings.filepath = str(target)
    started = time.monotonic()
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError as exc:
        raise JobFailed(EXIT_RENDER, f"render failed: {str(exc).strip().splitlines()[-1]}") from None
    render_s = time.monotonic() - started
    if not target.is_file():
        raise JobFailed(EXIT_RENDER, f"Blender did not write {target}")
    return target, render_s, apply_render_result_fix(target)


def apply_render_result_fix(rendered: Path) -> bool:
    """In background mode 'Render Result' holds no pixels: load the written file in its place.

    Add-ons that read ``bpy.data.images['Render Result']`` (AI Render does)
    then find the real image.
    """
    import bpy

    result = bpy.data.images.get("Render Result")
    if result is not None and result.has_data:
        return False
    loaded = bpy.data.images.load(str(rendered), check_existing=False)
    loaded.update()
    if result is not None:
        bpy.data.images.remove(result)
    loaded.name = "Render Result"
    return True


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
    try:
        key = stability_key() if job.backend == "stability" else ""
        if job.backend == "stability" and not key:
            raise JobFailed(EXIT_NO_KEY, "no Stability API key: set STABILITY_API_KEY or put it in $WORKSPACE/.env")
        rendered, render_s, fixed = render(job, output_dir)
        manifest.update(render="render.png", render_seconds=round(render_s, 3), render_result_fix_applied=fixed)
        if job.backend == "stability":
            img2img(job, key, rendered, manifest)
        manifest["status"] = "done"
        return 0
    except JobFailed as exc:
        manifest["error"] = str(exc)
        print(f"render_job: {exc}", file=sys.stderr)
        return exc.code
    finally:
        wall = time.monotonic() - started
        manifest["wall_seconds"] = round(wall, 3)
        generated = sum(1 for v in manifest["variations"] if v["finish_reason"] in ("SUCCESS", "CONTENT_FILTERED"))
        manifest["actual_cost"] = costs.actual(job, pod_type, gpu_seconds=wall, images_generated=generated).to_dict()
        write_json_atomically(output_dir / "manifest.json", manifest)


def img2img(job: RenderJob, key: str, rendered: Path, manifest: dict) -> None:
    """Send the render through Stability; save the usable variations, record all of them."""
    client = StabilityClient(key, job.api_base_url)
    started = time.monotonic()
    try:
        artifacts = client.image_to_image(rendered.read_bytes(), job)
    except StabilityError as exc:
        raise JobFailed(EXIT_AI, f"AI step failed: {exc}") from None
    finally:
        manifest["ai_seconds"] = round(time.monotonic() - started, 3)
        manifest["ai_attempts"] = client.attempts
    output_dir = rendered.parent
    for number, artifact in enumerate(artifacts, start=1):
        entry = {"n": number, "seed": artifact.seed, "finish_reason": artifact.finish_reason}
        if artifact.usable:
            name = f"ai-render-{number}.png"
            (output_dir / name).write_bytes(artifact.png)
            entry["file"] = name
            manifest["images"].append(name)
        manifest["variations"].append(entry)
    if not manifest["images"]:
        reasons = sorted({a.finish_reason for a in artifacts})
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
