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


def test_no_module_of_ours_imports_one_that_imports_it_back():
    """Imports point one way inside each package too (the add-on's api and properties, the pod's backends
    and their package were cycles): no module reaches, through any chain, a module that imports it, a
    package's __init__ included."""
    import grimp

    graph = grimp.build_graph("remote", "pod_setup", "posefactory_addon")
    ours = [m for m in graph.modules if not m.startswith(("posefactory_addon.remote", "posefactory_addon.pod_setup"))]
    cycles = sorted({tuple(sorted((module, imported))) for module in ours
                     for imported in graph.find_modules_directly_imported_by(module)
                     if imported in ours and imported != module and graph.chain_exists(importer=imported, imported=module)})
    assert cycles == []
