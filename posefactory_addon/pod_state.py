"""RunPod pod state for the Remote panel: state, $/h, uptime, Start / Stop (Terminate: pod_create).

Every RunPod API call runs in a worker thread; results reach the UI through
the add-on's one UI channel (:class:`ui_channel.PodUpdated` messages), whose
persistent timer applies them on the main thread into a :class:`PodView` per
host and tags the sidebar for redraw. The panel's
``draw`` only reads the views. While the scene's host is a pod host, the
timer refreshes its state every :data:`REFRESH_S` seconds.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bpy

from . import host_lookup, preferences, ui_channel
from .errors import SubmitError
from .operators import OperatorResult
from .remote.core.config import HostConfig
from .remote.jobs import hosts

REFRESH_S = 15.0
IDLE_CHECK_S = 120.0  # the laptop's own idle check (over SSH) at most this often per host
_last_idle_check: dict[str, float] = {}


@dataclass
class PodView:
    """What the panel shows for one host (main thread only)."""

    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    busy: str | None = None  # the action in flight, if any
    updated_at: float = 0.0


VIEWS: dict[str, PodView] = {}


def pod_host(context: bpy.types.Context) -> HostConfig | None:
    """The scene's host when it is a RunPod pod named by id, else None."""
    settings = getattr(context.scene, "posefactory", None) if context.scene else None
    if settings is None:
        return None
    try:
        host = host_lookup.resolve_host(context, settings.host)
    except SubmitError:
        return None
    return host if host.runpod_pod_id else None


def refresh(host: HostConfig, jobs_here: bool) -> dict[str, Any]:
    """The pod's state; a running pod up longer than its idle limit, with no job
    from this Blender, gets the laptop's idle check (stopped when idle past it)."""
    info = hosts.pod_info(host)
    limit_s = host.idle_stop_minutes * 60
    due = time.monotonic() - _last_idle_check.get(host.name, -IDLE_CHECK_S) >= IDLE_CHECK_S
    if info["state"] == "RUNNING" and limit_s > 0 and info["uptime_s"] >= limit_s and not jobs_here and due:
        _last_idle_check[host.name] = time.monotonic()
        outcome = hosts.idle_check(host)
        info = {**hosts.pod_info(host), "idle_check": outcome}
    return info


def request(host: HostConfig, action: str) -> bool:
    """Start ``action`` for ``host`` in a worker thread; False when one is already in flight."""
    from .jobs import MANAGER

    view = VIEWS.setdefault(host.name, PodView())
    if view.busy:
        return False
    view.busy = action
    preferences.runpod_environment()  # a key from the preferences reaches remote/ through the environment
    jobs_here = any(job.host == host.name for job in MANAGER.active())  # read here, on the main thread
    work: dict[str, Callable[[HostConfig], dict[str, Any]]] = {
        "refresh": lambda h: refresh(h, jobs_here),
        "start": lambda h: {**hosts.start_pod(h, progress=lambda line: None), **hosts.pod_info(h)},
        "stop": lambda h: (hosts.stop(h), hosts.pod_info(h))[1],
    }

    def worker() -> None:
        try:
            ui_channel.post(ui_channel.PodUpdated(host.name, action, info=work[action](host)))
        except Exception as exc:  # every failure is one line in the panel, never a dead thread
            ui_channel.post(ui_channel.PodUpdated(host.name, action, error=str(exc).splitlines()[0] if str(exc) else repr(exc)))

    threading.Thread(target=worker, name=f"posefactory-pod-{action}", daemon=True).start()
    return True


def apply(message: ui_channel.PodUpdated) -> None:
    """Main thread (the channel's timer): a worker's pod state or error into the host's view."""
    view = VIEWS.setdefault(message.host, PodView())
    view.busy, view.error, view.updated_at = None, message.error, time.time()
    if message.info is not None:
        view.info = message.info


def drain() -> int:
    """Main thread: apply every message posted on the channel; how many there were."""
    return ui_channel.apply_pending()


def refresh_now_and_then() -> bool:
    """A tick of the channel's timer: refresh the scene's pod every REFRESH_S (never redraws by itself)."""
    host = pod_host(bpy.context)
    if host is not None and bpy.app.online_access:  # offline: the panel shows the last state it had
        view = VIEWS.get(host.name)
        if view is None or (not view.busy and time.time() - view.updated_at > REFRESH_S):
            request(host, "refresh")
    return False


def uptime_text(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


if TYPE_CHECKING:  # the mixin is typed as the Operator it is mixed into
    _OperatorMixin = bpy.types.Operator
else:
    _OperatorMixin = object


class PodOperator(_OperatorMixin):
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return pod_host(context) is not None

    def run(self, context: bpy.types.Context, action: str, done: str) -> OperatorResult:
        host = pod_host(context)
        assert host is not None
        if problem := preferences.offline(f"{action.title()} Pod (RunPod's API)"):
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        if not request(host, action):
            self.report({"WARNING"}, f"Pod {host.runpod_pod_id}: {VIEWS[host.name].busy} already in progress")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Pod {host.runpod_pod_id}: {done}")
        return {"FINISHED"}


class POSEFACTORY_OT_pod_start(PodOperator, bpy.types.Operator):
    bl_idname = "posefactory.pod_start"
    bl_label = "Start Pod"
    bl_description = "Resume the host's RunPod pod through RunPod's API (billing starts) and wait until it runs"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        return self.run(context, "start", "starting (in the background)")


class POSEFACTORY_OT_pod_stop(PodOperator, bpy.types.Operator):
    bl_idname = "posefactory.pod_stop"
    bl_label = "Stop Pod"
    bl_description = "Stop the host's RunPod pod through RunPod's API (GPU billing stops; /workspace is kept)"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        return self.run(context, "stop", "stopping (in the background)")


class POSEFACTORY_OT_pod_refresh(PodOperator, bpy.types.Operator):
    bl_idname = "posefactory.pod_refresh"
    bl_label = "Refresh Pod State"
    bl_description = "Ask RunPod's API for the pod's state, price and uptime now"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        return self.run(context, "refresh", "refreshing")


def draw(layout: Any, context: bpy.types.Context) -> None:
    """The pod box of the Remote panel (reads the views only)."""
    host = pod_host(context)
    if host is None:
        return
    view = VIEWS.get(host.name, PodView())
    box = layout.box()
    info = view.info
    state = info.get("state", "unknown")
    row = box.row()
    row.label(text=f"Pod {host.runpod_pod_id}: {state}", icon="CHECKMARK" if state == "RUNNING" else "PAUSE")
    row.operator("posefactory.pod_refresh", text="", icon="FILE_REFRESH")
    if info:
        price = f"${info['cost_per_hr']:.3f}/h" if info.get("cost_per_hr") is not None else "price unknown"
        box.label(text=f"{price}, up {uptime_text(info.get('uptime_s', 0))}, "
                       f"{info.get('gpu_count', 1)}× {info.get('gpu_name') or 'GPU'}")
    minutes = host.idle_stop_minutes
    box.label(text=f"Auto-stop after {minutes:g} idle min" if minutes else "Auto-stop off", icon="TIME")
    if info.get("idle_check"):
        box.label(text=f"Idle check: {info['idle_check']}", icon="TIME")
    if view.busy:
        box.label(text=f"{view.busy}…", icon="SORTTIME")
    if view.error:
        box.label(text=view.error[:100], icon="ERROR")
    row = box.row(align=True)
    row.enabled = view.busy is None
    row.operator("posefactory.pod_start", icon="PLAY")
    row.operator("posefactory.pod_stop", icon="PAUSE")
    row.operator("posefactory.pod_terminate", icon="TRASH")  # greyed out for a pod Pose Factory did not create


CLASSES = (POSEFACTORY_OT_pod_start, POSEFACTORY_OT_pod_stop, POSEFACTORY_OT_pod_refresh)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    ui_channel.on(ui_channel.PodUpdated, apply)
    ui_channel.on_tick(refresh_now_and_then)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
