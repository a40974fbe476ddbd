"""Keep secrets out of results and logs.

Output is redacted as raw bytes, before any choice of encoding (UTF-8 text
or base64 for output that is not UTF-8), so no encoding can carry a secret
past it.

A secret is any value of a request's ``env``, any value of a host's ``env``
whose name is listed in ``secret_names``, and the value of each environment
variable named in ``secret_names`` (``STABILITY_API_KEY`` and friends).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .config import HostConfig

REDACTED = "[REDACTED]"
# Shorter values ("1", "yes") would blank out ordinary output and protect nothing.
MIN_SECRET_LENGTH = 4


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    @classmethod
    def for_request(cls, host: HostConfig, env: Mapping[str, str] | None = None) -> Redactor:
        return cls([*(env or {}).values(), *_host_secrets(host)])

    @classmethod
    def for_hosts(cls, hosts: Iterable[HostConfig]) -> Redactor:
        return cls([secret for host in hosts for secret in _host_secrets(host)])

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        """Secrets removed from raw output, before it is decoded or encoded in any way.

        Each secret is matched as its UTF-8 bytes, so a secret inside output
        that is not UTF-8 as a whole (and will be stored as base64) is removed too.
        """
        for secret in self._secrets:
            data = data.replace(secret.encode("utf-8", "surrogateescape"), REDACTED.encode())
        return data


def _host_secrets(host: HostConfig) -> list[str]:
    values = [v for k, v in host.env.items() if k in host.secret_names]
    return values + [os.environ[name] for name in host.secret_names if os.environ.get(name)]
