"""Host settings: ``ssh_hosts.yaml`` parsed into dataclasses.

Each top-level key of the YAML file names a host; see
``remote/ssh_hosts.example.yaml`` for every key with a comment. A built-in
host ``local`` (a login shell on this machine, standing in for a pod) is
always present unless the file defines its own ``local``.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .platforms import TRANSPORTS, default_config_dir, default_data_dir, default_transport, expand_user_path, find_openssh_tool, is_windows
from .secret_names import SECRET_NAMES

TRANSFER_MODES = ("auto", "s3", "inline", "sftp")
LOCAL_HOST = "local"


class ConfigError(ValueError):
    """A hosts file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class StorageConfig:
    """S3-compatible storage (Cloudflare R2 in production) used for transfers."""

    endpoint_url: str
    bucket: str
    prefix: str = ""
    region: str = "auto"
    profile: str | None = None
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"
    presign_expiry_s: int = 3600


@dataclass(frozen=True)
class ServerlessConfig:
    """A RunPod Serverless endpoint (docs/runpod.md): items run on its workers."""

    endpoint_id: str
    api_key_env: str = "RUNPOD_API_KEY"
    max_concurrent: int = 4  # requests in flight at once (K)
    gpu_usd_per_second: float = 0.00034  # the endpoint's flex price (A40/A6000)
    queue_timeout_s: float = 600.0  # a request no worker picks up within this fails
    execution_timeout_s: float = 1800.0  # one item, once a worker runs it


@dataclass(frozen=True)
class HostConfig:
    """How to reach one host and what to do there."""

    name: str
    host: str = ""
    port: int = 22
    user: str = ""
    identity_file: str | None = None
    known_hosts: str | None = None
    interactive_only: bool = True
    workspace: str = "/workspace"
    connect_timeout: float = 20.0
    env: dict[str, str] = field(default_factory=dict)
    accept_new_host_keys: bool = False
    transfer: str = "auto"
    storage: StorageConfig | None = None
    secret_names: tuple[str, ...] = SECRET_NAMES
    pod_type: str = "A40"
    is_local: bool = False
    # How this side reaches the shell (remote/bridge/transport_pty.py, transport_pipe.py): "pty", a local
    # pseudo-terminal, or "pipe", plain pipes (the default, and only choice, on Windows).
    transport: str = field(default_factory=default_transport)
    # RunPod's API: with runpod_pod_id, host/port/user come from the pod API
    # before each job; a serverless host runs items on an endpoint instead of ssh.
    runpod_pod_id: str | None = None
    runpod_api_key_env: str = "RUNPOD_API_KEY"
    idle_stop_minutes: float = 10.0  # 0: never stop the pod automatically
    resume_timeout_s: float = 600.0
    serverless: ServerlessConfig | None = None
    # A pod Pose Factory created (remote/runpod/created.py): its sshd's host key is pinned anew
    # on each boot (RunPod clears the container disk, where the keys live, on stop).
    managed_pod: bool = False

    @property
    def kind(self) -> str:
        """``ssh`` (fixed or RunPod-resolved endpoint) or ``serverless``."""
        return "serverless" if self.serverless is not None else "ssh"

    def ssh_command(self, platform: str = sys.platform, program: str | None = None) -> list[str]:
        """The ``ssh`` argv that opens an interactive session on this host.

        ``-tt`` makes the far end allocate a terminal even when this side
        talks to ssh through pipes. ``program`` defaults to the ssh client
        found for ``platform`` (``ssh.exe`` on Windows).
        """
        if self.is_local:
            raise ValueError("the local host is a login shell, not an ssh host")
        argv = [
            program or find_openssh_tool("ssh", platform=platform), "-tt",
            "-e", "none",  # '~.' in a command must never disconnect us
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
            "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_keys else 'yes'}",
            "-p", str(self.port),
        ]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={ssh_option_path(self.known_hosts, platform)}"]
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        argv.append(f"{self.user}@{self.host}" if self.user else self.host)
        return argv


def ssh_option_path(path: str, platform: str = sys.platform) -> str:
    """A path as the value of an ``ssh -o`` option, which ssh splits on spaces
    and in which it reads backslashes as escapes: forward slashes on Windows
    (its OpenSSH takes both), double quotes around a path with spaces."""
    if is_windows(platform):
        path = path.replace("\\", "/")
    return f'"{path}"' if " " in path else path


def data_dir() -> Path:
    """Where Pose Factory keeps its state: queue, job records, the local pod
    (``$POSEFACTORY_DATA_DIR``, else the platform's user data dir)."""
    return Path(default_data_dir())


def default_hosts_file() -> Path | None:
    """``ssh_hosts.yaml`` in the user config dir (``%APPDATA%\\posefactory`` on
    Windows, ``~/.config/posefactory`` elsewhere) when there is one."""
    path = Path(default_config_dir()) / "ssh_hosts.yaml"
    return path if path.is_file() else None


def created_hosts_file() -> Path:
    """The hosts Pose Factory wrote for the pods it created (``runpod/hosts.yaml`` in the user
    config dir): read with every hosts file, so RunPod users need none of their own."""
    return Path(default_config_dir()) / "runpod" / "hosts.yaml"


def local_host() -> HostConfig:
    """The embedded default: a login shell here, its workspace under the data dir."""
    workspace = data_dir() / "local-pod" / "workspace"
    return HostConfig(
        name=LOCAL_HOST, host="localhost", interactive_only=True, workspace=str(workspace),
        transfer="inline", is_local=True, pod_type="local",
    )


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,), "port": (int,), "user": (str,), "identity_file": (str,), "known_hosts": (str,),
    "interactive_only": (bool,), "workspace": (str,), "connect_timeout": (int, float),
    "env": (dict,), "accept_new_host_keys": (bool,), "transfer": (str,), "storage": (dict,),
    "secret_names": (list,), "pod_type": (str,),
    "transport": (str,),
    "runpod_pod_id": (str,), "runpod_api_key_env": (str,), "idle_stop_minutes": (int, float),
    "resume_timeout_s": (int, float), "serverless": (dict,), "managed_pod": (bool,),
}
_SERVERLESS_TYPES: dict[str, tuple[type, ...]] = {
    "endpoint_id": (str,), "api_key_env": (str,), "max_concurrent": (int,), "gpu_usd_per_second": (int, float),
    "queue_timeout_s": (int, float), "execution_timeout_s": (int, float),
}


def _check_type(source: str, where: str, value: Any, types: tuple[type, ...]) -> None:
    # bool is an int subclass: 'port: true' must not pass as port 1.
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{source}: {where}: expected {wanted}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {where}: {value} is not a finite number")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (at any level):
    PyYAML would silently keep the last one, e.g. the second of two hosts with one name."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if duplicate:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (again on line {line})", key_node.start_mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """YAML as the hosts and cost files are read: safe, no duplicate keys; ConfigError names the file."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())[:300]})") from exc
    except RecursionError:  # a hostile or broken file nested thousands deep
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None


def _parse_storage(source: str, host: str, raw: dict[str, Any]) -> StorageConfig:
    known = {f.name for f in fields(StorageConfig)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{source}: {host}.storage.{key}: unknown key (known: {', '.join(sorted(known))})")
    for key in ("endpoint_url", "bucket"):
        if not raw.get(key):
            raise ConfigError(f"{source}: {host}.storage.{key}: required")
    for key, value in raw.items():
        types = (int,) if key == "presign_expiry_s" else (str,)
        if value is not None or key != "profile":
            _check_type(source, f"{host}.storage.{key}", value, types)
    return StorageConfig(**raw)


def _parse_serverless(source: str, host: str, raw: dict[str, Any]) -> ServerlessConfig:
    for key, value in raw.items():
        if key not in _SERVERLESS_TYPES:
            raise ConfigError(f"{source}: {host}.serverless.{key}: unknown key "
                              f"(known: {', '.join(sorted(_SERVERLESS_TYPES))})")
        _check_type(source, f"{host}.serverless.{key}", value, _SERVERLESS_TYPES[key])
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", raw.get("endpoint_id", "")):
        raise ConfigError(f"{source}: {host}.serverless.endpoint_id: required (letters, digits, - and _)")
    if not raw.get("api_key_env", "RUNPOD_API_KEY").isidentifier():
        raise ConfigError(f"{source}: {host}.serverless.api_key_env: must name an environment variable")
    if not 1 <= raw.get("max_concurrent", 1) <= 64:
        raise ConfigError(f"{source}: {host}.serverless.max_concurrent: must be 1 to 64")
    for key in ("gpu_usd_per_second", "queue_timeout_s", "execution_timeout_s"):
        if raw.get(key, 1) <= 0:
            raise ConfigError(f"{source}: {host}.serverless.{key}: must be positive")
    return ServerlessConfig(**raw)


def _check_runpod_keys(source: str, name: str, values: dict[str, Any]) -> None:
    """A pod named by id gets its SSH endpoint from the API; a serverless host has none."""
    if "runpod_pod_id" in values:
        if not re.fullmatch(r"[A-Za-z0-9]{1,64}", values["runpod_pod_id"]):
            raise ConfigError(f"{source}: {name}.runpod_pod_id: {values['runpod_pod_id']!r} is not a RunPod pod id")
        for key in ("host", "port", "interactive_only", "serverless"):
            if key in values:
                raise ConfigError(f"{source}: {name}.{key}: not allowed with runpod_pod_id "
                                  "(the pod API gives the SSH endpoint)")
    if "serverless" in values:
        for key in ("host", "port", "user", "identity_file", "interactive_only"):
            if key in values:
                raise ConfigError(f"{source}: {name}.{key}: not allowed on a serverless host")
        if "storage" not in values:
            raise ConfigError(f"{source}: {name}.storage: a serverless host needs storage (inputs go by URL)")
    if not values.get("runpod_api_key_env", "RUNPOD_API_KEY").isidentifier():
        raise ConfigError(f"{source}: {name}.runpod_api_key_env: must name an environment variable")
    if values.get("idle_stop_minutes", 0) < 0:
        raise ConfigError(f"{source}: {name}.idle_stop_minutes: must be 0 (never) or more")
    if values.get("resume_timeout_s", 1) <= 0:
        raise ConfigError(f"{source}: {name}.resume_timeout_s: must be positive")


def _expand(path: str | None) -> str | None:
    return expand_user_path(path) if path else path


def parse_host(source: str, name: str, raw: Any, platform: str = sys.platform) -> HostConfig:
    """Validate one host entry; ``source`` is only used in error messages,
    ``platform`` (``sys.platform``'s value) decides the default transport."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {name}: expected a mapping of settings, got {raw!r}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELD_TYPES:
            raise ConfigError(f"{source}: {name}.{key}: unknown key (known: {', '.join(sorted(_FIELD_TYPES))})")
        _check_type(source, f"{name}.{key}", value, _FIELD_TYPES[key])
        values[key] = value
    _check_runpod_keys(source, name, values)
    if not values.get("host") and "runpod_pod_id" not in values and "serverless" not in values:
        raise ConfigError(f"{source}: {name}.host: required (or runpod_pod_id, or a serverless: section)")
    port = values.get("port", 22)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{source}: {name}.port: {port} is not a TCP port")
    if values.get("connect_timeout", 1) <= 0:
        raise ConfigError(f"{source}: {name}.connect_timeout: must be positive")
    if values.get("transfer", "auto") not in TRANSFER_MODES:
        raise ConfigError(f"{source}: {name}.transfer: {values['transfer']!r} is not one of {', '.join(TRANSFER_MODES)}")
    if "workspace" in values and not values["workspace"].strip():
        raise ConfigError(f"{source}: {name}.workspace: must not be empty (RunPod's volume is /workspace)")
    transport = values.setdefault("transport", default_transport(platform))
    if transport not in TRANSPORTS:
        raise ConfigError(f"{source}: {name}.transport: {transport!r} is not one of {', '.join(TRANSPORTS)}")
    if transport == "pty" and is_windows(platform):
        raise ConfigError(f"{source}: {name}.transport: 'pty' needs a pseudo-terminal, which Windows lacks; use 'pipe'")
    env = values.get("env", {})
    for env_key, env_value in env.items():
        if not isinstance(env_key, str) or not env_key.isidentifier():
            raise ConfigError(f"{source}: {name}.env.{env_key}: names must be shell identifiers")
        if not isinstance(env_value, str):
            raise ConfigError(f"{source}: {name}.env.{env_key}: values must be text; quote {env_value!r} "
                              f"(YAML reads it as {type(env_value).__name__})")
    values["env"] = dict(env)
    if "storage" in values:
        values["storage"] = _parse_storage(source, name, values["storage"])
    if "serverless" in values:
        values["serverless"] = _parse_serverless(source, name, values["serverless"])
    if "secret_names" in values:
        values["secret_names"] = tuple(str(s) for s in values["secret_names"]) + HostConfig.secret_names
    for key_env in (values.get("runpod_api_key_env"), getattr(values.get("serverless"), "api_key_env", None)):
        if key_env:  # a RunPod key under another name is redacted like the default one
            values["secret_names"] = (*values.get("secret_names", HostConfig.secret_names), key_env)
    if values.get("transfer") == "s3" and values.get("storage") is None:
        raise ConfigError(f"{source}: {name}.transfer: 's3' needs a storage: section")
    values["identity_file"] = _expand(values.get("identity_file"))
    values["known_hosts"] = _expand(values.get("known_hosts"))
    return HostConfig(name=name, **values)


def load_hosts(path: Path | str | None) -> dict[str, HostConfig]:
    """The built-in ``local``, the pods Pose Factory created (:func:`created_hosts_file`) and the
    hosts of ``path`` (``None``: none); a name in ``path`` wins over the other two."""
    hosts = {LOCAL_HOST: local_host()}
    created = created_hosts_file()
    if created.is_file():
        hosts.update(_read_hosts(created))
    if path is not None:
        hosts.update(_read_hosts(path))
    return hosts


def _read_hosts(path: Path | str) -> dict[str, HostConfig]:
    hosts: dict[str, HostConfig] = {}
    source = str(path)
    try:
        # utf-8-sig: Notepad may save a byte-order mark; CRLF line ends are plain YAML.
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read hosts file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); save the hosts file as UTF-8") from None
    raw = load_yaml(text, source) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of host names to settings")
    for name, entry in raw.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: {name!r}: host names must be text")
        hosts[name] = parse_host(source, name, entry)
    return hosts
