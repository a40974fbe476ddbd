"""Quoting for the remote shell: every path or value put into a pod command goes through :func:`q`."""
from __future__ import annotations

import shlex


def q(text: str) -> str:
    """Quote a path or value for the remote shell."""
    return shlex.quote(text)
