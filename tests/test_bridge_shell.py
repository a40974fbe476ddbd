"""The persistent shell against real sshd (both flavours) and the local host,
over both transports (a local PTY and plain pipes)."""
from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from remote.bridge.api import Bridge
from remote.bridge.shell import RemoteShell
from remote.core.platforms import TRANSPORTS
from tests.fixtures.sshd import HOSTS_AND_TRANSPORTS, host_config_for

HOSTILE = [
    ("echo \"double\" 'single' \\\"escaped\\\"", "double single \"escaped\"\n"),
    ("echo $(echo sub) `echo back`", "sub back\n"),
    ("printf '%s\\n' '$(rm -rf /nonexistent)' '`id`'", "$(rm -rf /nonexistent)\n`id`\n"),
    ("cat <<'EOF'\nheredoc $HOME `x`\nEOF", "heredoc $HOME `x`\n"),
    ("echo 'caf\u00e9 \u4e2d\u6587 \U0001f600'", "caf\u00e9 \u4e2d\u6587 \U0001f600\n"),
    ("printf 'no newline'", "no newline"),
    ("printf 'crlf\\r\\nlf\\n'", "crlf\r\nlf\n"),
    ("echo '~.' ; echo after", "~.\nafter\n"),
    ("printf '\\033[31mred\\033[0m'", "\x1b[31mred\x1b[0m"),
]


@pytest.fixture(scope="module", params=HOSTS_AND_TRANSPORTS)
def bridge_host(request, tmp_path_factory, monkeypatch_module):
    """(bridge, host name) for each kind of host over each transport."""
    kind, transport = request.param.split("-")
    if kind == "local":
        monkeypatch_module.setenv("POSEFACTORY_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    config = host_config_for(request, kind, transport)
    bridge = Bridge({config.name: config})
    yield bridge, config.name
    bridge.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("command, expected", HOSTILE, ids=[c[:20] for c, _ in HOSTILE])
def test_hostile_commands_give_exact_output(bridge_host, command, expected):
    bridge, host = bridge_host
    result = bridge.run(host, command, timeout=10)
    assert (result.status, result.exit_code, result.stdout, result.stderr) == ("ok", 0, expected, "")


def test_stdout_and_stderr_are_kept_apart_and_exit_code_kept(bridge_host):
    bridge, host = bridge_host
    result = bridge.run(host, "echo out1; echo err1 >&2; echo out2; exit 7", timeout=10)
    assert result.status == "failed" and result.exit_code == 7
    assert result.stdout == "out1\nout2\n"
    assert result.stderr == "err1\n"


def test_non_utf8_bytes_are_preserved_and_flagged(bridge_host):
    bridge, host = bridge_host
    result = bridge.run(host, "printf 'ok\\377\\000\\001end'", timeout=10)
    assert result.stdout_encoding == "base64"
    assert result.stdout_bytes == b"ok\xff\x00\x01end"


def test_the_shell_runs_on_a_terminal_of_the_same_size_over_either_transport(bridge_host):
    # Over pipes no local terminal passes its size on: the bridge sets it, so width-aware programs agree.
    bridge, host = bridge_host
    assert bridge.run(host, "stty size <&1", timeout=10).stdout == "50 400\n"


def test_cd_does_not_persist_but_cwd_argument_works(bridge_host, tmp_path):
    bridge, host = bridge_host
    first = bridge.run(host, "pwd", timeout=10).stdout
    assert bridge.run(host, "cd / && pwd", timeout=10).stdout == "/\n"
    assert bridge.run(host, "pwd", timeout=10).stdout == first
    odd = tmp_path / "dir with 'quotes' and $(x)"
    odd.mkdir()
    assert bridge.run(host, "pwd", cwd=str(odd), timeout=10).stdout == f"{odd}\n"
    missing = bridge.run(host, "pwd", cwd=str(tmp_path / "missing"), timeout=10)
    assert missing.status == "failed" and "missing" in missing.stderr


def test_variables_and_exit_do_not_leak_between_commands(bridge_host):
    bridge, host = bridge_host
    assert bridge.run(host, "FOO=leak; export BAR=leak; exit 0", timeout=10).ok
    assert bridge.run(host, "echo \"[$FOO][$BAR]\"", timeout=10).stdout == "[][]\n"


def test_env_values_reach_the_command_and_are_redacted(bridge_host):
    bridge, host = bridge_host
    secret = "s3cr3t-'$(whoami)'-value"
    result = bridge.run(host, "echo \"key=$API_KEY\"; echo \"$API_KEY\" >&2; printf %s \"$API_KEY\" | wc -c",
                        env={"API_KEY": secret}, timeout=10)
    assert result.ok
    assert secret not in result.stdout and secret not in result.stderr
    assert result.stdout.splitlines() == ["key=[REDACTED]", str(len(secret))]


def test_command_reading_stdin_gets_eof_and_does_not_hang(bridge_host):
    bridge, host = bridge_host
    result = bridge.run(host, "read line; echo \"rc=$?\"; cat; wc -c", timeout=10)
    assert result.ok and result.stdout == "rc=1\n0\n"


def test_long_command_beyond_the_pty_line_limit(bridge_host):
    bridge, host = bridge_host
    payload = "x" * 20_000 + "\u00e9" * 3000
    result = bridge.run(host, f"printf %s '{payload}' | wc -c", timeout=10)
    assert result.stdout.strip() == str(len(payload.encode()))


def test_five_megabytes_of_output_arrive_intact(bridge_host):
    bridge, host = bridge_host
    result = bridge.run(host, "seq 1 750000", timeout=60)
    expected = "".join(f"{n}\n" for n in range(1, 750001))
    assert len(expected) > 5_000_000
    assert result.stdout == expected


def test_never_ending_command_times_out_and_shell_stays_usable(bridge_host):
    bridge, host = bridge_host
    # Unusual durations: other test runs on this machine may have sleeps of their own.
    plain, stubborn_sleep = f"sleep {600 + random.randrange(10**6)}", f"sleep {700 + random.randrange(10**6)}"
    result = bridge.run(host, f"echo started; {plain}", timeout=1)
    assert result.status == "timeout" and result.exit_code is None
    assert "started" in result.stdout
    stubborn = bridge.run(host, f"trap '' INT; {stubborn_sleep}", timeout=1)
    assert stubborn.status == "timeout"
    alive = bridge.run(host, "echo alive", timeout=10)
    assert alive.stdout == "alive\n", alive
    processes = bridge.run(host, "ps -eo args", timeout=10).stdout.splitlines()
    assert plain not in processes and stubborn_sleep not in processes


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("flavour", ["proxy", "direct"])
def test_dropped_connection_mid_command_is_reported_and_next_command_reconnects(flavour, transport, request, tmp_path):
    server = request.getfixturevalue(f"sshd_{flavour}")
    marker = tmp_path / "runs"
    with Bridge({"pod": server.host_config("pod", transport=transport)}) as bridge:
        assert bridge.run("pod", "true", timeout=10).ok
        before = set(server.connection_pids())
        dropper = subprocess.Popen(["bash", "-c", f"sleep 1; kill -9 {' '.join(map(str, before))}"])
        result = bridge.run("pod", f"echo run >> '{marker}'; sleep 30", timeout=20)
        dropper.wait()
        assert result.status == "disconnected" and result.exit_code is None
        assert "connection closed" in result.error
        again = bridge.run("pod", f"cat '{marker}'", timeout=10)
        assert again.ok and again.stdout == "run\n"  # reconnected, and the first command was not repeated


def test_proxy_flavour_refuses_exec_like_runpod(sshd_proxy):
    argv = sshd_proxy.host_config().ssh_command()
    argv.remove("-tt")
    completed = subprocess.run(argv + ["echo", "hi"], capture_output=True, text=True, timeout=20)
    assert completed.returncode != 0 and "PTY" in completed.stderr


def test_unknown_host_key_is_refused_unless_accept_new(sshd_direct, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = sshd_direct.host_config("strict", known_hosts=str(empty))
    with Bridge({"strict": strict}) as bridge:
        result = bridge.run("strict", "true", timeout=10)
    assert result.status == "disconnected" and "not run" in result.error
    assert empty.read_text() == ""
    trusting = sshd_direct.host_config("trusting", known_hosts=str(empty), accept_new_host_keys=True)
    with Bridge({"trusting": trusting}) as bridge:
        assert bridge.run("trusting", "echo in", timeout=10).stdout == "in\n"
    assert "ssh-ed25519" in empty.read_text()


def test_wrong_host_key_is_refused_even_with_accept_new(sshd_direct, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = other.with_suffix(".pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd_direct.port} {pub[0]} {pub[1]}\n")
    config = sshd_direct.host_config("spoofed", known_hosts=str(wrong), accept_new_host_keys=True)
    with Bridge({"spoofed": config}) as bridge:
        assert bridge.run("spoofed", "true", timeout=10).status == "disconnected"


def test_unreachable_host_gives_a_clear_disconnected_result():
    from remote.core.config import HostConfig
    from tests.fixtures import free_port

    config = HostConfig(name="gone", host="127.0.0.1", port=free_port(), user="root", connect_timeout=3)
    started = time.monotonic()
    with Bridge({"gone": config}) as bridge:
        result = bridge.run("gone", "true")
    assert result.status == "disconnected" and "gone" in result.error
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("where", ["local-pty", "proxy-pty", "local-pipe", "proxy-pipe"])
def test_killed_stubborn_commands_leave_no_job_notice_in_later_output(where, request, tmp_path, monkeypatch):
    # Bash announces "[1]+ Killed" whenever it reaps a killed job; under load
    # that used to land inside the next command's stdout.
    kind, transport = where.split("-")
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path))
    config = host_config_for(request, kind, transport)
    shell = RemoteShell(config, interrupt_grace_s=0.3)
    try:
        for _ in range(6):
            stubborn = shell.run(f"trap '' INT; sleep {800 + random.randrange(10**6)}", timeout=0.3)
            assert stubborn.status == "timeout"
            outputs = [shell.run("echo alive; sleep 0.02", timeout=10).stdout for _ in range(3)]
            assert outputs == ["alive\n"] * 3
    finally:
        shell.close()


def test_terminal_modes_changed_by_a_command_are_put_back(bridge_host):
    # A command that turns echo and "\n" -> "\r\n" back on (as a program dying
    # in raw mode can) must not spoil the commands after it.
    bridge, host = bridge_host
    changed = bridge.run(host, "stty echo opost onlcr </dev/tty; echo changed", timeout=10)
    assert changed.status == "ok", changed
    for _ in range(2):
        after = bridge.run(host, "printf 'a\\nb\\n'", timeout=10)
        assert (after.status, after.stdout) == ("ok", "a\nb\n")
    fed = bridge.shell(host).run("cat", timeout=10, typed_input="bGluZQ==\n")
    assert fed.stdout == "bGluZQ==\n"


@pytest.mark.parametrize("kind", ["local", "proxy"])
def test_pipe_transport_has_no_local_terminal_yet_the_shell_has_one(kind, request, tmp_path, monkeypatch):
    # What makes it work on Windows: this side talks to ssh (or script) over
    # plain pipes, while the shell still runs on a terminal of its own.
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path))
    shell = RemoteShell(host_config_for(request, kind, "pipe"))
    try:
        assert shell.run("tty <&1", timeout=10).stdout.startswith("/dev/pts/")
        pid = shell.transport.process.pid
        # stdin and stderr (ssh points its stdout at /dev/null after dup'ing it) are pipes.
        assert all(Path(f"/proc/{pid}/fd/{fd}").readlink().name.startswith("pipe:") for fd in (0, 2))
    finally:
        shell.close()
