"""The one way worker threads reach the UI: typed messages on a queue that
the add-on's timer (``jobs.poll``, on Blender's main thread) consumes before
it tags the sidebar for redraw. Workers never touch bpy or UI state."""
from __future__ import annotations

import queue
from dataclasses import dataclass

from .remote.jobs.state import JobProgress


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


Message = JobProgressed | JobFinished | ConnectionChecked

_messages: queue.SimpleQueue[Message] = queue.SimpleQueue()


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
