"""Reading a .blend's header and blocks without Blender (no ``bpy``).

* :func:`saved_version`: which Blender saved a file (the CLI's job carries it
  without opening the file in Blender).
* :func:`canonicalize`: Blender writes fixed-size strings with whatever
  memory followed their NUL (measured on 5.0.1: the scene-linear colour
  space name, packed images' paths) and screen edges in memory-address
  order, so the same scene packs to different bytes in every process.
  Canonical bytes make packing reproducible, which the pod's
  content-addressed scenes need.

Both header layouts are read: ``BLENDER-v402`` (12 bytes, 24-byte block
heads) and Blender 5's ``BLENDER17-01v0500`` (17 bytes, 32-byte block heads).
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class BlendFileError(ValueError):
    """Not a .blend this module can read; the message says why."""


@dataclass(frozen=True)
class Header:
    version: tuple[int, int]  # (major, minor), e.g. (5, 0)
    header_size: int
    pointer_size: int
    little_endian: bool
    large_bheads: bool  # Blender 5's 64-bit block lengths


def read_header(data: bytes) -> Header:
    if data[:2] == b"\x1f\x8b" or data[:4] == b"\x28\xb5\x2f\xfd":
        raise BlendFileError("a compressed .blend (gzip or zstd): its header is inside the compressed data")
    if not data.startswith(b"BLENDER"):
        raise BlendFileError("not a .blend file (no BLENDER header)")
    if data[7:8] in (b"-", b"_"):  # BLENDER-v402: pointer size, endianness, 3-digit version
        pointer, endian, digits = data[7:8], data[8:9], data[9:12]
        header_size, large = 12, False
    else:  # BLENDER17-01v0500: header size, format version, endianness, 4-digit version
        try:
            header_size = int(data[7:9])
        except ValueError:
            raise BlendFileError("unknown .blend header layout") from None
        if data[9:10] != b"-" or data[10:12] != b"01":
            raise BlendFileError(f"unknown .blend header format {data[9:12]!r}")
        pointer, endian, digits, large = b"-", data[12:13], data[13:17], True
    if endian not in (b"v", b"V") or not digits.isdigit():
        raise BlendFileError("unreadable .blend header")
    number = int(digits)
    version = (number // 100, number % 100)
    return Header(version, header_size, 8 if pointer == b"-" else 4, endian == b"v", large)


def saved_version(path: Path) -> tuple[int, int]:
    """The (major, minor) Blender version that saved ``path``, from its first bytes (compressed or not)."""
    with open(path, "rb") as handle:
        start = handle.read(4)
        handle.seek(0)
        if start[:2] == b"\x1f\x8b":  # gzip: Blender before 3.0
            import gzip

            with gzip.open(handle) as unpacked:
                return read_header(unpacked.read(32)).version
        if start == b"\x28\xb5\x2f\xfd":  # zstd: Blender 3.0 and later
            try:
                import zstandard
            except ImportError:
                raise BlendFileError("a zstd-compressed .blend: reading its version needs the zstandard "
                                     "package (pip install zstandard)") from None
            with zstandard.ZstdDecompressor().stream_reader(handle) as unpacked:
                return read_header(unpacked.read(32)).version
        return read_header(handle.read(32)).version


def _blocks(data: bytes, header: Header):
    """(code, sdna index, data offset, data length) of every block."""
    order = "<" if header.little_endian else ">"
    ptr = "Q" if header.pointer_size == 8 else "I"
    if header.large_bheads:
        layout = struct.Struct(order + "4si" + "Q" + "q" + "q")  # code, sdna, old, len, nr
    else:
        layout = struct.Struct(order + "4si" + ptr + "ii")  # code, len, old, sdna, nr
    offset = header.header_size
    while offset + layout.size <= len(data):
        fields = layout.unpack_from(data, offset)
        code = fields[0]
        sdna, length = (fields[1], fields[3]) if header.large_bheads else (fields[3], fields[1])
        start = offset + layout.size
        if length < 0 or start + length > len(data):
            raise BlendFileError(f"block {code!r} at {offset} runs past the end of the file")
        yield code, sdna, start, length
        if code == b"ENDB":
            return
        offset = start + length


@dataclass(frozen=True)
class Field:
    type: str
    name: str
    offset: int
    size: int  # bytes, all array items together

    @property
    def is_string(self) -> bool:
        # Names and paths: Blender's fixed-size strings are at least 64 bytes (MAX_NAME).
        return self.type == "char" and "[" in self.name and self.size >= 64


def _sdna(dna: bytes, header: Header) -> tuple[list[tuple[str, list[Field]]], dict[str, int]]:
    """The file's own SDNA: each struct's (name, size) by index, with its fields, and type sizes."""
    order = "<" if header.little_endian else ">"
    position = 8  # "SDNA" "NAME"

    def count() -> int:
        nonlocal position
        value = struct.unpack_from(order + "i", dna, position)[0]
        position += 4
        return value

    def strings(n: int) -> list[str]:
        nonlocal position
        out = []
        for _ in range(n):
            end = dna.index(b"\0", position)
            out.append(dna[position:end].decode("latin-1"))
            position = end + 1
        position = (position + 3) & ~3
        return out

    names = strings(count())
    position += 4  # "TYPE"
    types = strings(count())
    position += 4  # "TLEN"
    lengths = struct.unpack_from(order + f"{len(types)}h", dna, position)
    position = (position + 2 * len(types) + 3) & ~3
    position += 4  # "STRC"
    structs: list[tuple[str, list[Field]]] = []
    for _ in range(count()):
        type_index, n_fields = struct.unpack_from(order + "hh", dna, position)
        position += 4
        members = struct.unpack_from(order + f"{2 * n_fields}h", dna, position)
        position += 4 * n_fields
        fields, offset = [], 0
        for field_type, field_name in zip(members[::2], members[1::2]):
            name = names[field_name]
            size = header.pointer_size if name.startswith(("*", "(*")) else lengths[field_type]
            items = 1
            for dim in name.split("[")[1:]:
                items *= int(dim.rstrip("]"))
            fields.append(Field(types[field_type], name, offset, size * items))
            offset += size * items
        structs.append((types[type_index], fields))
    return structs, {name: lengths[i] for i, name in enumerate(types)}


def canonicalize(path: Path) -> bool:
    """Make a .blend Blender just wrote byte-for-byte reproducible; returns whether it changed.

    * the bytes after the NUL of fixed-size strings (names, paths) are zeroed:
      Blender writes whatever memory followed the string;
    * a screen edge's two vertices are put in file-address order: Blender
      orders them by their memory addresses, which differ in every process.

    Neither changes what the file means to Blender.
    """
    data = bytearray(path.read_bytes())
    header = read_header(bytes(data[:32]))
    blocks = list(_blocks(bytes(data), header))
    dna = next((bytes(data[start:start + length]) for code, _, start, length in blocks if code == b"DNA1"), None)
    if dna is None:
        raise BlendFileError("no DNA1 block")
    structs, type_sizes = _sdna(dna, header)
    by_name = {name: fields for name, fields in structs}
    before = bytes(data)

    def clean(fields: list[Field], base: int) -> None:
        for field in fields:
            at = base + field.offset
            if field.is_string:
                end = data.find(b"\0", at, at + field.size)
                if end >= 0:
                    data[end:at + field.size] = bytes(at + field.size - end)
            elif field.type in by_name and not field.name.startswith(("*", "(*")) and any(
                    f.is_string or f.type in by_name for f in by_name[field.type]):
                item_size = type_sizes[field.type]
                for item in range(max(field.size // item_size, 1) if item_size else 0):
                    clean(by_name[field.type], at + item * item_size)

    pointer = "Q" if header.pointer_size == 8 else "I"
    order = "<" if header.little_endian else ">"
    for code, sdna, start, length in blocks:
        if code in (b"DNA1", b"ENDB", b"REND", b"TEST") or not 0 <= sdna < len(structs):
            continue
        name, fields = structs[sdna]
        size = type_sizes.get(name, 0)
        if not size or length % size:
            continue  # raw data (packed files, arrays), not this struct
        for item in range(length // size):
            base = start + item * size
            clean(fields, base)
            if name == "ScrEdge":
                v1, v2 = (f for f in fields if f.name in ("*v1", "*v2"))
                a, b = (struct.unpack_from(order + pointer, data, base + f.offset)[0] for f in (v1, v2))
                if a > b:
                    struct.pack_into(order + pointer, data, base + v1.offset, b)
                    struct.pack_into(order + pointer, data, base + v2.offset, a)
    changed = before != data
    if changed:
        path.write_bytes(bytes(data))
    log.debug("%s: canonical bytes %s", path.name, "written" if changed else "already")
    return changed
