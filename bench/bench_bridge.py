"""Bridge benchmark against real sshd on loopback (run it, not a test).

    .venv/bin/python bench/bench_bridge.py [--commands 500] [--megabytes 40]

1. Per-command overhead: 500 trivial commands (`true`) through one persistent
   shell on the proxy flavour (median, p95) vs a fresh `ssh host true` per
   command on the direct flavour (the baseline a non-interactive host allows);
   and the bridge's own overhead: each run paired with the same subshell
   typed raw into the same shell, the difference's median and p95.
2. Output capture rate: a command printing N MB through the bridge vs raw
   `ssh -tt host <same command>` reading the same bytes from its PTY.
Targets: median overhead ≤ 1 ms; capture ≥ 90 % of the raw PTY rate.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from remote.shell import RemoteShell, marker_printf, new_token
from tests.fixtures.sshd import start_sshd


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--megabytes", type=int, default=40)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pf-bench-bridge-"))
    proxy, direct = start_sshd(root / "proxy", "proxy"), start_sshd(root / "direct", "direct")
    try:
        shell = RemoteShell(proxy.host_config())
        shell.connect()
        # Interleaved with the bridge's runs (so both see the same load): the
        # same subshell typed raw into the same shell, with one bare marker.
        # The difference is what the bridge itself adds per command.
        bridge_times, raw_times = [], []
        for _ in range(args.commands):
            started = time.perf_counter()
            result = shell.run("true")
            bridge_times.append(time.perf_counter() - started)
            assert result.ok
            token = new_token()
            started = time.perf_counter()
            shell.send_line("( true ); " + marker_printf("__PF", f"RAW_{token}__"))
            shell.read_until(f"__PFRAW_{token}__".encode(), 10)
            raw_times.append(time.perf_counter() - started)
        direct_argv = direct.host_config().ssh_command()
        direct_argv.remove("-tt")
        fresh_times = []
        for _ in range(min(args.commands, 100)):
            started = time.perf_counter()
            subprocess.run(direct_argv + ["true"], check=True, capture_output=True)
            fresh_times.append(time.perf_counter() - started)
        size = args.megabytes << 20
        command = f"head -c {size} /dev/zero | tr '\\0' 'x'"
        started = time.perf_counter()
        result = shell.run(command, timeout=600)
        bridge_s = time.perf_counter() - started
        assert len(result.stdout) == size
        raw_argv = direct.host_config().ssh_command() + [f"stty -opost; {command}"]
        started = time.perf_counter()
        raw = subprocess.run(raw_argv, capture_output=True)
        raw_s = time.perf_counter() - started
        shell.close()
    finally:
        for server in (proxy, direct):
            server.process.terminate()
    median, p95 = statistics.median(bridge_times), percentile(bridge_times, 0.95)
    overheads = [bridge - raw for bridge, raw in zip(bridge_times, raw_times)]
    fresh = statistics.median(fresh_times)
    print(f"trivial command through the persistent proxy shell: median {median * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms")
    print(f"the same `( true )` typed raw into that shell: median {statistics.median(raw_times) * 1000:.2f} ms")
    print(f"  bridge overhead per command (paired difference): median {statistics.median(overheads) * 1000:.2f} ms, "
          f"p95 {percentile(overheads, 0.95) * 1000:.2f} ms (target median <= 1 ms)")
    print(f"fresh `ssh host true` on the direct port (baseline): median {fresh * 1000:.1f} ms")
    print(f"  ratio bridge/fresh: {median / fresh:.3f} ({fresh / median:.0f}x faster)")
    print(f"{args.megabytes} MB of output: bridge {args.megabytes / bridge_s:.1f} MB/s, raw ssh -tt "
          f"{len(raw.stdout) / (1 << 20) / raw_s:.1f} MB/s ({len(raw.stdout) >> 20} MB read)")
    print(f"  capture ratio bridge/raw: {(args.megabytes / bridge_s) / (len(raw.stdout) / (1 << 20) / raw_s):.2f}")


if __name__ == "__main__":
    main()
