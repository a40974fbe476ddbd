"""Pods from the terminal (the same calls the add-on's Remote panel makes, :mod:`remote.jobs.hosts`).

    python -m remote.runpod_cli status HOST [--hosts ssh_hosts.yaml]   # a created pod needs no hosts file
    python -m remote.runpod_cli start HOST [--hosts …]       # resume and wait until it runs
    python -m remote.runpod_cli stop HOST [--hosts …]
    python -m remote.runpod_cli idle-check HOST [--hosts …]  # stop it when idle past idle_stop_minutes
    python -m remote.runpod_cli list [--all]                 # the pods Pose Factory created (name posefactory-…)
    python -m remote.runpod_cli create --max-price 0.50 [--gpu "NVIDIA A40"] [--count 1] [--cloud SECURE]
                                       [--disk 20] [--volume-gb 40 | --volume ID] [--name SUFFIX] ...
    python -m remote.runpod_cli terminate POD_ID --yes       # destroys the pod's disks

create makes the pod a host that takes jobs (remote.jobs.provision): SSH key, host entry, set-up;
``python -m remote.cli render --host posefactory-…`` then renders there with no hosts file.
list, create and terminate use the key in $RUNPOD_API_KEY (--key-env names another variable).
Every failure is one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .bridge.api import UnknownHost
from .core.config import ConfigError, HostConfig, default_hosts_file, load_hosts
from .core.logs import environment_secrets, setup_logging
from .core.pod_output import clean_text
from .core.redact import Redactor
from .jobs.hosts import idle_check, pod_info, start_pod, stop
from .jobs.provision import PodRequest, create_pod_host, terminate_pod, terminate_warning
from .jobs.state import PipelineError
from .runpod.created import host_names_of
from .runpod.fleet import POD_NAME_PREFIX, is_ours
from .runpod.pods import account_client
from .runpod.records import Pod, RunPodError
from .runpod.rest import resource_id

log = logging.getLogger("remote.runpod_cli")  # also as __main__: inside the remote logger


def pod_host(hosts_file: Path | str | None, name: str) -> HostConfig:
    if hosts_file is None:
        hosts_file = Path("ssh_hosts.yaml") if Path("ssh_hosts.yaml").is_file() else default_hosts_file()
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
        action.add_argument("--hosts", help="the hosts file (default: ./ssh_hosts.yaml when there is one, else the "
                                            "user config dir's; the pods Pose Factory created are always known)")
    listing = actions.add_parser("list", help=f"the pods Pose Factory created (named {POD_NAME_PREFIX}…)")
    listing.add_argument("--all", action="store_true", help="every pod of the account")
    create = actions.add_parser("create", help="create a pod from the live GPU catalog")
    create.add_argument("--max-price", type=float, required=True, help="the $/h ceiling for the pod's GPUs")
    create.add_argument("--gpu", help="a catalog GPU id (default: the cheapest available under the ceiling)")
    create.add_argument("--count", type=int, default=1, help="GPUs (default 1)")
    create.add_argument("--cloud", default="SECURE", choices=("SECURE", "COMMUNITY"),
                        help="RunPod's secure data centres or community hosts (default SECURE)")
    create.add_argument("--disk", type=int, default=20, help="container disk in GB (default 20; cleared on stop)")
    create.add_argument("--volume-gb", type=int, default=40,
                        help="volume disk in GB at the workspace, kept across stops (default 40)")
    create.add_argument("--volume", help="a network volume id to mount at the workspace instead (kept after terminate)")
    create.add_argument("--name", help=f"the pod's name after {POD_NAME_PREFIX} (default: the GPU's)")
    create.add_argument("--workspace", default="/workspace", help="where the volume is mounted (default /workspace)")
    create.add_argument("--idle-stop", type=float, default=10.0,
                        help="stop the pod after this many idle minutes (default 10; 0: never)")
    create.add_argument("--timeout", type=float, default=900.0,
                        help="seconds the pod may take to reach RUNNING before it is terminated (default 900)")
    create.add_argument("--ssh-timeout", type=float, default=300.0,
                        help="seconds a running pod may take to open SSH before it is terminated (default 300)")
    create.add_argument("--blender-version", default="",
                        help="the Blender to install on the pod (default: the set-up's; the add-on sends its own)")
    create.add_argument("--no-setup", action="store_true", help="skip the pod set-up (the first job does it)")
    end = actions.add_parser("terminate", help="terminate a pod: its container disk and persistent volume are lost")
    end.add_argument("pod_id", help="the pod's id (python -m remote.runpod_cli list)")
    end.add_argument("--yes", action="store_true", help="confirm: the pod's data is destroyed")
    for action in (listing, create, end):
        action.add_argument("--key-env", default="RUNPOD_API_KEY", help="the variable holding the RunPod key")
    return top


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
            names = host_names_of(pod.id)
            print(f"{pod_line(pod)}  {'host ' + ', '.join(names) if names else '(no host entry here)'}")
        print(f"{len(pods)} pod(s), ${sum(p.cost_per_hr for p in pods):.3f}/h together")
    elif args.action == "create":
        request = PodRequest(max_price=args.max_price, gpu_id=args.gpu, count=args.count, cloud=args.cloud,
                             disk_gb=args.disk, volume_gb=args.volume_gb, network_volume_id=args.volume,
                             name=args.name, workspace=args.workspace, idle_stop_minutes=args.idle_stop,
                             running_timeout_s=args.timeout, ssh_timeout_s=args.ssh_timeout, key_env=args.key_env,
                             blender_version=args.blender_version, set_up=not args.no_setup)
        created = create_pod_host(request, lambda line: print(clean_text(line, 300), flush=True))
        print(f"created {pod_line(created.pod)}; host {created.host}: python -m remote.cli render --host {created.host} …")
    else:
        pod = client.get_pod(resource_id(args.pod_id))
        if not args.yes:
            raise RunPodError(f"{terminate_warning(pod.id, pod.name)} Run again with --yes")
        print(terminate_pod(pod.id, key_env=args.key_env))

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
