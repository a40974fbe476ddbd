"""Who owns a job: one attached process per job. Whoever submits or re-attaches a job holds
``<data dir>/jobs/<job id>.lock`` while it waits, downloads and charges. A second ``reattach`` (or a
second Blender re-attaching at start-up) is refused at once with :class:`JobBusy` naming the holder;
it never downloads, charges or touches the record."""
from __future__ import annotations

import logging
import os
import socket
import sys

from ..core.config import data_dir
from ..core.locking import FileLock, LockHeld

log = logging.getLogger(__name__)


class JobBusy(RuntimeError):
    """Another process is attached to this job; the message names it."""


def job_lock(job_id: str, what: str) -> FileLock:
    """Take the job's lock now or raise :class:`JobBusy` naming whoever holds it."""
    folder = data_dir() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    program = "Blender" if "bpy" in sys.modules else "python"
    holder = f"pid {os.getpid()} ({program}, {what}) on {socket.gethostname()}"
    lock = FileLock(folder / f"{job_id}.lock", holder)
    try:
        return lock.acquire(timeout=0)
    except LockHeld:
        who = lock.current_holder() or "another process"
        log.info("job %s is held by %s; not attaching", job_id, who)
        raise JobBusy(f"job {job_id} is already followed by {who}; not downloading or charging it twice") from None
