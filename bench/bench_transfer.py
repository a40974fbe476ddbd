"""Transfer throughput: every transport up and down, against scp, in one run.

    .venv/bin/python -m bench.bench_transfer [--mb 100]

Starts the test sshd flavours (proxy: interactive-only like RunPod's; direct:
exec and sftp) and moto's S3 server on loopback, writes ``--mb`` MB of random
data and moves it up and down through inline, sftp and s3, then once more
unchanged (which must move 0 bytes in under 100 ms). Baselines measured in the
same run: ``scp`` on the direct flavour, and the raw PTY output rate (printable
text streamed by ``cat`` through the same interactive shell inline uses).
Prints MB/s and ratios; the target for inline downloads is ≥ 50 % of the raw
PTY output rate.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from remote.bridge.shell import RemoteShell
from remote.bridge.transfer import get, put
from remote.bridge.transfer.common import TransferInterrupted, TransferResult
from remote.core.config import StorageConfig
from tests.fixtures import free_port
from tests.fixtures.sshd import SshServer, start_sshd

MB = 1 << 20


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    outcome = action()
    return time.perf_counter() - started, outcome


def put_resuming(shell: RemoteShell, src: Path, dst: str) -> tuple[TransferResult, int]:
    """``put``, run again after each TransferInterrupted as a caller would (it resumes)."""
    for resumes in range(5):
        try:
            return put(shell, src, dst), resumes
        except TransferInterrupted:
            continue
    return put(shell, src, dst), 5


def scp(server: SshServer, src: str, dst: str) -> None:
    subprocess.run(["scp", "-q", "-P", str(server.port), "-i", server.identity_file, "-o", "BatchMode=yes",
                    "-o", f"UserKnownHostsFile={server.known_hosts}", src, dst], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the random file in MB")
    size_mb = parser.parse_args().mb
    import boto3
    from moto.server import ThreadedMotoServer

    with tempfile.TemporaryDirectory(prefix="pf-bench-") as scratch:
        root = Path(scratch)
        src = root / "payload.bin"
        with open(src, "wb") as handle:
            for _ in range(size_mb):
                handle.write(os.urandom(MB))
        size = src.stat().st_size
        proxy, direct = start_sshd(root / "proxy", "proxy"), start_sshd(root / "direct", "direct")
        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
        moto.start()
        os.environ.update(AWS_ACCESS_KEY_ID="bench-key", AWS_SECRET_ACCESS_KEY="bench-secret")
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        rows: list[tuple[str, str, float, int]] = []
        try:
            user_host = f"{direct.host_config().user}@127.0.0.1"
            scp_up, _ = timed(lambda: scp(direct, str(src), f"{user_host}:{root}/scp-remote.bin"))
            scp_down, _ = timed(lambda: scp(direct, f"{user_host}:{root}/scp-remote.bin", str(root / "scp-local.bin")))
            rows += [("scp (direct)", "up", scp_up, size), ("scp (direct)", "down", scp_down, size)]

            proxy_shell = RemoteShell(proxy.host_config(transfer="inline"))
            text = root / "text.b64"
            subprocess.run(f"base64 -w0 < {src} > {text}", shell=True, check=True)
            raw_s, raw = timed(lambda: proxy_shell.run(f"cat {text}", timeout=600))
            assert raw.ok and len(raw.stdout) == text.stat().st_size
            rows.append(("raw PTY output (cat of text)", "down", raw_s, text.stat().st_size))

            storage = StorageConfig(endpoint_url=endpoint, bucket="bench", prefix="bench/")
            shells = {
                "inline (proxy)": proxy_shell,
                "sftp (direct)": RemoteShell(direct.host_config(transfer="sftp")),
                "s3 (proxy)": RemoteShell(replace(proxy.host_config(transfer="s3"), storage=storage)),
            }
            unchanged = []
            for label, shell in shells.items():
                remote = root / label.split()[0] / "payload.bin"
                up_s, (uploaded, resumes) = timed(lambda: put_resuming(shell, src, str(remote)))
                if resumes:
                    print(f"{label}: the connection dropped; the upload resumed {resumes} time(s)")
                assert (resumes or uploaded.bytes_moved >= size) and remote.read_bytes() == src.read_bytes(), label
                again_s, again = timed(lambda: put(shell, src, str(remote)))
                unchanged.append((label, again_s, again.bytes_moved))
                down_s, downloaded = timed(lambda: get(shell, str(remote), root / "back" / label.split()[0]))
                assert downloaded.bytes_moved >= size, label
                rows += [(label, "up", up_s, size), (label, "down", down_s, size)]
                shell.close()
        finally:
            moto.stop()
            for server in (proxy, direct):
                server.process.terminate()

    baseline = {direction: size / seconds for name, direction, seconds, _ in rows if name == "scp (direct)"}
    raw_rate = next(moved / seconds for name, _, seconds, moved in rows if name.startswith("raw PTY"))
    print(f"payload: {size_mb} MB of random data; MB/s counts payload bytes (raw PTY: bytes of text)")
    print(f"{'transport':30} {'dir':5} {'seconds':>8} {'MB/s':>8} {'vs scp':>7} {'vs raw PTY':>10}")
    for name, direction, seconds, moved in rows:
        rate = moved / seconds
        print(f"{name:30} {direction:5} {seconds:8.2f} {rate / MB:8.1f} {rate / baseline[direction]:7.2f} "
              f"{rate / raw_rate:10.2f}")
    inline_down = next(size / seconds for name, direction, seconds, _ in rows
                       if name.startswith("inline") and direction == "down")
    print(f"inline download vs raw PTY: {inline_down / raw_rate:.2f} in payload, "
          f"{inline_down * 4 / 3 / raw_rate:.2f} in PTY bytes (base64 text); target 0.50")
    print("(bytes_moved of a resumed upload counts only what the last run sent)")
    for label, seconds, moved in unchanged:
        print(f"unchanged re-upload, {label:16}: {moved} bytes moved in {seconds * 1000:.1f} ms "
              f"({'meets' if moved == 0 and seconds < 0.1 else 'MISSES'} the 0 bytes / 100 ms target)")


if __name__ == "__main__":
    main()
