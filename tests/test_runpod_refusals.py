"""Hardening of the pod API path: the key never leaves in an error, the pod client never loads
the SDK (whose root handler prints unredacted lines), NaN/Infinity from the API are one line."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import pytest

import tests.fixtures.runpod_v2_standin as stand_in
from remote.core.config import parse_host
from remote.runpod.pods import RunPodError, ensure_running, read_pod
from remote.runpod.rest import RestClient
from tests.fixtures.runpod_v2_standin import VALID_KEY
from tests.fixtures.signals import terminal_sigint


def pod_host():
    return parse_host("test", "gpu", {"runpod_pod_id": "abc123", "user": "root"})


def test_an_error_body_echoing_the_key_is_redacted(runpod_api, monkeypatch):
    monkeypatch.setattr(stand_in, "NO_GPU_MESSAGE", f"no free GPU for key {VALID_KEY}")
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", resume_refused=True)
    with pytest.raises(RunPodError) as info:
        ensure_running(pod_host(), lambda line: None)
    assert VALID_KEY not in str(info.value) and "[REDACTED]" in str(info.value)
    pod = runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING")
    pod.override = {"status": f"WEIRD{VALID_KEY}"}
    with pytest.raises(RunPodError) as info:
        read_pod(RestClient(VALID_KEY), "abc123")
    assert VALID_KEY not in str(info.value)


@pytest.mark.parametrize("cost", [float("nan"), float("inf"), 1e300, -1.0])
def test_nan_infinity_or_absurd_prices_from_the_api_are_one_line(runpod_api, cost):
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", cost_per_hr=cost)
    with pytest.raises(RunPodError, match=r"^RunPod answered an invalid pod cost per hour: .*; not used$"):
        ensure_running(pod_host(), lambda line: None)


def test_cli_with_nan_price_is_one_line(runpod_api, tmp_path, monkeypatch, capsys):
    from remote.runpod_cli import main

    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text("gpu:\n  runpod_pod_id: abc123\n")
    runpod_api.add_pod("abc123", ssh_port=40022, status="RUNNING", cost_per_hr=float("nan"))
    assert main(["status", "gpu", "--hosts", str(hosts)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == "error: RunPod answered an invalid pod cost per hour: nan; not used\n"


def test_cli_ctrl_c_is_one_line_and_130(runpod_api, tmp_path):
    # A real SIGINT to a real CLI process, while it waits for a pod that never boots.
    hosts = tmp_path / "ssh_hosts.yaml"
    hosts.write_text("gpu:\n  runpod_pod_id: abc123\n  resume_timeout_s: 600\n")
    runpod_api.add_pod("abc123", ssh_port=40022, status="EXITED", boot_s=1000)
    env = {**os.environ, "POSEFACTORY_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "remote.runpod_cli", "start", "gpu", "--hosts", str(hosts)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=terminal_sigint)
    assert process.stdout is not None
    for line in process.stdout:
        if "waiting for pod" in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.count("\n") == 1 and err.startswith("interrupted") and "Traceback" not in err


def test_the_pod_client_never_imports_the_sdk(runpod_api, tmp_path):
    # A fresh interpreter, as the CLI starts: reading a pod loads no runpod SDK (whose import would put
    # an unredacted root handler on logging), and lines holding the key reach only the redacting file.
    code = f"""
import logging, sys
from remote.core.logs import setup_logging
setup_logging()
from remote.runpod.rest import RestClient
RestClient({VALID_KEY!r}).list_pods()
assert "runpod" not in sys.modules, "the SDK was imported"
logging.getLogger("remote.runpod.pods").warning("key %s", {VALID_KEY!r})
print("root handlers", len(logging.getLogger().handlers))
"""
    env = {**os.environ, "RUNPOD_API_KEY": VALID_KEY, "POSEFACTORY_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert VALID_KEY not in done.stderr + done.stdout and "root handlers 0" in done.stdout
    logged = (tmp_path / "data" / "logs" / "posefactory.log").read_text()
    assert "key [REDACTED]" in logged and VALID_KEY not in logged


def test_the_serverless_client_imports_the_sdk_quietly_too(tmp_path):
    # The endpoint client is the other way in to the SDK: the same fresh-interpreter check.
    code = f"""
import logging
from remote.core.config import ServerlessConfig
from remote.runpod.endpoint import EndpointClient
EndpointClient(ServerlessConfig(endpoint_id="ep1"))
logging.getLogger("runpod").warning("sdk line with key %s", {VALID_KEY!r})
print("root handlers", len(logging.getLogger().handlers), logging.getLogger().level)
"""
    env = {**os.environ, "RUNPOD_API_KEY": VALID_KEY}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert VALID_KEY not in done.stderr and "sdk line" not in done.stderr, done.stderr
    assert f"root handlers 0 {logging.WARNING}" in done.stdout
