"""The queue agent as a real process: exactly one result per request id."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remote.bridge.api import submit, wait_for_result
from remote.bridge.queue import read_records
from remote.core.config import ConfigError, load_hosts
from remote.core.platforms import TRANSPORTS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def queue(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    directory = tmp_path / "queue"
    directory.mkdir()
    return directory


def run_agent_once(queue_dir: Path, *extra: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "remote.bridge.agent", "--queue-dir", str(queue_dir), "--once", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def results_by_id(queue_dir: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in read_records(queue_dir / "results.jsonl"):
        grouped.setdefault(record["id"], []).append(record)
    return grouped


def test_result_lines_have_the_documented_fields(queue):
    submit(queue, {"id": "one", "host": "local", "command": "echo hi; echo oops >&2; exit 2"})
    assert run_agent_once(queue).returncode == 0
    (result,) = results_by_id(queue)["one"]
    assert set(result) >= {"id", "host", "status", "exit_code", "stdout", "stderr", "started_at",
                           "finished_at", "duration_s"}
    assert (result["status"], result["exit_code"], result["stdout"], result["stderr"]) == ("failed", 2, "hi\n", "oops\n")


def test_malformed_lines_get_invalid_results_naming_the_line(queue):
    lines = [
        "this is not json",
        json.dumps(["a", "list"]),
        json.dumps({"host": "local", "command": "true"}),
        json.dumps({"id": "no-host", "command": "true"}),
        json.dumps({"id": "bad-host", "host": "mars", "command": "true"}),
        json.dumps({"id": "bad-timeout", "host": "local", "command": "true", "timeout": "soon"}),
        json.dumps({"id": "bad-env", "host": "local", "command": "true", "env": {"A B": "x"}}),
        json.dumps({"id": "bad-op", "host": "local", "op": "teleport"}),
        json.dumps({"id": "extra", "host": "local", "command": "true", "sudo": True}),
        json.dumps({"id": "fine", "host": "local", "command": "echo fine"}),
    ]
    (queue / "requests.jsonl").write_text("\n".join(lines) + "\n")
    assert run_agent_once(queue).returncode == 0
    results = results_by_id(queue)
    assert results["fine"][0]["stdout"] == "fine\n"
    for line_number, request_id in [(1, "line-1"), (2, "line-2"), (3, "line-3"), (4, "no-host"), (5, "bad-host"),
                                    (6, "bad-timeout"), (7, "bad-env"), (8, "bad-op"), (9, "extra")]:
        (result,) = results[request_id]
        assert result["status"] == "invalid" and result["line"] == line_number
        assert f"line {line_number}:" in result["error"]
    assert "mars" in results["bad-host"][0]["error"] and "sudo" in results["extra"][0]["error"]


def test_half_written_last_line_waits_for_its_newline(queue):
    requests = queue / "requests.jsonl"
    requests.write_text('{"id": "whole", "host": "local", "command": "echo 1"}\n{"id": "half", "host": "lo')
    run_agent_once(queue)
    assert set(results_by_id(queue)) == {"whole"}
    with open(requests, "a") as handle:
        handle.write('cal", "command": "echo 2"}\n')
    run_agent_once(queue)
    results = results_by_id(queue)
    assert results["half"][0]["stdout"] == "2\n" and len(results["whole"]) == 1


def test_duplicate_id_is_answered_once(queue):
    submit(queue, {"id": "same", "host": "local", "command": "echo first"})
    submit(queue, {"id": "same", "host": "local", "command": "echo second"})
    run_agent_once(queue)
    assert [r["stdout"] for r in results_by_id(queue)["same"]] == ["first\n"]


def test_concurrent_appenders_never_interleave(queue):
    # Several processes append big requests at once; every line must stay whole.
    writer = (
        "import sys; from remote.bridge.api import submit\n"
        "for i in range(40): submit(sys.argv[1], {'id': f'{sys.argv[2]}-{i}', 'host': 'local',"
        " 'command': 'echo ' + sys.argv[2] * 20000})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(queue), name], cwd=REPO) for name in "abcd"]
    assert all(p.wait(60) == 0 for p in procs)
    lines = (queue / "requests.jsonl").read_bytes().splitlines()
    assert len(lines) == 160
    ids = {json.loads(line)["id"] for line in lines}
    assert ids == {f"{n}-{i}" for n in "abcd" for i in range(40)}


def test_agent_killed_mid_command_resumes_and_answers_each_id_once(queue, tmp_path):
    runs = tmp_path / "runs"
    for i in range(3):
        submit(queue, {"id": f"before-{i}", "host": "local", "command": f"echo before-{i} >> '{runs}'"})
    submit(queue, {"id": "slow", "host": "local", "command": f"echo slow >> '{runs}'; sleep 30"})
    for i in range(3):
        submit(queue, {"id": f"after-{i}", "host": "local", "command": f"echo after-{i} >> '{runs}'"})
    agent = subprocess.Popen([sys.executable, "-m", "remote.bridge.agent", "--queue-dir", str(queue)], cwd=REPO,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "slow" not in (runs.read_text() if runs.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    run_agent_once(queue)
    results = results_by_id(queue)
    assert all(len(v) == 1 for v in results.values())
    assert set(results) == {f"before-{i}" for i in range(3)} | {"slow"} | {f"after-{i}" for i in range(3)}
    assert results["slow"][0]["status"] == "disconnected" and "not run again" in results["slow"][0]["error"]
    assert runs.read_text().count("slow") == 1  # never re-run
    assert all(results[f"after-{i}"][0]["status"] == "ok" for i in range(3))


def test_agent_restarted_after_writing_a_result_does_not_repeat_it(queue, tmp_path):
    # A crash between appending a result and saving the checkpoint: results.jsonl wins.
    runs = tmp_path / "runs"
    submit(queue, {"id": "once", "host": "local", "command": f"echo x >> '{runs}'"})
    run_agent_once(queue)
    (queue / "agent.checkpoint.json").unlink()
    run_agent_once(queue)
    assert runs.read_text() == "x\n" and len(results_by_id(queue)["once"]) == 1


def test_secrets_are_redacted_in_results_and_log(queue, tmp_path):
    secret = "sk-live-0123456789abcdef"
    # The local shell no longer inherits the laptop's secrets: the command gets the key explicitly.
    submit(queue, {"id": "leaky", "host": "local", "command": "echo \"$KEY\"; echo \"$TOKEN\" >&2; exit 1",
                   "env": {"TOKEN": "tok-very-secret", "KEY": secret}})
    log = tmp_path / "agent.log"
    run_agent_once(queue, "--log-file", str(log), env_extra={"STABILITY_API_KEY": secret})
    text = (queue / "results.jsonl").read_text() + log.read_text()
    assert secret not in text and "tok-very-secret" not in text
    assert results_by_id(queue)["leaky"][0]["stdout"] == "[REDACTED]\n"


def test_submit_and_wait_through_a_running_agent(queue):
    subprocess.run([str(REPO / "remote" / "start_agent.sh"), "--queue-dir", str(queue)], check=True, timeout=30,
                   env=dict(os.environ, POSEFACTORY_PYTHON=sys.executable))
    try:
        request_id = submit(queue, {"host": "local", "command": "echo through-the-queue"})
        result = wait_for_result(queue, request_id, timeout=30)
        assert result["stdout"] == "through-the-queue\n"
        status = subprocess.run([str(REPO / "remote" / "start_agent.sh"), "status", "--queue-dir", str(queue)],
                                capture_output=True, text=True)
        assert "running" in status.stdout
    finally:
        subprocess.run([str(REPO / "remote" / "start_agent.sh"), "stop", "--queue-dir", str(queue)], timeout=30)
    assert "agent started" in (queue / "agent.log").read_text()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_through_the_proxy_flavour(queue, sshd_proxy, tmp_path, transport):
    hosts = sshd_proxy.write_hosts_file(tmp_path / "ssh_hosts.yaml", name="runpod", transport=transport)
    submit(queue, {"id": "gpu", "host": "runpod", "command": "echo \"$X\"; pwd", "cwd": "/", "env": {"X": "visible-to-cmd"}})
    assert run_agent_once(queue, "--hosts", str(hosts)).returncode == 0
    (result,) = results_by_id(queue)["gpu"]
    assert result["status"] == "ok" and result["stdout"] == "[REDACTED]\n/\n"


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("pod:\n  host: h\n  prot: 22\n", "pod.prot"),
        ("pod:\n  host: h\n  port: '22'\n", "pod.port"),
        ("pod:\n  host: h\n  port: 70000\n", "pod.port"),
        ("pod:\n  port: 22\n", "pod.host"),
        ("pod:\n  host: h\n  transfer: ftp\n", "pod.transfer"),
        ("pod:\n  host: h\n  transport: telnet\n", "pod.transport"),
        ("pod:\n  host: h\n  interactive_only: 'yes'\n", "pod.interactive_only"),
        ("pod:\n  host: h\n  storage: {bucket: b}\n", "pod.storage.endpoint_url"),
        ("pod: [1, 2]\n", "pod"),
        ("pod: {host: h\n", "not valid YAML"),
        ("pod:\n  host: h\n  connect_timeout: .nan\n", "pod.connect_timeout"),
        ("pod:\n  host: h\n  connect_timeout: .inf\n", "pod.connect_timeout"),
        ("pod:\n  host: a\npod:\n  host: b\n", "key 'pod' appears twice"),
        ("pod:\n  host: a\n  env: {X: '1', X: '2'}\n", "key 'X' appears twice"),
        ("pod:\n  host: a\n  storage:\n    bucket: b\n    bucket: c\n", "key 'bucket' appears twice"),
        ("pod:\n  host: h\n  workspace: ''\n", "pod.workspace"),
        ("pod:\n  host: h\n  env: {THREADS: 4}\n", "pod.env.THREADS"),
        ("pod:\n  host: h\n  env: {FLAG: yes}\n", "pod.env.FLAG"),
    ],
)
def test_bad_hosts_file_names_the_key_and_the_file(tmp_path, yaml_text, key):
    path = tmp_path / "ssh_hosts.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as raised:
        load_hosts(path)
    assert str(path) in str(raised.value) and key in str(raised.value)


def test_example_hosts_file_loads():
    hosts = load_hosts(REPO / "remote" / "ssh_hosts.example.yaml")
    assert "local" in hosts and "runpod" in hosts
    assert hosts["runpod"].interactive_only and not hosts["runpod-direct"].interactive_only


def test_a_second_agent_on_the_same_queue_exits_at_once_naming_the_first(queue, tmp_path):
    runs = tmp_path / "runs"
    for i in range(20):
        submit(queue, {"id": f"r{i}", "host": "local", "command": f"echo r{i} >> '{runs}'"})
    first = subprocess.Popen([sys.executable, "-m", "remote.bridge.agent", "--queue-dir", str(queue)], cwd=REPO,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (queue / "agent.lock").exists() or f"pid {first.pid}" not in (queue / "agent.lock").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        second = run_agent_once(queue)
        assert second.returncode == 3 and time.monotonic() - started < 20
        assert f"already served by agent pid {first.pid}" in second.stderr
        deadline = time.monotonic() + 60
        while len(results_by_id(queue)) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    results = results_by_id(queue)
    assert all(len(v) == 1 and v[0]["status"] == "ok" for v in results.values())
    assert sorted(runs.read_text().split()) == sorted(f"r{i}" for i in range(20))  # each ran once


def test_secrets_are_redacted_from_output_that_is_not_utf8(queue):
    secret = "sk-live-0123456789abcdef"
    submit(queue, {"id": "binary", "host": "local", "env": {"KEY": secret},
                   "command": "printf '\\377 %s \\376' \"$KEY\"; printf '%s\\377' \"$KEY\" >&2"})
    run_agent_once(queue, env_extra={"STABILITY_API_KEY": secret})
    (result,) = results_by_id(queue)["binary"]
    assert result["stdout_encoding"] == "base64" and result["stderr_encoding"] == "base64"
    stdout = base64.b64decode(result["stdout"])
    assert secret.encode() not in stdout + base64.b64decode(result["stderr"]) and b"[REDACTED]" in stdout
    assert stdout.startswith(b"\xff ")  # the rest of the raw bytes is kept
