"""The pod's content store of scene files, and the job trees laid out from it.

    python3 scene_store.py --store DIR plan MANIFEST       which objects the pod lacks (one JSON line)
    python3 scene_store.py --store DIR layout MANIFEST TREE  unpack what arrived, hard-link the job's tree
    python3 scene_store.py --store DIR gc [--budget BYTES] [--jobs DIR]   keep the store under its budget
    python3 scene_store.py --store DIR status               objects, bytes and budget (one JSON line)
    python3 scene_store.py --store DIR migrate SCENES_DIR   move the old per-scene copies in

Every file of every scene is one object, ``objects/<sha256>``, whatever its
name or scene: a texture shared by two scenes, or by two versions of one
scene, is stored (and sent) once. A job's tree (``JOBDIR/scene/``) is hard
links into the store, so it costs no space and an object a tree links is
seen in use (more than one link) by the clean-up. Objects arrive verified
under their final name, or encoded under ``incoming/`` (zstd, plain or as a
patch against an object the store holds) and are checked by sha256 after
decoding.

The manifest comes from the laptop, and is checked like any input: every
path stays inside the tree (no absolute path, no ``..``, no empty or dot
part, no NUL or backslash), every hash is 64 hex digits. Standard library
only: this runs with the pod's own python3.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from typing import Any

SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_FILES = 100_000
MAX_MANIFEST_BYTES = 32 << 20
DEFAULT_BUDGET = 20 << 30  # POSEFACTORY_STORE_BUDGET_GB overrides
ACTIVE = ("queued", "running")
FRESH_JOB_S = 24 * 3600  # a job dir with a tree but no state yet is being uploaded: left alone this long
HASH_CHUNK = 1 << 20
DELTA_MAGIC = b"PFDELTA1\n"  # remote/scene/delta.py's patch format
MAX_OBJECT_BYTES = 1 << 40


class StoreError(Exception):
    pass


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checked_path(path: object) -> str:
    """A path inside a tree, or StoreError: relative, no '..', '.', empty part, NUL or backslash."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise StoreError(f"unusable path in the manifest: {str(path)[:80]!r}")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"refusing path outside the job tree: {path[:200]!r}")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise StoreError(f"path part too long: {path[:200]!r}")
    return path


def read_manifest(path: str) -> dict:
    with open(path, "rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise StoreError("manifest too large")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"manifest is not JSON: {exc}") from None
    return validate_manifest(manifest)


def validate_manifest(manifest: Any) -> dict:
    """The manifest, checked: every path inside the tree, every hash and size well-formed."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise StoreError("manifest: no file list")
    files = manifest["files"]
    if len(files) > MAX_FILES:
        raise StoreError(f"manifest: more than {MAX_FILES} files")
    seen = set()
    for entry in files:
        if not isinstance(entry, dict) or not SHA.match(str(entry.get("sha256", ""))):
            raise StoreError("manifest: a file without a sha256")
        if not isinstance(entry.get("size"), int) or isinstance(entry["size"], bool) or entry["size"] < 0:
            raise StoreError("manifest: a file without a size")
        key = checked_path(entry.get("path")).lower()  # case-insensitive filesystems would merge these
        if key in seen:
            raise StoreError(f"manifest: {entry['path']!r} twice")
        seen.add(key)
    blend = checked_path(manifest.get("blend"))
    if not any(entry["path"] == blend for entry in files):
        raise StoreError("manifest: the .blend is not among its files")
    bases = manifest.get("bases", [])
    if not isinstance(bases, list) or not all(isinstance(b, str) and SHA.match(b) for b in bases):
        raise StoreError("manifest: bad delta bases")
    return manifest


def apply_patch(base: str, patch: str, out: str, size: int) -> None:
    """Write ``out`` from ``base`` and a PFDELTA1 ``patch`` (remote/scene/delta.py), at most
    ``size`` bytes; every copy stays inside the base."""
    base_size = os.path.getsize(base)
    written = 0
    with open(base, "rb") as source, open(patch, "rb") as ops, open(out, "wb") as target:
        if ops.read(len(DELTA_MAGIC)) != DELTA_MAGIC:
            raise StoreError("not a PFDELTA1 patch")
        while True:
            kind = ops.read(1)
            if kind == b"E":
                return
            if kind == b"C":
                offset, length = struct.unpack(">QQ", _exactly(ops, 16))
                if offset + length > base_size:
                    raise StoreError("a patch copy past the end of its base")
                source.seek(offset)
                chunk_source, remaining = source, length
            elif kind == b"D":
                (remaining,) = struct.unpack(">Q", _exactly(ops, 8))
                chunk_source = ops
            else:
                raise StoreError("a damaged patch")
            written += remaining
            if written > size:
                raise StoreError("a patch larger than its file")
            while remaining:
                chunk = _exactly(chunk_source, min(remaining, HASH_CHUNK))
                target.write(chunk)
                remaining -= len(chunk)


def _exactly(handle: Any, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise StoreError("a truncated patch")
    return data


class Store:
    def __init__(self, root: str) -> None:
        self.root = root
        self.objects = os.path.join(root, "objects")
        self.incoming = os.path.join(root, "incoming")

    def ensure(self) -> None:
        os.makedirs(self.objects, exist_ok=True)
        os.makedirs(self.incoming, exist_ok=True)

    def object(self, sha: str) -> str:
        return os.path.join(self.objects, sha)

    def has(self, sha: str, size: int | None = None) -> bool:
        try:
            info = os.lstat(self.object(sha))
        except OSError:
            return False
        return os.path.isfile(self.object(sha)) and not os.path.islink(self.object(sha)) and \
            (size is None or info.st_size == size)

    def plan(self, manifest: dict) -> dict:
        self.ensure()
        missing = sorted({f["sha256"] for f in manifest["files"] if not self.has(f["sha256"], f["size"])})
        base = next((b for b in manifest.get("bases", []) if self.has(b)), None)
        return {"missing": missing, "base": base, "zstd": shutil.which("zstd") is not None}

    def ingest(self, sizes: dict[str, int]) -> list[str]:
        """Decode what arrived under incoming/ into objects (``sizes``: what each may decode to);
        returns the problems (the files are dropped)."""
        problems = []
        self.ensure()
        for name in sorted(os.listdir(self.incoming)):
            source = os.path.join(self.incoming, name)
            match = re.match(r"^([0-9a-f]{64})(?:\.from-([0-9a-f]{64}))?\.zst$", name)
            if not match:
                continue  # a part file still arriving, or not ours
            sha, base = match.group(1), match.group(2)
            if self.has(sha):
                os.unlink(source)
                continue
            part = self.object(sha) + f".part-{os.getpid()}"
            if base and not self.has(base):
                problems.append(f"{sha[:12]}: its delta base {base[:12]} is gone")
                os.unlink(source)
                continue
            decoded = part + ".patch" if base else part
            try:
                done = subprocess.run(["zstd", "-d", "-q", "-f", source, "-o", decoded], capture_output=True, text=True)
                if done.returncode == 0 and base:
                    apply_patch(self.object(base), decoded, part, sizes.get(sha, MAX_OBJECT_BYTES))
            except (OSError, StoreError) as exc:
                done = subprocess.CompletedProcess([], 1, "", str(exc))
            finally:
                os.unlink(source)
                if base and os.path.exists(decoded):
                    os.unlink(decoded)
            if done.returncode != 0 or not os.path.exists(part) or sha256_of(part) != sha:
                problems.append(f"{sha[:12]}: decoding failed ({(done.stderr or 'checksum mismatch').strip()[-200:]})")
                if os.path.exists(part):
                    os.unlink(part)
                continue
            os.replace(part, self.object(sha))
        return problems

    def layout(self, manifest: dict, tree: str) -> dict:
        """The job's tree as hard links into the store (a tree already there is checked, not redone).

        Objects that did not arrive (or did not decode) are listed as
        ``absent`` and no tree is made: the laptop sends those whole.
        """
        problems = self.ingest({f["sha256"]: f["size"] for f in manifest["files"]})
        absent = sorted({f["sha256"] for f in manifest["files"] if not self.has(f["sha256"], f["size"])})
        if absent:
            return {"absent": absent, "problems": problems}
        os.makedirs(tree, exist_ok=True)
        real_tree = os.path.realpath(tree)
        now = time.time()
        for entry in manifest["files"]:
            target = os.path.join(tree, *entry["path"].split("/"))
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            # A link planted in the tree must not carry a file outside it.
            if not os.path.realpath(parent).startswith(real_tree + os.sep) and os.path.realpath(parent) != real_tree:
                raise StoreError(f"refusing {entry['path']!r}: it would land outside the job tree")
            source = self.object(entry["sha256"])
            if os.path.lexists(target):
                if os.path.samefile(target, source) and not os.path.islink(target):
                    continue
                os.unlink(target)
            os.link(source, target)
            os.utime(source, (now, now))  # the clean-up removes the least recently used first
        total = sum(f["size"] for f in manifest["files"])
        return {"files": len(manifest["files"]), "bytes": total, "blend": manifest["blend"]}

    def usage(self) -> tuple[int, int]:
        count = total = 0
        for entry in os.scandir(self.objects) if os.path.isdir(self.objects) else ():
            if SHA.match(entry.name) and entry.is_file(follow_symlinks=False):
                count += 1
                total += entry.stat(follow_symlinks=False).st_size
        return count, total

    def gc(self, budget: int, jobs_dir: str | None) -> dict:
        """Free the scene trees of ended jobs, then drop the least recently used
        objects no tree links until the store fits its budget."""
        trees = 0
        for jobdir in _job_dirs(jobs_dir):
            tree = os.path.join(jobdir, "scene")
            if os.path.isdir(tree) and not os.path.islink(tree) and _ended(jobdir):
                shutil.rmtree(tree, ignore_errors=True)
                trees += 1
        entries = []
        for entry in os.scandir(self.objects) if os.path.isdir(self.objects) else ():
            if SHA.match(entry.name) and entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                entries.append((info.st_mtime, info.st_size, info.st_nlink, entry.path))
        total = sum(e[1] for e in entries)
        removed = freed = 0
        for _mtime, size, links, path in sorted(entries):
            if total <= budget:
                break
            if links > 1:
                continue  # a queued or running job's tree uses it
            os.unlink(path)
            _unlink_quietly(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.pf-sha256"))  # its sum
            total -= size
            removed += 1
            freed += size
        return {"trees": trees, "removed": removed, "freed": freed, "bytes": total, "budget": budget}

    def migrate(self, scenes_dir: str) -> int:
        """Scenes an earlier version stored as ``scenes/<sha>.blend`` become objects."""
        moved = 0
        if not os.path.isdir(scenes_dir):
            return 0
        self.ensure()
        for name in os.listdir(scenes_dir):
            path = os.path.join(scenes_dir, name)
            sha = name[:-len(".blend")] if name.endswith(".blend") else ""
            if SHA.match(sha) and os.path.isfile(path) and not os.path.islink(path) and not self.has(sha):
                os.replace(path, self.object(sha))
                moved += 1
        shutil.rmtree(scenes_dir, ignore_errors=True)
        return moved


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _job_dirs(jobs_dir: str | None) -> list[str]:
    if not jobs_dir or not os.path.isdir(jobs_dir):
        return []
    return [e.path for e in os.scandir(jobs_dir) if e.is_dir(follow_symlinks=False)]


def _ended(jobdir: str) -> bool:
    try:
        with open(os.path.join(jobdir, "state")) as handle:
            state = handle.read().strip()
    except OSError:  # no state yet: being uploaded, unless it was left long ago
        try:
            return time.time() - os.stat(jobdir).st_mtime > FRESH_JOB_S
        except OSError:
            return True
    return state not in ACTIVE


def budget_from_env() -> int:
    raw = os.environ.get("POSEFACTORY_STORE_BUDGET_GB", "")
    try:
        value = float(raw) if raw else DEFAULT_BUDGET / (1 << 30)
    except ValueError:
        raise StoreError(f"POSEFACTORY_STORE_BUDGET_GB={raw[:40]!r} is not a number") from None
    if not (0 <= value < 1e6):
        raise StoreError(f"POSEFACTORY_STORE_BUDGET_GB={raw[:40]!r} is out of range")
    return int(value * (1 << 30))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scene_store.py")
    parser.add_argument("--store", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan").add_argument("manifest")
    layout = sub.add_parser("layout")
    layout.add_argument("manifest")
    layout.add_argument("tree")
    gc = sub.add_parser("gc")
    gc.add_argument("--budget", type=int)
    gc.add_argument("--jobs")
    sub.add_parser("status").add_argument("--line", action="store_true", help="one line for people")
    sub.add_parser("migrate").add_argument("scenes")
    args = parser.parse_args(argv)
    store = Store(args.store)
    try:
        if args.command == "plan":
            answer = store.plan(read_manifest(args.manifest))
        elif args.command == "layout":
            answer = store.layout(read_manifest(args.manifest), args.tree)
        elif args.command == "gc":
            answer = store.gc(args.budget if args.budget is not None else budget_from_env(), args.jobs)
        elif args.command == "status":
            count, total = store.usage()
            answer = {"objects": count, "bytes": total, "budget": budget_from_env()}
            if args.line:
                print(f"store {count} file(s), {total / 1e6:.1f} MB of {answer['budget'] / (1 << 30):.1f} GB")
                return 0
        else:
            answer = {"migrated": store.migrate(args.scenes)}
    except (StoreError, OSError) as exc:
        print(f"scene_store: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
