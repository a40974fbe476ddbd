"""The queue agent: ``python -m remote.bridge.agent --hosts FILE --queue-dir DIR``.

Watches ``DIR/requests.jsonl`` and appends exactly one result per request id
to ``DIR/results.jsonl``. Requests are handled in file order, one at a time.

One agent per queue dir: the agent holds ``DIR/agent.lock`` for its whole
life; a second agent on the same dir exits at once (code 3) naming the holder.

Exactly once, across crashes: before a request runs, the checkpoint records
it as in flight; its result is appended and fsynced before the checkpoint
moves past it. On start the agent rebuilds the set of answered ids from
``results.jsonl`` and skips them, and a request that was in flight when the
agent died is answered ``disconnected`` without being run again (its side
effects may already have happened; running it twice could do harm).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.config import ConfigError, load_hosts
from ..core.locking import FileLock, LockHeld
from ..core.logs import RedactingFormatter
from ..core.redact import Redactor
from .api import Bridge, UnknownHost
from .queue import (
    CHECKPOINT,
    REQUESTS,
    RESULTS,
    LineTail,
    append_record,
    load_checkpoint,
    read_records,
    save_checkpoint,
)
from .shell import CommandResult, utc_now

log = logging.getLogger("posefactory.agent")

DEFAULT_TIMEOUT_S = 600.0
AGENT_LOCK = "agent.lock"


class InvalidRequest(ValueError):
    pass


def _invalid_result(request_id: str, host: str, line_number: int, reason: str) -> CommandResult:
    now = utc_now()
    return CommandResult(
        id=request_id, host=host, status="invalid", exit_code=None, stdout="", stderr="",
        started_at=now, finished_at=now, duration_s=0.0,
        error=f"{REQUESTS} line {line_number}: {reason}", extra={"line": line_number},
    )


def _field(request: dict[str, Any], name: str, types: tuple[type, ...], required: bool = False) -> Any:
    if name not in request:
        if required:
            raise InvalidRequest(f"missing {name!r}")
        return None
    value = request[name]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise InvalidRequest(f"{name!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    return value


def run_exec(agent: Agent, request: dict[str, Any]) -> CommandResult:
    command = _field(request, "command", (str,), required=True)
    timeout = _field(request, "timeout", (int, float))
    if timeout is not None and timeout <= 0:
        raise InvalidRequest(f"'timeout' must be positive, got {timeout!r}")
    cwd = _field(request, "cwd", (str,))
    env = _field(request, "env", (dict,)) or {}
    for key, value in env.items():
        if not key.isidentifier() or not isinstance(value, str):
            raise InvalidRequest(f"'env' entry {key!r}: names must be shell identifiers and values strings")
    return agent.bridge.run(request["host"], command, timeout=timeout or agent.default_timeout,
                            cwd=cwd, env=env, request_id=request["id"])


def run_transfer(agent: Agent, request: dict[str, Any]) -> CommandResult:
    """``put`` (local src → remote dst) and ``get`` (remote src or glob → local dir dst)."""
    from .transfer.common import TransferError, TransferInterrupted

    src = _field(request, "src", (str,), required=True)
    dst = _field(request, "dst", (str,), required=True)
    started_at, started = utc_now(), time.monotonic()
    status, error, extra = "ok", None, {}
    try:
        if request["op"] == "put":
            outcome = agent.bridge.put(request["host"], src, dst)
        else:
            outcome = agent.bridge.get(request["host"], src, dst)
        extra = outcome.to_json_dict()
    except TransferInterrupted as exc:
        status, error = "disconnected", str(exc)
    except TransferError as exc:
        status, error = "failed", str(exc)
    return CommandResult(
        id=request["id"], host=request["host"], status=status, exit_code=0 if status == "ok" else None,
        stdout="", stderr="", started_at=started_at, finished_at=utc_now(),
        duration_s=round(time.monotonic() - started, 6), error=error, extra=extra,
    )


# Each operation: the request fields it accepts (beyond id, host, op) and its handler.
OPERATIONS: dict[str, tuple[frozenset[str], Callable[[Agent, dict[str, Any]], CommandResult]]] = {
    "exec": (frozenset({"command", "timeout", "cwd", "env"}), run_exec),
    "put": (frozenset({"src", "dst"}), run_transfer),
    "get": (frozenset({"src", "dst"}), run_transfer),
}


class Agent:
    def __init__(self, bridge: Bridge, queue_dir: Path, default_timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.bridge = bridge
        self.queue_dir = queue_dir
        self.default_timeout = default_timeout
        queue_dir.mkdir(parents=True, exist_ok=True)
        self.requests = queue_dir / REQUESTS
        self.results = queue_dir / RESULTS
        self.checkpoint = queue_dir / CHECKPOINT
        self.requests.touch(exist_ok=True)
        state = load_checkpoint(self.checkpoint)
        self.tail = LineTail(self.requests, state.get("offset", 0), state.get("inode"), state.get("line", 0))
        self.answered = {r["id"] for r in read_records(self.results) if isinstance(r.get("id"), str)}
        self.stopping = False
        interrupted = state.get("in_flight")
        if interrupted and interrupted.get("id") not in self.answered:
            now = utc_now()
            self._answer(CommandResult(
                id=interrupted["id"], host=interrupted.get("host", ""), status="disconnected", exit_code=None,
                stdout="", stderr="", started_at=interrupted.get("started_at", now), finished_at=now, duration_s=0.0,
                error="the agent stopped while this command ran; it was not run again (it may have had effects)",
            ))
            self._save(self.tail.offset, self.tail.line_number, None)

    def _save(self, offset: int, line: int, in_flight: dict[str, Any] | None) -> None:
        save_checkpoint(self.checkpoint, {"offset": offset, "inode": self.tail.inode, "line": line, "in_flight": in_flight})

    def _answer(self, result: CommandResult) -> None:
        append_record(self.results, result.to_json_dict(), durable=True)
        self.answered.add(result.id)
        log.info("%s %s %s exit=%s %.3fs%s", result.id, result.host, result.status, result.exit_code,
                 result.duration_s, f" error={result.error}" if result.error else "")

    def _parse(self, number: int, text: bytes) -> dict[str, Any]:
        try:
            request = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"not valid JSON ({exc})") from None
        if not isinstance(request, dict):
            raise InvalidRequest("not a JSON object")
        return request

    def handle_line(self, number: int, text: bytes) -> CommandResult | None:
        """The result for one request line, or None when it was answered already."""
        if not text.strip():
            return None
        try:
            request = self._parse(number, text)
        except InvalidRequest as exc:
            return _invalid_result(f"line-{number}", "", number, str(exc))
        request_id = request.get("id")
        if not isinstance(request_id, str) or not request_id:
            return _invalid_result(f"line-{number}", str(request.get("host", "")), number, "missing or empty 'id'")
        if request_id in self.answered:
            log.warning("line %d: id %r was answered already; not run again", number, request_id)
            return None
        host = request.get("host")
        try:
            if not isinstance(host, str) or not host:
                raise InvalidRequest("missing or empty 'host'")
            self.bridge.host(host)
            op = request.get("op", "exec")
            if op not in OPERATIONS:
                raise InvalidRequest(f"unknown op {op!r} (known: {', '.join(OPERATIONS)})")
            accepted, handler = OPERATIONS[op]
            unknown = sorted(set(request) - accepted - {"id", "host", "op"})
            if unknown:
                raise InvalidRequest(f"unknown field(s) {', '.join(map(repr, unknown))} for op {op!r}")
            self._save(self.tail.offset, self.tail.line_number,
                       {"id": request_id, "host": host, "started_at": utc_now()})
            return handler(self, request)
        except (InvalidRequest, UnknownHost) as exc:
            return _invalid_result(request_id, str(host or ""), number, str(exc))

    def process_pending(self) -> int:
        """Handle every complete request line not yet handled; returns how many."""
        handled = 0
        for line in self.tail.read_new():
            if self.stopping:
                break
            result = self.handle_line(line.number, line.text)
            if result is not None:
                self._answer(result)
                handled += 1
            self.tail.advance(line)
            self._save(self.tail.offset, self.tail.line_number, None)
        return handled

    def serve(self, poll_s: float = 0.05) -> None:
        while not self.stopping:
            if not self.process_pending():
                time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.bridge.agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=Path, help="ssh_hosts.yaml (default: only the built-in 'local' host)")
    parser.add_argument("--queue-dir", type=Path, required=True, help="folder with requests.jsonl and results.jsonl")
    parser.add_argument("--once", action="store_true", help="handle what is queued, then exit")
    parser.add_argument("--default-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds a command may run when its request gives no timeout")
    parser.add_argument("--log-file", type=Path, help="log here instead of stderr")
    args = parser.parse_args(argv)
    try:
        hosts = load_hosts(args.hosts)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.queue_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Held for the agent's life: two agents on one queue would run requests twice.
        queue_lock = FileLock(args.queue_dir / AGENT_LOCK, f"agent pid {os.getpid()} on {socket.gethostname()}").acquire(0)
    except LockHeld:
        holder = FileLock(args.queue_dir / AGENT_LOCK).current_holder() or "another process"
        print(f"error: {args.queue_dir} is already served by {holder}; stop that agent first", file=sys.stderr)
        return 3
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(Redactor.for_hosts(hosts.values()), "%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    with Bridge(hosts) as bridge:
        agent = Agent(bridge, args.queue_dir, args.default_timeout)

        def stop(signum: int, frame: Any) -> None:
            agent.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("agent started: queue %s, hosts %s", args.queue_dir, ", ".join(sorted(hosts)))
        if args.once:
            agent.process_pending()
        else:
            agent.serve()
        log.info("agent stopped")
    queue_lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
