"""Guard rails of the command lines: every option explains itself, and an
internal error is one line for the user with its traceback in the log."""
from __future__ import annotations

import argparse

import pytest

import remote.cli
from remote import cli, runpod_cli
from remote.bridge import agent
from remote.dashboard import __main__ as dashboard


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


@pytest.mark.parametrize("name, main", [("remote.cli", cli.main), ("remote.bridge.agent", agent.main),
                                        ("remote.runpod_cli", runpod_cli.main), ("remote.dashboard", dashboard.main)])
def test_every_option_has_help_text(name, main, monkeypatch, tmp_path):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path))
    assert undocumented(parser_of(main, monkeypatch), name) == []


def test_an_internal_error_is_one_line_with_the_traceback_in_the_log(tmp_path, monkeypatch, capsys, sample_scene):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STABILITY_API_KEY", "sk-secret-for-the-log-test")

    def broken(*args, **kwargs):
        raise KeyError("sk-secret-for-the-log-test and a bug")

    monkeypatch.setattr(remote.cli, "run_job", broken)
    code = cli.main(["render", str(sample_scene), "--prompt", "a knight", "--backend", "none"])
    err = capsys.readouterr().err
    assert code == 70 and len(err.strip().splitlines()) == 1 and "internal error (KeyError" in err
    assert "sk-secret-for-the-log-test" not in err
    log = (tmp_path / "logs" / "posefactory.log").read_text()
    assert "Traceback" in log and "def broken" not in err and "broken" in log
    assert "sk-secret-for-the-log-test" not in log  # redacted, traceback included
