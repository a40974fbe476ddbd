"""What a scene's upload moved, said the same way by the CLI, the add-on and
the dashboard ("scene: 3 files, 4.7 kB moved of 44.4 MB"), and kept in the
job record."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.pod_output import clean_text


@dataclass
class SceneShipment:
    files: int
    total_bytes: int
    bytes_moved: int
    sent_files: int
    delta: bool  # the .blend went as a patch
    transport: str

    def summary(self) -> str:
        how = ", the .blend as a delta" if self.delta else ""
        return (f"scene: {self.files} file{'s' if self.files != 1 else ''}, {human_bytes(self.bytes_moved)} moved "
                f"of {human_bytes(self.total_bytes)}{how} ({self.transport})")

    def to_json_dict(self) -> dict[str, int | bool | str]:
        return {"files": self.files, "total_bytes": self.total_bytes, "bytes_moved": self.bytes_moved,
                "sent_files": self.sent_files, "delta": self.delta, "transport": self.transport}


def shipment_from_record(data: object) -> SceneShipment | None:
    """A job record's ``scene`` entry, checked (None when absent or not plausible)."""
    if not isinstance(data, dict):
        return None
    counts = {k: data.get(k) for k in ("files", "total_bytes", "bytes_moved", "sent_files")}
    if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 1 << 62 for c in counts.values()):
        return None
    transport = data.get("transport")
    return SceneShipment(**counts, delta=data.get("delta") is True,  # type: ignore[arg-type]
                         transport=clean_text(transport, 16) if isinstance(transport, str) else "?")


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
