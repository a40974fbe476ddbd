"""Files through S3-compatible storage (Cloudflare R2 in production).

The laptop holds the storage credentials and talks to the bucket with boto3
(parallel multipart uploads). The pod never gets the credentials: it fetches
and uploads with short-lived presigned URLs (``curl``), so a compromised or
shared pod can touch only the objects of the transfer at hand, for
``presign_expiry_s`` seconds. URLs travel to the pod as environment values of
the command, which the bridge redacts from results and logs.

Objects are content-addressed: ``<prefix>objects/<sha256>``; a small manifest
``<prefix>manifest.json`` maps the remote paths seen to their hashes. An
object already in the bucket is not uploaded again, and a file already at its
destination (same sha256) is not fetched again.

R2 needs ``region_name="auto"`` and, with boto3 ≥ 1.36, checksums only
"when_required" (it rejects the new default integrity headers).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ...core.config import StorageConfig
from ...core.quoting import q
from ..shell import RemoteShell
from .common import (
    BucketMissing,
    ChecksumMismatch,
    FileEntry,
    StorageCredentialsRejected,
    TransferError,
    TransferResult,
    checked,
    download_each,
    finish_upload_script,
    part_path,
    remote_sha256,
    sha256_file,
)

MULTIPART = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
# The pod side: curl when present, else Python's urllib (both take the URL from $PF_URL).
# The URL is itself a short-lived credential: it reaches curl on stdin as a
# config line (printf is a shell builtin) and Python through the environment,
# never through a process's argv, which any user of the pod could read in ps.
FETCH = ('if command -v curl >/dev/null; then printf \'url = "%s"\\n\' "$PF_URL" | curl -fsS --retry 3 -K - -o "$1"; '
         'else python3 -c "import os,sys,urllib.request,shutil; shutil.copyfileobj('
         'urllib.request.urlopen(os.environ[\'PF_URL\']), open(sys.argv[1], \'wb\'))" "$1"; fi')
SEND = ('if command -v curl >/dev/null; then printf \'url = "%s"\\n\' "$PF_URL" | curl -fsS --retry 3 -K - -T "$1"; '
        'else python3 -c "import os,sys,urllib.request; urllib.request.urlopen(urllib.request.Request('
        'os.environ[\'PF_URL\'], data=open(sys.argv[1], \'rb\').read(), method=\'PUT\'))" "$1"; fi')


def client(storage: StorageConfig):
    """A boto3 S3 client for ``storage`` (credentials from env names or a profile)."""
    if storage.profile:
        session = boto3.session.Session(profile_name=storage.profile)
    else:
        key_id = os.environ.get(storage.access_key_id_env)
        secret = os.environ.get(storage.secret_access_key_env)
        if not key_id or not secret:
            raise StorageCredentialsRejected(f"no storage credentials: set {storage.access_key_id_env} and "
                                f"{storage.secret_access_key_env} (or a profile in the storage settings)")
        session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 5},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return session.client("s3", endpoint_url=storage.endpoint_url, region_name=storage.region, config=config)


def _explain(exc: Exception, storage: StorageConfig) -> TransferError:
    if isinstance(exc, NoCredentialsError):
        return StorageCredentialsRejected("no storage credentials found")
    if isinstance(exc, (ClientError, S3UploadFailedError)):
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else next(
            (c for c in ("NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied") if c in str(exc)), "")
        if code == "NoSuchBucket":
            return BucketMissing(f"bucket {storage.bucket!r} does not exist at {storage.endpoint_url}")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
            return StorageCredentialsRejected(f"storage at {storage.endpoint_url} rejected the credentials ({code})")
        return TransferError(f"storage error {code}: {exc}")
    return TransferError(f"storage at {storage.endpoint_url} unreachable: {exc}")


def _storage(shell: RemoteShell) -> StorageConfig:
    if shell.host.storage is None:
        raise TransferError(f"host {shell.host.name!r} has transfer: s3 but no storage: section")
    return shell.host.storage


def _object_exists(s3, storage: StorageConfig, key: str) -> bool:
    try:
        s3.head_object(Bucket=storage.bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def _record(s3, storage: StorageConfig, names: dict[str, str]) -> None:
    key = f"{storage.prefix}manifest.json"
    try:
        manifest = json.loads(s3.get_object(Bucket=storage.bucket, Key=key)["Body"].read())
    except ClientError:
        manifest = {}
    manifest.update(names)
    s3.put_object(Bucket=storage.bucket, Key=key, Body=json.dumps(manifest, indent=1).encode())


def put(shell: RemoteShell, src: Path, dst: str) -> TransferResult:
    storage = _storage(shell)
    sha, size = sha256_file(src), src.stat().st_size
    result = TransferResult("s3", files=[FileEntry(dst, sha, size)])
    if remote_sha256(shell, dst) == sha:
        return result
    key = f"{storage.prefix}objects/{sha}"
    part = f"{dst}.pf-part-{sha[:16]}"
    # Exit status 1 is the sha256 test failing (curl's own codes are others).
    command = (f"fetch() {{ {FETCH}; }}; mkdir -p -- \"$(dirname -- {q(dst)})\" && fetch {q(part)} && "
               f"{{ {finish_upload_script(part, dst, sha)}; }}; "
               f"rc=$?; rm -f -- {q(part)}; exit $rc")
    try:
        s3 = client(storage)
        for attempt in (1, 2):  # a checksum mismatch gets one retry, with the object sent again
            if attempt == 2 or not _object_exists(s3, storage, key):
                s3.upload_file(str(src), storage.bucket, key, Config=MULTIPART)
                result.bytes_moved += size
            url = s3.generate_presigned_url("get_object", Params={"Bucket": storage.bucket, "Key": key},
                                            ExpiresIn=storage.presign_expiry_s)
            outcome = shell.run(command, env={"PF_URL": url}, timeout=3600)
            if outcome.ok:
                result.bytes_moved += size
                _record(s3, storage, {f"{shell.host.name}:{dst}": sha})
                return result
            if outcome.exit_code != 1:
                checked(outcome, f"fetching {dst} on {shell.host.name}")
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        raise _explain(exc, storage) from None
    raise ChecksumMismatch(f"{dst}: the pod's copy did not match {src.name} twice; nothing was kept")


def get(shell: RemoteShell, src: str, dst: Path) -> TransferResult:
    storage = _storage(shell)
    try:
        s3 = client(storage)

        def fetch(entry: FileEntry, target: Path, first_try: bool) -> int:
            moved = 0
            key = f"{storage.prefix}objects/{entry.sha256}"
            if not _object_exists(s3, storage, key):
                url = s3.generate_presigned_url("put_object", Params={"Bucket": storage.bucket, "Key": key},
                                                ExpiresIn=storage.presign_expiry_s)
                checked(shell.run(f"send() {{ {SEND}; }}; send {q(entry.path)} >/dev/null", env={"PF_URL": url},
                                  timeout=3600), f"sending {entry.path} to storage")
                moved += entry.size
            part = part_path(target)
            part.unlink(missing_ok=True)  # never write through a link someone left here
            s3.download_file(storage.bucket, key, str(part), Config=MULTIPART)
            return moved + entry.size

        result = download_each(shell, src, dst, "s3", fetch)
        _record(s3, storage, {f"{shell.host.name}:{entry.path}": entry.sha256 for entry in result.files})
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        raise _explain(exc, storage) from None
    return result
