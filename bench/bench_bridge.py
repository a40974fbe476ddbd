"""Bridge benchmark against real sshd on loopback (run it, not a test).

    .venv/bin/python -m bench.bench_bridge [--commands 500] [--megabytes 40]

Both transports (a local PTY and plain pipes) are measured in the same run,
interleaved, each with its own persistent shell on the proxy flavour.

1. Per-command overhead: 500 trivial commands (`true`) through one persistent
   shell on the proxy flavour (median, p95) vs a fresh `ssh host true` per
   command on the direct flavour (the baseline a non-interactive host allows);
   and the bridge's own overhead: each run paired with the same subshell
   typed raw into the same shell, the difference's median and p95.
2. Output capture rate: a command printing N MB through the bridge vs raw
   `ssh -tt host <same command>` reading the same bytes from its PTY.
Targets: median overhead ≤ 1 ms; capture ≥ 90 % of the raw PTY rate; the
pipe transport within 1.5× of the PTY's per-command time and ≥ 90 % of its
capture rate.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from remote.bridge.shell import RemoteShell, marker_printf, new_token
from remote.core.platforms import TRANSPORTS
from tests.fixtures.sshd import start_sshd


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def measure_commands(shells: dict[str, RemoteShell], commands: int) -> dict[str, tuple[list[float], list[float]]]:
    """(bridge times, raw times) per transport, interleaved so all see the same load.

    Raw: the same subshell typed into the same shell with one bare marker;
    bridge minus raw is what the bridge itself adds per command.
    """
    times: dict[str, tuple[list[float], list[float]]] = {kind: ([], []) for kind in shells}
    for _ in range(commands):
        for kind, shell in shells.items():
            started = time.perf_counter()
            result = shell.run("true")
            times[kind][0].append(time.perf_counter() - started)
            assert result.ok
            token = new_token()
            started = time.perf_counter()
            shell.send_line("( true ); " + marker_printf("__PF", f"RAW_{token}__"))
            shell.read_until(f"__PFRAW_{token}__".encode(), 10)
            times[kind][1].append(time.perf_counter() - started)
    return times


def measure_capture(shells: dict[str, RemoteShell], megabytes: int, rounds: int = 3) -> dict[str, float]:
    """Median MB/s of a command printing ``megabytes`` through each transport, alternating."""
    command = f"head -c {megabytes << 20} /dev/zero | tr '\\0' 'x'"
    rates: dict[str, list[float]] = {kind: [] for kind in shells}
    for _ in range(rounds):
        for kind, shell in shells.items():
            started = time.perf_counter()
            result = shell.run(command, timeout=600)
            rates[kind].append(megabytes / (time.perf_counter() - started))
            assert len(result.stdout) == megabytes << 20
    return {kind: statistics.median(values) for kind, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--megabytes", type=int, default=40)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pf-bench-bridge-"))
    proxy, direct = start_sshd(root / "proxy", "proxy"), start_sshd(root / "direct", "direct")
    shells = {kind: RemoteShell(proxy.host_config(transport=kind)) for kind in TRANSPORTS}
    try:
        for shell in shells.values():
            shell.connect()
        times = measure_commands(shells, args.commands)
        direct_argv = direct.host_config().ssh_command()
        direct_argv.remove("-tt")
        fresh_times = []
        for _ in range(min(args.commands, 100)):
            started = time.perf_counter()
            subprocess.run(direct_argv + ["true"], check=True, capture_output=True)
            fresh_times.append(time.perf_counter() - started)
        capture = measure_capture(shells, args.megabytes)
        command = f"head -c {args.megabytes << 20} /dev/zero | tr '\\0' 'x'"
        raw_argv = direct.host_config().ssh_command() + [f"stty -opost; {command}"]
        started = time.perf_counter()
        raw = subprocess.run(raw_argv, capture_output=True)
        raw_rate = len(raw.stdout) / (1 << 20) / (time.perf_counter() - started)
    finally:
        for shell in shells.values():
            shell.close()
        for server in (proxy, direct):
            server.process.terminate()
    fresh = statistics.median(fresh_times)
    medians, overheads = {}, {}
    for kind, (bridge_times, raw_times) in times.items():
        medians[kind] = statistics.median(bridge_times)
        paired = [bridge - raw for bridge, raw in zip(bridge_times, raw_times)]
        overheads[kind] = statistics.median(paired)
        print(f"[{kind}] trivial command through the persistent proxy shell: median {medians[kind] * 1000:.2f} ms, "
              f"p95 {percentile(bridge_times, 0.95) * 1000:.2f} ms")
        print(f"[{kind}]   the same `( true )` typed raw into that shell: median "
              f"{statistics.median(raw_times) * 1000:.2f} ms")
        print(f"[{kind}]   bridge overhead per command (paired difference): median {overheads[kind] * 1000:.2f} ms, "
              f"p95 {percentile(paired, 0.95) * 1000:.2f} ms (target median <= 1 ms)")
        print(f"[{kind}]   ratio bridge/fresh ssh: {medians[kind] / fresh:.3f} ({fresh / medians[kind]:.0f}x faster)")
        print(f"[{kind}] {args.megabytes} MB of output: {capture[kind]:.1f} MB/s "
              f"(capture ratio bridge/raw ssh -tt: {capture[kind] / raw_rate:.2f})")
    print(f"fresh `ssh host true` on the direct port (baseline): median {fresh * 1000:.1f} ms; "
          f"raw ssh -tt output: {raw_rate:.1f} MB/s")
    print(f"pipe vs pty: per-command time {medians['pipe'] / medians['pty']:.2f}x (target <= 1.5x), "
          f"paired overhead {overheads['pipe'] * 1000:.2f} vs {overheads['pty'] * 1000:.2f} ms, "
          f"capture {capture['pipe'] / capture['pty']:.2f} of pty's (target >= 0.90)")


if __name__ == "__main__":
    main()
