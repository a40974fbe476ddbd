"""The SSH key pair Pose Factory gives the pods it creates.

One ed25519 pair in the user config dir (``runpod/id_ed25519``, private key
mode 600), made by OpenSSH's ``ssh-keygen`` on first use. Its public half
goes to a new pod as ``PUBLIC_KEY``, which RunPod's official images write
to ``authorized_keys`` before they start sshd; the private half never
leaves this machine.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.config import created_hosts_file
from ..core.platforms import find_openssh_tool, is_windows
from .records import RunPodError

log = logging.getLogger(__name__)

KEY_FILE = "id_ed25519"


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: str  # one authorized_keys line: "ssh-ed25519 AAAA… posefactory@host"


def keys_dir() -> Path:
    return created_hosts_file().parent


def _keygen(*args: str) -> str:
    try:
        completed = subprocess.run([find_openssh_tool("ssh-keygen"), *args], capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunPodError(f"cannot run ssh-keygen to make the pods' SSH key ({exc}); install OpenSSH's client") from None
    if completed.returncode != 0:
        raise RunPodError(f"ssh-keygen failed: {(completed.stderr or completed.stdout).strip()[:200]}")
    return completed.stdout


def ensure_key_pair(folder: Path | None = None) -> KeyPair:
    """The product's key pair, made now when there is none."""
    folder = folder or keys_dir()
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / KEY_FILE
    public = folder / f"{KEY_FILE}.pub"
    if not private.is_file():
        # Made under a temporary name and moved into place: an interrupted run never leaves half a pair.
        partial = folder / f".{KEY_FILE}.new-{os.getpid()}"
        for leftover in (partial, partial.with_name(partial.name + ".pub")):
            leftover.unlink(missing_ok=True)
        _keygen("-q", "-t", "ed25519", "-N", "", "-C", f"posefactory@{socket.gethostname()[:40]}", "-f", str(partial))
        os.replace(partial.with_name(partial.name + ".pub"), public)
        os.replace(partial, private)
        log.info("made the pods' SSH key pair %s", private)
    if not is_windows():
        private.chmod(0o600)  # ssh refuses a private key others can read
    if not public.is_file():
        public.write_text(_keygen("-y", "-f", str(private)))
    line = public.read_text(encoding="utf-8").strip()
    if not line.startswith("ssh-ed25519 ") or "\n" in line:
        raise RunPodError(f"{public}: not an ed25519 public key; delete {private} and its .pub to make a new pair")
    return KeyPair(private, line)
