"""Pods from the terminal, and the calls the add-on's Remote panel makes.

    python -m remote.runpod_cli status HOST [--hosts ssh_hosts.yaml]
    python -m remote.runpod_cli start HOST [--hosts …]       # resume and wait until it runs
    python -m remote.runpod_cli stop HOST [--hosts …]
    python -m remote.runpod_cli idle-check HOST [--hosts …]  # stop it when idle past idle_stop_minutes

Every failure is one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .bridge.api import Bridge, UnknownHost
from .core.config import ConfigError, HostConfig, load_hosts
from .core.logs import environment_secrets, setup_logging
from .core.pod_output import clean_text
from .core.quoting import q
from .core.redact import Redactor
from .jobs.ledger import append_ledger
from .jobs.state import PipelineError
from .runpod.idle import stop_if_idle
from .runpod.pods import PodClient, RunPodError, api_key_for, ensure_running, stop_pod, utc_now, with_endpoint

log = logging.getLogger("remote.runpod_cli")  # also as __main__: inside the remote logger


def pod_host(hosts_file: Path | str | None, name: str) -> HostConfig:
    hosts = load_hosts(hosts_file)
    if name not in hosts:
        raise UnknownHost(f"unknown host {name!r}; known hosts: {', '.join(sorted(hosts))}")
    if hosts[name].runpod_pod_id is None:
        raise RunPodError(f"host {name!r} has no runpod_pod_id; the pod API cannot start or stop it")
    return hosts[name]


def pod_info(host: HostConfig) -> dict[str, Any]:
    """What the Remote panel shows: state, $/h, uptime, GPU, auto-stop minutes."""
    assert host.runpod_pod_id is not None
    state = PodClient(api_key_for(host)).get(host.runpod_pod_id)
    shown = "RUNNING" if state.running else ("STARTING" if state.desired_status == "RUNNING" else state.desired_status)
    return {**asdict(state), "state": shown, "idle_stop_minutes": host.idle_stop_minutes}


def start(host: HostConfig, progress: Any = print) -> dict[str, Any]:
    """Resume the pod (when stopped) and wait until it runs."""
    resolved, state, resumed = ensure_running(host, progress)
    if resumed:
        append_ledger({"event": "pod_start", "host": host.name, "pod_id": state.pod_id,
                       "cost_per_hr": state.cost_per_hr, "at": utc_now()})
    return {**asdict(state), "state": "RUNNING", "ssh": f"{resolved.user}@{resolved.host}:{resolved.port}"}


def stop(host: HostConfig, reason: str = "stopped by the user") -> dict[str, Any]:
    return asdict(stop_pod(host, append_ledger, reason))


def idle_check(host: HostConfig) -> str:
    """The laptop's idle check: stop the pod when its watchdog reports it idle past the limit."""
    resolved = endpoint_if_running(host)
    if resolved is None:
        return "not running"
    with Bridge({host.name: resolved}) as bridge:
        def run(command: str, what: str, **options: Any):
            result = bridge.run(host.name, f"export WORKSPACE={q(resolved.workspace)}; {command}", timeout=60)
            if not result.ok:
                raise RunPodError(f"{what} failed on {host.name}: {(result.stderr or result.error or '').strip()[:200]}")
            return result
        stopped = stop_if_idle(run, resolved, append_ledger)
    return "stopped (idle past the limit)" if stopped else "left running (busy or not idle long enough)"


def endpoint_if_running(host: HostConfig) -> HostConfig | None:
    """``host`` pointed at its pod when the pod runs; None when it does not (nothing is started)."""
    assert host.runpod_pod_id is not None
    client = PodClient(api_key_for(host))
    state = client.get(host.runpod_pod_id)
    return with_endpoint(host, state) if state.running else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.runpod_cli", description="RunPod pods of the hosts file")
    parser.add_argument("action", choices=("status", "start", "stop", "idle-check"),
                        help="show the pod, start or stop it, or stop it when idle past the host's limit")
    parser.add_argument("host", help="a host of the hosts file with a runpod_pod_id")
    parser.add_argument("--hosts", default="ssh_hosts.yaml", help="the hosts file (default ssh_hosts.yaml)")
    args = parser.parse_args(argv)
    log_file = setup_logging()
    try:
        host = pod_host(args.hosts, args.host)
        if args.action == "status":
            info = pod_info(host)
            price = "?" if info["cost_per_hr"] is None else f"{info['cost_per_hr']:.3f}"
            print(f"{host.name}: pod {info['pod_id']} {info['state']}, ${price}/h, "
                  f"up {info['uptime_s']}s, {info['gpu_count']}× {info['gpu_name'] or 'GPU'}, "
                  f"auto-stop after {info['idle_stop_minutes']:g} idle min")
        elif args.action == "start":
            print(f"{host.name}: running, ssh {start(host)['ssh']}")
        elif args.action == "stop":
            print(f"{host.name}: {stop(host)['desired_status']}")
        else:
            print(f"{host.name}: {idle_check(host)}")
    except (ConfigError, UnknownHost, RunPodError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted ({args.action} {args.host}); the pod may still be changing state: "
              f"check with python -m remote.runpod_cli status {args.host}", file=sys.stderr)
        return 130
    except Exception as exc:
        log.exception("internal error in runpod_cli %s", args.action)
        detail = Redactor(environment_secrets())(clean_text(exc, 200))
        print(f"internal error ({type(exc).__name__}: {detail}); details in {log_file}", file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
