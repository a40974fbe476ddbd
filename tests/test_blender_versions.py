"""The artist's Blender on the pod: install_blender.sh (via setup_pod.sh) with a
test-provided release mirror, and the render job's refusal of a newer file."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures import free_port
from tests.test_pod_render_job import run_job
from tests.test_pod_setup import setup

REPO = Path(__file__).resolve().parents[1]


def release(folder: Path, version: str, *, corrupt: bool = False) -> None:
    """A Linux release as blender.org lays it out: Blender<X.Y>/ with the archive and its SHA256 list."""
    series = folder / f"Blender{version.rsplit('.', 1)[0]}"
    series.mkdir(parents=True, exist_ok=True)
    name = f"blender-{version}-linux-x64"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        script = f"#!/bin/sh\necho 'Blender {version}'\n".encode()
        info = tarfile.TarInfo(f"{name}/blender")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    archive = buffer.getvalue()
    (series / f"{name}.tar.xz").write_bytes(archive + (b"tampered" if corrupt else b""))
    (series / f"blender-{version}.sha256").write_text(
        f"{hashlib.sha256(archive).hexdigest()}  {name}.tar.xz\n{'0' * 64}  {name}.zip\n")
    (series / "index.html").write_text(f'<a href="{name}.tar.xz">{name}.tar.xz</a>')


class Mirror:
    def __init__(self, root: Path) -> None:
        requests = self.requests = []

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                requests.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def mirror(tmp_path):
    served = tmp_path / "mirror"
    served.mkdir()
    running = Mirror(served)
    yield served, running
    running.server.shutdown()


@pytest.fixture
def binary_pod(tmp_path):
    workspace, home = tmp_path / "ws", tmp_path / "home"
    workspace.mkdir()
    home.mkdir()
    (workspace / "posefactory" / "pylib").mkdir(parents=True)
    (workspace / "posefactory" / "pylib" / ".installed").touch()  # no pip for the stand-in builds
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("STABILITY_API_KEY", "POSEFACTORY_BPY_PYTHON")}
    env.update(WORKSPACE=str(workspace), HOME=str(home), PATH="/usr/bin:/bin")
    return workspace, env


def recorded_blender(workspace: Path) -> str:
    line = [x for x in (workspace / "posefactory" / "blender.env").read_text().splitlines()
            if x.startswith("POSEFACTORY_EXECUTABLE=")][0]
    return line.split("=", 1)[1]


def test_requested_version_is_installed_once_verified_and_reused(binary_pod, mirror):
    workspace, env = binary_pod
    served, server = mirror
    release(served, "9.8.2")
    env.update(BLENDER_MIRROR=server.url, POSEFACTORY_BLENDER_VERSION="9.8.2")
    first = setup(env)
    assert first.returncode == 0, first.stderr
    assert recorded_blender(workspace) == str(workspace / "blender" / "9.8.2" / "blender")
    assert subprocess.run([recorded_blender(workspace)], capture_output=True, text=True).stdout == "Blender 9.8.2\n"
    downloads = list(server.requests)
    assert any(p.endswith(".tar.xz") for p in downloads) and any(p.endswith(".sha256") for p in downloads)
    again = setup(env)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert server.requests == downloads  # reused: no network at all
    env["POSEFACTORY_BLENDER_VERSION"] = "9.8"  # a series: the newest installed build, still offline
    server.server.shutdown()
    assert setup(env).returncode == 0 and recorded_blender(workspace).endswith("/9.8.2/blender")


def test_a_series_resolves_to_its_newest_build_and_only_a_few_versions_are_kept(binary_pod, mirror):
    workspace, env = binary_pod
    served, server = mirror
    for version in ("9.7.1", "9.7.3", "9.6.0", "9.5.0"):
        release(served, version)
    env.update(BLENDER_MIRROR=server.url, POSEFACTORY_BLENDER_KEEP="2")
    for wanted in ("9.5.0", "9.6.0", "9.7"):
        env["POSEFACTORY_BLENDER_VERSION"] = wanted
        completed = setup(env)
        assert completed.returncode == 0, completed.stderr
    assert recorded_blender(workspace).endswith("/9.7.3/blender")
    assert sorted(p.name for p in (workspace / "blender").iterdir()) == ["9.6.0", "9.7.3"]


def test_a_corrupted_download_is_refused_and_nothing_is_installed(binary_pod, mirror):
    workspace, env = binary_pod
    served, server = mirror
    release(served, "9.8.2", corrupt=True)
    env.update(BLENDER_MIRROR=server.url, POSEFACTORY_BLENDER_VERSION="9.8.2")
    completed = setup(env)
    assert completed.returncode != 0
    assert "does not match its published sha256" in completed.stderr
    assert list((workspace / "blender").iterdir()) == []


def test_offline_says_so_in_one_line(binary_pod):
    workspace, env = binary_pod
    env.update(BLENDER_MIRROR=f"http://127.0.0.1:{free_port()}", POSEFACTORY_BLENDER_VERSION="9.8.2")
    completed = setup(env)
    assert completed.returncode != 0
    assert "cannot download the SHA256 list of Blender 9.8.2" in completed.stderr and "(offline?)" in completed.stderr
    env["POSEFACTORY_BLENDER_VERSION"] = "9.8; rm -rf /"
    assert "not a Blender version" in setup(env).stderr


def newer_copy(sample_scene: Path, folder: Path, version: bytes) -> Path:
    """The sample scene re-saved uncompressed, its header claiming another Blender version."""
    target = folder / "newer.blend"
    subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
                    "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2], compress=False)", str(sample_scene),
                    str(target)], check=True, capture_output=True, timeout=120)
    data = bytearray(target.read_bytes())
    assert data[:13] == b"BLENDER17-01v"
    data[13:17] = version
    target.write_bytes(bytes(data))
    return target


def test_a_file_from_a_newer_blender_is_refused_naming_both_versions(tmp_path, sample_scene, stability_server):
    scene = newer_copy(sample_scene, tmp_path, b"0601")
    completed, manifest = run_job(tmp_path, scene, stability_server)
    assert completed.returncode == 2
    assert "saved by Blender 6.1, newer than this pod's Blender 5.0.1" in completed.stderr
    assert manifest["status"] == "failed" and stability_server.requests == []
    assert not (tmp_path / "out" / "render.png").exists()
