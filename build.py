"""Build the Pose Factory extension: dist/posefactory-<version>.zip.

    python build.py                    # build and validate with Blender's own extension tool
    python build.py --split-platforms  # also one smaller zip per platform, each with only its own wheels
    python build.py --dev DIR          # link the source tree into a Blender user extension repo DIR

The zip holds the add-on (posefactory_addon/*), the bridge (remote/) and the
pod-side files (pod_setup/) as real files, and the wheels Blender does not
ship, downloaded with pip into build/wheels (cached: a second build does not
download again). Blender installs the wheel that matches its platform.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
MANIFEST = REPO / "blender_manifest.toml"
WHEEL_CACHE = REPO / "build" / "wheels"
STAGE = REPO / "build" / "extension"
PURE_WHEELS = ["blender-asset-tracer", "pexpect", "ptyprocess", "boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six"]
# The Pythons of the Blenders we support: 3.11 (Blender 4.2 LTS to 5.0), 3.13 (5.1 to 5.3). Blender
# refuses an extension whose compiled wheels leave its own Python out, and installs the matching one.
PYTHONS = ("3.11", "3.13")
# Packages with compiled wheels: one per platform the manifest lists and Python above. Pillow lays out
# the contact sheet on the laptop (Blender does not ship it).
COMPILED = ("pyyaml", "pillow")
# The newest tag pip is to accept for each platform (it takes older manylinux and macOS wheels too),
# and what a wheel's platform tag looks like there.
PLATFORM_TAGS = {"linux-x64": "manylinux_2_28_x86_64", "macos-arm64": "macosx_11_0_arm64",
                 "macos-x64": "macosx_11_0_x86_64", "windows-x64": "win_amd64"}
PLATFORM_WHEELS = {"linux-x64": re.compile(r"-(manylinux\w*_x86_64\.?)+\.whl$"),
                   "macos-arm64": re.compile(r"-macosx_\d+_\d+_arm64\.whl$"),
                   "macos-x64": re.compile(r"-macosx_\d+_\d+_x86_64\.whl$"),
                   "windows-x64": re.compile(r"-win_amd64\.whl$")}
EXCLUDE = re.compile(r"(__pycache__|\.pyc$)")


def blender_ext_tool() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise SystemExit("build.py: the bpy module (pip install bpy==5.0.1) is needed for Blender's extension tool")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit("build.py: blender_ext.py not found inside the bpy package")
    return found[-1]


def pip_download(args: list[str], python: str = PYTHONS[0]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                    "--python-version", python, "--implementation", "cp", "-d", str(WHEEL_CACHE), *args], check=True)


def fetch_wheels(platforms: list[str]) -> list[Path]:
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("-")[0].lower().replace("_", "-") for p in WHEEL_CACHE.glob("*.whl")}
    missing = [name for name in PURE_WHEELS if name.replace("_", "-") not in have]
    if missing:
        pip_download(missing)
    for package in COMPILED:
        for platform in platforms:
            for python in PYTHONS:
                if _compiled_wheel(package, platform, python) is None:
                    abi = "cp" + python.replace(".", "")
                    pip_download(["--abi", abi, f"--platform={PLATFORM_TAGS[platform]}", package], python)
    check_wheels(platforms)
    return sorted(WHEEL_CACHE.glob("*.whl"))


def _compiled_wheel(package: str, platform: str, python: str) -> Path | None:
    """The cached wheel of ``package`` for ``platform`` and ``python``, if there is one."""
    abi = "cp" + python.replace(".", "")
    for wheel in WHEEL_CACHE.glob("*.whl"):
        name = wheel.name.lower()
        if name.startswith(f"{package}-") and f"-{abi}-" in name and PLATFORM_WHEELS[platform].search(name):
            return wheel
    return None


def check_wheels(platforms: list[str]) -> None:
    """Every compiled wheel is there for every platform and Python: a missing one would make Blender
    refuse the whole extension on that platform or Python."""
    for package in COMPILED:
        for platform in platforms:
            for python in PYTHONS:
                if _compiled_wheel(package, platform, python) is None:
                    raise SystemExit(f"build.py: no {package} wheel for Python {python} on {platform} in {WHEEL_CACHE}")


def copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        relative = path.relative_to(src)
        if EXCLUDE.search(str(relative)) or path.is_dir() or path.is_symlink():
            continue
        target = dst / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def stage(version: str, wheels: list[Path]) -> Path:
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    copy_tree(REPO / "posefactory_addon", STAGE)  # the add-on's own modules (symlinks skipped)
    copy_tree(REPO / "remote", STAGE / "remote")
    copy_tree(REPO / "pod_setup", STAGE / "pod_setup")
    (STAGE / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, STAGE / "wheels" / wheel.name)
    listed = ", ".join(f'"./wheels/{wheel.name}"' for wheel in wheels)
    manifest = MANIFEST.read_text()
    manifest, count = re.subn(r"(?m)^wheels = \[\]$", f"wheels = [{listed}]", manifest)
    if count != 1:
        raise SystemExit("build.py: blender_manifest.toml must have the line 'wheels = []' for build.py to fill")
    (STAGE / "blender_manifest.toml").write_text(manifest)
    return STAGE


def build() -> Path:
    manifest = tomllib.loads(MANIFEST.read_text())
    version = manifest["version"]
    wheels = fetch_wheels(manifest["platforms"])
    staged = stage(version, wheels)
    out = REPO / "dist" / f"{manifest['id']}-{version}.zip"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staged.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(staged).as_posix())
    blender_ext("validate", str(out))
    print(f"built and validated {out} ({out.stat().st_size // 1024} KiB, {len(wheels)} wheels)")
    return out


def blender_ext(*args: str) -> str:
    """Run Blender's extension tool; its refusal stops the build with its own words."""
    completed = subprocess.run([sys.executable, str(blender_ext_tool()), *args], capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"build.py: blender_ext.py {args[0]} refused:\n{completed.stdout}{completed.stderr}")
    return completed.stdout


def split_platforms() -> list[Path]:
    """One zip per platform from the staged extension: Blender's tool keeps only the wheels for that
    platform (PyYAML and Pillow are compiled), so each download is smaller than the all-platforms zip."""
    manifest = tomllib.loads(MANIFEST.read_text())
    out_dir = REPO / "dist"
    for stale in out_dir.glob(f"{manifest['id']}-{manifest['version']}-*.zip"):
        stale.unlink()
    blender_ext("build", "--source-dir", str(STAGE), "--output-dir", str(out_dir), "--split-platforms")
    zips = sorted(out_dir.glob(f"{manifest['id']}-{manifest['version']}-*.zip"))
    for platform_zip in zips:
        blender_ext("validate", str(platform_zip))
        print(f"built and validated {platform_zip} ({platform_zip.stat().st_size // 1024} KiB)")
    return zips


def link_for_development(repo_dir: Path) -> None:
    """A live-editing install: the extension dir's files are links into this source tree."""
    target = repo_dir / "posefactory"
    if target.exists() or target.is_symlink():
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    target.mkdir(parents=True)
    for path in (REPO / "posefactory_addon").iterdir():
        if path.name != "__pycache__":
            (target / path.name).symlink_to(path.resolve())
    (target / "blender_manifest.toml").symlink_to(MANIFEST)
    print(f"linked {target} -> {REPO} (wheels: pip install pexpect pyyaml pillow boto3 into Blender's Python)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, metavar="REPO_DIR",
                        help="link the source tree into this Blender extension repo folder instead of building")
    parser.add_argument("--split-platforms", action="store_true",
                        help="also build one zip per platform (dist/<id>-<version>-<platform>.zip)")
    args = parser.parse_args()
    if args.dev:
        link_for_development(args.dev)
        return
    build()
    if args.split_platforms:
        split_platforms()


if __name__ == "__main__":
    main()
