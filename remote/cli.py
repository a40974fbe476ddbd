"""Render from the command line, no Blender UI needed:

    python -m remote.cli render SCENE.blend --prompt "a knight" [--host local] [--variations 2] ...
        [--poses current|markers|assets|frames:A-B[:S]|NAME,NAME…] [--cameras active|collection:NAME|NAME,NAME…]
    python -m remote.cli reattach RECORD.json
    python -m remote.cli estimate --steps 30 --variations 4 [--pod-type A40]

The Stability key comes from ``STABILITY_API_KEY``; without it, ``--backend
auto`` (the default) renders without the AI step and says how to turn it on.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .core.blendfile import BlendFileError, NotABlendFile, check_blend_file, saved_version
from .core.config import ConfigError, data_dir, load_hosts
from .core.estimate import EXPECTED_RENDER_S
from .core.estimate import estimate as estimate_cost
from .core.jobspec import (
    AUTO_SIZE,
    BACKENDS,
    SETTINGS,
    SETTINGS_BY_NAME,
    STABILITY_API_BASE,
    STABILITY_KEY_BACKENDS,
    JobValidationError,
    RenderJob,
    Setting,
)
from .core.logs import environment_secrets, setup_logging
from .core.pod_output import clean_text, device_summary
from .core.redact import Redactor
from .jobs.pipeline import new_job_id, reattach, run_job
from .jobs.state import JobProgress, JobResult

log = logging.getLogger("remote.cli")  # not __main__ under -m: inside the remote logger, so in the log file


# Options the command line gives a setting beyond its own flag (the old name says what it is now).
OLD_FLAGS = {"variations": "--batch", "render_samples": "--samples"}


class _OldFlag(argparse.Action):
    """A setting given by its old flag: taken, and the new one named."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if option_string in OLD_FLAGS.values():
            new = SETTINGS_BY_NAME[self.dest].flag
            print(f"note: {option_string} is {new} now; both work", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_setting(parser: argparse.ArgumentParser, each: Setting, **changes: object) -> None:
    """``each`` as an option of ``parser``, with its table's type, default, range, choices and help."""
    number = "d" if each.kind is int else "g"
    bounds = f" ({each.low:{number}}..{each.high:{number}})" if each.low is not None and each.high is not None else ""
    only = f" [{', '.join(each.backends)}]" if each.backends else ""
    flags = [each.flag, *([OLD_FLAGS[each.name]] if each.name in OLD_FLAGS else [])]
    if each.kind is bool:
        parser.add_argument(*flags, action="store_true", help=f"{each.help}{only}", **changes)  # type: ignore[arg-type]
        return

    def parse(text: str) -> object:
        try:
            return each.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    options: dict[str, object] = dict(type=parse, default=each.default, help=f"{each.help}{bounds}{only}",
                                      action=_OldFlag, dest=each.name)
    if each.choices:
        options.update(choices=each.choices, metavar=each.name.upper())
        shown = ", ".join(choice or "''" for choice in each.choices)
        options["help"] = f"{options['help']} (one of: {shown})"
    options.update(changes)
    parser.add_argument(*flags, **options)  # type: ignore[arg-type]


def _size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT or auto; which sizes a backend takes is the job's validation's call."""
    if text.lower() == "auto":
        return AUTO_SIZE
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT") from None
    return width, height


def _time_limit(text: str) -> float:
    """Seconds, a finite number above 0 (``nan``, ``inf`` and ``-1`` are refused here, before anything runs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_TIME_LIMIT_S:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0 and at most "
                                         f"{MAX_TIME_LIMIT_S:.0f} (a week)")
    return value


MAX_TIME_LIMIT_S = 7 * 24 * 3600.0


def _bone_map(text: str) -> dict[str, str]:
    """``--bone-map FILE``: a JSON or YAML mapping of COCO joint → "bone", "bone:head" or "bone:tail"."""
    import yaml

    try:
        data = yaml.safe_load(Path(text).read_text(encoding="utf-8"))  # JSON is YAML
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise argparse.ArgumentTypeError(f"{text} must map joint names to bone names (e.g. left_wrist: hand_L)")
    return data


def scene_blender_version(scene: Path) -> str:
    """"X.Y" of the Blender that saved ``scene``, read from its header; "" when it cannot be read."""
    try:
        return "%d.%d" % saved_version(scene)
    except (OSError, BlendFileError):
        return ""


class ProgressPrinter:
    """One line per change of stage or message (the pipeline reports several times a second)."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, progress: JobProgress) -> None:
        bar = "" if progress.fraction < 0 else f"[{'#' * int(progress.fraction * 20):<20}] "
        line = f"  {bar}{progress.stage}: {progress.message}"
        if line != self.last:
            print(line, flush=True)
            self.last = line


def report(result: JobResult) -> int:
    if result.cost_flag:
        print(f"warning: job {result.job_id}: {result.cost_flag}; charged the laptop's own figure", file=sys.stderr)
    if result.status != "done":
        print(f"job {result.job_id} {result.status}: {result.error}", file=sys.stderr)
        return 1
    print(f"job {result.job_id} done in {result.output_dir}")
    if result.raw_render:
        print(f"  render: {result.raw_render}")
    for image in result.images:
        print(f"  image:  {image}")
    items = result.manifest.get("items", [])
    if len(items) > 1 or result.manifest.get("contact_sheet"):
        counts = {s: sum(1 for i in items if i.get("status") == s) for s in ("done", "reused", "failed")}
        print(f"  items:  {len(items)} ({counts['done']} rendered, {counts['reused']} reused, {counts['failed']} failed)")
        for item in items:
            if item.get("status") == "failed":
                print(f"  failed: {item.get('name')}: {''.join(ch for ch in str(item.get('error')) if ch.isprintable())[:300]}")
    device = device_summary(result.manifest)
    if device:
        print(f"  device: {device}")
    warnings = result.manifest.get("warnings")
    for warning in warnings if isinstance(warnings, list) else []:
        if isinstance(warning, str):  # from the pod: shown as plain printable text only
            print(f"  warning: {''.join(ch for ch in warning if ch.isprintable())[:300]}")
    print(f"  cost:   ${result.cost_usd or 0:.4f} (ledger: {data_dir() / 'ledger.jsonl'})")
    if result.output_dir and (result.output_dir / "contact-sheet.png").is_file():
        print(f"  contact sheet: {result.output_dir / 'contact-sheet.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The CLI; an internal error is one line here and its traceback in the log file."""
    log_file = setup_logging()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        log.exception("internal error")
        detail = Redactor(environment_secrets())(clean_text(exc, 200))
        print(f"internal error ({type(exc).__name__}: {detail}); details in {log_file}", file=sys.stderr)
        return 70


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.cli", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render a .blend on a host and bring the images back")
    render.add_argument("scene", type=Path, help="the .blend to render (its active camera; checked on the pod)")
    for each in SETTINGS:
        changes: dict[str, object] = {}
        if each.name == "prompt":
            changes = dict(required=True)
        elif each.name == "backend":
            changes = dict(choices=["auto", *BACKENDS], default="auto",
                           help="the AI step: auto (stability when STABILITY_API_KEY is set, else none), "
                                + ", ".join(BACKENDS))
        add_setting(render, each, **changes)
    render.add_argument("--host", default="local", help="a host of the hosts file (default: the built-in local)")
    render.add_argument("--hosts", type=Path, help="ssh_hosts.yaml (default: only the built-in local host)")
    render.add_argument("--size", type=_size, default=AUTO_SIZE,
                        help="an SDXL size, e.g. 1216x832, or auto (default): the one nearest the camera's aspect; "
                             "another aspect is a centred crop of the camera's frame")
    render.add_argument("--blender-version", default=None,
                        help="the Blender the pod runs (e.g. 4.2 or 4.2.3); default: the version that saved the scene")
    render.add_argument("--allow-newer-blender", action="store_true",
                        help="render a scene saved by a newer Blender than the pod can run")
    render.add_argument("--api-base", default=os.environ.get("STABILITY_API_BASE", STABILITY_API_BASE),
                        help="Stability's API base URL, v1 and v2beta (default: $STABILITY_API_BASE or the public API)")
    render.add_argument("--bone-map", type=_bone_map, default={}, metavar="FILE",
                        help="openpose: which bone is which joint, JSON or YAML (left_wrist: hand_L, nose: Head:tail); "
                             "overrides the map found from the rig's names and shape")
    render.add_argument("--output", type=Path, help="where results go (default: DATA_DIR/output)")
    render.add_argument("--time-limit", type=_time_limit, default=None, metavar="SECONDS",
                        help="stop the job on the pod after this long (default: 10x the estimate, at least 15 min)")
    render.add_argument("--fresh", action="store_true",
                        help="render every item again, even those an earlier job already brought back")
    again = commands.add_parser("reattach", help="wait for a job a previous run started and download it")
    again.add_argument("record", type=Path, help="the job record the render command printed (DATA_DIR/jobs/<id>.json)")
    again.add_argument("--hosts", type=Path, help="ssh_hosts.yaml (default: the one the job was submitted with)")
    estimate = commands.add_parser("estimate", help="what a job would cost")
    for name in ("steps", "variations", "backend"):
        add_setting(estimate, SETTINGS_BY_NAME[name])
    estimate.add_argument("--pod-type", default=None, help="GPU type priced in cost_config.yaml (default: its default)")
    estimate.add_argument("--render-seconds", type=float, default=EXPECTED_RENDER_S, help="expected render time on the pod")
    args = parser.parse_args(argv)

    if args.command == "estimate":
        job = RenderJob(blend_path="-", output_dir="-", prompt="-", steps=args.steps, variations=args.variations,
                        backend=args.backend)
        cost = estimate_cost(job, args.pod_type, expected_render_s=args.render_seconds)
        print(f"estimate ({cost.backend}): ${cost.total_usd:.4f} (GPU {cost.gpu_seconds:.0f}s on {cost.pod_type}: "
              f"${cost.gpu_usd:.4f}; "
              f"{cost.images} image(s): ${cost.images_usd:.4f})")
        return 0
    try:  # the hosts file is read now, so a broken one is one line before anything starts
        if args.hosts is not None:
            load_hosts(args.hosts)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cancel = threading.Event()
    if args.command == "reattach":
        return follow_job(lambda: reattach(args.record, hosts_file=args.hosts, progress=ProgressPrinter(),
                                           cancel=cancel), cancel, args.record)

    api_key = os.environ.get("STABILITY_API_KEY", "")
    backend = args.backend
    if backend == "auto":
        backend = "stability" if api_key else "none"
        if not api_key:
            print("AI step skipped: STABILITY_API_KEY is not set (export it to send the render through SDXL)")
    job_id = new_job_id()
    job = RenderJob(
        blend_path=str(args.scene), output_dir="", job_id=job_id,
        **{**{each.name: getattr(args, each.name) for each in SETTINGS}, "backend": backend},
        width=args.size[0], height=args.size[1], api_base_url=args.api_base, bone_map=args.bone_map,
        blender_version=scene_blender_version(args.scene) if args.blender_version is None else args.blender_version,
        allow_newer_blender=args.allow_newer_blender,
    )
    try:
        job.output_dir = "-"  # checked here only; the pipeline fills in the pod's paths
        job.validate()
    except JobValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.scene.is_file():  # a missing one is the pipeline's "scene file not found"
        try:
            check_blend_file(args.scene)  # a truncated or foreign file: refused before anything is uploaded
        except NotABlendFile as exc:
            print(f"error: {clean_text(exc, 400)}", file=sys.stderr)
            return 2
    output = args.output or data_dir() / "output"
    record = data_dir() / "jobs" / f"{job_id}.json"
    print(f"job {job_id} on {args.host} (record: {record}); the pod checks the scene's camera before rendering")
    return follow_job(lambda: run_job(job, args.scene, host=args.host, hosts_file=args.hosts, local_output_dir=output,
                                      api_key=(api_key or None) if backend in STABILITY_KEY_BACKENDS else None,
                                      progress=ProgressPrinter(), cancel=cancel, record_path=record,
                                      time_limit_s=args.time_limit, fresh=args.fresh), cancel, record)


def follow_job(work: Callable[[], JobResult], cancel: threading.Event, record: Path) -> int:
    """Run the job in a worker thread; Ctrl-C cancels it and lets it settle (the pod's job stopped,
    its ledger line written), then exits 130; a second Ctrl-C leaves at once."""
    outcome: dict[str, JobResult | BaseException] = {}
    finished = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C may take the thread for ended

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the main thread as is
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name="job", daemon=True).start()
    interrupted = False
    while not finished.is_set():
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:
            if interrupted:
                print(f"aborted; the pod may still be working. Resume with: python -m remote.cli reattach {record}",
                      file=sys.stderr)
                return 130
            interrupted = True
            cancel.set()
            print("interrupted: cancelling the job and settling it (Ctrl-C again to leave at once)", file=sys.stderr)
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    result = outcome["result"]
    assert isinstance(result, JobResult)
    return 130 if interrupted else report(result)


if __name__ == "__main__":
    sys.exit(main())
