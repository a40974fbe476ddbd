"""From a RunPod key to images with no hosts file, from the CLI: create (the stand-in's pod is a real sshd
that lets in only the public key the product sent) → first render → the pod's watchdog stops it when
idle → start (a new boot: new host key, new port, pinned again) → render → terminate; the ledger has
every pod event with its price, and the key is on no disk but the pod's .env."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from remote.cli import main as render_main
from remote.core.config import created_hosts_file, data_dir, load_hosts
from remote.runpod_cli import main as pod_main
from tests.fixtures import wait_for
from tests.fixtures.runpod_v2_standin import VALID_KEY


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def render(scene: Path, host: str, out: Path, capsys) -> str:
    code = render_main(["render", str(scene), "--prompt", "a knight", "--host", host, "--backend", "none",
                        "--samples", "1", "--output", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return printed.out


def test_cli_create_render_idle_stop_start_render_terminate(runpod_pods, data, tmp_path, sample_scene, capsys,
                                                             user_config_dir):
    api = runpod_pods
    workspace = tmp_path / "pod-ws"
    assert pod_main(["create", "--max-price", "0.5", "--workspace", str(workspace), "--idle-stop", "0.05",
                     "--volume-gb", "20"]) == 0
    out = capsys.readouterr().out
    (pod,) = api.pods.values()
    assert [line.split(":")[1].strip().split(" ")[0] for line in out.splitlines() if line.startswith(f"pod {pod.id}: ")
            ][:3] == ["PROVISIONING", "STARTING", "RUNNING"]
    assert "host posefactory-a40: python -m remote.cli render --host posefactory-a40" in out
    # What was sent: our own public key, an official image, 22/tcp, the volume at the workspace.
    body = api.calls("POST", "/v2/pods")[0]["body"]
    public_key = (user_config_dir / "runpod" / "id_ed25519.pub").read_text().strip()
    assert body["env"] == {"PUBLIC_KEY": public_key} and public_key.startswith("ssh-ed25519 ")
    assert body["image"].startswith("runpod/") and body["ports"] == ["22/tcp"]
    assert body["mounts"] == {"persistent": {"size": 20, "path": str(workspace)}}
    assert stat.S_IMODE((user_config_dir / "runpod" / "id_ed25519").stat().st_mode) == 0o600
    # The host entry, written by the product: jobs find it with no hosts file.
    host = load_hosts(None)["posefactory-a40"]
    assert host.runpod_pod_id == pod.id and host.managed_pod and host.idle_stop_minutes == 0.05
    first_server = api.machines.servers[pod.id]
    pinned = Path(host.known_hosts).read_text()
    assert (first_server.root / "host_key.pub").read_text().split()[1] in pinned
    # The set-up ran at create: the workspace has the code and the watchdog.
    assert (workspace / "posefactory" / "pod_setup").exists() and (workspace / "posefactory" / "watchdog.json").exists()

    first = render(sample_scene, "posefactory-a40", tmp_path / "out", capsys)
    assert "job " in first and " done in " in first and list((tmp_path / "out").rglob("*.png"))

    wait_for(lambda: pod.status == "EXITED", 60, "the watchdog's idle stop")
    assert pod.id not in api.machines.servers  # the container is gone with its sshd

    assert pod_main(["start", "posefactory-a40"]) == 0
    assert "posefactory-a40: running" in capsys.readouterr().out
    second_server = api.machines.servers[pod.id]
    assert second_server.port != first_server.port
    second = render(sample_scene, "posefactory-a40", tmp_path / "out2", capsys)
    assert " done in " in second
    pinned = Path(host.known_hosts).read_text()  # the new boot's key, pinned on its first contact
    assert (second_server.root / "host_key.pub").read_text().split()[1] in pinned
    assert (first_server.root / "host_key.pub").read_text().split()[1] not in pinned

    assert pod_main(["list"]) == 0
    assert "host posefactory-a40" in capsys.readouterr().out
    assert pod_main(["terminate", pod.id, "--yes"]) == 0
    assert capsys.readouterr().out.startswith(f"terminated {pod.id} (posefactory-a40); removed host posefactory-a40")
    assert pod.status == "TERMINATED" and "posefactory-a40" not in load_hosts(None)

    events = [json.loads(line) for line in (data_dir() / "ledger.jsonl").read_text().splitlines()]
    pod_events = [e["event"] for e in events if e.get("event", "").startswith("pod_")]
    # The watchdog's idle stop reaches the ledger when the next job collects the pod's events (after the start).
    assert pod_events == ["pod_create", "pod_start", "pod_stop", "pod_terminate"], events
    assert all("cost_per_hr" in e for e in events if e.get("event", "").startswith("pod_"))
    assert [e for e in events if e.get("event") == "pod_stop"][0]["reason"].startswith("idle")
    assert sum(1 for e in events if "job_id" in e and not e.get("event")) == 2
    # The key: in the pod's .env (mode 600) and nowhere else on either side.
    env_file = workspace / ".env"
    for path in [*workspace.rglob("*"), *data.rglob("*"), *created_hosts_file().parent.rglob("*"),
                 *(tmp_path / "out").rglob("*")]:
        if path.is_file() and path != env_file and not path.is_symlink():
            assert VALID_KEY.encode() not in path.read_bytes(), path
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
