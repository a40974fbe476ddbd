"""The pod-output validator: whatever a pod sends, nothing outside the job's
output folder is named, no bad number is charged, no control sequence is shown."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote.core.pod_output import (
    MAX_MANIFEST_BYTES,
    MAX_STATUS_BYTES,
    PodOutputError,
    check_cost,
    check_name,
    clean_text,
    output_path,
    parse_manifest,
    parse_status,
    read_local_manifest,
)

HOSTILE_NAMES = ["/etc/hostname", "../../x", "..", ".", "", "a/b", "a\\b", "C:evil", "x\x1b[31m.png", "x\n.png",
                 "x\x00.png", " x.png", "*", "ai-render-?.png", "a" * 300, "\u202eevil.png"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused(name):
    with pytest.raises(PodOutputError):
        check_name(name)


def test_plain_names_and_allowed_item_folders_pass(tmp_path):
    assert check_name("ai-render-1.png") == "ai-render-1.png"
    assert check_name("pose 01.png") == "pose 01.png"
    with pytest.raises(PodOutputError):
        check_name("item-1/ai-render-1.png")
    assert output_path(tmp_path, "item-1/ai-render-1.png", allow_item_dirs=True) == tmp_path / "item-1" / "ai-render-1.png"
    for bad in ("a/b/c", "../x", "item/..", "/abs"):
        with pytest.raises(PodOutputError):
            check_name(bad, allow_item_dirs=True)


def test_a_symlink_in_the_output_folder_is_not_followed(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ai-render-1.png").symlink_to("/etc/hostname")
    with pytest.raises(PodOutputError, match="outside"):
        output_path(tmp_path / "out", "ai-render-1.png")


def test_escape_sequences_are_stripped_from_pod_text():
    text = "boom\x1b[2J\x1b]0;owned\x07 \x9b31m red\x1b[0m\r\n next\u202e"
    cleaned = clean_text(text)
    assert cleaned == "boom red next"
    assert "\x1b" not in clean_text("\x1b" * 5 + "x") and clean_text("x" * 5000, 100).endswith("…")
    assert clean_text("line 1\nline 2", one_line=False) == "line 1\nline 2"


@pytest.mark.parametrize("value, ok", [(0.5, True), (0, True), (-5, False), (math.nan, False), (math.inf, False),
                                       ("0.5", False), (True, False), (10**400, False), (1e6, False)])
def test_costs_must_be_finite_non_negative_and_bounded(value, ok):
    charged, flag = check_cost(value, estimate_usd=0.1)
    assert (charged is not None) == ok and bool(flag) == (not ok)


def test_manifest_with_hostile_parts():
    good = parse_manifest(json.dumps({"images": ["ai-render-2.png"], "render": "render.png", "actual_cost": {"total_usd": -3},
                                      "variations": [{"n": 2, "seed": 7, "finish_reason": "SUCCESS", "file": "ai-render-2.png"},
                                                     {"n": 1, "seed": 3, "finish_reason": "CONTENT_FILTERED"}],
                                      "error": "\x1b[31mred\x1b[0m", "prompt": "a \x1b]0;t\x07knight"}), estimate_usd=0.1)
    assert good.images == ["ai-render-2.png"] and good.numbers == {"ai-render-2.png": 2} and good.seeds["ai-render-2.png"] == 7
    assert good.reported_usd is None and "negative" in good.cost_flag and good.images_generated == 2
    assert good.error == "red" and good.prompt == "a knight" and "\x1b" not in json.dumps(good.raw)
    with pytest.raises(PodOutputError, match="not a plain name"):
        parse_manifest(json.dumps({"images": ["/etc/hostname"]}))
    with pytest.raises(PodOutputError, match="over"):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(PodOutputError, match="more than"):
        parse_manifest(json.dumps({"images": [f"i{n}.png" for n in range(20)]}), max_images=10)


def test_status_states_and_sizes():
    status = parse_status('{"state": "done", "started_at": 10, "finished_at": 25.5, "exit_code": 0}')
    assert status.terminal and status.gpu_seconds == 15.5
    assert parse_status('{"state": "running", "started_at": 1e400}').started_at is None  # inf: dropped
    for raw, reason in [("{", "not valid JSON"), ("[]", "not a JSON object"), ('{"x": 1}', "no state"),
                        ('{"state": "exploded"}', "unknown state"), (b"\xff\xfe", "not valid JSON"),
                        ('{"state": "done", "pad": "' + "x" * MAX_STATUS_BYTES + '"}', "over")]:
        with pytest.raises(PodOutputError, match=reason):
            parse_status(raw)


def test_read_local_manifest_is_size_bounded(tmp_path):
    assert read_local_manifest(tmp_path) is None
    (tmp_path / "manifest.json").write_bytes(b"{" + b" " * (MAX_MANIFEST_BYTES + 10) + b"}")
    with pytest.raises(PodOutputError, match="over"):
        read_local_manifest(tmp_path)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)
names = st.one_of(st.text(), st.sampled_from(HOSTILE_NAMES), st.integers(), st.none())


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parsers(data):
    for parser in (parse_status, parse_manifest):
        try:
            parser(data)
        except PodOutputError:
            pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=st.fixed_dictionaries({"images": st.lists(names, max_size=5)},
                                      optional={"render": names, "actual_cost": json_values, "variations": json_values,
                                                "error": json_values, "prompt": json_values, "seed": json_values,
                                                "ai_images_requested": json_values, "status": json_values}),
       allow_items=st.booleans())
def test_arbitrary_manifests_never_name_a_path_outside_the_output_dir(tmp_path, manifest, allow_items):
    try:
        checked = parse_manifest(json.dumps(manifest), estimate_usd=0.05, allow_item_dirs=allow_items)
    except (PodOutputError, ValueError):  # ValueError: json.dumps of a NaN-keyed structure is still valid input
        return
    base = tmp_path.resolve()
    for name in [*checked.images, *([checked.render] if checked.render else [])]:
        path = output_path(tmp_path, name, allow_item_dirs=allow_items)
        assert path.resolve().is_relative_to(base) and path != tmp_path
    assert checked.reported_usd is None or (math.isfinite(checked.reported_usd) and checked.reported_usd >= 0)
    assert "\x1b" not in checked.error + checked.prompt


@given(text=st.text())
def test_cleaned_text_has_no_control_characters(text):
    cleaned = clean_text(text, one_line=False)
    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7f <= ord(c) <= 0x9f for c in cleaned)


@given(state=st.text(max_size=20), extra=json_values)
def test_arbitrary_status_objects_give_a_known_state_or_an_error(state, extra):
    try:
        status = parse_status(json.dumps({"state": state, "extra": extra, "started_at": extra}))
    except PodOutputError:
        return
    assert status.state in ("queued", "running", "done", "failed", "cancelled", "none")
    assert status.gpu_seconds is None or math.isfinite(status.gpu_seconds)


def test_output_path_keeps_nested_names_inside(tmp_path: Path):
    assert output_path(tmp_path, "a.png").parent == tmp_path


# -- the wire version of status.json and manifest.json ---------------------------------------------------------

@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_a_file_of_another_wire_version_is_refused_in_one_line(version):
    from remote.core.pod_output import parse_manifest, parse_status

    for parse, data in ((parse_status, {"state": "done"}), (parse_manifest, {"images": []})):
        with pytest.raises(PodOutputError, match="this side reads version 1") as refused:
            parse(json.dumps({**data, "version": version}))
        assert "\n" not in str(refused.value)
    assert parse_status(json.dumps({"state": "done"})).state == "done"  # written before versions: version 1


def test_the_pods_status_writer_and_its_line_go_through_the_wire_records(tmp_path):
    """pod_setup/job_status.py as pod_agent.sh runs it (the pod's python3): the laptop's parser reads what it writes."""
    import subprocess
    import sys

    from remote.core.pod_output import WIRE_VERSION, parse_status

    script = Path(__file__).resolve().parents[1] / "pod_setup" / "job_status.py"

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("write", str(tmp_path), "queued")
    queued = parse_status(run("show", str(tmp_path), "2"))
    assert queued.state == "queued" and queued.queue_position == 2 and queued.queued_at
    (tmp_path / "progress.json").write_text(json.dumps({"total": 4, "done": 1, "failed": 0, "current": "Wave"}))
    run("write", str(tmp_path), "running")
    run("write", str(tmp_path), "failed", "3", "the render failed: out of memory")
    ended = parse_status(run("show", str(tmp_path), "-1"))
    assert (ended.state, ended.exit_code, ended.error) == ("failed", 3, "the render failed: out of memory")
    assert ended.items == {"total": 4, "done": 1, "failed": 0, "current": "Wave"} and ended.gpu_seconds is not None
    assert json.loads((tmp_path / "status.json").read_text())["version"] == WIRE_VERSION
    assert (tmp_path / "state").read_text().strip() == "failed"
    assert not list(tmp_path.glob(".*.tmp"))
