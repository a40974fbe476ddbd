"""Where things are on the artist's machine: Windows' conventions next to POSIX's.

Pure functions of an environment mapping and a platform name (``sys.platform``
values), so the Windows rules are tested on any machine by feeding them a
Windows-style environment. Windows paths are built with ``ntpath`` whatever
the running system is.
"""
from __future__ import annotations

import logging
import ntpath
import os
import posixpath
import re
import sys
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

APP_DIR = "posefactory"
OPENSSH_MISSING = ("{tool} was not found on PATH nor in %WINDIR%\\System32\\OpenSSH: install Windows' "
                   "\"OpenSSH Client\" (Settings > System > Optional features) or put {tool} on PATH")


def is_windows(platform: str = sys.platform) -> bool:
    return platform == "win32"


def find_openssh_tool(tool: str, environ: Mapping[str, str] | None = None, platform: str = sys.platform,
                      is_file: Callable[[str], bool] = os.path.isfile) -> str:
    """The program to run for OpenSSH's ``tool`` (``ssh`` or ``sftp``).

    POSIX: the bare name, found on PATH when run. Windows: ``tool.exe`` from
    PATH, else the client Windows bundles in ``%WINDIR%\\System32\\OpenSSH``;
    a FileNotFoundError saying how to install it when neither has it.
    """
    if not is_windows(platform):
        return tool
    environ = os.environ if environ is None else environ
    name = tool if tool.lower().endswith(".exe") else f"{tool}.exe"
    folders = [entry.strip().strip('"') for entry in environ.get("PATH", "").split(";") if entry.strip()]
    windir = environ.get("WINDIR") or environ.get("SystemRoot") or "C:\\Windows"
    folders.append(ntpath.join(windir, "System32", "OpenSSH"))
    for folder in folders:
        candidate = ntpath.join(folder, name)
        if is_file(candidate):
            logger.debug("using %s", candidate)
            return candidate
    raise FileNotFoundError(OPENSSH_MISSING.format(tool=name))


_WINDOWS_VARIABLE = re.compile(r"%([^%]+)%")


def expand_user_path(path: str, environ: Mapping[str, str] | None = None, platform: str = sys.platform) -> str:
    """``~`` and environment variables in a path from the hosts file.

    Windows: ``~`` is ``%USERPROFILE%`` (else ``%HOMEDRIVE%%HOMEPATH%``),
    ``%NAME%`` and ``$NAME`` expand; backslashes and spaces are kept as
    they are. POSIX: ``~`` is ``$HOME`` and ``$NAME`` expands.
    """
    environ = os.environ if environ is None else environ
    if not is_windows(platform):
        expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: environ.get(m[1] or m[2], m[0]), path)
        if expanded == "~" or expanded.startswith("~/"):
            return _posix_home(environ) + expanded[1:]
        return os.path.expanduser(expanded)  # ~user
    expanded = _WINDOWS_VARIABLE.sub(lambda m: environ.get(m[1], m[0]), path)
    expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: environ.get(m[1] or m[2], m[0]), expanded)
    if expanded == "~" or expanded[:2] in ("~\\", "~/"):
        home = environ.get("USERPROFILE") or (environ.get("HOMEDRIVE", "") + environ.get("HOMEPATH", ""))
        if home:
            expanded = ntpath.join(home, expanded[2:]) if len(expanded) > 2 else home
    return expanded


def default_data_dir(environ: Mapping[str, str] | None = None, platform: str = sys.platform) -> str:
    """Pose Factory's state (queue, job records, ledger, the local pod) when
    ``POSEFACTORY_DATA_DIR`` does not say: ``%LOCALAPPDATA%\\posefactory`` on
    Windows (machine-local, not roamed), the XDG data dir elsewhere."""
    environ = os.environ if environ is None else environ
    if environ.get("POSEFACTORY_DATA_DIR"):
        return environ["POSEFACTORY_DATA_DIR"]
    if is_windows(platform):
        base = environ.get("LOCALAPPDATA") or ntpath.join(_windows_home(environ), "AppData", "Local")
        return ntpath.join(base, APP_DIR)
    base = environ.get("XDG_DATA_HOME") or posixpath.join(_posix_home(environ), ".local", "share")
    return posixpath.join(base, APP_DIR)


def default_config_dir(environ: Mapping[str, str] | None = None, platform: str = sys.platform) -> str:
    """Where settings a person edits live (``ssh_hosts.yaml``):
    ``%APPDATA%\\posefactory`` on Windows (roams with the profile), the XDG
    config dir elsewhere."""
    environ = os.environ if environ is None else environ
    if is_windows(platform):
        base = environ.get("APPDATA") or ntpath.join(_windows_home(environ), "AppData", "Roaming")
        return ntpath.join(base, APP_DIR)
    base = environ.get("XDG_CONFIG_HOME") or posixpath.join(_posix_home(environ), ".config")
    return posixpath.join(base, APP_DIR)


def _windows_home(environ: Mapping[str, str]) -> str:
    return environ.get("USERPROFILE") or (environ.get("HOMEDRIVE", "C:") + environ.get("HOMEPATH", "\\"))


def _posix_home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


# How RemoteShell reaches its shell process (remote/bridge/transport.py says what each is).
TRANSPORTS = ("pty", "pipe")


def default_transport(platform: str = sys.platform) -> str:
    """Pipes on Windows (no pseudo-terminals there), the PTY everywhere else."""
    return "pipe" if platform == "win32" else "pty"
