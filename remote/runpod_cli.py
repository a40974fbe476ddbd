"""Pods from the terminal (the same calls the add-on's Remote panel makes, :mod:`remote.jobs.hosts`).

    python -m remote.runpod_cli status HOST [--hosts ssh_hosts.yaml]
    python -m remote.runpod_cli start HOST [--hosts …]       # resume and wait until it runs
    python -m remote.runpod_cli stop HOST [--hosts …]
    python -m remote.runpod_cli idle-check HOST [--hosts …]  # stop it when idle past idle_stop_minutes
    python -m remote.runpod_cli list [--all]                 # the pods Pose Factory created (name posefactory-…)
    python -m remote.runpod_cli create --max-price 0.50 [--gpu "NVIDIA A40"] [--count 1] [--cloud SECURE]
                                       [--disk 20] [--volume ID] [--name SUFFIX] [--public-key FILE]
    python -m remote.runpod_cli terminate POD_ID --yes       # destroys the pod's disks

list, create and terminate use the key in $RUNPOD_API_KEY (--key-env names another variable).
Every failure is one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .bridge.api import UnknownHost
from .core.config import ConfigError, HostConfig, load_hosts
from .core.logs import environment_secrets, setup_logging
from .core.pod_output import clean_text
from .core.redact import Redactor
from .jobs.hosts import idle_check, pod_info, start_pod, stop
from .jobs.ledger import append_ledger
from .jobs.state import PipelineError
from .runpod.fleet import POD_NAME_PREFIX, choose_gpu, create_pod, is_ours, pod_name, slug, terminate
from .runpod.pods import utc_now
from .runpod.records import Pod, RunPodError
from .runpod.rest import RestClient, resource_id

log = logging.getLogger("remote.runpod_cli")  # also as __main__: inside the remote logger


def pod_host(hosts_file: Path | str | None, name: str) -> HostConfig:
    hosts = load_hosts(hosts_file)
    if name not in hosts:
        raise UnknownHost(f"unknown host {name!r}; known hosts: {', '.join(sorted(hosts))}")
    if hosts[name].runpod_pod_id is None:
        raise RunPodError(f"host {name!r} has no runpod_pod_id; the pod API cannot start or stop it")
    return hosts[name]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m remote.runpod_cli", description="RunPod pods")
    actions = top.add_subparsers(dest="action", required=True)
    for name, text in (("status", "show the pod"), ("start", "start the pod and wait until it runs"),
                       ("stop", "stop the pod"), ("idle-check", "stop the pod when idle past the host's limit")):
        action = actions.add_parser(name, help=text)
        action.add_argument("host", help="a host of the hosts file with a runpod_pod_id")
        action.add_argument("--hosts", default="ssh_hosts.yaml", help="the hosts file (default ssh_hosts.yaml)")
    listing = actions.add_parser("list", help=f"the pods Pose Factory created (named {POD_NAME_PREFIX}…)")
    listing.add_argument("--all", action="store_true", help="every pod of the account")
    create = actions.add_parser("create", help="create a pod from the live GPU catalog")
    create.add_argument("--max-price", type=float, required=True, help="the $/h ceiling for the pod's GPUs")
    create.add_argument("--gpu", help="a catalog GPU id (default: the cheapest available under the ceiling)")
    create.add_argument("--count", type=int, default=1, help="GPUs (default 1)")
    create.add_argument("--cloud", default="SECURE", choices=("SECURE", "COMMUNITY"),
                        help="RunPod's secure data centres or community hosts (default SECURE)")
    create.add_argument("--disk", type=int, default=20, help="container disk in GB (default 20; cleared on stop)")
    create.add_argument("--volume", help="a network volume id to mount at /workspace")
    create.add_argument("--name", help=f"the pod's name after {POD_NAME_PREFIX} (default: the GPU's)")
    create.add_argument("--public-key", type=Path, help="an SSH public key file for the pod's sshd (PUBLIC_KEY)")
    end = actions.add_parser("terminate", help="terminate a pod: its container disk and persistent volume are lost")
    end.add_argument("pod_id", help="the pod's id (python -m remote.runpod_cli list)")
    end.add_argument("--yes", action="store_true", help="confirm: the pod's data is destroyed")
    for action in (listing, create, end):
        action.add_argument("--key-env", default="RUNPOD_API_KEY", help="the variable holding the RunPod key")
    return top


def account_client(key_env: str) -> RestClient:
    key = os.environ.get(key_env, "")
    if not key:
        raise RunPodError(f"no RunPod API key: set ${key_env} (RunPod console → Settings → API Keys)")
    return RestClient(key)


def pod_line(pod: Pod) -> str:
    gpu = f"{pod.gpu_count}× {pod.gpu_id}" if pod.gpu_id else "CPU"
    return f"{pod.id}  {pod.name}  {pod.status}  ${pod.cost_per_hr:.3f}/h  {gpu}"


def host_action(args: argparse.Namespace) -> None:
    host = pod_host(args.hosts, args.host)
    if args.action == "status":
        info = pod_info(host)
        print(f"{host.name}: pod {info['pod_id']} {info['state']}, ${info['cost_per_hr']:.3f}/h, "
              f"up {info['uptime_s']}s, {info['gpu_count']}× {info['gpu_name'] or 'GPU'}, "
              f"auto-stop after {info['idle_stop_minutes']:g} idle min")
    elif args.action == "start":
        print(f"{host.name}: running, ssh {start_pod(host)['ssh']}")
    elif args.action == "stop":
        print(f"{host.name}: {stop(host)['status']}")
    else:
        print(f"{host.name}: {idle_check(host)}")


def account_action(args: argparse.Namespace) -> None:
    client = account_client(args.key_env)
    if args.action == "list":
        pods = [pod for pod in client.list_pods() if args.all or is_ours(pod)]
        for pod in pods:
            print(pod_line(pod))
        print(f"{len(pods)} pod(s), ${sum(p.cost_per_hr for p in pods):.3f}/h together")
    elif args.action == "create":
        public_key = args.public_key.read_text().strip() if args.public_key else None
        offer = choose_gpu(client.gpu_catalog(args.cloud, args.count), args.gpu, args.cloud, args.count, args.max_price)
        pod = create_pod(client, offer, pod_name(args.name or slug(offer.name)), args.cloud, args.count, args.disk,
                         public_key, args.volume)
        append_ledger({"event": "pod_create", "pod_id": pod.id, "name": pod.name, "gpu": offer.id,
                       "gpu_count": args.count, "cloud": args.cloud, "cost_per_hr": pod.cost_per_hr, "at": utc_now()})
        print(f"created {pod_line(pod)}; it starts in a few minutes "
              f"(python -m remote.runpod_cli list)")
    else:
        pod = client.get_pod(resource_id(args.pod_id))
        if not args.yes:
            raise RunPodError(f"terminating pod {pod.id} ({pod.name}) destroys its container disk and persistent "
                              "volume (a network volume is only detached); run again with --yes")
        terminate(client, pod.id)
        append_ledger({"event": "pod_terminate", "pod_id": pod.id, "name": pod.name,
                       "cost_per_hr": pod.cost_per_hr, "at": utc_now()})
        print(f"terminated {pod.id} ({pod.name})")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log_file = setup_logging()
    try:
        if args.action in ("list", "create", "terminate"):
            account_action(args)
        else:
            host_action(args)
    except (ConfigError, UnknownHost, RunPodError, PipelineError, OSError) as exc:
        print(f"error: {clean_text(exc, 400)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        host = getattr(args, "host", None)
        check = f"status {host}" if host else "list --all"
        print(f"interrupted ({args.action}{' ' + host if host else ''}); the pod may still be changing state: "
              f"check with python -m remote.runpod_cli {check}", file=sys.stderr)
        return 130
    except Exception as exc:
        log.exception("internal error in runpod_cli %s", args.action)
        detail = Redactor(environment_secrets())(clean_text(exc, 200))
        print(f"internal error ({type(exc).__name__}: {detail}); details in {log_file}", file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
