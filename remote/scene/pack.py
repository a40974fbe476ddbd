"""Pack a scene into a job tree without copying it: which files it needs
(Blender's asset tracer, BAT, reads the .blend without a Blender), where each
one lands inside the tree, and the rewritten .blend files whose paths point
there, relatively.

Files inside the scene's folder keep their place relative to it; files
elsewhere land under ``_outside_project/`` (BAT's own layout). Only the
rewritten .blend files are written (into ``work_dir``); every other file is
read where it is, hashed once and sent by its sha256. The same scene and
files give the same tree and the same hashes, so a re-submit moves nothing.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pathlib
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..core.blendfile import canonicalize, check_blend_file
from ..core.hashing import sha256_file

log = logging.getLogger(__name__)
COPY_CHUNK = 1 << 20
TREE_TARGET = "tree"  # BAT's target folder inside work_dir: only moved (rewritten) .blend files land there
BAT_INFO_FILE = "pack-info.txt"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
# A dependency in one of these places is a secret, not a texture: a scene that names one is refused.
PRIVATE_DIRS = frozenset({".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".password-store", ".netrc"})
PRIVATE_NAMES = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "credentials", ".netrc", ".pgpass")
PRIVATE_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".kdbx")
SYSTEM_ROOTS = ("/etc", "/proc", "/sys", "/dev", "/run", "/var/run")


class SceneError(RuntimeError):
    """A scene that cannot be packed; the message names each file, one line per file."""


class MissingFiles(SceneError):
    pass


class SceneChanged(SceneError):
    """A file changed between being hashed and being sent."""


@dataclass(frozen=True)
class SceneFile:
    path: str  # inside the job tree, relative, with forward slashes
    source: Path  # where its bytes are on this machine
    sha256: str
    size: int
    stamp: tuple[int, int]  # (size, mtime in ns) when hashed: a change is noticed before the job starts


@dataclass
class PackedScene:
    """The job tree of one scene: every file (the .blend files included) by path."""

    blend: str  # the main .blend's path inside the tree
    files: list[SceneFile]
    key: str  # the scene's lineage (its source file): the next version is a delta against this one
    work_dir: Path

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        """One hash of the whole tree (paths and contents): same files, same digest."""
        lines = "".join(f"{f.sha256} {f.path}\n" for f in self.files)
        return hashlib.sha256(lines.encode()).hexdigest()

    @property
    def main(self) -> SceneFile:
        return next(f for f in self.files if f.path == self.blend)

    def manifest(self) -> dict:
        """The tree as the pod's store lays it out (no laptop paths: those are not the pod's business)."""
        return {"blend": self.blend, "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files]}

    def check_unchanged(self) -> None:
        """Refuse the job when a file changed since it was hashed (its bytes on the pod may be either version)."""
        changed = []
        for entry in self.files:
            try:
                info = entry.source.stat()
            except OSError:
                changed.append(f"{entry.source}: gone while the scene was being sent")
                continue
            if (info.st_size, info.st_mtime_ns) != entry.stamp and sha256_file(entry.source) != entry.sha256:
                changed.append(f"{entry.source}: changed while the scene was being sent; submit again once it is saved")
        if changed:
            raise SceneChanged("\n".join(changed))


def _hash_stable(path: Path) -> tuple[str, tuple[int, int]]:
    """sha256 of ``path``, checked not to change while it was read (stat before and after)."""
    before = path.stat()
    sha = sha256_file(path)  # remembered: the upload finds it instead of reading the file again
    after = path.stat()
    stamp = (after.st_size, after.st_mtime_ns)
    if (before.st_size, before.st_mtime_ns) != stamp:
        raise SceneChanged(f"{path}: changed while it was being packed; submit again once it is saved")
    return sha, stamp


def private_reason(path: Path) -> str | None:
    """Why ``path`` must not travel (a key, a credentials file, a system file), or None."""
    text = path.as_posix()
    if any(text == root or text.startswith(root + "/") for root in SYSTEM_ROOTS):
        return "a system file"
    if any(part in PRIVATE_DIRS for part in path.parts):
        return "a private folder"
    name = path.name.lower()
    if name.startswith(PRIVATE_NAMES) or name.endswith(PRIVATE_SUFFIXES):
        return "a key or credentials file"
    return None


def _fix_node_trees(expanders) -> None:
    """BAT 1.23 reads every ID's node tree from ``compositing_node_group`` in
    files of Blender 5.0 (subversion 4 on), a field only the Scene has: a
    material's ``nodetree`` (and so its image textures) in a linked library
    is never traced. Each block's own field is read instead."""
    if getattr(expanders, "_posefactory_fixed", False):
        return

    def node_tree_of(block):
        names = {field.name.name_only for field in block.dna_type.fields}
        name = b"compositing_node_group" if b"compositing_node_group" in names else b"nodetree"
        tree = block.get_pointer(name, None) if name in names else None
        if tree is not None:
            yield from expanders._expand_generic_nodetree(tree)

    expanders._expand_generic_nodetree_id = node_tree_of
    expanders._posefactory_fixed = True


# BAT keeps opened .blend files in one module-wide cache, and rewriting rebinds a cached
# file to its temporary copy: packs run one at a time, each with a fresh cache.
_PACKING = threading.Lock()


def _load_packer():
    try:
        from blender_asset_tracer import blendfile, pack
        from blender_asset_tracer.pack import transfer
        from blender_asset_tracer.trace import expanders
    except ImportError as exc:
        raise SceneError(f"packing the scene needs blender-asset-tracer (pip install blender-asset-tracer==1.23): {exc}") from None
    _fix_node_trees(expanders)
    blendfile.close_all_cached()

    class Recorder(transfer.FileTransferer):
        """BAT's file transfer, recording where each file goes instead of copying it."""

        def __init__(self, keep_dir: Path) -> None:
            super().__init__()
            self.keep_dir = keep_dir
            self.placed: dict[str, Path] = {}  # path in the tree -> where its bytes are here

        # No thread: BAT queues each file and waits on a transfer thread (polling every 0.5 s);
        # recording where a file goes is instant, so it happens as BAT queues it.
        def start(self) -> None:
            pass

        def run(self) -> None:
            pass

        def queue_copy(self, src: pathlib.Path, dst: pathlib.PurePath) -> None:
            self.place(Path(src), PurePosixPath(pathlib.PurePath(dst).as_posix()), moved=False)

        def queue_move(self, src: pathlib.Path, dst: pathlib.PurePath) -> None:
            self.place(Path(src), PurePosixPath(pathlib.PurePath(dst).as_posix()), moved=True)

        def place(self, src: Path, dst: PurePosixPath, moved: bool) -> None:
            if dst.name == BAT_INFO_FILE:
                return  # BAT's note for people unpacking by hand; the pod knows where the .blend is
            if moved:  # a .blend BAT rewrote into its temporary folder, which it removes: keep it
                kept = self.keep_dir / f"{len(self.placed):04d}-{src.name}"
                shutil.move(src, kept)
                src = kept
            self.placed[str(dst)] = src

    class TreePacker(pack.Packer):
        def __init__(self, blend: Path, project: Path, target: Path, keep_dir: Path) -> None:
            super().__init__(blend, project, str(target))
            self.recorder = Recorder(keep_dir)

        def _create_file_transferer(self):
            return self.recorder

    return TreePacker


def pack_scene(blend: Path, work_dir: Path, *, key: str | None = None, cancel: threading.Event | None = None,
               leave_out: Path | None = None) -> PackedScene:
    """The job tree of ``blend`` (the main .blend at its root), its rewritten
    .blend files written into ``work_dir``.

    Files under ``leave_out`` (the folder earlier jobs' results came back
    to, which the add-on imports as images) are not sent: they are outputs,
    not what the scene renders with. One a material does use is then named
    missing by the pod, never silently dropped.

    Raises :class:`MissingFiles` naming every missing file (one per line)
    and :class:`SceneError` for a private file or an unreadable scene, before
    anything is uploaded.
    """
    blend = Path(os.path.abspath(blend))
    check_blend_file(blend)
    with _PACKING:
        try:
            return _pack(blend, work_dir, key, cancel, leave_out)
        finally:
            _close_bat_cache()


def _close_bat_cache() -> None:
    try:
        from blender_asset_tracer import blendfile
    except ImportError:
        return  # never loaded: nothing cached
    blendfile.close_all_cached()


def _pack(blend: Path, work_dir: Path, key: str | None, cancel: threading.Event | None,
          leave_out: Path | None) -> PackedScene:
    packer_class = _load_packer()
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / TREE_TARGET
    keep_dir = work_dir / "blends"
    keep_dir.mkdir(exist_ok=True)
    with packer_class(blend, blend.parent, target, keep_dir) as packer:
        try:
            packer.strategise()
        except Exception as exc:  # BAT raises its own errors for files it cannot parse
            raise SceneError(f"tracing {blend.name}'s files: {type(exc).__name__}: {exc}") from None
        if packer.missing_files:
            raise MissingFiles("\n".join(f"missing file: {path}" for path in sorted(packer.missing_files, key=str)))
        if cancel is not None and cancel.is_set():
            raise SceneError("cancelled while packing")
        try:
            packer.execute()
        except Exception as exc:
            raise SceneError(f"packing {blend.name}: {type(exc).__name__}: {exc}") from None
        placed = dict(packer.recorder.placed)
        main = PurePosixPath(pathlib.PurePath(packer.output_path).as_posix())
        rewritten = [str(PurePosixPath(p).relative_to(target.as_posix())) for p, src in placed.items()
                     if src.parent == keep_dir and p.endswith(".blend")]
    root = PurePosixPath(target.as_posix())
    files: list[SceneFile] = []
    refused: list[str] = []
    results = os.path.realpath(leave_out) + os.sep if leave_out is not None else None
    for tree_path, source in sorted(placed.items()):
        relative = str(PurePosixPath(tree_path).relative_to(root))
        if results and os.path.realpath(source).startswith(results):
            log.info("not sending %s: a result of an earlier job", source)
            continue
        if tree_path.endswith(".blend"):
            source = _canonical_blend(source, keep_dir, relative, main=tree_path == str(main))
        reason = None if source.parent == keep_dir else private_reason(Path(os.path.realpath(source)))
        if reason:
            refused.append(f"refusing to send {source}: {reason}")
            continue
        if not source.is_file():
            refused.append(f"not a regular file: {source}")
            continue
        sha, stamp = _hash_stable(source)
        files.append(SceneFile(relative, source, sha, stamp[0], stamp))
    if refused:
        raise SceneError("\n".join(refused))
    main_relative = str(main.relative_to(root))
    scene = PackedScene(main_relative, files, key or str(blend), work_dir)
    log.info("packed %s: %d file(s), %d bytes, %d .blend rewritten", blend.name, len(files), scene.total_bytes,
             len(rewritten))
    return scene


def _decompressing(raw, magic: bytes):
    if magic == ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return gzip.GzipFile(fileobj=raw, mode="rb")


def _canonical_blend(source: Path, keep_dir: Path, relative: str, *, main: bool) -> Path:
    """An uncompressed, byte-reproducible copy of a .blend (the artist's files
    are never changed): a compressed .blend changes in every byte for a
    one-bone edit, so it would not delta, and Blender's own bytes differ
    between saves of the same scene."""
    with open(source, "rb") as handle:
        magic = handle.read(4)
    compressed = magic == ZSTD_MAGIC or magic.startswith(GZIP_MAGIC)  # BAT rewrites a compressed file as gzip
    if source.parent == keep_dir:
        kept = source
    elif main or compressed:
        kept = keep_dir / f"plain-{hashlib.sha256(relative.encode()).hexdigest()[:12]}-{source.name}"
    else:
        return source  # a library nobody rewrote: sent as it is
    if compressed:
        partial = kept.with_name(kept.name + ".tmp")
        with open(source, "rb") as raw, open(partial, "wb") as out:
            shutil.copyfileobj(_decompressing(raw, magic), out, COPY_CHUNK)
        os.replace(partial, kept)
    elif kept != source:
        shutil.copyfile(source, kept)
    canonicalize(kept)
    return kept
