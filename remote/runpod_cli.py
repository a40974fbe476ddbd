"""Pods from the terminal (the same calls the add-on's Remote panel makes, :mod:`remote.jobs.hosts`).

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
from pathlib import Path

from .bridge.api import UnknownHost
from .core.config import ConfigError, HostConfig, load_hosts
from .core.logs import environment_secrets, setup_logging
from .core.pod_output import clean_text
from .core.redact import Redactor
from .jobs.hosts import idle_check, pod_info, start_pod, stop
from .jobs.state import PipelineError
from .runpod.pods import RunPodError

log = logging.getLogger("remote.runpod_cli")  # also as __main__: inside the remote logger


def pod_host(hosts_file: Path | str | None, name: str) -> HostConfig:
    hosts = load_hosts(hosts_file)
    if name not in hosts:
        raise UnknownHost(f"unknown host {name!r}; known hosts: {', '.join(sorted(hosts))}")
    if hosts[name].runpod_pod_id is None:
        raise RunPodError(f"host {name!r} has no runpod_pod_id; the pod API cannot start or stop it")
    return hosts[name]


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
            print(f"{host.name}: running, ssh {start_pod(host)['ssh']}")
        elif args.action == "stop":
            print(f"{host.name}: {stop(host)['status']}")
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
