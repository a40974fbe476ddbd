"""The records RunPod's REST API v2 answers with (pods, GPU offers, network volumes), validated.

Every answer is input from the network: an id, name, port, address, price or
status that is not what the published contract allows is refused with one
:class:`RunPodError` line and never used (a hostile or broken API must not
point an SSH connection somewhere odd, put control characters on the screen
or a NaN into the ledger). Fields Pose Factory does not read are ignored, so
additions to the API do not break it.
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any


class RunPodError(RuntimeError):
    """A RunPod API failure or a refused answer, said in one line that never holds the key."""


POD_STATUSES = ("PROVISIONING", "STARTING", "RUNNING", "EXITED", "ERROR", "TERMINATED")
POD_ACTIONS = ("start", "stop", "restart", "terminate")
AVAILABILITIES = ("NONE", "LOW", "MEDIUM", "HIGH")
CLOUDS = ("SECURE", "COMMUNITY")
VOLUME_TYPES = ("STANDARD", "HIGH_PERFORMANCE")

RESOURCE_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")  # pod and volume ids: they go into URL paths
# Catalog ids are display text ("NVIDIA GeForce RTX 4090"); data centre ids look like "EU-RO-1".
CATALOG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+/-]{0,79}$")
DATA_CENTER_ID = re.compile(r"^[A-Za-z0-9-]{1,32}$")
SSH_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # "root", the proxy's "<podId>-<hex>"
HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
EXPOSED_PORT = re.compile(r"^([0-9]{1,5})/(tcp|http)$")
MAX_NAME = 191  # beyond any name RunPod's console lets one type
MAX_PRICE_PER_HOUR = 1000.0  # USD/h: the dearest 8-GPU machines cost a few dozen
MAX_SECONDS = 10 ** 9  # ~30 years of uptime
MAX_GPUS = 64
MAX_VOLUME_GB = 4096


def one_line(text: object, limit: int = 200) -> str:
    """Server text made safe for a message: printable, one line, bounded."""
    flat = " ".join(str(text).split())
    return "".join(c for c in flat if c.isprintable())[:limit]


def _refuse(what: str, value: object) -> RunPodError:
    return RunPodError(f"RunPod answered an invalid {what}: {one_line(repr(value), 60)}; not used")


def _field(record: dict[str, Any], key: str, what: str) -> Any:
    if key not in record:
        raise RunPodError(f"RunPod answered a {what} without {key!r}; not used")
    return record[key]


def _matching(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _refuse(what, value)
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME or not value.isprintable():
        raise _refuse(what, value)
    return value


def _integer(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(what, value)
    return value


def _price(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(what, value)
    if not math.isfinite(value) or not 0 <= value <= MAX_PRICE_PER_HOUR:
        raise _refuse(what, value)
    return float(value)


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise _refuse(what, value)
    return str(value)


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(what, value)
    return value


def _list(value: Any, what: str, limit: int = 1000) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise _refuse(what, value if not isinstance(value, list) else f"a list of {len(value)}")
    return value


def host_address(value: Any, what: str = "SSH host") -> str:
    """An IP address or a DNS name (RFC 1123 labels), nothing an SSH command line could misread."""
    if not isinstance(value, str) or not 1 <= len(value) <= 253:
        raise _refuse(what, value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if not all(HOSTNAME_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise _refuse(what, value)  # all-digit last label: a mangled IPv4 address, not a name
    return value


@dataclass(frozen=True)
class SshEndpoint:
    """Where the pod's sshd answers: ``ssh.direct`` (public TCP, exec and SFTP) or ``ssh.proxy`` (PTY only)."""

    host: str
    port: int
    username: str


def _ssh_endpoint(value: Any, what: str) -> SshEndpoint | None:
    if value is None:
        return None
    record = _dict(value, what)
    return SshEndpoint(host=host_address(_field(record, "host", what), f"{what} host"),
                       port=_integer(_field(record, "port", what), 1, 65535, f"{what} port"),
                       username=_matching(_field(record, "username", what), SSH_USER, f"{what} user"))


@dataclass(frozen=True)
class Pod:
    """One pod as ``GET /v2/pods/{id}`` describes it (the fields Pose Factory reads)."""

    id: str
    name: str
    status: str
    actions: tuple[str, ...]
    cost_per_hr: float  # USD/h now: 0.0 while EXITED or TERMINATED
    gpu_id: str | None
    gpu_count: int
    ports: tuple[str, ...]
    uptime_s: int
    booted: bool  # the container runs (the API reports its runtime)
    ssh_direct: SshEndpoint | None
    ssh_proxy: SshEndpoint | None
    data_center_id: str | None

    @property
    def running(self) -> bool:
        return self.status == "RUNNING" and self.booted


def parse_pod(value: Any) -> Pod:
    record = _dict(value, "pod")
    gpu = _dict(record["gpu"], "pod gpu") if record.get("gpu") is not None else None
    runtime = _dict(record["runtime"], "pod runtime") if record.get("runtime") is not None else None
    ssh = _dict(_field(record, "ssh", "pod"), "pod ssh")
    ports = tuple(_exposed_port(port) for port in _list(record.get("ports") or [], "pod ports", 100))
    data_center = record.get("dataCenterId")
    return Pod(
        id=_matching(_field(record, "id", "pod"), RESOURCE_ID, "pod id"),
        name=_name(_field(record, "name", "pod"), "pod name"),
        status=_choice(_field(record, "status", "pod"), POD_STATUSES, "pod status"),
        actions=tuple(_choice(a, POD_ACTIONS, "pod action") for a in _list(_field(record, "actions", "pod"),
                                                                               "pod actions", 10)),
        cost_per_hr=_price(_field(record, "cost", "pod"), "pod cost per hour"),
        gpu_id=_matching(_field(gpu, "id", "pod gpu"), CATALOG_ID, "pod GPU id") if gpu else None,
        gpu_count=_integer(gpu.get("count", 1), 1, MAX_GPUS, "pod GPU count") if gpu else 0,
        ports=ports,
        uptime_s=_integer(runtime.get("uptime", 0), 0, MAX_SECONDS, "pod uptime") if runtime else 0,
        booted=runtime is not None,
        ssh_direct=_ssh_endpoint(ssh.get("direct"), "ssh.direct"),
        ssh_proxy=_ssh_endpoint(ssh.get("proxy"), "ssh.proxy"),
        data_center_id=None if data_center is None else _matching(data_center, DATA_CENTER_ID, "pod data centre"),
    )


def _exposed_port(value: Any) -> str:
    match = EXPOSED_PORT.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise _refuse("pod port", value)
    return value


@dataclass(frozen=True)
class DataCenterAvailability:
    id: str
    availability: str


@dataclass(frozen=True)
class GpuOffer:
    """One GPU type of ``GET /v2/catalog/gpus?include=AVAILABILITY&product=POD``; prices per GPU and hour."""

    id: str
    name: str
    memory_gb: int
    price_secure: float | None  # None: not offered in that cloud
    price_community: float | None
    max_count_secure: int
    max_count_community: int
    availability: str  # NONE | LOW | MEDIUM | HIGH
    data_centers: tuple[DataCenterAvailability, ...]

    def price(self, cloud: str) -> float | None:
        return self.price_secure if cloud == "SECURE" else self.price_community


def parse_gpu_offer(value: Any) -> GpuOffer:
    record = _dict(value, "GPU offer")
    price = _dict(_field(record, "price", "GPU offer"), "GPU price")
    max_count = _dict(record.get("maxCount") or {}, "GPU max count")
    offered = {cloud: record.get(cloud.lower()) is not False for cloud in CLOUDS}

    def cloud_price(cloud: str) -> float | None:
        value = price.get(cloud.lower())
        return None if value is None or not offered[cloud] else _price(value, f"{cloud.lower()} GPU price")

    return GpuOffer(
        id=_matching(_field(record, "id", "GPU offer"), CATALOG_ID, "GPU id"),
        name=_name(_field(record, "name", "GPU offer"), "GPU name"),
        memory_gb=_integer(record.get("memory", 0), 0, 100_000, "GPU memory"),
        price_secure=cloud_price("SECURE"), price_community=cloud_price("COMMUNITY"),
        max_count_secure=_integer(max_count.get("secure", 0), 0, MAX_GPUS, "GPU max count"),
        max_count_community=_integer(max_count.get("community", 0), 0, MAX_GPUS, "GPU max count"),
        availability=_choice(record.get("availability", "NONE"), AVAILABILITIES, "GPU availability"),
        data_centers=tuple(
            DataCenterAvailability(
                id=_matching(_field(_dict(dc, "GPU data centre"), "id", "GPU data centre"), DATA_CENTER_ID,
                             "data centre id"),
                availability=_choice(dc.get("availability", "NONE"), AVAILABILITIES, "data centre availability"))
            for dc in _list(record.get("dataCenters") or [], "GPU data centres", 200)),
    )


@dataclass(frozen=True)
class NetworkVolume:
    id: str
    name: str
    size_gb: int
    data_center_id: str
    type: str


def parse_network_volume(value: Any) -> NetworkVolume:
    record = _dict(value, "network volume")
    return NetworkVolume(
        id=_matching(_field(record, "id", "network volume"), RESOURCE_ID, "network volume id"),
        name=_name(_field(record, "name", "network volume"), "network volume name"),
        size_gb=_integer(_field(record, "size", "network volume"), 1, MAX_VOLUME_GB, "network volume size"),
        data_center_id=_matching(_field(record, "dataCenter", "network volume"), DATA_CENTER_ID,
                                 "network volume data centre"),
        type=_choice(record.get("type", "STANDARD"), VOLUME_TYPES, "network volume type"),
    )
