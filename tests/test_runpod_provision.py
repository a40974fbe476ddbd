"""Create Pod's failures against the v2 stand-in: each one line, before money where knowable, and a pod
that was created but cannot be used is terminated, ledgered and forgotten (no host entry, no pinned key)."""
from __future__ import annotations

import json
import re
import threading
import time

import pytest

from remote.core.config import created_hosts_file, load_hosts
from remote.core.logs import log_path, setup_logging
from remote.jobs.provision import CreateCancelled, PodRequest, create_pod_host
from remote.runpod.records import RunPodError
from tests.fixtures import free_port
from tests.fixtures.runpod_v2_standin import NO_INSTANCES, VALID_KEY


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def ledger(data) -> list[dict]:
    path = data / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def create(request: PodRequest, cancel: threading.Event | None = None) -> list[str]:
    lines: list[str] = []
    create_pod_host(request, lines.append, cancel=cancel)
    return lines


def assert_forgotten(runpod_api, data) -> None:
    """Every created pod terminated, ledgered with its cost, and gone from the hosts."""
    (pod,) = runpod_api.pods.values()
    assert pod.status == "TERMINATED" and pod.events[-1] == "terminate"
    events = ledger(data)
    assert [e["event"] for e in events] == ["pod_create", "pod_terminate"]
    assert events[1]["pod_id"] == pod.id and events[1]["cost_per_hr"] >= 0 and "cost_usd" in events[1]
    assert set(load_hosts(None)) == {"local"}
    assert not (created_hosts_file().parent / "known_hosts" / pod.id).exists()


@pytest.mark.parametrize("request_, message", [
    (PodRequest(max_price=0), r"^\$/h ceiling 0: a price above 0"),
    (PodRequest(max_price=float("nan")), r"^\$/h ceiling nan"),
    (PodRequest(max_price=1, workspace="workspace"), r"^workspace 'workspace': an absolute path"),
    (PodRequest(max_price=1, workspace="/a/../etc"), r"^workspace '/a/../etc'"),
    (PodRequest(max_price=1, workspace="/w; rm -rf ~"), r"^workspace '/w; rm -rf ~'"),
    (PodRequest(max_price=1, disk_gb=0), r"^container disk 0 GB"),
    (PodRequest(max_price=1, volume_gb=5), r"^volume disk 5 GB: 10 to 4096"),
    (PodRequest(max_price=1, network_volume_id="../v"), r"is not a RunPod network volume id"),
    (PodRequest(max_price=1, cloud="SPOT"), r"^cloud 'SPOT'"),
    (PodRequest(max_price=1, count=0), r"^GPU count 0"),
    (PodRequest(max_price=1, idle_stop_minutes=-1), r"^auto-stop minutes"),
    (PodRequest(max_price=1, name="Knight!"), r"^pod name 'Knight!'"),
    (PodRequest(max_price=1, key_env="NOT A NAME"), r"does not name an environment variable"),
])
def test_bad_requests_are_one_line_before_any_call(runpod_api, data, request_, message):
    with pytest.raises(RunPodError, match=message) as caught:
        create(request_)
    assert "\n" not in str(caught.value)
    assert runpod_api.requests == [] and ledger(data) == []


def test_no_gpu_under_the_ceiling_names_what_is_there_and_creates_nothing(runpod_api, data):
    with pytest.raises(RunPodError, match=r"^no NVIDIA GeForce RTX 4090 for \$0.80/h in SECURE: not available now; "
                                          r"available at or under the ceiling: NVIDIA A40 \(\$0.44/h, high\)$"):
        create(PodRequest(max_price=0.8, gpu_id="NVIDIA GeForce RTX 4090"))
    assert runpod_api.calls("POST", "/v2/pods") == [] and ledger(data) == []


def test_a_gpu_gone_between_catalog_and_create_is_one_line_with_the_alternatives(runpod_api, data):
    runpod_api.fail(400, path="/v2/pods", detail=NO_INSTANCES)
    with pytest.raises(RunPodError, match=r"^no NVIDIA A40 left in SECURE \(RunPod: no instances available; .*\); "
                                          r"available at or under \$1.00/h: NVIDIA L40S \(\$0.86/h\)$"):
        create(PodRequest(max_price=1.0, gpu_id="NVIDIA A40"))
    assert runpod_api.pods == {} and ledger(data) == []


@pytest.mark.parametrize("status, start", [(402, "no RunPod balance (402 Payment Required)"),
                                           (403, "RunPod refused access (403 Forbidden)")])
def test_refused_creates_are_one_line_and_leave_nothing(runpod_api, data, status, start):
    runpod_api.fail(status, path="/v2/pods", detail="injected")
    with pytest.raises(RunPodError) as caught:
        create(PodRequest(max_price=1.0))
    assert str(caught.value).startswith(start) and runpod_api.pods == {} and ledger(data) == []
    assert set(load_hosts(None)) == {"local"}


def test_a_refused_key_is_one_line_and_never_shown(runpod_api, data, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-wrong-key-0000")
    with pytest.raises(RunPodError, match=r"^RunPod refused the API key \(401 Unauthorized\)") as caught:
        create(PodRequest(max_price=1.0))
    assert "rp-wrong-key" not in str(caught.value) and runpod_api.pods == {}


def test_a_pod_that_never_runs_is_terminated_and_said_so(runpod_api, data):
    runpod_api.boot_s_for_new_pods = 3600
    with pytest.raises(RunPodError, match=r"did not reach RUNNING within 1s \(RunPod says STARTING\); "
                                          r"terminated pod \w+ so it bills nothing more$"):
        create(PodRequest(max_price=1.0, running_timeout_s=1, set_up=False))
    assert_forgotten(runpod_api, data)


def test_an_image_that_never_opens_ssh_is_terminated_and_said_so(runpod_api, data):
    runpod_api.ssh_port_for_new_pods = free_port()  # RUNNING, but nothing listens on its port 22
    with pytest.raises(RunPodError, match=r"runs but its image never opened SSH for our key within 1s "
                                          r"\(127.0.0.1:\d+: .*\); terminated pod \w+ so it bills nothing more$"):
        create(PodRequest(max_price=1.0, ssh_timeout_s=1, set_up=False))
    assert_forgotten(runpod_api, data)


def test_rate_limits_wait_retry_after_then_go_on(runpod_api, data):
    runpod_api.fail(429, path="/v2/catalog", retry_after=1)
    runpod_api.boot_s_for_new_pods = 3600
    started = time.monotonic()
    with pytest.raises(RunPodError, match="did not reach RUNNING"):
        create(PodRequest(max_price=1.0, running_timeout_s=0.2, set_up=False))
    catalog = [r for r in runpod_api.requests if r["path"] == "/v2/catalog/gpus"]
    assert len(catalog) == 2 and time.monotonic() - started >= 1.0  # asked again only after Retry-After
    assert len(runpod_api.calls("POST", "/v2/pods")) == 1


def test_cancel_while_starting_terminates_the_new_pod(runpod_api, data):
    runpod_api.boot_s_for_new_pods = 3600
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(CreateCancelled, match=r"cancelled while it was (PROVISIONING|STARTING); terminated pod \w+ \(it held nothing"):
        create(PodRequest(max_price=1.0, set_up=False), cancel=cancel)
    assert_forgotten(runpod_api, data)


def test_hostile_catalog_values_are_refused_before_a_create(runpod_api, data):
    runpod_api.catalog[0]["price"]["secure"] = -0.44
    with pytest.raises(RunPodError, match="secure GPU price"):
        create(PodRequest(max_price=1.0))
    runpod_api.catalog[0]["price"]["secure"] = 0.44
    runpod_api.catalog[0]["name"] = "A40\x1b]0;owned\x07"
    with pytest.raises(RunPodError, match="GPU name"):
        create(PodRequest(max_price=1.0))
    assert runpod_api.calls("POST", "/v2/pods") == [] and ledger(data) == []


def test_the_key_is_in_no_log_ledger_or_host_entry(runpod_api, data):
    setup_logging()
    runpod_api.boot_s_for_new_pods = 3600
    runpod_api.fail(400, path="/v2/catalog", detail=f"you sent {VALID_KEY}")
    with pytest.raises(RunPodError) as caught:
        create(PodRequest(max_price=1.0))
    assert VALID_KEY not in str(caught.value) and "[REDACTED]" in str(caught.value)
    with pytest.raises(RunPodError):
        create(PodRequest(max_price=1.0, running_timeout_s=0.2, set_up=False))
    for path in (log_path(), data / "ledger.jsonl", created_hosts_file()):
        if path.exists():
            assert VALID_KEY not in path.read_text(errors="replace"), path


def test_a_pod_whose_set_up_fails_is_stopped_not_left_billing(runpod_pods, data):
    # SSH answers with our key, but the workspace cannot be made (/proc takes no folders, even as root).
    with pytest.raises(RunPodError, match=r"runs, but its set-up failed: .*; stopped it \(no GPU billing\); "
                                          r"the next job on it tries the set-up again$"):
        create(PodRequest(max_price=1.0, workspace="/proc/posefactory-workspace"))
    (pod,) = runpod_pods.pods.values()
    assert pod.status == "EXITED" and pod.events[-1] == "stop"
    events = ledger(data)
    assert [e["event"] for e in events] == ["pod_create", "pod_stop"]
    assert events[1]["reason"] == "set-up failed" and events[1]["cost_per_hr"] > 0
    assert load_hosts(None)["posefactory-a40"].runpod_pod_id == pod.id  # kept: Start or Terminate it later


def test_ctrl_c_in_the_cli_while_starting_terminates_the_new_pod(runpod_api, data, capsys, ctrl_c):
    import _thread

    from remote.runpod_cli import main

    runpod_api.boot_s_for_new_pods = 3600
    threading.Timer(0.5, _thread.interrupt_main).start()  # what Ctrl-C does to the CLI's main thread
    assert main(["create", "--max-price", "1", "--no-setup"]) == 1
    assert re.search(r"^error: create of pod \w+ interrupted; terminated pod \w+ \(it held nothing yet\)$",
                     capsys.readouterr().err, re.M)
    assert_forgotten(runpod_api, data)
