"""The Python API of the bridge, for the add-on, scripts and the agent.

    from remote.bridge.api import Bridge
    with Bridge.from_file("ssh_hosts.yaml") as bridge:
        result = bridge.run("runpod", "nvidia-smi", timeout=30)
        print(result.status, result.exit_code, result.stdout)

Or through the agent's queue (another process runs ``python -m remote.bridge.agent``):

    request_id = submit(queue_dir, {"host": "runpod", "command": "nvidia-smi"})
    result = wait_for_result(queue_dir, request_id, timeout=60)
"""
from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import HostConfig, load_hosts
from ..core.redact import Redactor
from .queue import REQUESTS, RESULTS, append_record, wait_for_record
from .shell import CommandResult, RemoteShell, ShellDisconnected, redact_result, utc_now

if TYPE_CHECKING:
    from .transfer.common import TransferResult


class UnknownHost(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Bridge:
    """One persistent shell per host, opened on first use and reused."""

    def __init__(self, hosts: dict[str, HostConfig] | None = None) -> None:
        self.hosts = hosts if hosts is not None else load_hosts(None)
        self._shells: dict[str, RemoteShell] = {}
        # One command at a time per shell; different hosts may run in parallel.
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_file(cls, hosts_file: Path | str | None) -> Bridge:
        return cls(load_hosts(hosts_file))

    def host(self, name: str) -> HostConfig:
        try:
            return self.hosts[name]
        except KeyError:
            raise UnknownHost(f"unknown host {name!r}; known hosts: {', '.join(sorted(self.hosts))}") from None

    def shell(self, name: str) -> RemoteShell:
        with self._guard:
            if name not in self._shells:
                self._shells[name] = RemoteShell(self.host(name))
                self._locks[name] = threading.Lock()
            return self._shells[name]

    def run(self, host: str, command: str, *, timeout: float | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None, request_id: str = "") -> CommandResult:
        """Run ``command`` on ``host``; failures come back as the result's status.

        The result is redacted: values of ``env`` and of the host's secret
        variables never appear in it.
        """
        config = self.host(host)
        shell = self.shell(host)
        # Values the caller passes are redacted; the hosts file's env only where named secret.
        redact = Redactor.for_request(config, env)
        env = {**config.env, **(env or {})}
        started = utc_now()
        with self._locks[host]:
            try:
                result = shell.run(command, timeout=timeout, cwd=cwd, env=env, request_id=request_id)
            except ShellDisconnected as exc:
                result = CommandResult(
                    id=request_id, host=host, status="disconnected", exit_code=None, stdout="", stderr="",
                    started_at=started, finished_at=utc_now(), duration_s=0.0,
                    error=f"{exc}; the command was not run",
                )
        redact_result(redact, result)
        return result

    def put(self, host: str, src: Path | str, dst: str) -> TransferResult:
        """Upload a local file to ``dst`` on ``host`` (``dst/`` keeps the name); see remote.bridge.transfer."""
        from .transfer import put

        shell = self.shell(host)
        with self._locks[host]:
            return put(shell, src, dst)

    def put_many(self, host: str, pairs: list[tuple[Path, str]]) -> TransferResult:
        """Upload each ``(local file, remote path)`` to ``host``, in one go where the transport can."""
        from .transfer import put_many

        shell = self.shell(host)
        with self._locks[host]:
            return put_many(shell, pairs)

    def get(self, host: str, src: str, dst: Path | str) -> TransferResult:
        """Download the remote file or glob ``src`` into local folder ``dst``."""
        from .transfer import get

        shell = self.shell(host)
        with self._locks[host]:
            return get(shell, src, dst)

    def close(self) -> None:
        with self._guard:
            for shell in self._shells.values():
                shell.close()
            self._shells.clear()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def submit(queue_dir: Path | str, request: dict[str, Any]) -> str:
    """Append ``request`` to the queue (an id is added when missing); returns the id."""
    request = dict(request)
    request.setdefault("id", uuid.uuid4().hex)
    queue = Path(queue_dir)
    queue.mkdir(parents=True, exist_ok=True)
    append_record(queue / REQUESTS, request)
    return request["id"]


def wait_for_result(queue_dir: Path | str, request_id: str, timeout: float | None = None) -> dict[str, Any]:
    """The result line for ``request_id`` (waits for the agent to write it)."""
    return wait_for_record(Path(queue_dir) / RESULTS, request_id, timeout)
