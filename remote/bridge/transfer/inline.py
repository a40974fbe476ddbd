"""Files through the interactive shell itself, as base64 text.

Why base64: the PTY would mangle raw bytes (``\\n`` → ``\\r\\n``, control
characters) and cuts input lines at 4096 bytes; base64 text typed in short
lines passes unchanged, and the shell's output side is already exact.

Upload: the file goes in chunks of ``CHUNK`` bytes. Each chunk is one shell
command that decodes it into a chunk file, checks its sha256 there, and only
then appends it to ``DST.pf-part-<sha prefix>``. After the last chunk the
whole file's sha256 is checked and the part renamed to ``DST``. A dropped
connection is retried (reconnecting) and resumes after the last verified
chunk; a failure that retrying cannot fix removes the part file.

Download: chunks are read with ``tail -c +OFFSET | head -c CHUNK``, sent
base64-encoded with their sha256, verified here and appended to a hidden
part file next to the target; the whole file is verified before the rename.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from ...core.quoting import q
from ..shell import RemoteShell
from .common import (
    ChecksumMismatch,
    FileEntry,
    RemoteDiskFull,
    TransferError,
    TransferInterrupted,
    TransferResult,
    checked,
    download_each,
    finish_upload_script,
    open_part,
    part_path,
    remote_sha256,
    sha256_file,
)

CHUNK = 1 << 20
DOWNLOAD_CHUNK = 4 << 20
DOWNLOAD_WINDOW = 8  # chunks per command; a dropped connection loses at most one window
ATTEMPTS = 3  # per chunk: a dropped connection or a corrupted chunk is retried


def _remote_part(dst: str, sha: str) -> str:
    return f"{dst}.pf-part-{sha[:16]}"


def put(shell: RemoteShell, src: Path, dst: str, *, chunk_size: int = CHUNK) -> TransferResult:
    sha, size = sha256_file(src), src.stat().st_size
    result = TransferResult("inline", files=[FileEntry(dst, sha, size)])
    if remote_sha256(shell, dst) == sha:
        return result
    part = _remote_part(dst, sha)
    checked(shell.run(f"mkdir -p -- \"$(dirname -- {q(dst)})\"", timeout=60), f"creating the folder of {dst}")
    offset = _resume_offset(shell, part, chunk_size)
    with open(src, "rb") as handle:
        handle.seek(offset)
        while offset < size:
            data = handle.read(chunk_size)
            _send_chunk(shell, part, offset, data)
            offset += len(data)
            result.bytes_moved += len(data)
    if size == 0:
        checked(shell.run(f": > {q(part)}", timeout=60), f"writing {dst}")
    final = shell.run(finish_upload_script(part, dst, sha), timeout=600)
    if not final.ok:
        shell.run(f"rm -f -- {q(part)}", timeout=60)
        raise ChecksumMismatch(f"{dst}: the uploaded file's sha256 does not match {src.name}; nothing was kept")
    return result


def _resume_offset(shell: RemoteShell, part: str, chunk_size: int) -> int:
    """Bytes of verified chunks already in the remote part file."""
    found = checked(shell.run(f"stat -L -c %s -- {q(part)} 2>/dev/null || echo 0", timeout=60), f"checking {part}")
    size = int(found.stdout.strip() or 0)
    aligned = size - size % chunk_size
    if size != aligned:
        checked(shell.run(f"truncate -s {aligned} -- {q(part)}", timeout=60), f"resuming {part}")
    return aligned


def _send_chunk(shell: RemoteShell, part: str, offset: int, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    # Typed as the command's stdin in base64's 76-column lines, well inside
    # the line limit that holds until the pod's terminal leaves canonical mode.
    encoded = base64.encodebytes(data).decode("ascii")
    # The chunk is decoded to its own file, checked, then appended at exactly
    # ``offset`` (a retried chunk after a drop must not be appended twice).
    command = (
        f"part={q(part)}; chunk=\"$part.chunk\"; "
        f"base64 -d > \"$chunk\" && "
        f"[ \"$(sha256sum < \"$chunk\" | cut -c1-64)\" = {digest} ] || {{ rm -f -- \"$chunk\"; echo 'chunk checksum mismatch' >&2; exit 9; }}; "
        f"[ -e \"$part\" ] || : > \"$part\"; "
        f"truncate -s {offset} -- \"$part\" 2>/dev/null; "
        f"cat -- \"$chunk\" >> \"$part\"; rc=$?; rm -f -- \"$chunk\"; exit $rc"
    )
    for attempt in range(1, ATTEMPTS + 1):
        outcome = shell.run(command, timeout=120, typed_input=encoded)
        if outcome.ok:
            return
        if "No space left on device" in (outcome.stderr or ""):
            # A chunk that could not be written is not a corrupted one: retrying cannot help.
            shell.run(f"rm -f -- {q(part)} {q(part)}.chunk", timeout=60)
            raise RemoteDiskFull(f"uploading {part}: the remote disk is full (No space left on device)")
        if outcome.status == "disconnected" and attempt < ATTEMPTS:
            continue  # the next run reconnects; the part file is still there
        if outcome.exit_code == 9 and attempt < ATTEMPTS:
            continue
        if outcome.status == "disconnected":
            raise TransferInterrupted(
                f"uploading {part}: connection lost {ATTEMPTS} times; the verified part is kept and the next put resumes it")
        shell.run(f"rm -f -- {q(part)} {q(part)}.chunk", timeout=60)  # a failure leaves no temp files
        if outcome.exit_code == 9:
            raise ChecksumMismatch(f"uploading {part}: chunk at byte {offset} arrived corrupted {ATTEMPTS} times")
        checked(outcome, f"uploading {part} at byte {offset}")


def get(shell: RemoteShell, src: str, dst: Path) -> TransferResult:
    return download_each(shell, src, dst, "inline",
                         lambda entry, target, first_try: _download(shell, entry, target, resume=first_try))


def _download(shell: RemoteShell, entry: FileEntry, target: Path, *, resume: bool) -> int:
    fd, offset = open_part(target, resume)
    moved = 0
    try:
        offset -= offset % DOWNLOAD_CHUNK
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        while offset < entry.size:
            chunks = _fetch_window(shell, entry.path, offset, entry.size)
            if not chunks:
                raise TransferError(f"{entry.path}: the file shrank while it was being downloaded")
            for data in chunks:
                os.write(fd, data)
                offset += len(data)
                moved += len(data)
    except TransferInterrupted:
        raise  # the verified part stays for the next get to resume
    except (TransferError, OSError):
        part_path(target).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return moved


def _fetch_window(shell: RemoteShell, path: str, offset: int, size: int) -> list[bytes]:
    """The verified chunks of up to DOWNLOAD_WINDOW chunks from ``offset`` on.

    One command sends the whole window (a sha256 line, then a base64 line,
    per chunk), so the round trip is paid once per window, not per chunk.
    Chunks up to the first corrupted one are kept; the rest is asked again.
    """
    count = min(DOWNLOAD_WINDOW, -(-(size - offset) // DOWNLOAD_CHUNK))
    command = (
        f"f={q(path)}; t=\"$__pf_err.dl\"; rc=0; for i in $(seq 0 {count - 1}); do "
        f"tail -c +$(( {offset} + i * {DOWNLOAD_CHUNK} + 1 )) -- \"$f\" | head -c {DOWNLOAD_CHUNK} > \"$t\" "
        '|| { rc=$?; break; }; sha256sum < "$t" | cut -c1-64; base64 -w0 < "$t"; echo; done; '
        'rm -f -- "$t"; exit $rc'
    )
    for attempt in range(1, ATTEMPTS + 1):
        outcome = shell.run(command, timeout=300)
        if outcome.ok:
            lines = outcome.stdout.split("\n")
            verified = []
            for digest, encoded in zip(lines[0::2], lines[1::2]):
                data = base64.b64decode(encoded)
                if hashlib.sha256(data).hexdigest() != digest or not data:
                    break
                verified.append(data)
            if verified or lines == [""] or attempt == ATTEMPTS:
                if not verified and lines != [""]:
                    raise ChecksumMismatch(f"{path}: chunk at byte {offset} arrived corrupted {ATTEMPTS} times")
                return verified
            continue
        if outcome.status == "disconnected" and attempt < ATTEMPTS:
            continue
        checked(outcome, f"downloading {path} at byte {offset}")
    raise TransferError(f"downloading {path}: gave up at byte {offset}")
