"""One rule for item names and one normalisation for item keys, on both sides.

The pod names items (``pod_setup/poses.py`` through ``batch_spec.item_name`` and
``unique_names``); the laptop checks what comes back (``check_item_entry``,
``check_item_path``, ``pod_output.check_name``) and keys items for reuse. A
name the pod makes and the laptop refuses is an item paid and never delivered;
a key that differs between the two is an item paid again on every re-run.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote.core.batch_spec import (
    MAX_ITEMS,
    BatchSpecError,
    PoseSpec,
    check_item_count,
    check_item_entry,
    check_item_path,
    is_item_name,
    item_cache_key,
    item_key,
    item_name,
    parse_poses,
    unique_names,
)
from remote.core.pod_output import check_name, output_path, parse_manifest
from remote.jobs.items import ItemCache, list_items
from tests.fixtures import require
from tests.fixtures.blender_scene import bpy_available

HOSTILE = ["Jump...high", "../../side", "..", ".", "...", "a/../b", "a\\..\\b", "--..--", "\x1b[31mRun\x1b[0m",
           "Walk\u202egnp.exe", "名前", " ", "", "a" * 200, ".hidden", "x..", "-..-..-"]


def laptop_accepts(name: str, tmp_path=None) -> None:
    """Every laptop-side check an item name meets on the way back."""
    assert is_item_name(name), name
    check_item_entry({"name": name, "status": "done", "render": f"{name}/render.png",
                      "images": [f"{name}/ai-render-1.png"]})
    for file in ("render.png", "thumb.png", "ai-render-2.png"):
        check_item_path(f"{name}/{file}")
        check_name(f"{name}/{file}", allow_item_dirs=True)
    assert name not in (".", "..") and "/" not in name and "\\" not in name and ".." not in name
    if tmp_path is not None:
        assert output_path(tmp_path, f"{name}/render.png", allow_item_dirs=True).parent.parent == tmp_path


@pytest.mark.parametrize("pose", HOSTILE)
@pytest.mark.parametrize("camera", [None, "../../side", "front", "..."])
def test_names_the_pod_makes_from_hostile_text_pass_the_laptops_checks(pose, camera, tmp_path):
    laptop_accepts(item_name(pose, camera), tmp_path)


def test_dot_runs_are_collapsed_not_refused():
    assert item_name("Jump...high", None) == "Jump.high"
    assert item_name("Jump", "../../side") == "Jump--._._side"
    assert item_name("..", None) == "item" and item_name("../../side", None) == "side"


text = st.text(st.characters(codec="utf-8"), max_size=120) | st.sampled_from(HOSTILE)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(text, st.none() | text), min_size=1, max_size=8))
def test_property_any_pose_and_camera_text_names_an_item_the_laptop_accepts(pairs):
    names = unique_names([item_name(pose, camera) for pose, camera in pairs])
    assert len(set(names)) == len(names)
    for name in names:
        laptop_accepts(name)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(text, min_size=1, max_size=8))
def test_property_unique_names_of_any_text_are_item_names(names):
    made = unique_names(names)
    assert len(set(made)) == len(made) and all(is_item_name(n) for n in made)


# -- keys: the laptop's listed item and the pod's entry (through parse_manifest) key the same --

CONTROL_TEXT = st.text(st.sampled_from(["a", "B", " ", "\t", "\n", "\x1b", "[", "3", "1", "m", "]", "\x07", "\x9b",
                                        "\u202e", "\u2066", "\x00", "\x7f", "\\", "é"]), max_size=40)


def _key_both_sides(listed: dict) -> tuple[str, str]:
    digest = item_key("0" * 64, {"prompt": "p"}, {})
    manifest = parse_manifest(json.dumps({"items": [{**listed, "status": "done", "render": None, "images": []}]}))
    from_pod = manifest.raw["items"][0]
    assert ItemCache().key(digest, listed) == item_cache_key(digest, listed)  # the cache uses the one function
    return ItemCache().key(digest, listed), ItemCache().key(digest, from_pod)


@settings(max_examples=300, deadline=None)
@given(pose=CONTROL_TEXT, camera=CONTROL_TEXT)
def test_property_key_of_the_listed_item_equals_the_key_of_the_pods_entry(pose, camera):
    listed = {"name": item_name(pose, camera), "pose": pose, "kind": "marker", "camera": camera, "frame": 3}
    laptop, pod = _key_both_sides(listed)
    assert laptop == pod


def test_escape_and_bidi_names_key_the_same_and_still_tell_items_apart():
    a = {"name": "Run", "pose": "\x1b[31mRun\x1b[0m", "kind": "marker", "camera": "cam\u202e", "frame": 1}
    laptop, pod = _key_both_sides(a)
    assert laptop == pod
    b = {**a, "pose": "\x1b[31mWalk\x1b[0m", "name": "Walk"}
    assert ItemCache().key("d", a) != ItemCache().key("d", b)
    assert item_key("s", {}, a) == item_key("s", {}, {**a, "pose": "Run", "camera": "cam"})


# -- the real pod naming: poses.py in real Blender on a scene with hostile names --

BUILD = textwrap.dedent("""
    import sys
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    for name in ("front", "../../side"):
        cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        scene.collection.objects.link(cam)
        scene.camera = cam
    for frame, name in enumerate(["Jump...high", "\\x1b[31mRun\\x1b[0m", "Walk\\u202e", "..", "Jump..high"], 1):
        scene.timeline_markers.new(name, frame=frame)
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
""")


@pytest.fixture(scope="module")
def hostile_scene(tmp_path_factory):
    require(bpy_available(), "the bpy module (real Blender)", "pip install bpy==5.0.1 (scripts/bootstrap.sh does it)")
    path = tmp_path_factory.mktemp("hostile") / "hostile.blend"
    script = path.with_name("build.py")
    script.write_text(BUILD)
    subprocess.run([sys.executable, str(script), str(path)], check=True, capture_output=True, timeout=120)
    return path


def test_real_pod_naming_of_hostile_markers_and_cameras_is_accepted_and_keys_match(hostile_scene, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.delenv("POSEFACTORY_BLENDER", raising=False)
    monkeypatch.delenv("POSEFACTORY_BPY_PYTHON", raising=False)
    items = list_items(hostile_scene, "markers", "front,../../side")  # the laptop's list: pod_setup/poses.py
    assert items is not None and len(items) == 10
    names = [i["name"] for i in items]
    assert len(set(names)) == 10 and "Jump.high--._._side" in names
    for item in items:
        laptop_accepts(item["name"], tmp_path)
        laptop, pod = _key_both_sides(item)
        assert laptop == pod, item


# -- frame ranges: counted before they are expanded --

@pytest.mark.parametrize("spec", ["frames:1-99999999", "frames:0-999999999999999999999", "frames:1-10000000000:1"])
def test_a_huge_frame_range_is_refused_at_once_with_one_line(spec):
    started = time.monotonic()
    with pytest.raises(BatchSpecError) as raised:
        parse_poses(spec)
    assert time.monotonic() - started < 0.5
    message = str(raised.value)
    assert "\n" not in message and f"at most {MAX_ITEMS} items" in message and "frames" in message


def test_frame_list_of_a_huge_spec_is_refused_without_expanding():
    spec = PoseSpec("frames", frames=(1, 10**15, 1))
    started = time.monotonic()
    assert spec.frame_count == 10**15
    with pytest.raises(BatchSpecError, match=f"at most {MAX_ITEMS} items"):
        spec.frame_list  # noqa: B018 - the property is the check
    assert time.monotonic() - started < 0.5
    with pytest.raises(BatchSpecError, match=r"^\d+ poses × 3 cameras"):
        check_item_count(10**12, 3)


def test_frame_ranges_within_the_limit_still_expand():
    assert parse_poses("frames:1-10:3").frame_list == [1, 4, 7, 10]
    assert parse_poses(f"frames:1-{MAX_ITEMS}").frame_count == MAX_ITEMS
    with pytest.raises(BatchSpecError, match=f"{MAX_ITEMS + 1} frames"):
        parse_poses(f"frames:1-{MAX_ITEMS + 1}")
