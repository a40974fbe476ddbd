"""Everything that comes back from a pod is untrusted input; this module is
the one place it is checked before it is used, stored or shown.

* **Names** (images, the render, per-item folders): plain names inside the
  job's output dir — no separators, no ``..``, no absolute or drive paths,
  no control characters. A caller may allow one folder level
  (``<item>/<file>``, both parts plain names) for per-item outputs.
* **Status** (``status.json``): a JSON object whose ``state`` is one of
  :data:`KNOWN_STATES`; times and exit codes are finite numbers or dropped.
* **Manifest** (``manifest.json``): its names checked as above, its cost a
  finite, non-negative figure no larger than a sane multiple of the
  estimate; a figure outside that is *flagged* (the caller charges its own
  figure and says why), never silently charged.
* **Text** (errors, prompts echoed back, names shown): terminal control
  sequences and control characters stripped, length capped.
* **Size**: status and manifest reads are bounded (:data:`MAX_STATUS_BYTES`,
  :data:`MAX_MANIFEST_BYTES`); the reading command pulls at most one byte
  more than the limit (:func:`bounded_cat`) and anything over it is refused.

Nothing here raises anything but :class:`PodOutputError`, whatever bytes it
is given (property-tested with hypothesis).
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .quoting import q

log = logging.getLogger(__name__)

MAX_STATUS_BYTES = 16 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024  # a batch manifest lists many items; still far below anything harmful
MAX_NAME_BYTES = 255
MAX_TEXT_CHARS = 2000
# A pod's own cost figure above this multiple of the job's estimate is flagged, not charged.
COST_CEILING_MULTIPLE = 20.0
COST_CEILING_FLOOR_USD = 1.0  # estimates of $0 (the local host) still allow a sane figure
MAX_GPU_SECONDS = 7 * 24 * 3600.0

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("done", "failed", "cancelled")
KNOWN_STATES = (*ACTIVE_STATES, *TERMINAL_STATES, "none")  # none: the pod has no such job

# CSI (ESC [ … final), OSC (ESC ] … BEL or ST), other ESC sequences, and the 8-bit CSI/OSC forms.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, terminated or not
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?"  # two-byte and nF escapes (and a lone ESC)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# The version of status.json and manifest.json (the files pod and laptop exchange): written by the pod
# (pod_setup/job_status.py, render_job.py) and the laptop (a batch's local manifest); a reader refuses
# another version in one line. A file without one was written before versions and is version 1.
WIRE_VERSION = 1


class PodOutputError(ValueError):
    """Something the pod sent cannot be used; the message is one line for the artist."""


def clean_text(value: Any, limit: int = MAX_TEXT_CHARS, *, one_line: bool = True) -> str:
    """Pod text safe to show in a terminal or store: escapes and controls removed, capped.

    ``one_line`` turns newlines and tabs into spaces as well (errors, names).
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = _CONTROLS.sub("", _ESCAPES.sub("", text))
    if one_line:
        text = " ".join(text.split())
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


def _plain_part(part: str) -> bool:
    return (
        bool(part)
        and part not in (".", "..")
        and "/" not in part
        and "\\" not in part
        and ":" not in part  # a Windows drive or alternate data stream
        and not any(char in part for char in "*?[]")  # names reach the pod's shell as globs
        and not _CONTROLS.search(part)
        and not any(char in part for char in "\t\n")  # the only controls clean_text keeps
        and part == part.strip()
        and len(part.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


def check_name(name: Any, *, allow_item_dirs: bool = False) -> str:
    """``name`` when it is a plain file name (or ``<item>/<file>`` when allowed); else PodOutputError."""
    if not isinstance(name, str):
        raise PodOutputError(f"the pod named an output {clean_text(repr(name), 80)}, which is not text")
    parts = name.split("/")
    if len(parts) > (2 if allow_item_dirs else 1) or not all(_plain_part(part) for part in parts):
        raise PodOutputError(f"the pod named an output {clean_text(repr(name), 120)}, which is not a plain name "
                             "inside the job's output folder")
    return name


def output_path(output_dir: Path, name: Any, *, allow_item_dirs: bool = False) -> Path:
    """The local path of pod output ``name``: always inside ``output_dir``, never through a link."""
    checked = check_name(name, allow_item_dirs=allow_item_dirs)
    base = Path(output_dir)
    path = base.joinpath(*PurePosixPath(checked).parts)
    resolved_base = base.resolve()
    try:
        inside = path.resolve().is_relative_to(resolved_base)
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside or path.is_symlink():
        raise PodOutputError(f"the pod's output {clean_text(checked, 120)} points outside the job's output folder")
    return path


def bounded_cat(path: str, limit: int) -> str:
    """A shell command printing ``path`` only when it is at most ``limit`` bytes.

    It never sends more than ``limit + 1`` bytes, so a huge file costs nothing
    to refuse; a missing file prints nothing.
    """
    return f"{{ head -c {limit + 1} {q(path)} 2>/dev/null || true; }}"


def _json_object(raw: bytes | str, what: str, limit: int) -> dict[str, Any]:
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    if len(data) > limit:
        raise PodOutputError(f"the pod's {what} is over {limit} bytes; refused")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PodOutputError(f"the pod's {what} is not valid JSON ({clean_text(exc, 120)})") from None
    if not isinstance(value, dict):
        raise PodOutputError(f"the pod's {what} is not a JSON object")
    return value


def check_version(data: dict[str, Any], what: str) -> bool:
    """True for a file of this wire version; raises PodOutputError (one line) for any other."""
    version = data.get("version", WIRE_VERSION)
    if version != WIRE_VERSION or isinstance(version, bool):
        raise PodOutputError(f"the {what} is version {clean_text(repr(version), 20)} of the pod's files; this side "
                             f"reads version {WIRE_VERSION}: run the same Pose Factory on the laptop and the pod")
    return True


def _number(value: Any, low: float = 0.0, high: float = math.inf) -> float | None:
    """A finite number in ``low..high``, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and low <= number <= high else None


@dataclass(frozen=True)
class PodStatus:
    """A checked ``status.json``."""

    state: str
    error: str = ""
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    queue_position: int | None = None  # jobs ahead of this one for the GPU
    items: dict[str, Any] | None = None  # a batch's progress: total/done/failed counts, current item (checked)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def gpu_seconds(self) -> float | None:
        """Seconds the job held the GPU, from the pod's own timestamps (None when it never started)."""
        if self.started_at is None:
            return None
        if self.finished_at is None or self.finished_at < self.started_at:
            return None
        return min(self.finished_at - self.started_at, MAX_GPU_SECONDS)


def parse_status(raw: bytes | str) -> PodStatus:
    """A status line from the pod, checked; raises PodOutputError when unusable."""
    data = _json_object(raw.strip() if isinstance(raw, (bytes, str)) else raw, "status", MAX_STATUS_BYTES)
    check_version(data, "status")
    state = data.get("state")
    if not isinstance(state, str) or not state:
        raise PodOutputError("the pod's status has no state")
    if state not in KNOWN_STATES:
        raise PodOutputError(f"the pod's status has an unknown state {clean_text(repr(state), 60)}")
    code = data.get("exit_code")
    position = data.get("queue_position")
    return PodStatus(
        state=state,
        error=clean_text(data.get("error")) if isinstance(data.get("error"), str) else "",
        queued_at=_number(data.get("queued_at")),
        started_at=_number(data.get("started_at")),
        finished_at=_number(data.get("finished_at")),
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) and -255 <= code <= 255 else None,
        queue_position=position if isinstance(position, int) and not isinstance(position, bool)
        and 0 <= position < 10_000 else None,
        items=_items_progress(data.get("items")),
    )


def next_status(previous: dict[str, Any], state: str, *, exit_code: int | None = None, error: str = "",
                now: float) -> dict[str, Any]:
    """``status.json`` after the job moves to ``state`` (the pod's one writer of it, pod_setup/job_status.py)."""
    if state not in KNOWN_STATES:
        raise PodOutputError(f"no job state {state!r}")
    status: dict[str, Any] = {key: previous[key] for key in ("queued_at", "started_at", "finished_at", "exit_code",
                                                             "error") if key in previous}
    status.update(version=WIRE_VERSION, state=state)
    status.setdefault("queued_at", now)
    if state == "running":
        status["started_at"] = now
    if state in TERMINAL_STATES:
        status["finished_at"] = now
    if exit_code is not None:
        status["exit_code"] = exit_code
    if error:
        status["error"] = error
    return status


def _items_progress(value: Any) -> dict[str, Any] | None:
    """A batch's ``items`` progress from the status: bounded counts and a clean current item name."""
    if not isinstance(value, dict):
        return None
    counts = {k: value.get(k) for k in ("total", "done", "failed")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000 for v in counts.values()):
        return None
    current = value.get("current")
    return {**counts, "current": clean_text(current, 100) if isinstance(current, str) else None}


@dataclass(frozen=True)
class PodManifest:
    """A checked ``manifest.json``: only what the laptop uses, all of it safe."""

    images: list[str] = field(default_factory=list)  # checked relative names
    render: str | None = None
    error: str = ""
    prompt: str = ""
    job_id: str = ""
    seed: int = 0
    seeds: dict[str, int] = field(default_factory=dict)  # image name -> its variation's seed
    numbers: dict[str, int] = field(default_factory=dict)  # image name -> its variation number
    images_generated: int = 0  # API generations the pod reports as accepted (billed)
    reported_usd: float | None = None  # the pod's own figure when it passed the checks
    cost_flag: str = ""  # why the pod's figure was not used, when it was not
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # cleaned copy, for storing


def _seed(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32 else None


def check_cost(value: Any, estimate_usd: float | None) -> tuple[float | None, str]:
    """The pod's reported total when sane, else (None, the reason to flag)."""
    if value is None:
        return None, ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"the pod reported a cost of {clean_text(repr(value), 40)}, which is not a number"
    number = float(value) if not isinstance(value, int) or abs(value) < 1e300 else math.inf
    if not math.isfinite(number):
        return None, f"the pod reported a cost of {number}, which is not finite"
    if number < 0:
        return None, f"the pod reported a negative cost (${number:.4f})"
    ceiling = max((estimate_usd or 0.0) * COST_CEILING_MULTIPLE, COST_CEILING_FLOOR_USD)
    if number > ceiling:
        return None, f"the pod reported ${number:.4f}, over {COST_CEILING_MULTIPLE:g}x the estimate (ceiling ${ceiling:.2f})"
    return round(number, 6), ""


def parse_manifest(raw: bytes | str, *, estimate_usd: float | None = None, max_images: int = 1000,
                   allow_item_dirs: bool = False) -> PodManifest:
    """A manifest from the pod, checked. Bad names and a structurally broken
    manifest raise PodOutputError; a bad cost is flagged in the result."""
    data = _json_object(raw, "manifest", MAX_MANIFEST_BYTES)
    check_version(data, "manifest")
    names = data.get("images", [])
    if not isinstance(names, list):
        raise PodOutputError("the pod's manifest lists its images as something other than a list")
    if len(names) > max_images:
        raise PodOutputError(f"the pod's manifest lists {len(names)} images, more than the job asked for ({max_images})")
    images = [check_name(name, allow_item_dirs=allow_item_dirs) for name in names]
    if len(set(images)) != len(images):
        raise PodOutputError("the pod's manifest lists an image twice")
    render = data.get("render")
    render_name = check_name(render, allow_item_dirs=allow_item_dirs) if render is not None else None
    seeds: dict[str, int] = {}
    numbers: dict[str, int] = {}
    generated = 0
    variations = data.get("variations", [])
    for variation in variations if isinstance(variations, list) else []:
        if not isinstance(variation, dict):
            continue
        if variation.get("finish_reason") in ("SUCCESS", "CONTENT_FILTERED"):
            generated += 1
        name = variation.get("file")
        if isinstance(name, str) and name in images:
            seed, number = _seed(variation.get("seed")), variation.get("n")
            if seed is not None:
                seeds[name] = seed
            if isinstance(number, int) and not isinstance(number, bool) and 0 < number <= 10_000:
                numbers[name] = number
    requested = _number(data.get("ai_images_requested"), 0, 10_000)
    if data.get("status") == "running" and requested is not None:
        # The job was stopped during its paid call: what was asked for may have been billed.
        generated = max(generated, int(requested))
    cost = data.get("actual_cost")
    reported, flag = check_cost(cost.get("total_usd") if isinstance(cost, dict) else None, estimate_usd)
    if flag:
        log.warning("manifest cost flagged: %s", flag)
    error = data.get("error")
    return PodManifest(
        images=images, render=render_name, error=clean_text(error) if isinstance(error, str) else "",
        prompt=clean_text(data.get("prompt"), one_line=False) if isinstance(data.get("prompt"), str) else "",
        job_id=clean_text(data.get("job_id"), 64) if isinstance(data.get("job_id"), str) else "",
        seed=_seed(data.get("seed")) or 0, seeds=seeds, numbers=numbers, images_generated=generated,
        reported_usd=reported, cost_flag=flag, raw=_cleaned(data),
    )


def _cleaned(value: Any, depth: int = 0) -> Any:
    """A copy of pod JSON with every string cleaned and non-finite numbers dropped (for storing)."""
    if depth > 20:
        return None
    if isinstance(value, str):
        return clean_text(value, one_line=False)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {clean_text(str(k), 200): _cleaned(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v, depth + 1) for v in value]
    return value


def read_local_manifest(output_dir: Path, **options: Any) -> PodManifest | None:
    """The checked manifest of a downloaded results folder (None when there is none)."""
    path = Path(output_dir) / "manifest.json"
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PodOutputError(f"cannot read {path}: {exc.strerror}") from None
    return parse_manifest(data, **options)


def device_summary(manifest: dict[str, Any]) -> str:
    """The manifest's render device as one short line ("CUDA: NVIDIA A40 x2"); '' when it has none.

    The manifest comes from the pod: only text of a bounded length is used.
    """
    device = manifest.get("render_device")
    if not isinstance(device, dict) or not isinstance(device.get("kind"), str):
        return ""
    names = [n for n in device.get("names", []) if isinstance(n, str)] if isinstance(device.get("names"), list) else []
    counted = [f"{name} x{names.count(name)}" if names.count(name) > 1 else name for name in dict.fromkeys(names)]
    summary = f"{device['kind']}: {', '.join(counted)}" if counted else device["kind"]
    summary = "".join(ch for ch in summary if ch.isprintable())[:120]
    return f"{summary} (fallback)" if device.get("warning") else summary
