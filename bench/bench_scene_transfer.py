"""What a scene's upload moves and costs: first submission, a one-bone change, an unchanged re-submit.

    .venv/bin/python -m bench.bench_scene_transfer [--texture 2048] [--textures 4] [--grid 700] [--runs 3]

Two scenes, both built on the rigged sample character (``pod_setup/make_sample_scene.py``):

* ``textured``: ``--textures`` external noise PNGs of ``--texture`` px
  (incompressible, not packed, relative paths, used by the character's and
  the ground's materials);
* ``mesh``: a ``--grid`` x ``--grid`` grid with random heights, in the .blend
  itself (no external files).

For each scene, through the whole pipeline (``run_job``, backend none, 1
Cycles sample) on the built-in ``local`` host with a fresh
``POSEFACTORY_DATA_DIR``:

1. the first submission: scene bytes moved (``record.scene``) and the wall
   time of the upload stage (progress timestamps, "uploading" to
   "rendering"); baselines from the same run: ``scp`` of the artist's files
   through a loopback sshd (the tests' direct flavour) and a plain ``cp``;
   the same first submission to a host on that sshd (sftp), the
   like-for-like comparison with scp;
2. a one-bone change (a bpy subprocess rotates one pose bone and saves; the
   save is timed on its own): bytes moved (target <= 64 kB) and the time of
   ``pack_scene`` alone on the changed file;
3. an unchanged re-submit: bytes moved (target 0);
4. ``pack_scene`` against the previous product's packing (a background
   Blender opens the file, ``bpy.ops.file.pack_all()``, saves uncompressed
   and makes the bytes canonical), medians of ``--runs``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from bench.noise import noisy_png

REPO = Path(__file__).resolve().parents[1]
DELTA_TARGET = 64_000
T = TypeVar("T")

ADD_TEXTURES = textwrap.dedent("""
    import sys
    import bpy
    blend, *textures = sys.argv[1:]
    bpy.ops.wm.open_mainfile(filepath=blend)
    # (object, input of the Principled BSDF) per texture, in turn
    uses = [("Character", "Base Color"), ("Ground", "Base Color"), ("Character", "Roughness"), ("Ground", "Roughness")]
    materials = {}
    for number, texture in enumerate(textures):
        target, socket = uses[number % len(uses)]
        if target not in materials:
            material = bpy.data.materials.new(f"{target}Textured")
            material.use_nodes = True
            obj = bpy.data.objects[target]
            obj.data.materials.clear()
            obj.data.materials.append(material)
            materials[target] = material
        material = materials[target]
        nodes = material.node_tree.nodes
        node = nodes.new("ShaderNodeTexImage")
        node.image = bpy.data.images.load(texture)
        if number >= len(uses):
            node.image.colorspace_settings.name = "Non-Color"
            bump = nodes.new("ShaderNodeBump")
            material.node_tree.links.new(node.outputs["Color"], bump.inputs["Height"])
            material.node_tree.links.new(bump.outputs["Normal"], nodes["Principled BSDF"].inputs["Normal"])
        else:
            material.node_tree.links.new(node.outputs["Color"], nodes["Principled BSDF"].inputs[socket])
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.file.make_paths_relative()
    bpy.ops.wm.save_mainfile()
""")

ADD_MESH = textwrap.dedent("""
    import sys
    import bpy
    import numpy as np
    blend, side = sys.argv[1], int(sys.argv[2])
    bpy.ops.wm.open_mainfile(filepath=blend)
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=side, y_subdivisions=side, size=4, location=(0, 3, 0.01))
    sculpt = bpy.context.active_object
    sculpt.name = "Sculpt"
    mesh = sculpt.data
    positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", positions)
    positions[2::3] = np.random.default_rng(7).random(len(mesh.vertices), dtype=np.float32) * 0.3
    mesh.vertices.foreach_set("co", positions)
    mesh.update()
    bpy.ops.wm.save_mainfile()
    print(len(mesh.vertices), len(mesh.polygons))
""")

MOVE_ONE_BONE = textwrap.dedent("""
    import json
    import sys
    import time
    import bpy
    bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
    bone = bpy.data.objects["Rig"].pose.bones["ArmL"]
    bone.rotation_mode = "XYZ"
    bone.rotation_euler[0] += 0.6
    started = time.perf_counter()
    bpy.ops.wm.save_mainfile()
    print(json.dumps({"save_s": time.perf_counter() - started}))
""")

# The previous product's packing (pod_setup/pack_blend.py before the BAT tree): a
# background Blender opens the copy, packs every external file into it and saves it
# uncompressed, then makes its bytes canonical. (It also made linked data local: these
# scenes link nothing.)
OLD_PACK = textwrap.dedent("""
    import sys
    from pathlib import Path
    import bpy
    from remote.core.blendfile import canonicalize
    source, target = sys.argv[1:3]
    bpy.ops.wm.open_mainfile(filepath=source)
    bpy.ops.file.pack_all()
    bpy.ops.wm.save_as_mainfile(filepath=target, compress=False, relative_remap=False)
    canonicalize(Path(target))
""")


def blender(script: str, *args: str) -> str:
    """Run ``script`` in a fresh bpy process; its stdout."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"bpy script failed:\n{done.stderr[-3000:]}")
    return done.stdout


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    outcome = action()
    return time.perf_counter() - started, outcome


@dataclass
class Submission:
    scene: dict
    upload_s: float
    packing_s: float
    wall_s: float
    ship_s: float
    stages: dict[str, float] = field(default_factory=dict)


class Timeline:
    """Progress events with their time: the stages' start times."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    def __call__(self, progress) -> None:
        self.events.append((time.perf_counter(), progress.stage, progress.message))

    def first(self, stage: str) -> float:
        return next(at for at, name, _ in self.events if name == stage)


SHIP_TIMES: list[float] = []


def time_ship() -> None:
    """Wrap SceneUploader.ship (in this process only) to time the scene's part of the upload stage."""
    from remote.jobs import pipeline

    original = pipeline.SceneUploader.ship

    def ship(self):
        started = time.perf_counter()
        try:
            return original(self)
        finally:
            SHIP_TIMES.append(time.perf_counter() - started)

    pipeline.SceneUploader.ship = ship  # type: ignore[method-assign]


def submit(blend: Path, data: Path, work: Path, tag: str, host: str = "local", hosts: Path | None = None) -> Submission:
    from remote.core.jobspec import RenderJob
    from remote.jobs.pipeline import run_job
    from remote.jobs.state import JobRecord

    os.environ["POSEFACTORY_DATA_DIR"] = str(data)
    timeline = Timeline()
    record_path = work / f"record-{tag}.json"
    job = RenderJob(blend_path="", output_dir="", prompt="bench", backend="none", render_samples=1)
    wall, result = timed(lambda: run_job(job, blend, host=host, hosts_file=hosts, local_output_dir=work / "out",
                                         api_key=None, progress=timeline, cancel=threading.Event(),
                                         record_path=record_path))
    if result.status != "done":
        raise SystemExit(f"{tag}: job {result.status}: {result.error}")
    record = JobRecord.load(record_path)
    stages: dict[str, float] = {}
    for at, stage, _ in timeline.events:
        stages.setdefault(stage, at)
    return Submission(scene=dict(record.scene), upload_s=timeline.first("rendering") - timeline.first("uploading"),
                      packing_s=timeline.first("connecting") - timeline.first("packing"), wall_s=wall,
                      ship_s=SHIP_TIMES[-1], stages=stages)


def store_objects(workspace: Path) -> list[tuple[str, int]]:
    objects = workspace / "posefactory" / "store" / "objects"
    return sorted((p.name[:12], p.stat().st_size) for p in objects.iterdir() if len(p.name) == 64) \
        if objects.is_dir() else []


def artist_files(blend: Path) -> list[Path]:
    """The .blend and every file beside it that it needs (what a copy by hand would take)."""
    return [blend, *sorted((blend.parent / "textures").glob("*"))] if (blend.parent / "textures").is_dir() else [blend]


def copy_baselines(files: list[Path], root: Path, server) -> tuple[float, float]:
    """Seconds to scp the files through the loopback sshd, and to cp them."""
    scp_dst = root / "scp-dst"
    cp_dst = root / "cp-dst"
    for folder in (scp_dst, cp_dst):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    user_host = f"{server.host_config().user}@127.0.0.1"
    scp_s, _ = timed(lambda: subprocess.run(
        ["scp", "-q", "-P", str(server.port), "-i", server.identity_file, "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={server.known_hosts}", *map(str, files), f"{user_host}:{scp_dst}/"], check=True))
    cp_s, _ = timed(lambda: subprocess.run(["cp", *map(str, files), f"{cp_dst}/"], check=True))
    return scp_s, cp_s


def cli_patch(data: Path, blend: Path) -> int | None:
    """Bytes of ``zstd --patch-from`` (the CLI, level 6, as the pod decodes) between the two
    versions the laptop kept for this scene: what the one-bone patch could be."""
    from remote.scene.delta import Versions

    kept = Versions(data / "scene-versions").bases(str(blend))
    if len(kept) < 2 or shutil.which("zstd") is None:
        return None
    (_, new), (_, old) = kept[:2]
    done = subprocess.run(["zstd", "-q", "-6", "--long=31", f"--patch-from={old}", "-c", str(new)],
                          capture_output=True, check=True)
    return len(done.stdout)


def old_pack(blend: Path, out: Path) -> float:
    seconds, _ = timed(lambda: blender(OLD_PACK, str(blend), str(out)))
    return seconds


def measure(name: str, blend: Path, root: Path, server, runs: int) -> dict:
    from remote.scene.pack import pack_scene

    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    files = artist_files(blend)
    scene_bytes = sum(f.stat().st_size for f in files)
    figures: dict = {"name": name, "files": len(files), "artist_bytes": scene_bytes}
    scp_s, cp_s = copy_baselines(files, work, server)
    figures.update(scp_s=scp_s, cp_s=cp_s)

    hosts = server.write_hosts_file(work / "hosts.yaml", name="pod", workspace=str(work / "sftp-pod"),
                                    env={"POSEFACTORY_BPY_PYTHON": sys.executable})
    figures["sftp_first"] = submit(blend, work / "data-sftp", work, "sftp-first", host="pod", hosts=hosts)

    data = work / "data"
    figures["first"] = submit(blend, data, work, "first")
    workspace = data / "local-pod" / "workspace"
    figures["objects_first"] = store_objects(workspace)

    save = json.loads(blender(MOVE_ONE_BONE, str(blend)).strip().splitlines()[-1])
    figures["save_s"] = save["save_s"]
    pack_times = [timed(partial(pack_scene, blend, work / f"pack-{run}"))[0] for run in range(runs)]
    figures["pack_s"] = statistics.median(pack_times)
    figures["bone"] = submit(blend, data, work, "bone")
    figures["objects_bone"] = store_objects(workspace)
    figures["cli_patch_bytes"] = cli_patch(data, blend)
    figures["unchanged"] = submit(blend, data, work, "unchanged")

    old_times = [old_pack(blend, work / f"old-{run}.blend") for run in range(runs)]
    figures["old_pack_s"] = statistics.median(old_times)
    figures["old_pack_bytes"] = (work / "old-0.blend").stat().st_size
    figures["startup_s"] = timed(lambda: subprocess.run([sys.executable, "-c", "import bpy"], check=True))[0]
    return figures


def human(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError


def report(figures: dict) -> None:
    first, bone, unchanged, sftp = figures["first"], figures["bone"], figures["unchanged"], figures["sftp_first"]
    name = figures["name"]
    print(f"\n== {name}: {figures['files']} file(s), {human(figures['artist_bytes'])} "
          f"({figures['artist_bytes']} bytes) as the artist has them")
    rows = [
        ("baseline: scp of the files, loopback sshd", figures["artist_bytes"], figures["scp_s"]),
        ("baseline: cp of the files", figures["artist_bytes"], figures["cp_s"]),
        ("1. first submission, local host (inline), upload stage", first.scene["bytes_moved"], first.upload_s),
        ("   of which the scene's ship()", first.scene["bytes_moved"], first.ship_s),
        ("1b. first submission, sshd host (sftp), upload stage", sftp.scene["bytes_moved"], sftp.upload_s),
        ("2. one-bone change, local host, upload stage", bone.scene["bytes_moved"], bone.upload_s),
        ("3. unchanged re-submit, local host, upload stage", unchanged.scene["bytes_moved"], unchanged.upload_s),
    ]
    print(f"{'figure':58} {'bytes moved':>14} {'seconds':>8}")
    for label, moved, seconds in rows:
        print(f"{label:58} {moved:>14,} {seconds:8.2f}")
    print(f"first, inline upload stage / scp: {first.upload_s / figures['scp_s']:.2f}x; "
          f"sftp upload stage / scp: {sftp.upload_s / figures['scp_s']:.2f}x; "
          f"bytes moved / artist's bytes: {first.scene['bytes_moved'] / figures['artist_bytes']:.3f} (inline), "
          f"{sftp.scene['bytes_moved'] / figures['artist_bytes']:.3f} (sftp)")
    print(f"Blender's own save after the bone change: {figures['save_s']:.3f} s; pack_scene on the changed file "
          f"(median): {figures['pack_s']:.3f} s ({figures['pack_s'] / figures['save_s']:.1f}x the save); "
          f"the pipeline's packing stage: {bone.packing_s:.2f} s")
    print(f"packing: pack_scene {figures['pack_s']:.3f} s vs old pack_all + uncompressed save in a background "
          f"Blender {figures['old_pack_s']:.2f} s ({figures['old_pack_s'] / figures['pack_s']:.1f}x; packed file "
          f"{human(figures['old_pack_bytes'])}, which the old product moved whole for a one-bone change); "
          f"bare Blender start-up {figures['startup_s']:.2f} s")
    print(f"record.scene: first {first.scene}\n              bone {bone.scene}\n              unchanged {unchanged.scene}")
    print(f"pod store after the first: {figures['objects_first']}\n          after the bone: {figures['objects_bone']}")
    print(f"zstd --patch-from (CLI, level 6) between the two .blend versions the laptop kept: "
          f"{figures['cli_patch_bytes']} bytes (the pipeline's .blend patch: {bone.scene['bytes_moved']:,} bytes)")
    moved = bone.scene["bytes_moved"]
    print(f"targets: one-bone change <= {DELTA_TARGET} bytes: {'met' if moved <= DELTA_TARGET else 'MISSED'} "
          f"({moved:,}); unchanged re-submit 0 bytes: {'met' if unchanged.scene['bytes_moved'] == 0 else 'MISSED'} "
          f"({unchanged.scene['bytes_moved']:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texture", type=int, default=2048, help="side of each external texture in pixels")
    parser.add_argument("--textures", type=int, default=4, help="how many external textures")
    parser.add_argument("--grid", type=int, default=700, help="subdivisions of the in-file mesh (each side)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each packing figure (median)")
    parser.add_argument("--only", choices=("textured", "mesh"), help="measure one scene only")
    args = parser.parse_args()
    os.environ["POSEFACTORY_BPY_PYTHON"] = sys.executable
    from tests.fixtures.sshd import start_sshd

    time_ship()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pf-bench-scene-") as scratch:
        root = Path(scratch)
        sample = root / "sample.blend"
        subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(sample),
                        "--samples", "1"], check=True, capture_output=True)
        scenes: dict[str, Path] = {}
        if args.only in (None, "textured"):
            textured = root / "artist-textured" / "character.blend"
            (textured.parent / "textures").mkdir(parents=True)
            shutil.copyfile(sample, textured)
            textures = [textured.parent / "textures" / f"noise-{n}.png" for n in range(args.textures)]
            for number, texture in enumerate(textures):
                noisy_png(texture, args.texture, number)
            blender(ADD_TEXTURES, str(textured), *map(str, textures))
            scenes["textured"] = textured
        if args.only in (None, "mesh"):
            mesh = root / "artist-mesh" / "sculpt.blend"
            mesh.parent.mkdir(parents=True)
            shutil.copyfile(sample, mesh)
            vertices, faces = blender(ADD_MESH, str(mesh), str(args.grid)).split()[-2:]
            print(f"mesh scene: {int(vertices):,} vertices, {int(faces):,} faces in the .blend "
                  f"({human(mesh.stat().st_size)})")
            scenes["mesh"] = mesh
        server = start_sshd(root / "sshd", "direct")
        try:
            results = [measure(name, blend, root, server, args.runs) for name, blend in scenes.items()]
        finally:
            server.process.terminate()
            server.process.wait(timeout=10)
    for figures in results:
        report(figures)
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
