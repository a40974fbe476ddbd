"""The host entries Pose Factory writes for the pods it creates.

They live in :func:`remote.core.config.created_hosts_file` in the hosts
file's own format, so every front end finds a created pod by name with no
hosts file of the user's. An entry names the pod by id (the SSH endpoint
comes from the API before each job), the product's key pair and the pod's
own known_hosts file, whose host key is pinned on first contact of each
boot (:func:`pin_for_boot`).
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from ..core.config import HostConfig, created_hosts_file, load_yaml, parse_host
from ..core.locking import FileLock
from .records import Pod, RunPodError

log = logging.getLogger(__name__)

HEADER = ("# Written by Pose Factory for the RunPod pods it created (python -m remote.runpod_cli create, or the\n"
          "# add-on's Create Pod). Terminate removes an entry; hosts in your own ssh_hosts.yaml win over these.\n")
BOOT_LINE = re.compile(r"^# boot (\d+)")
SAME_BOOT_S = 10  # now - uptime of one boot, read at different times, varies by a request's latency


def known_hosts_file(pod_id: str) -> Path:
    return created_hosts_file().parent / "known_hosts" / pod_id


def _entries() -> dict[str, Any]:
    path = created_hosts_file()
    if not path.is_file():
        return {}
    raw = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(raw, dict):
        raise RunPodError(f"{path}: not a mapping of hosts; move it aside and create the pod's entry again")
    return raw


def _write(entries: dict[str, Any]) -> None:
    path = created_hosts_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(HEADER + (yaml.safe_dump(entries, sort_keys=True) if entries else ""), encoding="utf-8")
    os.replace(tmp, path)


def _locked() -> FileLock:
    folder = created_hosts_file().parent
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / ".hosts.lock", f"pid {os.getpid()} writing created hosts").acquire(timeout=30)


def free_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted-2``, ``-3``… when a host or pod has that name already."""
    entries = set(_entries())
    candidate, number = wanted, 1
    while candidate in entries or candidate in taken:
        number += 1
        candidate = f"{wanted}-{number}"
    return candidate


def add_host(name: str, pod: Pod, identity_file: Path, *, workspace: str, idle_stop_minutes: float,
             resume_timeout_s: float, key_env: str) -> HostConfig:
    """Write the entry for a pod just created; the host as every front end will read it."""
    known = known_hosts_file(pod.id)
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text("")  # nothing pinned yet: the first contact pins the pod's key
    # No user or transfer: the API's ssh.direct / ssh.proxy says who to log in as and whether sftp works.
    entry = {"runpod_pod_id": pod.id, "identity_file": str(identity_file), "known_hosts": str(known),
             "accept_new_host_keys": True, "managed_pod": True, "workspace": workspace,
             "idle_stop_minutes": idle_stop_minutes, "resume_timeout_s": resume_timeout_s,
             "runpod_api_key_env": key_env}
    host = parse_host(str(created_hosts_file()), name, entry)  # the checks a hand-written entry gets
    lock = _locked()
    try:
        entries = _entries()
        entries[name] = entry
        _write(entries)
    finally:
        lock.release()
    log.info("wrote host %s for pod %s", name, pod.id)
    return host


def remove_pod(pod_id: str) -> list[str]:
    """Forget a terminated pod: its entries (names returned) and its pinned host keys."""
    lock = _locked()
    try:
        entries = _entries()
        gone = [name for name, entry in entries.items() if isinstance(entry, dict) and entry.get("runpod_pod_id") == pod_id]
        if gone:
            _write({name: entry for name, entry in entries.items() if name not in gone})
    finally:
        lock.release()
    known_hosts_file(pod_id).unlink(missing_ok=True)
    if gone:
        log.info("removed host(s) %s of terminated pod %s", ", ".join(gone), pod_id)
    return gone


def host_names_of(pod_id: str) -> list[str]:
    return [name for name, entry in _entries().items() if isinstance(entry, dict) and entry.get("runpod_pod_id") == pod_id]


def pin_for_boot(host: HostConfig, pod: Pod, started: bool = False) -> None:
    """A created pod booted since its key was pinned (or ``started`` by us now) gets a fresh pin:
    its next first contact.

    sshd's host keys live on the container disk, which RunPod clears on
    stop, so each boot has new keys. Within one boot the pinned key holds
    (ssh's accept-new refuses a changed key for a known endpoint).
    """
    if not host.managed_pod or not host.known_hosts:
        return
    path = Path(host.known_hosts)
    booted = int(time.time()) - pod.uptime_s
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        first = ""
    match = BOOT_LINE.match(first)
    if match and abs(int(match[1]) - booted) <= SAME_BOOT_S and not started:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# boot {booted}: pod {pod.id}'s host key from its first contact since then\n", encoding="utf-8")
    log.info("pod %s booted at %s: its host key is pinned again on first contact", pod.id, booted)
