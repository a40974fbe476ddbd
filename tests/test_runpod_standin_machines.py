"""The RunPod v2 stand-in's created pods run a real sshd that lets in only the key sent as PUBLIC_KEY."""
from __future__ import annotations

import getpass
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from remote.runpod.records import Pod
from remote.runpod.rest import PodSpec, RestClient
from tests.fixtures.runpod_v2_standin import VALID_KEY


def keypair(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def create(client: RestClient, env: dict[str, str]) -> Pod:
    return client.create_pod(PodSpec(name="posefactory-a40", image="runpod/base:1.0.2-cuda1281-ubuntu2404",
                                     gpu_id="NVIDIA A40", env=env))


def until_running(client: RestClient, pod_id: str) -> Pod:
    for _ in range(10):  # PROVISIONING -> STARTING -> RUNNING, one step per read
        pod = client.get_pod(pod_id)
        if pod.running:
            return pod
    raise AssertionError(f"pod {pod_id} never ran: {pod.status}")


def ssh(pod: Pod, key: Path, known_hosts: Path, command: str) -> subprocess.CompletedProcess:
    assert pod.ssh_direct is not None
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "HashKnownHosts=no", "-o", "ConnectTimeout=5", "-p", str(pod.ssh_direct.port),
         f"{pod.ssh_direct.username}@{pod.ssh_direct.host}", command],
        capture_output=True, text=True, timeout=20)


def host_keys(known_hosts: Path) -> set[str]:
    return {" ".join(line.split()[1:3]) for line in known_hosts.read_text().splitlines() if line.strip()}


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def client(runpod_pods) -> RestClient:
    return RestClient(VALID_KEY)


def test_a_created_pod_lets_in_only_the_sent_key_and_has_the_images_environment(runpod_pods, client, tmp_path):
    key = keypair(tmp_path / "id_ed25519")
    pod = until_running(client, create(client, {"PUBLIC_KEY": (tmp_path / "id_ed25519.pub").read_text()}).id)
    assert pod.ssh_direct is not None and pod.ssh_direct.username == getpass.getuser()
    session = ssh(pod, key, tmp_path / "known_hosts", "echo $POSEFACTORY_BPY_PYTHON")
    assert session.returncode == 0, session.stderr
    assert session.stdout.strip() == sys.executable
    # The sshd's own generated user key is not authorised: only PUBLIC_KEY is.
    foreign = Path(runpod_pods.machines.servers[pod.id].identity_file)
    refused = ssh(pod, foreign, tmp_path / "known_hosts", "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_stop_closes_the_port_and_start_boots_with_a_new_host_key(runpod_pods, client, tmp_path):
    key = keypair(tmp_path / "id_ed25519")
    pod = until_running(client, create(client, {"PUBLIC_KEY": (tmp_path / "id_ed25519.pub").read_text()}).id)
    assert ssh(pod, key, tmp_path / "known_hosts_1", "true").returncode == 0
    client.pod_action(pod.id, "stop")
    assert refuses_connections(pod.ssh_direct.port) and pod.id not in runpod_pods.machines.servers
    client.pod_action(pod.id, "start")
    resumed = until_running(client, pod.id)
    # A fresh known_hosts: the port may come back the same, and the point is what key it shows.
    assert ssh(resumed, key, tmp_path / "known_hosts_2", "true").returncode == 0
    assert host_keys(tmp_path / "known_hosts_1").isdisjoint(host_keys(tmp_path / "known_hosts_2"))
    client.pod_action(pod.id, "terminate")
    assert refuses_connections(resumed.ssh_direct.port) and not runpod_pods.machines.servers


@pytest.mark.parametrize("opens_ssh, env", [(False, {"PUBLIC_KEY": "from-the-test"}), (True, {})],
                         ids=["image-without-sshd", "no-public-key"])
def test_a_pod_without_sshd_runs_but_its_port_refuses(runpod_pods, client, tmp_path, opens_ssh, env):
    if env:
        keypair(tmp_path / "id_ed25519")
        env = {"PUBLIC_KEY": (tmp_path / "id_ed25519.pub").read_text()}
    runpod_pods.machines.opens_ssh = opens_ssh
    pod = until_running(client, create(client, env).id)
    assert pod.ssh_direct is not None and refuses_connections(pod.ssh_direct.port)
    assert not runpod_pods.machines.servers
