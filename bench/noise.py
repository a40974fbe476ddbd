"""Incompressible test images for the benches: sizes moved and stored are honest."""
from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path


def noisy_png(path: Path, side: int, seed: int | None = None) -> None:
    """An RGB PNG of random pixels (a given ``seed``: the same bytes each run; none: new ones)."""
    generator = random.Random(seed)
    rows = b"".join(b"\x00" + generator.randbytes(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1))
                     + chunk(b"IEND", b""))
