"""The pipe transport's own promises, on real processes: output first, then the end;
a peer that stops reading is a timeout, never a hang; close always returns."""
from __future__ import annotations

import os
import time

import pytest

from remote.bridge.shell import open_transport
from remote.bridge.transport import TransportClosed, TransportUnavailable
from remote.bridge.transport_pipe import PipeTransport


def read_all(transport: PipeTransport, timeout: float = 10) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data += transport.read(0.2)
        except TransportClosed:
            return data
    raise AssertionError(f"no end within {timeout}s; got {data!r}")


def test_output_comes_whole_before_the_end_is_reported():
    transport = PipeTransport(["bash", "-c", "head -c 3000000 /dev/zero; printf tail; echo err >&2"], dict(os.environ))
    data = read_all(transport)
    assert data.startswith(b"\0" * 3_000_000) and data.endswith(b"tailerr\n") and len(data) == 3_000_008
    assert transport.process.wait(5) == 0 and not transport.alive()
    with pytest.raises(BrokenPipeError):
        transport.write(b"late\n")
    transport.close()


def test_a_peer_that_stops_reading_is_a_timeout_and_close_still_returns():
    transport = PipeTransport(["sleep", "300"], dict(os.environ))  # never reads its stdin
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        transport.write(b"x" * (8 << 20), timeout=0.5)
    assert time.monotonic() - started < 5
    transport.close(goodbye=b"exit\n", grace_s=0.5)
    assert transport.process.returncode is not None and time.monotonic() - started < 15


def test_input_reaches_the_process_in_order_while_its_output_is_collected():
    transport = PipeTransport(["cat"], dict(os.environ))
    chunks = [bytes([65 + i % 26]) * 100_000 for i in range(20)]
    for chunk in chunks:
        assert transport.write(chunk, timeout=30) == b""
    transport.process.stdin.close()
    assert read_all(transport) == b"".join(chunks)
    transport.close()


def test_a_program_that_cannot_start_is_a_clear_error():
    with pytest.raises(TransportUnavailable, match="cannot start no-such-program-pf"):
        PipeTransport(["no-such-program-pf"], dict(os.environ))
    with pytest.raises(TransportUnavailable, match="unknown transport 'serial'"):
        open_transport("serial", ["true"], dict(os.environ))
