"""The layout the design card asks for, and the bootstrap the README promises."""
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_declares_runtime_and_dev_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {dep.split(">")[0].split("=")[0] for dep in project["dependencies"]}
    assert {"pexpect", "pyyaml", "boto3", "requests"} <= runtime
    dev = " ".join(project["optional-dependencies"]["dev"])
    for package in ("pytest", "fake-bpy-module", "bpy==5.0.1", "moto[server]"):
        assert package in dev


def test_bootstrap_is_idempotent_and_quick_the_second_time():
    # The suite itself was started by bootstrap, so this run must only check.
    completed = subprocess.run(
        ["bash", str(REPO / "scripts" / "bootstrap.sh")], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert "installing" not in completed.stderr
