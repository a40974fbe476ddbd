"""The command lines' refusals and guard rails: every option explains itself; broken hosts files,
bad --time-limit, internal errors (KeyError, MemoryError) and truncated scenes are each one line on
the terminal, the traceback (redacted) in the log file."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from remote import cli as remote_cli
from remote import runpod_cli
from remote.bridge import agent
from remote.core import blendfile
from remote.core.blendfile import NotABlendFile, check_blend_file
from remote.dashboard import __main__ as dashboard

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-hardening-secret-0123456789"


def cli(tmp_path: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSEFACTORY_DATA_DIR": str(tmp_path / "data"), "STABILITY_API_KEY": KEY}
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "remote.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def nothing_started(tmp_path: Path) -> bool:
    jobs = tmp_path / "data" / "jobs"
    return not (jobs.exists() and any(jobs.iterdir())) and not (tmp_path / "data" / "local-pod").exists()


@pytest.mark.parametrize("content, says", [
    (b"gpu: " + b"[" * 50000 + b"]" * 50000 + b"\n", "nested too deeply"),
    (b"gpu:\n  host: caf\xe9\xff\n", "not UTF-8"),
])
def test_broken_hosts_file_is_one_line(tmp_path, content, says):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_bytes(content)
    done = cli(tmp_path, "render", str(tmp_path / "scene.blend"), "--prompt", "x", "--backend", "none",
               "--hosts", str(hosts))
    assert done.returncode == 2
    line = one_line(done)
    assert says in line and str(hosts) in line
    assert nothing_started(tmp_path)
    done = cli(tmp_path, "reattach", str(tmp_path / "record.json"), "--hosts", str(hosts))
    assert done.returncode == 2 and says in one_line(done)


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "0", "1e300"])
def test_time_limit_is_checked_by_argparse(tmp_path, value):
    done = cli(tmp_path, "render", str(tmp_path / "scene.blend"), "--prompt", "x", "--backend", "none",
               f"--time-limit={value}")
    assert done.returncode == 2
    assert "--time-limit" in done.stderr.splitlines()[-1] and "Traceback" not in done.stderr
    assert nothing_started(tmp_path)


def test_memory_error_in_the_job_is_one_line_and_logged_redacted(tmp_path):
    # The job fails deep inside with MemoryError (an allocation the laptop could not make); the
    # CLI runs as ``python -m remote.cli`` does (as __main__), so its logger's name matters.
    code = f"""
import runpy, sys
import remote.jobs.pipeline as pipeline
def run_job(*args, **kwargs):
    raise MemoryError("could not allocate the scene buffer for {KEY}")
pipeline.run_job = run_job
sys.argv = ["remote.cli", *sys.argv[1:]]
runpy.run_module("remote.cli", run_name="__main__")
"""
    scene = tmp_path / "scene.blend"
    done = cli(tmp_path, "render", str(scene), "--prompt", "x", "--backend", "none", code=code)
    assert done.returncode == 70, done.stderr
    line = one_line(done)
    log_file = tmp_path / "data" / "logs" / "posefactory.log"
    assert line.startswith("internal error (MemoryError") and str(log_file) in line and KEY not in line
    logged = log_file.read_text()
    assert "Traceback" in logged and "MemoryError" in logged and "remote.cli" in logged
    assert KEY not in logged and "[REDACTED]" in logged


def plain_copy(scene: Path, target: Path) -> Path:
    with open(scene, "rb") as handle:
        target.write_bytes(zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True).read())
    return target


@pytest.mark.parametrize("cut", [1, 7, 24, 5000])
def test_a_truncated_blend_is_refused(tmp_path, sample_scene, cut):
    plain = plain_copy(sample_scene, tmp_path / "plain.blend")
    assert blendfile.walk_to_end(plain) > 10 and blendfile.walk_to_end(sample_scene) == blendfile.walk_to_end(plain)
    check_blend_file(plain)
    data = plain.read_bytes()
    truncated = tmp_path / "truncated.blend"
    truncated.write_bytes(data[:-cut])
    with pytest.raises(NotABlendFile, match="is truncated or damaged"):
        check_blend_file(truncated)
    compressed = sample_scene.read_bytes()
    (tmp_path / "truncated-zstd.blend").write_bytes(compressed[:-cut])
    with pytest.raises(NotABlendFile, match="truncated or damaged|damaged compressed"):
        check_blend_file(tmp_path / "truncated-zstd.blend")


def test_the_cli_refuses_a_truncated_blend_before_upload(tmp_path, sample_scene):
    truncated = tmp_path / "scene.blend"
    truncated.write_bytes(sample_scene.read_bytes()[:-3])
    done = cli(tmp_path, "render", str(truncated), "--prompt", "x", "--backend", "none")
    assert done.returncode == 2
    line = one_line(done)
    assert "is truncated or damaged" in line or "damaged compressed" in line
    assert done.stdout == "" and nothing_started(tmp_path)


class Captured(BaseException):  # past the CLI's own catch-all
    pass


def parser_of(main, monkeypatch) -> argparse.ArgumentParser:
    seen: list[argparse.ArgumentParser] = []

    def capture(self, *args, **kwargs):
        seen.append(self)
        raise Captured()

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(Captured):
        main([])
    return seen[0]


def undocumented(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += undocumented(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{where}: {'/'.join(action.option_strings) or action.dest}")
    return missing


@pytest.mark.parametrize("name, main", [("remote.cli", remote_cli.main), ("remote.bridge.agent", agent.main),
                                        ("remote.runpod_cli", runpod_cli.main), ("remote.dashboard", dashboard.main)])
def test_every_option_has_help_text(name, main, monkeypatch, tmp_path):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path))
    assert undocumented(parser_of(main, monkeypatch), name) == []


def test_an_internal_error_is_one_line_with_the_traceback_in_the_log(tmp_path, monkeypatch, capsys, sample_scene):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STABILITY_API_KEY", "sk-secret-for-the-log-test")

    def broken(*args, **kwargs):
        raise KeyError("sk-secret-for-the-log-test and a bug")

    monkeypatch.setattr(remote_cli, "run_job", broken)
    code = remote_cli.main(["render", str(sample_scene), "--prompt", "a knight", "--backend", "none"])
    err = capsys.readouterr().err
    assert code == 70 and len(err.strip().splitlines()) == 1 and "internal error (KeyError" in err
    assert "sk-secret-for-the-log-test" not in err
    log = (tmp_path / "logs" / "posefactory.log").read_text()
    assert "Traceback" in log and "def broken" not in err and "broken" in log
    assert "sk-secret-for-the-log-test" not in log  # redacted, traceback included
