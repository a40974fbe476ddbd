"""Pods through RunPod's API (the real ``runpod`` SDK) against our contract-strict
GraphQL stand-in: read, resume, wait, stop, SSH endpoints, and every failure
as one clear line that never holds the key."""
from __future__ import annotations

import logging
import sys

import pytest
from runpod import error
from runpod.api.graphql import run_graphql_query

from remote.core.config import ConfigError, parse_host
from remote.core.cost import CostModel
from remote.runpod.pods import PROXY_HOST, PodClient, RunPodError, ensure_running, prepare_host, stop_pod
from tests.fixtures.runpod_api import VALID_KEY


@pytest.fixture(params=["sdk", "requests"])
def transport(request, monkeypatch):
    """Both ways to the API: the SDK, and requests alone (Blender, where the SDK cannot be installed)."""
    if request.param == "requests":
        monkeypatch.setitem(sys.modules, "runpod", None)  # any import of runpod now fails
    return request.param


def pod_host(**extra):
    return parse_host("test", "gpu", {"runpod_pod_id": "abc123", "user": "root", **extra})


def test_stand_in_refuses_what_the_schema_does_not_know(runpod_api):
    # The stand-in is strict: anything but the documented fields is an error, as on RunPod.
    with pytest.raises(error.QueryError, match='Cannot query field "bogus" on type "Pod"'):
        run_graphql_query('query { pod(input: {podId: "x"}) { id bogus } }', api_key=VALID_KEY)
    with pytest.raises(error.QueryError, match="required type was not provided"):
        run_graphql_query('mutation { podResume(input: {podId: "x"}) { id } }', api_key=VALID_KEY)
    with pytest.raises(error.AuthenticationError):
        run_graphql_query("query { myself { id } }", api_key="rp-wrong")
    # ...and takes every operation the SDK itself sends, field for field.
    import runpod
    from runpod.api.mutations.pods import generate_pod_resume_mutation, generate_pod_stop_mutation

    runpod_api.add_pod("abc123", ssh_port=40022)
    assert runpod.get_pod("abc123", api_key=VALID_KEY)["desiredStatus"] == "EXITED"
    assert len(runpod.get_pods(api_key=VALID_KEY)) == 1
    run_graphql_query(generate_pod_resume_mutation("abc123", 1), api_key=VALID_KEY)
    run_graphql_query(generate_pod_stop_mutation("abc123"), api_key=VALID_KEY)
    assert runpod_api.pods["abc123"].events == ["resume", "stop"]


def test_reads_a_running_pod_with_its_price_and_direct_ssh_port(transport, runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="RUNNING", cost_per_hr=0.44)
    state = PodClient(VALID_KEY).get("abc123")
    assert state.running and state.cost_per_hr == 0.44 and state.gpu_name == "A40"
    assert (state.ssh_ip, state.ssh_port) == ("127.0.0.1", 40022)
    host, state, resumed = ensure_running(pod_host(), lambda line: None)
    assert not resumed and (host.host, host.port, host.user, host.interactive_only) == ("127.0.0.1", 40022, "root", False)
    assert runpod_api.calls("podResume") == []


def test_stopped_pod_is_resumed_and_waited_for(transport, runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=40022, desired_status="EXITED", gpu_count=2, boot_s=0.6,
                              boot_reads=2)
    lines: list[str] = []
    host, state, resumed = ensure_running(pod_host(), lines.append)
    assert resumed and state.running and host.port == 40022
    assert runpod_api.calls("podResume")[0]["input"] == {"podId": "abc123", "gpuCount": 2}
    assert lines[0].startswith("resuming pod abc123 (2× A40")
    assert any(line.startswith("waiting for pod abc123 to start") for line in lines)
    assert pod.events == ["resume"]


def test_a_pod_without_public_port_22_goes_through_the_proxy(runpod_api, monkeypatch):
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="RUNNING", ssh_ip="10.0.0.9")
    # A private address is not an endpoint: only isIpPublic ports count.
    monkeypatch.setattr("tests.fixtures.runpod_api.FakePod.resolve", _private_only(runpod_api))
    host, _, _ = ensure_running(pod_host(), lambda line: None)
    assert (host.host, host.user, host.interactive_only) == (PROXY_HOST, "abc123-64410d5a", True)


def _private_only(api):
    original = type(api.pods["abc123"]).resolve

    def resolve(self, selections):
        answer = original(self, selections)
        for port in ((answer or {}).get("runtime") or {}).get("ports", []):
            port["isIpPublic"] = False
        return answer

    return resolve


def test_resume_refused_is_one_clear_line(transport, runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="EXITED", resume_refused=True)
    with pytest.raises(RunPodError) as info:
        ensure_running(pod_host(), lambda line: None)
    message = str(info.value)
    assert message.startswith("no GPU available to resume pod abc123") and "\n" not in message


def test_wrong_key_is_one_clear_line_without_the_key(transport, runpod_api, monkeypatch, caplog):
    runpod_api.add_pod("abc123", ssh_port=40022)
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-wrong-key-9999")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RunPodError, match=r"^RunPod refused the API key \(401") as info:
        ensure_running(pod_host(), lambda line: None)
    assert "rp-wrong-key-9999" not in str(info.value) and "rp-wrong-key-9999" not in caplog.text
    assert "rp-wrong-key-9999" not in repr(PodClient("rp-wrong-key-9999"))


def test_missing_key_names_the_variable(runpod_api, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(RunPodError, match=r"no RunPod API key: set \$RUNPOD_API_KEY"):
        ensure_running(pod_host(), lambda line: None)
    monkeypatch.setenv("TEAM_RUNPOD", VALID_KEY)
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="RUNNING")
    host, _, _ = ensure_running(pod_host(runpod_api_key_env="TEAM_RUNPOD"), lambda line: None)
    assert "TEAM_RUNPOD" in host.secret_names  # redacted from every command's output


def test_unknown_and_terminated_pods(transport, runpod_api):
    with pytest.raises(RunPodError, match="^unknown pod id abc123"):
        ensure_running(pod_host(), lambda line: None)
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="TERMINATED")
    with pytest.raises(RunPodError, match="^unknown pod id abc123"):
        ensure_running(pod_host(), lambda line: None)
    with pytest.raises(RunPodError, match="not a RunPod pod id"):
        PodClient(VALID_KEY).get('x" } } mutation { podTerminate')


def test_api_down_or_unreachable(transport, runpod_api, monkeypatch):
    runpod_api.down = True
    with pytest.raises(RunPodError, match=r"^RunPod API unreachable at http://127\.0\.0\.1"):
        ensure_running(pod_host(), lambda line: None)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(RunPodError, match="^RunPod API unreachable at http://127.0.0.1:9"):
        PodClient(VALID_KEY).get("abc123")


def test_start_that_never_boots_is_a_bounded_wait(runpod_api):
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="EXITED", boot_s=3600)
    with pytest.raises(RunPodError, match=r"pod abc123 did not start within 1s"):
        ensure_running(pod_host(resume_timeout_s=1), lambda line: None)


def test_prepare_host_notes_the_start_and_carries_the_live_price(runpod_api, monkeypatch):
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="EXITED", cost_per_hr=0.52, boot_s=0.1)
    hosts = {"gpu": pod_host(), "other": parse_host("t", "other", {"host": "example.org"})}
    events: list[dict] = []
    state = prepare_host(hosts, "gpu", lambda line: None, events.append)
    assert state is not None and hosts["gpu"].port == 40022
    assert events[0]["event"] == "pod_start" and events[0]["cost_per_hr"] == 0.52
    assert prepare_host(hosts, "other", lambda line: None, events.append) is None
    assert prepare_host(hosts, "nope", lambda line: None, events.append) is None
    # The pod-side cost model prices GPU time at the live rate it is given.
    monkeypatch.setenv("POSEFACTORY_GPU_USD_PER_HOUR", hosts["gpu"].env["POSEFACTORY_GPU_USD_PER_HOUR"])
    assert CostModel.load().gpu_rate("A40") == 0.52


def test_stop_pod_records_what_it_ran_for(runpod_api):
    pod = runpod_api.add_pod("abc123", ssh_port=40022, desired_status="RUNNING", cost_per_hr=0.36)
    pod.started_at -= 100  # up for 100 s
    events: list[dict] = []
    after = stop_pod(pod_host(), events.append, reason="Stop button")
    assert after.desired_status == "EXITED" and pod.events == ["stop"]
    assert events[0]["event"] == "pod_stop" and events[0]["pod_seconds"] >= 100
    assert events[0]["cost_usd"] == pytest.approx(events[0]["pod_seconds"] * 0.36 / 3600, abs=1e-4)
    assert stop_pod(pod_host(), events.append, reason="again").desired_status == "EXITED" and len(events) == 1


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
    runpod_api.add_pod("abc123", ssh_port=40022, desired_status="EXITED", cost_per_hr=0.39, boot_s=0.1)
    assert main(["status", "gpu", "--hosts", str(hosts)]) == 0
    assert capsys.readouterr().out.startswith("gpu: pod abc123 EXITED, $0.390/h, up 0s, 1× A40, auto-stop after 2.5")
    assert main(["start", "gpu", "--hosts", str(hosts)]) == 0
    assert "gpu: running, ssh root@127.0.0.1:40022" in capsys.readouterr().out
    assert pod_info(pod_host())["state"] == "RUNNING"
    assert main(["stop", "gpu", "--hosts", str(hosts)]) == 0 and capsys.readouterr().out == "gpu: EXITED\n"
    ledger = (tmp_path / "data" / "ledger.jsonl").read_text()
    assert '"event": "pod_start"' in ledger and '"event": "pod_stop"' in ledger
    assert main(["stop", "plain", "--hosts", str(hosts)]) == 1
    assert capsys.readouterr().err == "error: host 'plain' has no runpod_pod_id; the pod API cannot start or stop it\n"
