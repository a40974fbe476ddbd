"""build.py: the cached rebuild and the --dev live-editing link, with real pip and real Blender."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.fixtures.blender import build_lock, dist_zip, run_build

REPO = Path(__file__).resolve().parents[1]


def test_a_second_build_uses_the_wheel_cache_and_ships_the_cli(addon_zip):
    # No index at all: any download attempt would fail the build, so passing proves the cache served every wheel.
    with build_lock():
        rebuilt = run_build(env=dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=""))
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "built and validated" in rebuilt.stdout
        with zipfile.ZipFile(dist_zip()) as archive:
            names = set(archive.namelist())
            manifest = archive.read("blender_manifest.toml").decode()
    assert {"__main__.py", "remote/cli.py", "remote/jobs/pipeline.py"} <= names
    wheels = sorted(name for name in names if name.startswith("wheels/"))
    assert wheels and all(f'"./{wheel}"' in manifest for wheel in wheels)
    assert not any(name.startswith("wheels/requests-") for name in wheels)  # Blender ships requests


def test_dev_mode_links_the_source_tree_into_an_extension_repo_blender_loads(tmp_path):
    user = tmp_path / "user"
    linked = subprocess.run([sys.executable, str(REPO / "build.py"), "--dev", str(user / "extensions" / "user_default")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert linked.returncode == 0, linked.stderr
    script = tmp_path / "enable.py"
    script.write_text(
        "import bpy\n"
        "bpy.ops.extensions.repo_refresh_all()\n"
        "assert bpy.ops.preferences.addon_enable(module='bl_ext.user_default.posefactory') == {'FINISHED'}\n"
        "import bl_ext.user_default.posefactory as addon\n"
        "print('LOADED', addon.__file__, bpy.ops.posefactory.render_remote.get_rna_type().name)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "STABILITY_API_KEY"}
    environment["BLENDER_USER_RESOURCES"] = str(user)
    enabled = subprocess.run([sys.executable, str(script)], env=environment, capture_output=True, text=True,
                             timeout=120)
    line = next((row for row in enabled.stdout.splitlines() if row.startswith("LOADED")), "")
    assert line.endswith("Render on RunPod"), enabled.stdout[-2000:] + enabled.stderr[-2000:]
    # Live editing: the module Blender loaded is the source file itself.
    assert Path(line.split()[1]).resolve() == REPO / "posefactory_addon" / "__init__.py"


def test_split_platforms_gives_each_platform_only_its_own_compiled_wheels(addon_zip):
    expected = {"linux_x64": "manylinux", "macos_arm64": "arm64", "macos_x64": "x86_64", "windows_x64": "win_amd64"}
    contents = {}
    with build_lock():
        built = run_build("--split-platforms", env=dict(os.environ, PIP_NO_INDEX="1"))
        assert built.returncode == 0, built.stdout + built.stderr
        for platform in expected:
            with zipfile.ZipFile(dist_zip(platform)) as archive:
                contents[platform] = (archive.namelist(), archive.read("blender_manifest.toml").decode())
    for platform, tag in expected.items():
        names, manifest = contents[platform]
        for package in ("pyyaml", "pillow"):
            compiled = [name for name in names if name.lower().startswith(f"wheels/{package}-")]
            # One per Python the supported Blenders run: 3.11 (4.2 LTS to 5.0) and 3.13 (5.1 to 5.3).
            assert len(compiled) == 2 and all(tag in name for name in compiled), (platform, compiled)
            assert sorted(name.split("-")[2] for name in compiled) == ["cp311", "cp313"], compiled
        assert f'platforms = ["{platform.replace("_", "-")}"]' in manifest
        assert any(name.startswith("wheels/boto3-") for name in names) and "__init__.py" in names
