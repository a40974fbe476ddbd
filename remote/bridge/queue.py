"""The JSONL queue files: ``requests.jsonl`` in, ``results.jsonl`` out.

Appending: one ``os.write`` of one whole line per record, under an exclusive
lock on the file (``remote.core.locking``), so records from several processes never interleave
(``O_APPEND`` alone does not promise that, and a buffered file object may
split one record into several writes). Readers take no lock: they consume
only ``\\n``-terminated lines, so a half-written last line waits for its
newline.

Reading is by byte offset, saved in a checkpoint; a file that shrank or was
replaced (another inode) is read again from the start.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.locking import lock_fd

REQUESTS = "requests.jsonl"
RESULTS = "results.jsonl"
CHECKPOINT = "agent.checkpoint.json"


def append_record(path: Path, record: dict[str, Any], *, durable: bool = False) -> None:
    """Append one JSON line atomically with respect to other appenders."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        lock_fd(fd)
        written = 0
        while written < len(line):  # os.write may be short on a full disk or a signal
            written += os.write(fd, line[written:])
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


@dataclass
class Line:
    number: int  # 1-based line number in the file
    end_offset: int  # byte offset just past this line's newline
    text: bytes


class LineTail:
    """Complete lines appended to a file since a saved offset."""

    def __init__(self, path: Path, offset: int = 0, inode: int | None = None, line_number: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.inode = inode
        self.line_number = line_number

    def read_new(self) -> Iterator[Line]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        if (self.inode is not None and stat.st_ino != self.inode) or stat.st_size < self.offset:
            self.offset, self.line_number = 0, 0  # truncated or replaced: start over
        self.inode = stat.st_ino
        if stat.st_size == self.offset:
            return
        base, number = self.offset, self.line_number
        with open(self.path, "rb") as handle:
            handle.seek(base)
            data = handle.read()
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break  # a half-written line: wait for its newline
            number += 1
            yield Line(number, base + newline + 1, data[start:newline])
            start = newline + 1

    def advance(self, line: Line) -> None:
        self.offset = line.end_offset
        self.line_number = line.number


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every well-formed JSON object line of ``path`` (others are passed over)."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Replace the checkpoint atomically (a crash leaves the old or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def wait_for_record(path: Path, record_id: str, timeout: float | None, poll_s: float = 0.02) -> dict[str, Any]:
    """The first record with ``id == record_id`` appended to ``path``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = LineTail(path)
    while True:
        for line in tail.read_new():
            tail.advance(line)
            try:
                record = json.loads(line.text)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("id") == record_id:
                return record
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no result for {record_id!r} in {path} within {timeout:g}s")
        time.sleep(poll_s)
