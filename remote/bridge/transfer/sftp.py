"""Files over OpenSSH's ``sftp`` client, for hosts that allow it (RunPod's
exposed TCP port). The bytes go through sftp; checksums and the final rename
go through the host's shell, so the guarantees match the other transports.
A dropped connection keeps the part file; the next call resumes it with
sftp's ``reput``/``reget``, and the whole-file sha256 still decides."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ...core.platforms import find_openssh_tool
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
    part_path,
    remote_sha256,
    sha256_file,
)

LOST_CONNECTION = ("Connection closed", "Connection reset", "Broken pipe", "Connection to ")


def _sftp(shell: RemoteShell, commands: list[str]) -> None:
    host = shell.host
    ssh_argv = host.ssh_command()
    # sftp takes the same -o options as ssh; the destination and -tt/-e do not apply.
    options = [arg for arg in ssh_argv[1:-1] if arg not in ("-tt",)]
    options = _drop_pairs(options, {"-e", "-p"})
    argv = [find_openssh_tool("sftp"), "-b", "-", "-P", str(host.port), *options, ssh_argv[-1]]
    script = "".join(f"{line}\n" for line in commands)
    completed = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=3600)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        message = detail[-1] if detail else f"sftp exited with {completed.returncode}"
        if "No space left" in completed.stderr or "Failure" in message and "write" in completed.stderr.lower():
            raise RemoteDiskFull(f"sftp: the remote disk is full ({message})")
        # sftp names every remote refusal on stderr; killed mid-transfer it may
        # exit with nothing said at all.
        lost = completed.returncode == 255 or not completed.stderr.strip()
        if lost or any(sign in completed.stderr for sign in LOST_CONNECTION):
            raise TransferInterrupted(f"sftp to {host.name}: connection lost ({message}); the same call resumes")
        raise TransferError(f"sftp to {host.name}: {message}")


def _drop_pairs(args: list[str], flags: set[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            kept.append(arg)
    return kept


def _sftp_quote(path: str) -> str:
    """sftp's batch syntax: double quotes, with \\ and " escaped.

    A line break would end the batch command and start another (``!cmd``
    runs a local shell command), so paths holding one are refused.
    """
    if "\n" in path or "\r" in path:
        raise TransferError(f"refusing {path!r}: sftp cannot take a path with a line break")
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def put(shell: RemoteShell, src: Path, dst: str) -> TransferResult:
    return put_many(shell, [(src, dst)])


def put_many(shell: RemoteShell, pairs: list[tuple[Path, str]]) -> TransferResult:
    """Upload each ``(src, dst)``, all through one ``sftp`` session: each session is a
    new ssh connection (a handshake, a few hundred ms), which a scene of many
    textures would otherwise pay per file."""
    result = TransferResult("sftp")
    todo = []
    for src, dst in pairs:
        sha, size = sha256_file(src), src.stat().st_size
        result.files.append(FileEntry(dst, sha, size))
        if remote_sha256(shell, dst) != sha:
            checked(shell.run(f"mkdir -p -- \"$(dirname -- {q(dst)})\"", timeout=60), f"creating the folder of {dst}")
            todo.append((src, dst, sha, size, f"{dst}.pf-part-{sha[:16]}"))
    for attempt in (1, 2):  # a checksum mismatch gets one retry, from scratch
        if not todo:
            return result
        commands = []
        for src, _, _, size, part in todo:
            found = checked(shell.run(f"p={q(part)}; [ -f \"$p\" ] && [ ! -L \"$p\" ] && stat -c %s -- \"$p\" || echo 0",
                                      timeout=60), f"checking {part}")
            kept = int(found.stdout.strip() or 0) if attempt == 1 else 0
            # reput appends to what an interrupted put left (sftp's own resume).
            verb = "reput" if 0 < kept <= size else "put"
            commands.append(f"{verb} {_sftp_quote(str(src))} {_sftp_quote(part)}")
            result.bytes_moved += size - (kept if verb == "reput" else 0)
        try:
            _sftp(shell, commands)
        except TransferInterrupted:
            raise  # the parts stay for the next put to resume
        except TransferError:
            shell.run(" ; ".join(f"rm -f -- {q(part)}" for *_, part in todo), timeout=60)
            raise
        mismatched = []
        for entry in todo:
            _, dst, sha, _, part = entry
            if not shell.run(finish_upload_script(part, dst, sha), timeout=600).ok:
                shell.run(f"rm -f -- {q(part)}", timeout=60)
                mismatched.append(entry)
        todo = mismatched
    raise ChecksumMismatch(f"{todo[0][1]}: sha256 mismatch after upload, twice; nothing was kept")


def get(shell: RemoteShell, src: str, dst: Path) -> TransferResult:
    def fetch(entry: FileEntry, target: Path, first_try: bool) -> int:
        part = part_path(target)
        if not first_try or part.is_symlink() or not part.is_file():
            part.unlink(missing_ok=True)  # never write through a link someone left here
        kept = part.stat().st_size if part.is_file() else 0
        # reget appends to what an interrupted get left (sftp's own resume).
        verb = "reget" if 0 < kept <= entry.size else "get"
        try:
            _sftp(shell, [f"{verb} {_sftp_quote(entry.path)} {_sftp_quote(str(part))}"])
        except TransferInterrupted:
            raise  # the part stays for the next get to resume
        except TransferError:
            part.unlink(missing_ok=True)
            raise
        return entry.size - (kept if verb == "reget" else 0)

    return download_each(shell, src, dst, "sftp", fetch)
