"""What every AI backend is and returns (the modules of this package implement it; ``create`` in
``__init__`` picks one by the job's backend name)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Variation:
    n: int  # 1-based variation number
    seed: int
    finish_reason: str  # SUCCESS | CONTENT_FILTERED | ERROR
    png: bytes | None = field(default=None, repr=False)  # the image, when usable

    @property
    def usable(self) -> bool:
        return self.finish_reason == "SUCCESS" and self.png is not None


class Backend(Protocol):
    name: str

    def check_ready(self) -> None:
        """Raise ``JobFailed`` when the backend cannot run (no key, no model)."""

    def generate(self, init_png: Path, controls: Mapping[str, Path]) -> list[Variation]:
        """Turn the render into the job's variations; raise ``JobFailed`` on failure.

        ``controls``: the control images written for the job ({"openpose": path, "depth": path}).
        """

    def stats(self) -> dict[str, Any]:
        """Figures for the manifest (attempts, load times), also after a failure."""
