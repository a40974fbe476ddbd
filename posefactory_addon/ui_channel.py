"""The one way worker threads reach the UI: typed messages (dataclasses) on one
queue, consumed by ONE persistent ``bpy.app.timers`` function on Blender's main
thread that hands each message to the handler registered for its type, runs the
per-tick hooks (job status, pod refresh, the panel's view) and tags the
sidebar for redraw. Workers never touch bpy or UI state.

The timer is persistent (it survives File ▸ Open) and is re-armed by a
persistent ``load_post`` handler, so opening a file mid-job never drops it."""
from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bpy

from .remote.jobs.state import JobProgress

log = logging.getLogger(__name__)

TIMER_S = 0.5


@dataclass(frozen=True)
class JobProgressed:
    job_id: str
    progress: JobProgress


@dataclass(frozen=True)
class JobFinished:
    job_id: str


@dataclass(frozen=True)
class ConnectionChecked:
    host: str
    outcome: str  # "connected: …" or "failed: …"


@dataclass(frozen=True)
class PodUpdated:
    """The pod's state after an action (refresh | start | stop), or the action's error."""

    host: str
    action: str
    info: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class CatalogLoaded:
    """Create Pod's GPU catalog (rows of ``provision.gpu_rows``) for one fetch, or why it could not be read."""

    fetch: int  # which fetch answered: only the latest one is shown
    rows: tuple[dict[str, Any], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class PodCreateProgress:
    """One line of a pod being created (catalog, PROVISIONING → RUNNING, SSH, set-up)."""

    line: str


@dataclass(frozen=True)
class PodCreated:
    """The end of a create: the host written for the new pod, or the one-line error."""

    host: str | None = None
    line: str = ""
    error: str | None = None


@dataclass(frozen=True)
class PodTerminated:
    """The end of a terminate: RunPod's pod gone and its host entry removed, or the one-line error."""

    host: str
    pod_id: str
    line: str = ""
    error: str | None = None


Message = (JobProgressed | JobFinished | ConnectionChecked | PodUpdated | CatalogLoaded | PodCreateProgress
           | PodCreated | PodTerminated)

_messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
# Main thread only: who applies each message type, and what runs on every tick.
_handlers: dict[type, Callable[[Any], None]] = {}
_hooks: list[Callable[[], bool]] = []  # each returns whether the UI changed


def post(message: Message) -> None:
    """Any thread: hand a message to the UI."""
    _messages.put(message)


def drain() -> list[Message]:
    """Main thread: every message posted since the last call, in order."""
    taken: list[Message] = []
    while True:
        try:
            taken.append(_messages.get_nowait())
        except queue.Empty:
            return taken


def on(kind: type, handler: Callable[[Any], None]) -> None:
    """Main thread: ``handler(message)`` applies every message of type ``kind``."""
    _handlers[kind] = handler


def on_tick(hook: Callable[[], bool]) -> None:
    """Main thread: ``hook()`` runs on every tick and returns whether the UI changed."""
    if hook not in _hooks:
        _hooks.append(hook)


def apply_pending() -> int:
    """Main thread: apply every posted message; how many there were."""
    messages = drain()
    for message in messages:
        handler = _handlers.get(type(message))
        if handler is None:
            continue
        try:
            handler(message)
        except Exception:  # one bad message must not stop the others nor the timer
            log.exception("applying %s", type(message).__name__)
    return len(messages)


def tag_redraw() -> None:
    window_manager = getattr(bpy.context, "window_manager", None)
    for window in getattr(window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR"):
                area.tag_redraw()


def tick() -> float:
    """The timer. Never raises (Blender unregisters a timer that raises) and always re-arms."""
    try:
        changed = apply_pending() > 0
        for hook in list(_hooks):
            try:
                changed = hook() or changed
            except Exception:
                log.exception("Pose Factory timer hook %s", getattr(hook, "__name__", hook))
        if changed:
            tag_redraw()
    except Exception:
        log.exception("Pose Factory timer")
    return TIMER_S


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TIMER_S, persistent=True)


@bpy.app.handlers.persistent
def _rearm_after_load(*_args: Any) -> None:
    ensure_timer()


def register() -> None:
    if _rearm_after_load not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_rearm_after_load)
    ensure_timer()


def unregister() -> None:
    if _rearm_after_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_rearm_after_load)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    _handlers.clear()
    _hooks.clear()
