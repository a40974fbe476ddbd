"""What every transport shares: results, errors, checksums, remote checks and
the safety rules for downloads."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...core.hashing import sha256_file
from ...core.quoting import q
from ..shell import CommandResult, RemoteShell

PART_SUFFIX = ".pf-part"


class TransferError(RuntimeError):
    """A transfer that did not complete; the message says why and what was kept."""


class RemoteDiskFull(TransferError):
    pass


class ChecksumMismatch(TransferError):
    pass


class TransferInterrupted(TransferError):
    """The connection dropped; what was verified is kept and the same call resumes."""


class StorageCredentialsRejected(TransferError):
    """Storage credentials missing or refused (the message never holds them)."""


class BucketMissing(TransferError):
    pass


@dataclass
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass
class TransferResult:
    transport: str
    bytes_moved: int = 0
    files: list[FileEntry] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        return {"transport": self.transport, "bytes_moved": self.bytes_moved,
                "files": [asdict(entry) for entry in self.files]}


def checked(result: CommandResult, what: str) -> CommandResult:
    """``result`` when it succeeded; a TransferError naming the cause otherwise."""
    if result.status == "ok":
        return result
    if result.status == "disconnected":
        raise TransferInterrupted(f"{what}: connection lost ({result.error})")
    detail = (result.stderr or result.error or "").strip()
    if "No space left on device" in detail:
        raise RemoteDiskFull(f"{what}: the remote disk is full ({detail.splitlines()[-1]})")
    raise TransferError(f"{what}: {detail or f'exit code {result.exit_code}'}")


def _sum_file(path: str) -> str:
    """The hidden file next to a remote ``path`` recording its sha256 with its
    size, modification time and inode when it was hashed."""
    folder, _, name = path.rpartition("/")
    return f"{folder}/.{name}.pf-sha256" if folder or path.startswith("/") else f".{name}.pf-sha256"


_REMOTE_STAT = 'stat -L -c "%s %y %i" -- "$f"'


def finish_upload_script(part: str, dst: str, sha: str) -> str:
    """Shell text: verify the uploaded ``part``, rename it to ``dst`` and record
    its sha256 (a failure to record only costs a re-hash later)."""
    return (f"f={q(dst)}; [ \"$(sha256sum -- {q(part)} | cut -c1-64)\" = {sha} ] && mv -f -- {q(part)} \"$f\" && "
            f"{{ {{ printf '%s %s\\n' {sha} \"$({_REMOTE_STAT})\" > {q(_sum_file(dst))}; }} 2>/dev/null; true; }}")


def remote_sha256(shell: RemoteShell, path: str) -> str | None:
    """sha256 of a remote regular file, or None when there is none.

    The recorded sum is trusted while size, modification time and inode are
    unchanged; otherwise the file is hashed again and the record refreshed.
    """
    script = (
        f"f={q(path)}; s={q(_sum_file(path))}; [ -f \"$f\" ] || exit 1; now=\"$({_REMOTE_STAT})\"; "
        'if [ -f "$s" ] && { read -r sum seen < "$s"; } 2>/dev/null && [ "$seen" = "$now" ]; then echo "$sum"; exit 0; fi; '
        'sum="$(sha256sum -- "$f" | cut -c1-64)" && echo "$sum" && '
        '{ { printf "%s %s\n" "$sum" "$now" > "$s"; } 2>/dev/null; true; }'
    )
    result = shell.run(script, timeout=600)
    if result.status == "disconnected":
        raise TransferInterrupted(f"checking {path}: connection lost ({result.error})")
    text = result.stdout.strip()
    return text if result.ok and len(text) == 64 else None


def list_remote(shell: RemoteShell, pattern: str) -> list[FileEntry]:
    """Regular files matching ``pattern`` (a path or glob) with sha256 and size.

    Symbolic links are refused: what they point at is not the caller's to read.
    """
    script = (
        f"pattern={q(pattern)}; found=0; "
        'while IFS= read -r f; do found=1; '
        'if [ -L "$f" ]; then echo "refusing symbolic link: $f" >&2; exit 3; fi; '
        '[ -f "$f" ] || continue; '
        'printf "%s %s %s\\n" "$(sha256sum -- "$f" | cut -c1-64)" "$(stat -c %s -- "$f")" "$f"; '
        'done < <(compgen -G "$pattern"); '
        '[ $found = 1 ] || { echo "no remote file matches $pattern" >&2; exit 2; }'
    )
    result = checked(shell.run(script, timeout=600), f"listing {pattern}")
    entries = []
    for line in result.stdout.splitlines():
        sha, size, path = line.split(" ", 2)
        entries.append(FileEntry(path=path, sha256=sha, size=int(size)))
    if not entries:
        raise TransferError(f"listing {pattern}: matches no regular file")
    return entries


def safe_destination(dst_dir: Path, remote_path: str) -> Path:
    """Where a downloaded file may be written: inside ``dst_dir``, never elsewhere."""
    name = remote_path.rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise TransferError(f"refusing to download {remote_path!r}: unsafe file name")
    dst_dir.mkdir(parents=True, exist_ok=True)
    root = dst_dir.resolve()
    target = root / name
    if target.parent != root:
        raise TransferError(f"refusing to download {remote_path!r}: it would land outside {dst_dir}")
    return target


def open_part(target: Path, resume: bool) -> tuple[int, int]:
    """Open the temporary file for ``target``; returns (fd, bytes already there)."""
    part = target.with_name(f".{target.name}{PART_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (0 if resume else os.O_TRUNC)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as exc:
        raise TransferError(f"cannot write {part}: {exc.strerror}") from None
    return fd, os.fstat(fd).st_size


def part_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def finish_download(target: Path, expected_sha: str) -> None:
    """Rename the verified temporary file to ``target`` (replacing a link, never following it)."""
    part = part_path(target)
    actual = sha256_file(part)
    if actual != expected_sha:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{target.name}: sha256 {actual[:12]}… does not match the source's {expected_sha[:12]}…")
    os.replace(part, target)


def local_matches(target: Path, sha: str) -> bool:
    return target.is_file() and not target.is_symlink() and sha256_file(target) == sha


def download_each(shell: RemoteShell, src: str, dst_dir: Path, transport: str,
                  fetch: Callable[[FileEntry, Path, bool], int]) -> TransferResult:
    """Download every remote file matching ``src`` into ``dst_dir``.

    ``fetch(entry, target, first_try)`` writes the part file of ``target`` and
    returns the bytes it moved; this checks, renames, skips files already
    here, and gives a whole-file checksum mismatch its one retry.
    """
    result = TransferResult(transport)
    for entry in list_remote(shell, src):
        target = safe_destination(dst_dir, entry.path)
        result.files.append(FileEntry(str(target), entry.sha256, entry.size))
        if local_matches(target, entry.sha256):
            continue
        for first_try in (True, False):
            result.bytes_moved += fetch(entry, target, first_try)
            try:
                finish_download(target, entry.sha256)
                break
            except ChecksumMismatch:
                if not first_try:
                    raise
    return result
