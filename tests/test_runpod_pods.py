"""Pod-id hosts on RunPod's REST API v2, against our contract-strict stand-in: read, start, wait,
stop, SSH endpoints from ``ssh.direct``/``ssh.proxy``, the live price, and every failure as one
clear line that never holds the key."""
from __future__ import annotations

import logging
import sys

import pytest

from remote.core.config import ConfigError, parse_host
from remote.core.cost import CostModel
from remote.runpod.pods import RunPodError, ensure_running, prepare_host, read_pod, stop_pod
from remote.runpod.rest import RestClient
from tests.fixtures.runpod_v2_standin import VALID_KEY


def pod_host(**extra):
    return parse_host("test", "gpu", {"runpod_pod_id": "abc123", "user": "root", **extra})


def test_pods_need_no_runpod_sdk(runpod_api, monkeypatch):
    monkeypatch.setitem(sys.modules, "runpod", None)  # as in Blender: any import of runpod fails
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING")
    host, pod, started = ensure_running(pod_host(), lambda line: None)
    assert pod.running and not started and host.port == 40022


def test_reads_a_running_pod_with_its_price_and_direct_ssh_port(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", cost_per_hr=0.44)
    pod = read_pod(RestClient(VALID_KEY), "abc123")
    assert pod.running and pod.cost_per_hr == 0.44 and pod.gpu_id == "NVIDIA A40"
    host, pod, started = ensure_running(pod_host(), lambda line: None)
    assert not started and (host.host, host.port, host.user, host.interactive_only) == ("127.0.0.1", 40022, "root", False)
    assert runpod_api.actions("abc123") == []


def test_stopped_pod_is_started_and_waited_for(runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", gpu_count=2, boot_s=0.6, boot_reads=2)
    lines: list[str] = []
    host, state, started = ensure_running(pod_host(), lines.append)
    assert started and state.running and host.port == 40022
    assert runpod_api.calls("POST", "/v2/pods/abc123/action")[0]["body"] == {"action": "start"}
    assert lines[0] == "resuming pod abc123 (2× NVIDIA A40)"
    assert any(line.startswith("waiting for pod abc123 to start (starting") for line in lines)
    assert pod.events == ["start"]


def test_a_pod_still_provisioning_is_waited_for_without_a_start(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, status="PROVISIONING")
    host, pod, started = ensure_running(pod_host(), lambda line: None)
    assert pod.running and not started and runpod_api.actions("abc123") == []


def test_a_pod_without_public_port_22_goes_through_the_proxy(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", public_ip=False)
    host, _, _ = ensure_running(pod_host(), lambda line: None)
    assert (host.host, host.port, host.user, host.interactive_only) == ("ssh.runpod.io", 22, "abc123-64410d5a", True)


def test_a_running_pod_without_any_ssh_endpoint_is_one_line(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", override={"ssh": {"direct": None, "proxy": None}})
    with pytest.raises(RunPodError, match="^pod abc123 has no SSH endpoint.*expose 22/tcp"):
        ensure_running(pod_host(), lambda line: None)


def test_start_refused_for_want_of_a_gpu_is_one_clear_line(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", resume_refused=True)
    with pytest.raises(RunPodError) as info:
        ensure_running(pod_host(), lambda line: None)
    message = str(info.value)
    assert message.startswith("no GPU available to resume pod abc123") and "\n" not in message


def test_a_pod_that_fails_to_start_is_one_line(runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", boot_s=3600)
    original = type(pod).advance

    def broken(self):
        original(self)
        self.status = "ERROR"
    pod.advance = broken.__get__(pod)
    with pytest.raises(RunPodError, match="^pod abc123 failed to start"):
        ensure_running(pod_host(), lambda line: None)


def test_wrong_key_is_one_clear_line_without_the_key(runpod_api, monkeypatch, caplog, capsys):
    runpod_api.add_pod("abc123", ssh_port=40022)
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-wrong-key-9999")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RunPodError, match=r"^RunPod refused the API key \(401") as info:
        ensure_running(pod_host(), lambda line: None)
    out = capsys.readouterr()
    assert "rp-wrong-key-9999" not in str(info.value) + caplog.text + out.out + out.err


def test_missing_key_names_the_variable(runpod_api, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(RunPodError, match=r"no RunPod API key: set \$RUNPOD_API_KEY"):
        ensure_running(pod_host(), lambda line: None)
    monkeypatch.setenv("TEAM_RUNPOD", VALID_KEY)
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING")
    host, _, _ = ensure_running(pod_host(runpod_api_key_env="TEAM_RUNPOD"), lambda line: None)
    assert "TEAM_RUNPOD" in host.secret_names  # redacted from every command's output


@pytest.mark.parametrize("forget", [True, False])
def test_unknown_and_terminated_pods(runpod_api, forget):
    runpod_api.forget_terminated = forget  # not confirmed which RunPod does: 404 or TERMINATED
    with pytest.raises(RunPodError, match="^unknown pod id abc123"):
        ensure_running(pod_host(), lambda line: None)
    runpod_api.add_pod("abc123", ssh_port=40022, status="TERMINATED")
    with pytest.raises(RunPodError, match="^unknown pod id abc123" if forget else "^pod abc123 was terminated"):
        ensure_running(pod_host(), lambda line: None)
    with pytest.raises(RunPodError, match="not a RunPod pod id"):
        read_pod(RestClient(VALID_KEY), "x/../../v2/pods")


def test_api_down_or_unreachable(runpod_api, monkeypatch):
    monkeypatch.setattr("remote.runpod.rest.SERVER_ERROR_BACKOFF_S", 0.01)
    runpod_api.down = True
    with pytest.raises(RunPodError, match=r"^RunPod API at http://127\.0\.0\.1:\d+ failed \(503\)"):
        ensure_running(pod_host(), lambda line: None)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(RunPodError, match="^RunPod API unreachable at http://127.0.0.1:9"):
        ensure_running(pod_host(), lambda line: None)


def test_start_that_never_boots_is_a_bounded_wait(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", boot_s=3600)
    with pytest.raises(RunPodError, match=r"pod abc123 did not start within 1s \(RunPod says STARTING\)"):
        ensure_running(pod_host(resume_timeout_s=1), lambda line: None)


def test_prepare_host_notes_the_start_and_carries_the_live_price(runpod_api, monkeypatch):
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", cost_per_hr=0.52, boot_s=0.1)
    hosts = {"gpu": pod_host(), "other": parse_host("t", "other", {"host": "example.org"})}
    events: list[dict] = []
    pod = prepare_host(hosts, "gpu", lambda line: None, events.append)
    assert pod is not None and hosts["gpu"].port == 40022
    assert events[0]["event"] == "pod_start" and events[0]["cost_per_hr"] == 0.52
    assert prepare_host(hosts, "other", lambda line: None, events.append) is None
    assert prepare_host(hosts, "nope", lambda line: None, events.append) is None
    # The pod-side cost model prices GPU time at the live rate it is given.
    monkeypatch.setenv("POSEFACTORY_GPU_USD_PER_HOUR", hosts["gpu"].env["POSEFACTORY_GPU_USD_PER_HOUR"])
    assert CostModel.load().gpu_rate("A40") == 0.52


def test_stop_pod_records_what_it_ran_for(runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", cost_per_hr=0.36)
    pod.started_at -= 100  # up for 100 s
    events: list[dict] = []
    after = stop_pod(pod_host(), events.append, reason="Stop button")
    assert after.status == "EXITED" and after.cost_per_hr == 0.0 and pod.events == ["stop"]
    assert events[0]["event"] == "pod_stop" and events[0]["pod_seconds"] >= 100 and events[0]["cost_per_hr"] == 0.36
    assert events[0]["cost_usd"] == pytest.approx(events[0]["pod_seconds"] * 0.36 / 3600, abs=1e-4)
    assert stop_pod(pod_host(), events.append, reason="again").status == "EXITED" and len(events) == 1


@pytest.mark.parametrize("entry, message", [
    ({"runpod_pod_id": "abc123", "host": "1.2.3.4"}, "host: not allowed with runpod_pod_id"),
    ({"runpod_pod_id": "abc-1;x"}, "is not a RunPod pod id"),
    ({"runpod_pod_id": "abc123", "runpod_api_key_env": "no spaces"}, "must name an environment variable"),
    ({"runpod_pod_id": "abc123", "idle_stop_minutes": -1}, "must be 0 (never) or more"),
    ({"user": "root"}, "host: required (or runpod_pod_id"),
])
def test_bad_pod_host_entries(entry, message):
    with pytest.raises(ConfigError) as info:
        parse_host("hosts.yaml", "gpu", entry)
    assert message in str(info.value)


def test_cli_status_start_stop(runpod_api, tmp_path, monkeypatch, capsys):
    from remote.jobs.hosts import pod_info
    from remote.runpod_cli import main

    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text("gpu:\n  runpod_pod_id: abc123\n  idle_stop_minutes: 2.5\nplain:\n  host: example.org\n")
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", cost_per_hr=0.39, boot_s=0.1)
    assert main(["status", "gpu", "--hosts", str(hosts)]) == 0
    assert capsys.readouterr().out.startswith(
        "gpu: pod abc123 EXITED, $0.000/h, up 0s, 1× NVIDIA A40, auto-stop after 2.5")
    assert main(["start", "gpu", "--hosts", str(hosts)]) == 0
    assert "gpu: running, ssh root@127.0.0.1:40022" in capsys.readouterr().out
    assert pod_info(pod_host())["state"] == "RUNNING" and pod_info(pod_host())["cost_per_hr"] == 0.39
    assert main(["stop", "gpu", "--hosts", str(hosts)]) == 0 and capsys.readouterr().out == "gpu: EXITED\n"
    ledger = (tmp_path / "data" / "ledger.jsonl").read_text()
    assert '"event": "pod_start"' in ledger and '"event": "pod_stop"' in ledger
    assert main(["stop", "plain", "--hosts", str(hosts)]) == 1
    assert capsys.readouterr().err == "error: host 'plain' has no runpod_pod_id; the pod API cannot start or stop it\n"
