"""Pods Pose Factory creates, from the CLI against the v2 stand-in: a GPU from the live catalog under
a $/h ceiling (alternatives named when it cannot be had), our pods found by their name, terminate
only when confirmed; each failure one line before money is spent, the key never printed."""
from __future__ import annotations

import json

import pytest

from remote.runpod.fleet import choose_gpu
from remote.runpod.records import RunPodError
from remote.runpod.rest import RestClient
from remote.runpod_cli import main
from tests.fixtures.runpod_v2_standin import VALID_KEY


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def ledger(data) -> list[dict]:
    return [json.loads(line) for line in (data / "ledger.jsonl").read_text().splitlines()]


def offers(runpod_api):
    return RestClient(VALID_KEY).gpu_catalog()


def test_choose_gpu_respects_availability_and_the_ceiling(runpod_api):
    catalog = offers(runpod_api)
    assert choose_gpu(catalog, None, "SECURE", 1, 1.0).id == "NVIDIA A40"  # cheapest available (4090: NONE)
    assert choose_gpu(catalog, None, "COMMUNITY", 1, 1.0).id == "NVIDIA A40"
    assert choose_gpu(catalog, "NVIDIA L40S", "SECURE", 1, 0.9).id == "NVIDIA L40S"
    with pytest.raises(RunPodError, match=r"^no NVIDIA GeForce RTX 4090 for \$1.00/h in SECURE: not available now; "
                                          r"available at or under the ceiling: NVIDIA A40 \(\$0.44/h, high\), "
                                          r"NVIDIA L40S \(\$0.86/h, low\)$"):
        choose_gpu(catalog, "NVIDIA GeForce RTX 4090", "SECURE", 1, 1.0)
    with pytest.raises(RunPodError, match=r"NVIDIA H100 80GB HBM3 \(\$5.98/h, medium\), over the ceiling; "
                                          r"available .*: NVIDIA A40 \(\$0.88/h, high\)$"):
        choose_gpu(catalog, "NVIDIA H100 80GB HBM3", "SECURE", 2, 1.0)
    with pytest.raises(RunPodError, match="not in RunPod's catalog"):
        choose_gpu(catalog, "NVIDIA B999", "SECURE", 1, 1.0)
    with pytest.raises(RunPodError, match=r"^no GPU available in SECURE at or under \$0.10/h"):
        choose_gpu(catalog, None, "SECURE", 1, 0.1)
    with pytest.raises(RunPodError, match="ceiling above 0"):
        choose_gpu(catalog, None, "SECURE", 1, float("nan"))
    with pytest.raises(RunPodError, match=r"at or under \$1.00/h for 9 GPU"):
        choose_gpu(catalog, None, "SECURE", 9, 1.0)  # over maxCount


def test_cli_create_list_terminate(runpod_pods, data, tmp_path, capsys):
    runpod_pods.add_pod("theirs1", ssh_port=22, name="someone-elses", status="RUNNING", cost_per_hr=1.5)
    assert main(["create", "--max-price", "0.5", "--no-setup", "--workspace", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    pod_id = next(p for p in runpod_pods.pods if p != "theirs1")
    assert out.splitlines()[-1].startswith(f"created {pod_id}  posefactory-a40  RUNNING  $0.440/h  1× NVIDIA A40; "
                                           "host posefactory-a40")
    body = runpod_pods.calls("POST", "/v2/pods")[0]["body"]
    assert body["env"]["PUBLIC_KEY"].startswith("ssh-ed25519 ")
    assert body["ports"] == ["22/tcp"] and body["startSsh"] is True and body["gpu"] == {"id": "NVIDIA A40", "count": 1}
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[0].startswith(f"{pod_id}  posefactory-a40") and "someone-elses" not in listed[0]
    assert listed[0].endswith("host posefactory-a40")
    assert main(["list", "--all"]) == 0
    assert "someone-elses" in (out := capsys.readouterr().out) and "(no host entry here)" in out
    assert main(["terminate", pod_id]) == 1
    err = capsys.readouterr().err
    assert "deletes its container disk and volume disk" in err and "Run again with --yes" in err
    assert runpod_pods.pods[pod_id].status != "TERMINATED"
    assert main(["terminate", pod_id, "--yes"]) == 0
    assert capsys.readouterr().out == f"terminated {pod_id} (posefactory-a40); removed host posefactory-a40\n"
    assert runpod_pods.actions(pod_id) == ["terminate"]
    assert [e["event"] for e in ledger(data)] == ["pod_create", "pod_terminate"]
    assert ledger(data)[0]["cost_per_hr"] == 0.44 and ledger(data)[1]["cost_per_hr"] == 0.44
    assert ledger(data)[1]["cost_usd"] >= 0


def test_cli_create_with_a_network_volume_asks_for_its_data_centre(runpod_pods, data, tmp_path, capsys):
    volume = RestClient(VALID_KEY).create_network_volume("posefactory-cache", 20, "US-KS-2")
    assert main(["create", "--max-price", "1", "--gpu", "NVIDIA L40S", "--volume", volume.id, "--name", "l40s-1",
                 "--no-setup", "--workspace", str(tmp_path / "ws")]) == 0
    body = runpod_pods.calls("POST", "/v2/pods")[0]["body"]
    assert body["name"] == "posefactory-l40s-1" and body["dataCenterIds"] == ["US-KS-2"]
    assert body["mounts"] == {"network": [{"volumeId": volume.id, "path": str(tmp_path / "ws")}]}


@pytest.mark.parametrize("setup, argv, message", [
    (lambda api: None, ["create", "--max-price", "1", "--gpu", "NVIDIA GeForce RTX 4090"],
     "error: no NVIDIA GeForce RTX 4090 for $1.00/h in SECURE: not available now; available at or under the "
     "ceiling: NVIDIA A40 ($0.44/h, high), NVIDIA L40S ($0.86/h, low)"),
    (lambda api: api.fail(402, path="/v2/pods", detail="insufficient balance"), ["create", "--max-price", "1"],
     "error: no RunPod balance (402 Payment Required) for creating pod posefactory-a40: add funds in RunPod's "
     "console (Billing): insufficient balance"),
    (lambda api: api.fail(403, path="/v2/pods", detail="no access to pool"), ["create", "--max-price", "1"],
     "error: RunPod refused access (403 Forbidden) while creating pod posefactory-a40: the key has no access to this "
     "pool or resource: no access to pool"),
    (lambda api: setattr(api, "api_key", "another"), ["list"],
     "error: RunPod refused the API key (401 Unauthorized): check the key, or create one with pod read/write access"),
    (lambda api: None, ["create", "--max-price", "1", "--name", "Bad Name"],
     "error: pod name 'Bad Name': lower-case letters, digits and '-' only (up to 41)"),
    (lambda api: None, ["terminate", "../x", "--yes"], "error: '../x' is not a RunPod pod id (letters and digits only)"),
    (lambda api: None, ["terminate", "nosuch", "--yes"], "error: not found on RunPod (404) while reading pod nosuch: "
                                                         "pod nosuch not found"),
])
def test_cli_failures_are_one_line(runpod_api, data, capsys, setup, argv, message):
    setup(runpod_api)
    assert main(argv) == 1
    out = capsys.readouterr()
    assert out.err == message + "\n"
    assert all(line.startswith("creating posefactory-") for line in out.out.splitlines())  # progress only
    assert [p for p in runpod_api.pods.values() if p.status != "TERMINATED"] == []


def test_cli_without_a_key_names_the_variable_and_never_prints_one(runpod_api, data, monkeypatch, capsys):
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert main(["list"]) == 1
    assert capsys.readouterr().err == ("error: no RunPod API key: set $RUNPOD_API_KEY or the key in the add-on's "
                                       "preferences (RunPod console → Settings → API Keys)\n")
    monkeypatch.setenv("TEAM_KEY", VALID_KEY)
    runpod_api.fail(400, detail=f"echoing {VALID_KEY}")
    assert main(["list", "--key-env", "TEAM_KEY"]) == 1
    out = capsys.readouterr()
    assert VALID_KEY not in out.err + out.out and "[REDACTED]" in out.err
