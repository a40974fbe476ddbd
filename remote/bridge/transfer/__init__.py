"""Moving files to and from a host that may only offer an interactive shell.

Transports (chosen per host by ``transfer:`` in ssh_hosts.yaml):

* ``inline``: base64 through the host's own PTY shell, in checksummed chunks,
  resumable. Works everywhere, RunPod's proxy included.
* ``sftp``: OpenSSH's ``sftp`` client for the bytes (hosts that allow it:
  RunPod's exposed TCP port); checks and renames go through the shell.
* ``s3``: S3-compatible storage (Cloudflare R2). The laptop holds the
  credentials; the pod only ever gets presigned URLs (see ``s3.py``).
* ``auto``: s3 when storage is configured, sftp when the host is not
  interactive-only, else inline.

Every transport shares the same guarantees: content already at the
destination (same sha256) moves 0 bytes; data is written under a temporary
name and only renamed to its final name once its sha256 matches; a download
never writes outside its destination folder.
"""
from __future__ import annotations

from pathlib import Path

from ...core.config import HostConfig
from ..shell import RemoteShell, ShellDisconnected
from .common import (
    BucketMissing,
    ChecksumMismatch,
    FileEntry,
    RemoteDiskFull,
    StorageCredentialsRejected,
    TransferError,
    TransferInterrupted,
    TransferResult,
)

__all__ = ["BucketMissing", "ChecksumMismatch", "FileEntry", "RemoteDiskFull", "StorageCredentialsRejected",
           "TransferError", "TransferInterrupted", "TransferResult", "choose_transport", "put", "put_many", "get"]


def choose_transport(host: HostConfig) -> str:
    if host.transfer != "auto":
        return host.transfer
    if host.storage is not None:
        return "s3"
    if not host.interactive_only and not host.is_local:
        return "sftp"
    return "inline"


def _module(transport: str):
    if transport == "inline":
        from . import inline
        return inline
    if transport == "sftp":
        from . import sftp
        return sftp
    if transport == "s3":
        from . import s3
        return s3
    raise TransferError(f"unknown transport {transport!r}")


def put(shell: RemoteShell, src: Path | str, dst: str) -> TransferResult:
    """Upload local file ``src`` to ``dst`` on the shell's host (``dst/`` keeps the name)."""
    return put_many(shell, [(Path(src), dst)])


def put_many(shell: RemoteShell, pairs: list[tuple[Path, str]]) -> TransferResult:
    """Upload each local file to its destination (as :func:`put`), in one go where the
    transport can (sftp: one session for all); the same call resumes after a drop."""
    checked_pairs = []
    for src, dst in pairs:
        src = Path(src)
        if not src.is_file():
            raise TransferError(f"local file not found: {src}" if not src.exists() else f"not a regular file: {src}")
        checked_pairs.append((src, dst + src.name if dst.endswith("/") else dst))
    module = _module(choose_transport(shell.host))
    names = ", ".join(src.name for src, _ in checked_pairs[:3]) + (" …" if len(checked_pairs) > 3 else "")
    try:
        if hasattr(module, "put_many"):
            return module.put_many(shell, checked_pairs)
        result = TransferResult(choose_transport(shell.host))
        for src, dst in checked_pairs:
            moved = module.put(shell, src, dst)
            result.bytes_moved += moved.bytes_moved
            result.files.extend(moved.files)
            result.transport = moved.transport
        return result
    except ShellDisconnected as exc:
        raise TransferInterrupted(f"uploading {names}: {exc}; run the same put again to resume") from None
    except OSError as exc:  # this machine's side: unreadable source
        raise TransferError(f"uploading {exc.filename or names}: {exc.strerror or exc}") from None


def get(shell: RemoteShell, src: str, dst: Path | str) -> TransferResult:
    """Download the remote file or glob ``src`` into local folder ``dst``."""
    try:
        return _module(choose_transport(shell.host)).get(shell, src, Path(dst))
    except ShellDisconnected as exc:
        raise TransferInterrupted(f"downloading {src}: {exc}; run the same get again to resume") from None
    except OSError as exc:  # this machine's side: a destination that is not a folder, a full disk
        raise TransferError(f"downloading {src} into {dst}: {exc.strerror or exc}"
                            + (f" ({exc.filename})" if exc.filename else "")) from None
