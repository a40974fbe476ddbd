"""File transfers through every transport against real sshd, moto S3 and the local host;
the shell's own contract (inline and sftp) over both of RemoteShell's transports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from remote.bridge.api import Bridge, submit
from remote.bridge.shell import RemoteShell
from remote.bridge.transfer import get, put, put_many
from remote.bridge.transfer.common import (
    BucketMissing,
    ChecksumMismatch,
    RemoteDiskFull,
    StorageCredentialsRejected,
    TransferError,
    TransferInterrupted,
    sha256_file,
)
from remote.core.config import local_host, parse_host
from remote.core.platforms import TRANSPORTS
from tests.fixtures.sshd import host_config_for

REPO = Path(__file__).resolve().parents[1]
ODD = "it's a \"file\" $(touch pwned) `x` é.bin"


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return local_host()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def drop_connections_after(server, seconds: float = 0.0, until=lambda: True) -> threading.Event:
    """Kill the server's live sessions after ``seconds`` once ``until()`` holds, as a
    network drop would; the event is set once done."""
    dropped = threading.Event()

    def drop() -> None:
        time.sleep(seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if until():
                    break
            except OSError:  # a file it looks at was renamed or removed meanwhile
                pass
            time.sleep(0.005)
        server.drop_connections()
        dropped.set()

    threading.Thread(target=drop, daemon=True).start()
    return dropped


def leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if "pf-part" in p.name]


@pytest.fixture(params=[f"{where}-{transport}" for where in ("inline-local", "inline-proxy", "sftp-direct")
                        for transport in TRANSPORTS])
def shell(request, tmp_path, monkeypatch):
    transfer, kind, transport = request.param.split("-")
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    config = host_config_for(request, kind, transport, transfer=transfer)
    remote_shell = RemoteShell(config)
    yield remote_shell
    remote_shell.close()


def test_round_trip_is_exact_and_unchanged_content_moves_nothing(shell, tmp_path):
    src = random_file(tmp_path / ODD, 3 * (1 << 20) + 12345)
    remote_dir = tmp_path / "remote dir $(x)"
    uploaded = put(shell, src, f"{remote_dir}/")
    assert uploaded.bytes_moved == src.stat().st_size
    assert (remote_dir / ODD).read_bytes() == src.read_bytes()
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    again = put(shell, src, f"{remote_dir}/{ODD}")
    assert again.bytes_moved == 0 and again.files[0].sha256 == uploaded.files[0].sha256
    local_dir = tmp_path / "downloads"
    downloaded = get(shell, f"{remote_dir}/*.bin", local_dir)
    assert (local_dir / ODD).read_bytes() == src.read_bytes()
    assert downloaded.bytes_moved == src.stat().st_size and downloaded.files[0].size == src.stat().st_size
    assert get(shell, f"{remote_dir}/*.bin", local_dir).bytes_moved == 0
    assert leftovers(remote_dir, local_dir) == []


def test_many_files_in_one_call_each_exact_and_unchanged_ones_move_nothing(shell, tmp_path, monkeypatch):
    from remote.bridge.transfer import sftp

    sessions = []
    real_sftp = sftp._sftp
    monkeypatch.setattr(sftp, "_sftp", lambda *args: (sessions.append(args[1]), real_sftp(*args))[1])
    sources = [random_file(tmp_path / f"texture {n} $(x).png", 50_000 + n) for n in range(5)]
    remote_dir = tmp_path / "store"
    pairs = [(src, f"{remote_dir}/objects/{src.name}") for src in sources]
    sent = put_many(shell, pairs)
    assert sent.bytes_moved == sum(src.stat().st_size for src in sources) and len(sent.files) == 5
    for src in sources:
        assert (remote_dir / "objects" / src.name).read_bytes() == src.read_bytes()
    if shell.host.transfer == "sftp":
        assert len(sessions) == 1 and len(sessions[0]) == 5  # one ssh connection for all five
    sessions.clear()
    assert put_many(shell, pairs).bytes_moved == 0 and sessions == []
    assert leftovers(remote_dir) == []


def test_empty_file_and_missing_local_file(shell, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    put(shell, empty, str(tmp_path / "remote" / "empty.txt"))
    assert (tmp_path / "remote" / "empty.txt").read_bytes() == b""
    with pytest.raises(TransferError, match="local file not found"):
        put(shell, tmp_path / "nope.bin", str(tmp_path / "remote" / "nope.bin"))
    with pytest.raises(TransferError, match="not a regular file"):
        put(shell, tmp_path, str(tmp_path / "remote" / "folder"))
    not_a_folder = tmp_path / "downloads"
    not_a_folder.write_text("a file where the destination folder should be")
    with pytest.raises(TransferError, match="downloading .* into"):
        get(shell, str(tmp_path / "remote" / "empty.txt"), not_a_folder)
    assert not_a_folder.read_text() == "a file where the destination folder should be"


def test_get_refuses_remote_links_and_never_writes_outside_dst(shell, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    secret = tmp_path / "outside.txt"
    secret.write_text("keep me")
    (remote / "link.png").symlink_to(secret)
    with pytest.raises(TransferError, match="symbolic link"):
        get(shell, str(remote / "*.png"), tmp_path / "dl")
    (remote / "link.png").unlink()
    (remote / "image.png").write_bytes(b"pixels")
    dst = tmp_path / "dl"
    dst.mkdir()
    (dst / "image.png").symlink_to(secret)  # a link planted in the destination
    get(shell, str(remote / "image.png"), dst)
    assert secret.read_text() == "keep me"
    assert (dst / "image.png").read_bytes() == b"pixels" and not (dst / "image.png").is_symlink()
    with pytest.raises(TransferError, match="no remote file matches"):
        get(shell, str(remote / "*.exr"), dst)


def test_remote_disk_full_is_a_clear_error_and_leaves_nothing(shell, tmp_path):
    src = random_file(tmp_path / "scene.blend", 300_000)
    dst = tmp_path / "remote" / "scene.blend"
    dst.parent.mkdir()
    part = Path(f"{dst}.pf-part-{sha256_file(src)[:16]}")
    part.symlink_to("/dev/full")  # every write into the part file answers ENOSPC
    with pytest.raises(RemoteDiskFull, match="disk is full"):
        put(shell, src, str(dst))
    assert not dst.exists() and not part.exists() and not part.is_symlink()


class CorruptingShell(RemoteShell):
    """Flips one byte of the first chunk(s) typed into the shell: a corrupted chunk in transit."""

    def __init__(self, host, corruptions: int) -> None:
        super().__init__(host)
        self.corruptions = corruptions

    def run(self, command, **options):
        text = options.get("typed_input")
        if text and self.corruptions:
            self.corruptions -= 1
            options["typed_input"] = ("B" if text[0] != "B" else "C") + text[1:]
        return super().run(command, **options)


def test_corrupted_chunk_is_retried_then_fails_clearly(local, tmp_path):
    src = random_file(tmp_path / "a.bin", 100_000)
    shell = CorruptingShell(replace(local, transfer="inline"), corruptions=1)
    put(shell, src, str(tmp_path / "r" / "a.bin"))
    assert (tmp_path / "r" / "a.bin").read_bytes() == src.read_bytes() and shell.corruptions == 0
    stubborn = CorruptingShell(replace(local, transfer="inline"), corruptions=10)
    with pytest.raises(ChecksumMismatch, match="corrupted"):
        put(stubborn, src, str(tmp_path / "r2" / "a.bin"))
    assert not (tmp_path / "r2" / "a.bin").exists()
    shell.close()
    stubborn.close()


class CorruptingOutputShell(RemoteShell):
    """Flips one base64 character of the first download answer(s): corruption on the way back."""

    def __init__(self, host, corruptions: int) -> None:
        super().__init__(host)
        self.corruptions = corruptions

    def run(self, command, **options):
        result = super().run(command, **options)
        if "base64 -w0" in command and self.corruptions and result.ok:
            self.corruptions -= 1
            digest, _, encoded = result.stdout.partition("\n")
            result.stdout = f"{digest}\n{'B' if encoded[0] != 'B' else 'C'}{encoded[1:]}"
        return result


def test_corrupted_download_chunk_is_retried_then_fails_clearly(local, tmp_path):
    (tmp_path / "r").mkdir()
    remote = random_file(tmp_path / "r" / "image.png", 100_000)
    shell = CorruptingOutputShell(replace(local, transfer="inline"), corruptions=1)
    get(shell, str(remote), tmp_path / "ok")
    assert (tmp_path / "ok" / "image.png").read_bytes() == remote.read_bytes() and shell.corruptions == 0
    stubborn = CorruptingOutputShell(replace(local, transfer="inline"), corruptions=10)
    with pytest.raises(ChecksumMismatch, match="corrupted"):
        get(stubborn, str(remote), tmp_path / "bad")
    assert not (tmp_path / "bad" / "image.png").exists() and leftovers(tmp_path / "bad") == []
    shell.close()
    stubborn.close()


class TypedBytesCountingShell(RemoteShell):
    """Counts the base64 text typed into the shell: what crossed the link upwards."""

    typed = 0

    def run(self, command, **options):
        self.typed += len(options.get("typed_input") or "")
        return super().run(command, **options)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dropped_connection_mid_upload_resumes_without_resending(sshd_proxy, tmp_path, transport):
    src = random_file(tmp_path / "big.blend", 12 << 20)
    dst = tmp_path / "remote" / "big.blend"
    shell = TypedBytesCountingShell(sshd_proxy.host_config(transfer="inline", transport=transport))
    shell.connect()

    def half_sent() -> bool:
        return any(p.stat().st_size >= (6 << 20) for p in dst.parent.glob("*pf-part*"))

    dropped = drop_connections_after(sshd_proxy, until=half_sent)
    for _ in range(3):
        try:
            put(shell, src, str(dst))
            break
        except TransferInterrupted:
            assert not dst.exists()  # the same put again resumes
    assert dropped.is_set()
    assert dst.read_bytes() == src.read_bytes()
    # Everything once, plus at most the chunks in flight when the link dropped (1 MiB each).
    assert shell.typed <= (src.stat().st_size + 3 * (1 << 20)) * 4 / 3 * 1.02
    assert leftovers(dst.parent) == []
    shell.close()


def s3_pod_shell(s3_server, local, bucket: str) -> RemoteShell:
    """A shell on this machine standing in for a pod whose host has transfer: s3."""
    config = parse_host("test", "pod", {"host": "localhost", "transfer": "s3",
                                        "storage": s3_server.storage_entry(bucket)})
    return RemoteShell(replace(config, is_local=True, workspace=local.workspace))


def test_s3_transport_is_content_addressed(local, s3_server, s3_credentials, tmp_path):
    bucket = s3_server.make_bucket()
    shell = s3_pod_shell(s3_server, local, bucket)
    src = random_file(tmp_path / "scene $(x).blend", 9 << 20)  # above the multipart threshold
    dst = tmp_path / "pod" / "scene.blend"
    first = put(shell, src, str(dst))
    assert first.transport == "s3" and first.bytes_moved == 2 * src.stat().st_size  # to storage, then to the pod
    assert dst.read_bytes() == src.read_bytes()
    assert put(shell, src, str(dst)).bytes_moved == 0
    dst.unlink()
    assert put(shell, src, str(dst)).bytes_moved == src.stat().st_size  # object reused: only the pod fetch
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"pf/objects/{first.files[0].sha256}" in keys and "pf/manifest.json" in keys
    (tmp_path / "pod" / "out.png").write_bytes(b"png bytes")
    got = get(shell, str(tmp_path / "pod" / "*.png"), tmp_path / "back")
    assert (tmp_path / "back" / "out.png").read_bytes() == b"png bytes" and got.bytes_moved == 2 * 9
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="pf/manifest.json")["Body"].read())
    assert manifest[f"pod:{dst}"] == first.files[0].sha256
    shell.close()


def test_s3_errors_are_clear(local, s3_server, s3_credentials, tmp_path, monkeypatch):
    shell = s3_pod_shell(s3_server, local, "no-such-bucket")
    src = random_file(tmp_path / "a.bin", 1000)
    with pytest.raises(BucketMissing, match="bucket 'no-such-bucket' does not exist"):
        put(shell, src, str(tmp_path / "pod" / "a.bin"))
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageCredentialsRejected, match="no storage credentials"):
        put(shell, src, str(tmp_path / "pod" / "a.bin"))
    shell.close()


def test_queue_put_and_get_through_the_agent(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    queue = tmp_path / "queue"
    src = random_file(tmp_path / "in.bin", 50_000)
    submit(queue, {"id": "up", "host": "local", "op": "put", "src": str(src), "dst": f"{tmp_path}/pod/"})
    submit(queue, {"id": "down", "host": "local", "op": "get", "src": f"{tmp_path}/pod/*.bin", "dst": str(tmp_path / "out")})
    submit(queue, {"id": "missing", "host": "local", "op": "put", "src": str(tmp_path / "nope"), "dst": "/tmp/x"})
    submit(queue, {"id": "bad", "host": "local", "op": "get", "src": "x"})
    subprocess.run([sys.executable, "-m", "remote.bridge.agent", "--queue-dir", str(queue), "--once"], cwd=REPO,
                   check=True, capture_output=True, timeout=120)
    results = {r["id"]: r for r in map(json.loads, (queue / "results.jsonl").read_text().splitlines())}
    assert results["up"]["status"] == "ok" and results["up"]["transport"] == "inline"
    assert results["up"]["bytes_moved"] == 50_000 and results["up"]["files"][0]["path"] == f"{tmp_path}/pod/in.bin"
    assert results["down"]["status"] == "ok" and (tmp_path / "out" / "in.bin").read_bytes() == src.read_bytes()
    assert results["missing"]["status"] == "failed" and "local file not found" in results["missing"]["error"]
    assert results["bad"]["status"] == "invalid" and "dst" in results["bad"]["error"]


def test_bridge_api_put_get(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    src = random_file(tmp_path / "x.bin", 10)
    with Bridge() as bridge:
        assert bridge.put("local", src, f"{tmp_path}/r/").bytes_moved == 10
        assert bridge.get("local", f"{tmp_path}/r/x.bin", tmp_path / "o").files[0].sha256


def test_remote_file_changed_in_place_is_sent_again(shell, tmp_path):
    src = random_file(tmp_path / "scene.blend", 200_000)
    dst = tmp_path / "remote" / "scene.blend"
    put(shell, src, str(dst))
    assert put(shell, src, str(dst)).bytes_moved == 0  # the recorded sum, unchanged file
    tampered = bytearray(dst.read_bytes())
    tampered[1000] ^= 0xFF
    dst.write_bytes(bytes(tampered))  # same size, new content and mtime: the record no longer applies
    assert put(shell, src, str(dst)).bytes_moved == src.stat().st_size
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dropped_connection_mid_download_resumes_and_never_leaves_a_wrong_file(sshd_proxy, tmp_path, transport):
    (tmp_path / "remote").mkdir()
    remote = random_file(tmp_path / "remote" / "render.exr", 24 << 20)
    shell = RemoteShell(sshd_proxy.host_config(transfer="inline", transport=transport))
    shell.connect()
    dropped = drop_connections_after(sshd_proxy, 0.5)
    try:
        get(shell, str(remote), tmp_path / "local")
    except TransferInterrupted:
        assert not (tmp_path / "local" / "render.exr").exists()  # only the hidden part, never the final name
        get(shell, str(remote), tmp_path / "local")
    assert dropped.is_set()
    assert (tmp_path / "local" / "render.exr").read_bytes() == remote.read_bytes()
    assert leftovers(tmp_path / "local") == []
    shell.close()


class RejectingStorage(BaseHTTPRequestHandler):
    """Answers every request as R2 does for a wrong secret key."""

    def _reject(self) -> None:
        body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
                b"<Message>The request signature we calculated does not match</Message></Error>")
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _reject

    def log_message(self, *args) -> None:
        pass


def test_s3_rejected_credentials_are_a_clear_error_that_never_shows_the_secret(local, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RejectingStorage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "wrong-secret-$(rm -rf x)-key"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "some-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    config = parse_host("test", "pod", {"host": "localhost", "transfer": "s3", "storage": {
        "endpoint_url": f"http://127.0.0.1:{server.server_port}", "bucket": "renders"}})
    shell = RemoteShell(replace(config, is_local=True, workspace=local.workspace))
    src = random_file(tmp_path / "a.bin", 1000)
    try:
        with pytest.raises(StorageCredentialsRejected, match="rejected the credentials") as caught:
            put(shell, src, str(tmp_path / "pod" / "a.bin"))
        assert secret not in str(caught.value)
        assert not (tmp_path / "pod" / "a.bin").exists()
    finally:
        shell.close()
        server.shutdown()


@pytest.mark.parametrize("direction", ["put", "get"])
def test_sftp_dropped_mid_transfer_resumes_where_it_stopped(sshd_direct, tmp_path, direction):
    data = random_file(tmp_path / "scene.blend", 96 << 20)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    shell = RemoteShell(sshd_direct.host_config(transfer="sftp"))
    shell.connect()
    if direction == "put":
        final = remote_dir / "scene.blend"
        transfer = lambda: put(shell, data, str(final))  # noqa: E731
    else:
        os.replace(data, remote_dir / "scene.blend")
        data, final = remote_dir / "scene.blend", tmp_path / "local" / "scene.blend"
        transfer = lambda: get(shell, str(data), final.parent)  # noqa: E731
    sha256_file(data)  # hashed before the clock starts
    part_dir = remote_dir if direction == "put" else final.parent

    def partial() -> bool:
        return any(p.stat().st_size > (8 << 20) for p in part_dir.glob("*pf-part*"))

    dropped = drop_connections_after(sshd_direct, until=partial)
    interrupted, moved = 0, []
    for _ in range(4):
        try:
            moved.append(transfer().bytes_moved)
            break
        except TransferInterrupted:
            interrupted += 1
            assert not final.exists()  # never a partial file under the final name
    assert dropped.is_set() and interrupted >= 1
    assert final.read_bytes() == data.read_bytes()
    assert 0 < moved[-1] < data.stat().st_size  # the last run only sent what was missing
    assert leftovers(remote_dir, final.parent) == []
    shell.close()


def test_sftp_refuses_a_line_break_that_would_start_a_local_command(sshd_direct, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = random_file(tmp_path / "a.bin", 100)
    shell = RemoteShell(sshd_direct.host_config(transfer="sftp"))
    with pytest.raises(TransferError, match="line break"):
        put(shell, src, f"{tmp_path}/r/x\n!touch pwned")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "r" / "x").exists()
    shell.close()


def test_s3_object_corrupted_in_the_bucket_is_sent_again(local, s3_server, s3_credentials, tmp_path):
    bucket = s3_server.make_bucket()
    shell = s3_pod_shell(s3_server, local, bucket)
    src = random_file(tmp_path / "scene.blend", 50_000)
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key=f"pf/objects/{sha256_file(src)}", Body=b"not the scene")  # a bad object
    dst = tmp_path / "pod" / "scene.blend"
    result = put(shell, src, str(dst))
    assert dst.read_bytes() == src.read_bytes()
    assert result.bytes_moved == 2 * src.stat().st_size  # the object once more, then the pod's fetch
    assert leftovers(dst.parent) == []
    shell.close()
