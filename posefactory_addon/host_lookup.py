"""The hosts a job can name (the preferences' hosts file, the pods Pose Factory created, ``local``),
read once per change of those files, and the one a job names resolved or refused in one line."""
from __future__ import annotations

import functools
from pathlib import Path

import bpy

from . import preferences
from .errors import SubmitError
from .remote.core.config import ConfigError, HostConfig, created_hosts_file, load_hosts
from .remote.core.platforms import default_config_dir, default_transport
from .remote.jobs.hosts import local_host_problem

ADD_A_POD = ("save it as ssh_hosts.yaml in {config_dir} or choose it in Preferences > Add-ons > Pose Factory > "
             "Hosts File, then pick its host")


@functools.lru_cache(maxsize=4)
def _hosts(path: Path | None, modified_ns: int, created_ns: int) -> dict[str, HostConfig]:
    # Keyed by modification times: the panel asks on every redraw, the files rarely change
    # (the created pods' file does when Create Pod or Terminate writes it: seen at once).
    return load_hosts(path)


def _modified_ns(path: Path | None) -> int:
    try:
        return path.stat().st_mtime_ns if path else 0
    except OSError:
        return 0


def host_names(context: bpy.types.Context) -> list[str]:
    """Every host a job can name now (the hosts file's, the created pods', ``local``); [] when unreadable."""
    try:
        return sorted(_known_hosts(context))
    except SubmitError:
        return []


def _known_hosts(context: bpy.types.Context) -> dict[str, HostConfig]:
    path = preferences.hosts_file(context)
    try:
        return _hosts(path, _modified_ns(path), _modified_ns(created_hosts_file()))
    except ConfigError as exc:
        raise SubmitError(f"Hosts file: {exc}") from None


def resolve_host(context: bpy.types.Context, host: str) -> HostConfig:
    """The named host from the preferences' hosts file or the pods Pose Factory created; SubmitError
    when there is none."""
    hosts = _known_hosts(context)
    if host not in hosts:
        raise SubmitError(f"Unknown host '{host}': known hosts are {', '.join(sorted(hosts))}")
    problem = local_problem(hosts[host])
    if problem:
        raise SubmitError(f"{problem}; {ADD_A_POD.format(config_dir=default_config_dir())}")
    return hosts[host]


def local_demo_problem() -> str | None:
    """Why the built-in ``local`` host (its default transport) cannot run here; the panel shows it."""
    return _local_problem(default_transport())


def local_problem(config: HostConfig) -> str | None:
    """Why the built-in ``local`` demo host cannot run on this machine (Windows has no bash)."""
    return _local_problem(config.transport) if config.is_local else None


@functools.lru_cache(maxsize=2)
def _local_problem(transport: str) -> str | None:
    return local_host_problem(transport)
