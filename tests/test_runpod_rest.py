"""The REST API v2 client against our contract-strict stand-in: every operation, every documented
error as one line, pagination, and hostile answers refused, never used; the key in no message or log."""
from __future__ import annotations

import logging

import pytest

from remote.runpod.records import RunPodError
from remote.runpod.rest import PodSpec, RestClient, RunPodAPIError
from tests.fixtures.runpod_v2_standin import NO_INSTANCES, VALID_KEY


class Waits(list):
    """The client's sleep: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def waits():
    return Waits()


@pytest.fixture
def client(runpod_api, waits):
    return RestClient(VALID_KEY, sleep=waits)


def spec(**changes) -> PodSpec:
    return PodSpec(**{"name": "posefactory-a40", "image": "runpod/base:1.0.2-cuda1281-ubuntu2404",
                      "gpu_id": "NVIDIA A40", "env": {"PUBLIC_KEY": "ssh-ed25519 AAAAC3 test"}, **changes})


def test_create_walks_the_life_cycle_to_running_with_ssh_direct(runpod_api, client):
    runpod_api.ssh_port_for_new_pods = 40022
    pod = client.create_pod(spec(gpu_count=2, cloud="COMMUNITY"))
    assert pod.status == "PROVISIONING" and pod.cost_per_hr == pytest.approx(0.78) and pod.ssh_direct is None
    body = runpod_api.calls("POST", "/v2/pods")[0]["body"]
    assert body == {"name": "posefactory-a40", "image": "runpod/base:1.0.2-cuda1281-ubuntu2404",
                    "gpu": {"id": "NVIDIA A40", "count": 2}, "cloud": "COMMUNITY", "disk": 20, "ports": ["22/tcp"],
                    "startSsh": True, "env": {"PUBLIC_KEY": "ssh-ed25519 AAAAC3 test"}}
    assert client.get_pod(pod.id).status == "STARTING"
    running = client.get_pod(pod.id)
    assert running.running and running.ssh_direct is not None
    assert (running.ssh_direct.host, running.ssh_direct.port, running.ssh_direct.username) == ("127.0.0.1", 40022, "root")
    assert running.ssh_proxy is not None and running.ssh_proxy.host == "ssh.runpod.io"
    assert [p.id for p in client.list_pods()] == [pod.id]


def test_lifecycle_actions_stop_start_restart_terminate(runpod_api, client):
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", cost_per_hr=0.44)
    stopped = client.pod_action("abc123", "stop")
    assert stopped is not None and stopped.status == "EXITED" and stopped.cost_per_hr == 0.0
    assert stopped.actions == ("start", "terminate")
    assert client.pod_action("abc123", "start").status == "STARTING"
    assert client.get_pod("abc123").running
    assert client.pod_action("abc123", "restart").status == "STARTING"
    assert client.pod_action("abc123", "terminate") is None  # 204
    assert client.get_pod("abc123").status == "TERMINATED"
    assert runpod_api.actions("abc123") == ["stop", "start", "restart", "terminate"]
    with pytest.raises(RunPodError, match="^unknown pod action 'reset'"):
        client.pod_action("abc123", "reset")


def test_an_action_the_status_does_not_allow_is_409(runpod_api, client):
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED")
    with pytest.raises(RunPodAPIError, match=r"^RunPod refused \(409 Conflict\) while stopping pod abc123") as info:
        client.pod_action("abc123", "stop")
    assert info.value.status == 409


def test_catalog_has_availability_and_prices(runpod_api, client):
    offers = {offer.id: offer for offer in client.gpu_catalog()}
    a40 = offers["NVIDIA A40"]
    assert (a40.name, a40.memory_gb, a40.price("SECURE"), a40.price("COMMUNITY"), a40.availability) == (
        "A40", 48, 0.44, 0.39, "HIGH")
    assert offers["NVIDIA GeForce RTX 4090"].availability == "NONE"
    assert offers["NVIDIA L40S"].data_centers[0].id == "US-KS-2"
    query = runpod_api.calls("GET", "/v2/catalog/gpus")[0]["query"]
    assert query == {"include": "AVAILABILITY", "product": "POD", "cloud": "SECURE", "count": "1"}


def test_network_volumes_list_get_create_and_mount(runpod_api, client):
    assert client.list_network_volumes() == []
    volume = client.create_network_volume("posefactory-cache", 50, "EU-RO-1")
    assert (volume.size_gb, volume.data_center_id, volume.type) == (50, "EU-RO-1", "STANDARD")
    assert client.get_network_volume(volume.id) == volume and client.list_network_volumes() == [volume]
    with pytest.raises(RunPodAPIError, match=r"^RunPod refused the request \(400\) while creating network volume x: "
                                             r"data center CA-MTL-1 has no network volumes; valid: EU-RO-1"):
        client.create_network_volume("x", 10, "CA-MTL-1")
    with pytest.raises(RunPodError, match="10 to 4096 GB"):
        client.create_network_volume("x", 5, "EU-RO-1")
    pod = client.create_pod(spec(network_volume_id=volume.id, data_center_ids=("EU-RO-1",)))
    body = runpod_api.calls("POST", "/v2/pods")[0]["body"]
    assert body["mounts"] == {"network": [{"volumeId": volume.id, "path": "/workspace"}]}
    assert body["dataCenterIds"] == ["EU-RO-1"] and pod.status == "PROVISIONING"


def test_lists_follow_cursor_pages(runpod_api, client):
    for number in range(5):
        runpod_api.add_pod(f"pod{number}", ssh_port=40022)
    runpod_api.page_size = 2
    assert [p.id for p in client.list_pods()] == [f"pod{n}" for n in range(5)]
    assert [r["query"].get("cursor") for r in runpod_api.calls("GET", "/v2/pods")] == [None, "c2", "c4"]
    assert len(client.gpu_catalog()) == 4


def test_a_cursor_that_loops_is_refused(runpod_api, client, monkeypatch):
    runpod_api.add_pod("pod1", ssh_port=40022)
    monkeypatch.setattr(type(runpod_api), "page", lambda self, key, items, query: {
        key: items, "pagination": {"nextCursor": "same", "hasNextPage": True}})
    with pytest.raises(RunPodError, match="cursor seen twice"):
        client.list_pods()


@pytest.mark.parametrize("status, message", [
    (401, r"^RunPod refused the API key \(401 Unauthorized\): check the key"),
    (402, r"^no RunPod balance \(402 Payment Required\) for creating pod posefactory-a40: add funds"),
    (403, r"^RunPod refused access \(403 Forbidden\) while creating pod posefactory-a40: the key has no access"),
    (404, r"^not found on RunPod \(404\) while creating pod posefactory-a40: injected"),
    (400, r"^RunPod refused the request \(400\) while creating pod posefactory-a40: injected"),
])
def test_each_documented_error_is_one_line(runpod_api, client, status, message):
    runpod_api.fail(status)
    with pytest.raises(RunPodAPIError, match=message) as info:
        client.create_pod(spec())
    assert info.value.status == status and "\n" not in str(info.value)
    assert runpod_api.pods == {}


def test_a_wrong_key_is_refused_by_the_stand_in_itself(runpod_api):
    with pytest.raises(RunPodAPIError, match=r"^RunPod refused the API key \(401"):
        RestClient("rp-wrong-key-9999").list_pods()


def test_unknown_fields_are_422_with_the_problem_detail(runpod_api, client, monkeypatch):
    original = PodSpec.body
    monkeypatch.setattr(PodSpec, "body", lambda self: {**original(self), "bogus": 1})
    with pytest.raises(RunPodAPIError, match=r"^RunPod refused the request \(422\) while creating pod posefactory-a40: "
                                             r"validation failed \(\$: additional properties 'bogus' not allowed\)"):
        client.create_pod(spec())


def test_no_capacity_is_400_with_runpods_text(runpod_api, client):
    with pytest.raises(RunPodAPIError, match="no longer any instances available") as info:
        client.create_pod(spec(gpu_id="NVIDIA GeForce RTX 4090"))
    assert info.value.status == 400 and info.value.detail == NO_INSTANCES


def test_429_waits_retry_after_then_succeeds(runpod_api, client, waits):
    runpod_api.add_pod("abc123", ssh_port=40022)
    runpod_api.fail(429, times=2, retry_after=3)
    assert client.get_pod("abc123").id == "abc123" and waits == [3, 3]


def test_429_is_bounded(runpod_api, client, waits):
    runpod_api.fail(429, times=10, retry_after=2)
    with pytest.raises(RunPodAPIError, match=r"^RunPod rate limit \(429\) while listing pods: still limited after 3"):
        client.list_pods()
    assert waits == [2, 2, 2]
    runpod_api.failures.clear()
    runpod_api.fail(429, retry_after=3600)
    with pytest.raises(RunPodAPIError, match=r"asked to wait 3600s, longer than 60s"):
        client.list_pods()


def test_5xx_is_retried_a_bounded_number_of_times(runpod_api, client, waits):
    runpod_api.add_pod("abc123", ssh_port=40022)
    runpod_api.fail(500, times=2)
    assert client.get_pod("abc123").id == "abc123" and waits == [1.0, 2.0]
    runpod_api.fail(503, times=10)
    with pytest.raises(RunPodAPIError, match=r"^RunPod API at http://127.0.0.1:\d+ failed \(503\) while reading pod "
                                             r"abc123, 3 tries: injected"):
        client.get_pod("abc123")


def test_a_create_answered_500_is_not_sent_twice(runpod_api, client, waits):
    runpod_api.fail(500, path="/v2/pods")
    with pytest.raises(RunPodAPIError, match=r"failed \(500\) while creating pod posefactory-a40, 1 try"):
        client.create_pod(spec())
    assert len(runpod_api.calls("POST", "/v2/pods")) == 1 and waits == []
    runpod_api.fail(503, path="/v2/pods")  # a gateway's answer: never reached RunPod, safe to send again
    assert client.create_pod(spec()).status == "PROVISIONING"


def test_outage_page_and_unreachable_api(runpod_api, client, monkeypatch):
    runpod_api.down = True
    with pytest.raises(RunPodAPIError, match=r"failed \(503\) while listing pods, 3 tries: Service Unavailable"):
        client.list_pods()
    with pytest.raises(RunPodAPIError, match=r"^RunPod API unreachable at http://127.0.0.1:9 \(listing pods\)"):
        RestClient(VALID_KEY, base="http://127.0.0.1:9").list_pods()


def test_ids_going_into_urls_are_checked_first(runpod_api, client):
    with pytest.raises(RunPodError, match="is not a RunPod pod id"):
        client.get_pod("../network-volumes")
    with pytest.raises(RunPodError, match="is not a RunPod network volume id"):
        client.get_network_volume("a b")
    assert runpod_api.requests == []


@pytest.mark.parametrize("override, message", [
    ({"ssh": {"direct": {"host": "127.0.0.1", "port": 0, "username": "root"}, "proxy": None}}, "ssh.direct port: 0"),
    ({"ssh": {"direct": {"host": "127.0.0.1", "port": 70000, "username": "root"}, "proxy": None}}, "port: 70000"),
    ({"ssh": {"direct": {"host": "127.0.0.1", "port": True, "username": "root"}, "proxy": None}}, "port: True"),
    ({"ssh": {"direct": {"host": "-oProxyCommand=x", "port": 22, "username": "root"}, "proxy": None}}, "host"),
    ({"ssh": {"direct": {"host": "1.2.3.4 -p 9", "port": 22, "username": "root"}, "proxy": None}}, "host"),
    ({"ssh": {"direct": {"host": "999.1.1.1", "port": 22, "username": "root"}, "proxy": None}}, "host"),
    ({"ssh": {"direct": {"host": "1.2.3.4", "port": 22, "username": "root;rm"}, "proxy": None}}, "user"),
    ({"cost": float("nan")}, "cost per hour: nan"),
    ({"cost": float("inf")}, "cost per hour: inf"),
    ({"cost": -0.5}, "cost per hour: -0.5"),
    ({"cost": 1e300}, "cost per hour: 1e+300"),
    ({"cost": "0.44"}, "cost per hour"),
    ({"name": "x" * 500}, "pod name"),
    ({"name": "evil\x1b[2Jname"}, "pod name"),
    ({"name": ""}, "pod name"),
    ({"status": "HACKED"}, "pod status: 'HACKED'"),
    ({"actions": ["start", "format-disk"]}, "pod action"),
    ({"id": "abc123; rm -rf"}, "pod id"),
    ({"ports": ["22/tcp", "99999/tcp"]}, "pod port"),
    ({"gpu": {"id": "NVIDIA A40", "count": 10 ** 6}}, "pod GPU count"),
])
def test_hostile_pod_answers_are_refused(runpod_api, client, override, message):
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", override=override)
    with pytest.raises(RunPodError) as info:
        client.get_pod("abc123")
    text = str(info.value)
    assert text.startswith("RunPod answered an invalid") and message in text and text.endswith("not used")
    assert "\n" not in text and "\x1b" not in text and len(text) < 200


def test_an_answer_about_another_pod_is_refused(runpod_api, client):
    runpod_api.add_pod("abc123", ssh_port=40022, override={"id": "other9"})
    with pytest.raises(RunPodError, match="answered pod other9 when asked for pod abc123"):
        client.get_pod("abc123")


def test_hostile_catalog_and_volume_answers_are_refused(runpod_api, client):
    runpod_api.catalog[0]["price"]["secure"] = float("nan")
    with pytest.raises(RunPodError, match="invalid secure GPU price: nan"):
        client.gpu_catalog()
    runpod_api.catalog[0]["price"]["secure"] = 0.44
    runpod_api.catalog[1]["availability"] = "plenty"
    with pytest.raises(RunPodError, match="invalid GPU availability: 'plenty'"):
        client.gpu_catalog()
    runpod_api.catalog[1]["availability"] = "HIGH"
    runpod_api.catalog[2]["name"] = "L40S\nInjected line"
    with pytest.raises(RunPodError, match="invalid GPU name"):
        client.gpu_catalog()
    runpod_api.volumes["vol1"] = {"id": "vol1", "name": "v", "size": -1, "dataCenter": "EU-RO-1"}
    with pytest.raises(RunPodError, match="invalid network volume size: -1"):
        client.list_network_volumes()


def test_an_ipv6_and_a_dns_name_are_endpoints(runpod_api, client):
    for host in ("2001:db8::1", "ssh.example-pods.net"):
        runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", ssh_host=host)
        direct = client.get_pod("abc123").ssh_direct
        assert direct is not None and direct.host == host


def test_the_key_is_in_no_message_log_or_output(runpod_api, client, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING")
    runpod_api.fail(400, detail=f"bad request from key {VALID_KEY}")
    with pytest.raises(RunPodAPIError) as info:
        client.pod_action("abc123", "stop")
    assert "[REDACTED]" in str(info.value) and VALID_KEY not in str(info.value) + info.value.detail
    runpod_api.pods["abc123"].override = {"status": f"X{VALID_KEY}"}
    with pytest.raises(RunPodError) as info:
        client.get_pod("abc123")
    assert VALID_KEY not in str(info.value)
    runpod_api.fail(429, retry_after=0)
    runpod_api.pods["abc123"].override = {}
    client.get_pod("abc123")
    assert VALID_KEY not in repr(client)
    out = capsys.readouterr()
    assert VALID_KEY not in caplog.text + out.out + out.err
    assert all(r["body"] is None or VALID_KEY not in str(r["body"]) for r in runpod_api.requests)


def test_pod_spec_refuses_what_runpod_would(runpod_api, client):
    for bad in (spec(gpu_count=0), spec(cloud="ONPREM"), spec(name=""), spec(disk_gb=0)):
        with pytest.raises(RunPodError, match="^invalid pod request"):
            client.create_pod(bad)
    assert runpod_api.requests == []
