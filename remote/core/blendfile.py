"""Reading a .blend's header and blocks without Blender (no ``bpy``).

* :func:`saved_version`: which Blender saved a file (the CLI's job carries it
  without opening the file in Blender).
* :func:`check_blend_file`: refuse a scene that is not a .blend (plain or
  compressed) before anything is uploaded.
* :func:`canonicalize`: Blender writes fixed-size strings with whatever
  memory followed their NUL (measured on 5.0.1: the scene-linear colour
  space name, packed images' paths) and screen edges in memory-address
  order, so the same scene packs to different bytes in every process.
  Canonical bytes make packing reproducible, which the pod's
  content-addressed scenes need. Blender 5 writes stable address ids, not
  memory addresses, except for data a datablock copies only while it is
  written: a camera's system properties (its Cycles compatibility copy).
  Blender maps addresses to ids for the whole file, so a camera's copy that
  lands on memory a previous camera's freed copy used gets that camera's ids,
  depending on the allocator's history (see ``TEMPORARY_TREES``).

Both header layouts are read: ``BLENDER-v402`` (12 bytes, 24-byte block
heads) and Blender 5's ``BLENDER17-01v0500`` (17 bytes, 32-byte block heads).
"""
from __future__ import annotations

import logging
import struct
import zlib
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


def block_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the file header and of every block, head included, in order: the
    units a .blend changes in (a one-bone edit rewrites a few blocks and moves the rest)."""
    header = read_header(data[:32])
    spans = [(0, header.header_size)]
    head = 32 if header.large_bheads else 16 + header.pointer_size
    for _, _, start, length in _blocks(data, header):
        spans.append((start - head, start + length))
    if spans[-1][1] != len(data):
        spans.append((spans[-1][1], len(data)))  # bytes after ENDB: carried as they are
    return spans


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


# ID block code -> the ID field whose tree that ID type writes from a temporary copy.
# camera_blend_write (Blender 5.0) copies the system properties to add the legacy
# "cycles" group, writes the copy and frees it: its address ids are not stable.
TEMPORARY_TREES = {b"CA\0\0": "*system_properties"}


def _pointer_offsets(name: str, by_name: dict[str, list[Field]], type_sizes: dict[str, int],
                     pointer_size: int) -> list[int]:
    """Offsets of every pointer inside one ``name`` struct, nested structs and arrays included."""
    offsets: list[int] = []
    for field in by_name[name]:
        if field.name.startswith(("*", "(*")):
            offsets.extend(field.offset + i for i in range(0, field.size, pointer_size))
        elif field.type in by_name and type_sizes.get(field.type):
            inner = _pointer_offsets(field.type, by_name, type_sizes, pointer_size)
            for item in range(field.offset, field.offset + field.size, type_sizes[field.type]):
                offsets.extend(item + o for o in inner)
    return offsets


def _renumber_temporary_trees(data: bytearray, header: Header, blocks: list[tuple[bytes, int, int, int]],
                              structs: list[tuple[str, list[Field]]], type_sizes: dict[str, int]) -> None:
    """Give the blocks of each ``TEMPORARY_TREES`` tree ids that follow from the file's stable ids.

    An ID's data blocks are only referenced from that ID's section (the reader's
    data address map is per ID), so renumbering them and the pointers to them
    in the section keeps the file's meaning. New ids start after the ID's own
    (stable, from its name) address and skip every address the file uses.
    """
    order = "<" if header.little_endian else ">"
    pointer = order + ("Q" if header.pointer_size == 8 else "I")
    old_size = 8 if header.large_bheads else header.pointer_size
    old_format = order + ("Q" if old_size == 8 else "I")
    bhead_size = 32 if header.large_bheads else 16 + header.pointer_size
    by_name = {name: fields for name, fields in structs}
    pointers_of: dict[str, list[int]] = {}

    def old(start: int) -> int:
        return struct.unpack_from(old_format, data, start - bhead_size + 8)[0]

    def pointers(sdna: int, start: int, length: int) -> list[int]:
        """Absolute offsets of the pointers in an SDNA-typed block; none in raw data."""
        name = structs[sdna][0] if 0 < sdna < len(structs) else ""
        size = type_sizes.get(name, 0)
        if name not in by_name or not size or length % size:
            return []
        if name not in pointers_of:
            pointers_of[name] = _pointer_offsets(name, by_name, type_sizes, header.pointer_size)
        return [start + item + o for item in range(0, length, size) for o in pointers_of[name]]

    sections: list[tuple[int, list[int]]] = []  # (ID block index, its DATA block indices)
    for index, (code, _, _, _) in enumerate(blocks):
        if code == b"DATA" and sections:
            sections[-1][1].append(index)
        elif code not in (b"DNA1", b"ENDB", b"REND", b"TEST", b"GLOB", b"USER"):
            sections.append((index, []))
    renumber: list[tuple[int, list[int], dict[int, int]]] = []  # (ID block, its section, tree's old ids)
    for id_index, members in sections:
        code, sdna, start, length = blocks[id_index]
        field_name = TEMPORARY_TREES.get(code)
        if field_name is None or not 0 < sdna < len(structs):
            continue
        id_field = next((f for f in structs[sdna][1] if f.name == "id"), None)
        root_field = next((f for f in by_name.get("ID", []) if f.name == field_name), None)
        if id_field is None or root_field is None:
            continue
        by_old = {old(blocks[i][2]): i for i in members}
        tree: dict[int, int] = {}  # old id -> block index, in the order the tree is walked
        pending = [struct.unpack_from(pointer, data, start + id_field.offset + root_field.offset)[0]]
        while pending:
            address = pending.pop(0)
            if address in tree or address not in by_old:
                continue
            tree[address] = by_old[address]
            _, block_sdna, block_start, block_length = blocks[tree[address]]
            pending.extend(struct.unpack_from(pointer, data, at)[0]
                           for at in pointers(block_sdna, block_start, block_length))
        if tree:
            renumber.append((id_index, members, tree))
    if not renumber:
        return
    moving = {address for _, _, tree in renumber for address in tree}
    taken = {old(start) for code, _, start, _ in blocks if code not in (b"DNA1", b"ENDB")} - moving
    for id_index, members, tree in renumber:
        next_id = old(blocks[id_index][2])
        remap: dict[int, int] = {}
        for address in tree:
            next_id += 16
            while next_id in taken:
                next_id += 16
            taken.add(next_id)
            remap[address] = next_id
        for index in [id_index, *members]:
            _, block_sdna, block_start, block_length = blocks[index]
            for at in pointers(block_sdna, block_start, block_length):
                value = struct.unpack_from(pointer, data, at)[0]
                if value in remap:
                    struct.pack_into(pointer, data, at, remap[value])
        for address, index in tree.items():
            struct.pack_into(old_format, data, blocks[index][2] - bhead_size + 8, remap[address])


def _nested_field(by_name: dict[str, list[Field]], struct_name: str, outer: str, inner: str) -> tuple[int, int] | None:
    """(offset, size) of ``outer.inner`` inside ``struct_name``, or None where this file's SDNA lacks it."""
    outer_field = next((f for f in by_name.get(struct_name, []) if f.name == outer), None)
    if outer_field is None:
        return None
    inner_field = next((f for f in by_name.get(outer_field.type, []) if f.name == inner), None)
    return None if inner_field is None else (outer_field.offset + inner_field.offset, inner_field.size)


def canonicalize(path: Path) -> bool:
    """Make a .blend Blender just wrote byte-for-byte reproducible; returns whether it changed.

    * the bytes after the NUL of fixed-size strings (names, paths) and
      FileGlobal's padding (``_pad2``) are zeroed: Blender writes whatever
      memory was there;
    * a screen edge's two vertices are put in file-address order: Blender
      orders them by their memory addresses, which differ in every process;
    * the blocks of trees Blender writes from temporary copies (a camera's
      system properties) get ids that follow from their ID's stable address;
    * an ID property group's runtime lookup-set pointer is zeroed (Blender
      rebuilds the set on read; the written value is a memory address).

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
    children_map = _nested_field(by_name, "IDProperty", "data", "*children_map")
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
            if code == b"GLOB":
                # FileGlobal's padding holds whatever memory was there (measured on 5.0.1: _pad2).
                for field in fields:
                    if field.name.startswith("_pad"):
                        data[base + field.offset:base + field.offset + field.size] = bytes(field.size)
            if name == "IDProperty" and children_map is not None:
                # A group's lookup set is runtime data Blender rebuilds on read; its
                # pointer is written as the memory address it had in this process.
                data[base + children_map[0]:base + children_map[0] + children_map[1]] = bytes(children_map[1])
            if name == "ScrEdge":
                v1, v2 = (f for f in fields if f.name in ("*v1", "*v2"))
                a, b = (struct.unpack_from(order + pointer, data, base + f.offset)[0] for f in (v1, v2))
                if a > b:
                    struct.pack_into(order + pointer, data, base + v1.offset, b)
                    struct.pack_into(order + pointer, data, base + v2.offset, a)
    _renumber_temporary_trees(data, header, blocks, structs, type_sizes)
    changed = before != data
    if changed:
        path.write_bytes(bytes(data))
    log.debug("%s: canonical bytes %s", path.name, "written" if changed else "already")
    return changed


class TruncatedBlendFile(BlendFileError):
    """The blocks of a .blend stop before its ENDB block."""


SKIP_CHUNK = 1 << 20


def _skip(handle, length: int, seekable: bool, size: int) -> bool:
    """Move ``length`` bytes on; False when the file ends first. Plain files seek (a GB
    scene costs one seek per block); a decompressing stream is read through in chunks."""
    if seekable:
        target = handle.tell() + length
        if target > size:
            return False
        handle.seek(target)
        return True
    while length > 0:
        chunk = handle.read(min(length, SKIP_CHUNK))
        if not chunk:
            return False
        length -= len(chunk)
    return True


def _walk(handle, seekable: bool, size: int) -> int:
    """Block heads from the header to ENDB, without holding the file; returns the number of blocks."""
    start = handle.read(32)
    header = read_header(start)
    if seekable:
        handle.seek(header.header_size)
    else:  # a stream: the bytes after the header were already read
        pending = start[header.header_size:]
        handle = _Prefixed(pending, handle)
    order = "<" if header.little_endian else ">"
    if header.large_bheads:
        layout = struct.Struct(order + "4si" + "Q" + "q" + "q")  # code, sdna, old, len, nr
    else:
        layout = struct.Struct(order + "4si" + ("Q" if header.pointer_size == 8 else "I") + "ii")
    count = 0
    offset = header.header_size
    while True:
        head = handle.read(layout.size)
        if len(head) < layout.size:
            raise TruncatedBlendFile(f"the file ends at byte {offset + len(head)} inside the block list, "
                                     "before its ENDB block")
        fields = layout.unpack(head)
        code = fields[0]
        length = fields[3] if header.large_bheads else fields[1]
        count += 1
        if code == b"ENDB":
            return count
        if length < 0:
            raise TruncatedBlendFile(f"block {count} at byte {offset} has a negative length")
        if not _skip(handle, length, seekable, size):
            raise TruncatedBlendFile(f"block {code.decode('latin-1')!r} at byte {offset} runs past the end of the "
                                     "file, before its ENDB block")
        offset += layout.size + length


class _Prefixed:
    """A stream with some bytes put back in front."""

    def __init__(self, prefix: bytes, stream) -> None:
        self.prefix, self.stream = prefix, stream

    def read(self, n: int) -> bytes:
        if self.prefix:
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            if len(out) < n:
                out += self.stream.read(n - len(out))
            return out
        return self.stream.read(n)


SEEKABLE_MAGIC = 0x8F92EAB1  # the footer of Zstandard's seekable format, which Blender writes and needs
SKIPPABLE_MAGIC = 0x184D2A5E


def _check_seek_table(handle, size: int) -> None:
    """Blender's Zstandard .blend ends in a seek table (a skippable frame listing each frame's
    sizes); Blender cannot open the file without it, and its sizes must add up to the file."""
    if size < 17:
        raise TruncatedBlendFile("the compressed file is too short to hold its seek table")
    handle.seek(size - 9)
    frames, descriptor, magic = struct.unpack("<IBI", handle.read(9))
    if magic != SEEKABLE_MAGIC:
        raise TruncatedBlendFile("the compressed file ends without its seek table (cut short?)")
    entry = 12 if descriptor & 0x80 else 8
    table = frames * entry + 9
    start = size - table - 8
    if start < 0:
        raise TruncatedBlendFile("the compressed file's seek table is larger than the file")
    handle.seek(start)
    frame_magic, frame_size = struct.unpack("<II", handle.read(8))
    if frame_magic != SKIPPABLE_MAGIC or frame_size != table:
        raise TruncatedBlendFile("the compressed file's seek table is damaged")
    compressed = 0
    for _ in range(frames):
        compressed += struct.unpack("<I", handle.read(entry)[:4])[0]
    if compressed != start:
        raise TruncatedBlendFile(f"the compressed frames hold {start} bytes, the seek table says {compressed}")


def walk_to_end(path: Path | str) -> int:
    """Check that ``path``'s blocks run whole to ENDB (plain, gzip or Zstandard); returns the
    block count. Raises TruncatedBlendFile (or BlendFileError for other damage)."""
    path = Path(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        if magic[:2] == b"\x1f\x8b":
            import gzip

            with gzip.open(handle) as unpacked:
                return _walk(unpacked, False, 0)
        if magic == b"\x28\xb5\x2f\xfd":
            try:
                import zstandard
            except ImportError:
                raise BlendFileError("a zstd-compressed .blend: checking it needs the zstandard "
                                     "package (pip install zstandard)") from None
            _check_seek_table(handle, path.stat().st_size)
            handle.seek(0)
            with zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True) as unpacked:
                return _walk(unpacked, False, 0)
        return _walk(handle, True, path.stat().st_size)


class NotABlendFile(ValueError):
    """A scene that is not a .blend; the message names the file and says why, in one line."""


def check_blend_file(path: Path | str) -> None:
    """Refuse, before anything is uploaded, a scene that is not a .blend: the header
    must say BLENDER, plainly or inside gzip (Blender 2.x) or Zstandard frames
    (Blender 3.0 and later, Blender 5's compressed saves), and its blocks must
    run whole to the ENDB block (a truncated copy or interrupted save is not)."""
    path = Path(path)
    try:
        saved_version(path)
        walk_to_end(path)
    except TruncatedBlendFile as exc:
        raise NotABlendFile(f"{path} is truncated or damaged ({exc}); save the scene from Blender again "
                            "(or copy it again) and retry") from None
    except BlendFileError as exc:
        if "needs the zstandard package" in str(exc):
            log.info("%s is Zstandard-compressed and zstandard is missing here: the pod checks it", path)
            return
        raise NotABlendFile(f"{path} is not a .blend file ({exc}); save the scene from Blender and try again") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise NotABlendFile(f"{path} is a damaged or unreadable file ({exc}); it cannot be a scene") from None
    except Exception as exc:  # zstandard.ZstdError: the module is optional, so its class cannot be named here
        if type(exc).__module__.startswith("zstandard"):
            raise NotABlendFile(f"{path} is a damaged compressed file ({exc}); it cannot be a scene") from None
        raise
