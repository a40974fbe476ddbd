import json
import re

import pytest

from remote.core.jobspec import SDXL_SIZES, JobValidationError, RenderJob, denoising_steps


def make_job(**overrides):
    values = {"blend_path": "scene.blend", "output_dir": "out", "prompt": "a knight"}
    values.update(overrides)
    return RenderJob(**values)


def test_every_sdxl_size_is_accepted_and_a_multiple_of_64():
    for width, height in SDXL_SIZES:
        make_job(width=width, height=height).validate()
        assert width % 64 == 0 and height % 64 == 0


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"prompt": "   "}, "prompt"),
        ({"width": 512, "height": 512}, "size"),
        ({"width": 1024, "height": 1088}, "size"),
        ({"strength": 1.5}, "strength"),
        ({"steps": 5}, "steps"),
        ({"steps": 20.5}, "steps"),
        ({"cfg_scale": 40}, "cfg_scale"),
        ({"seed": -1}, "seed"),
        ({"variations": 0}, "variations"),
        ({"variations": True}, "variations"),
        ({"sampler": "EULER"}, "sampler"),
        ({"style_preset": "watercolour"}, "style_preset"),
        ({"backend": "dalle"}, "backend"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(overrides, field):
    with pytest.raises(JobValidationError, match=f"^{field}"):
        make_job(**overrides).validate()


def test_round_trip_through_json_keeps_hostile_text(tmp_path):
    prompt = "a \"knight\" $(rm -rf ~) `id` 'quoted' \u00e9\u4e2d\n second line"
    job = make_job(prompt=prompt, negative_prompt="blurry; $HOME")
    path = tmp_path / "job.json"
    job.write(path)
    assert RenderJob.read(path) == job


def test_unknown_and_missing_fields_are_refused(tmp_path):
    with pytest.raises(JobValidationError, match="unknown field.*api_key"):
        RenderJob.from_dict({"blend_path": "a", "output_dir": "b", "prompt": "c", "api_key": "sk-1"})
    with pytest.raises(JobValidationError, match="missing field.*prompt"):
        RenderJob.from_dict({"blend_path": "a", "output_dir": "b"})
    path = tmp_path / "job.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(JobValidationError, match="JSON object"):
        RenderJob.read(path)


# --- AI backends ---

@pytest.mark.parametrize("backend", ["stability", "stability-structure", "diffusers", "ai-render", "none"])
def test_every_backend_accepts_the_defaults_at_an_sdxl_size(backend):
    make_job(backend=backend, width=1216, height=832).validate()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"backend": "diffusers", "width": 100, "height": 64}, "size: 100x64 must be multiples of 8"),
        ({"backend": "diffusers", "width": 4096, "height": 64}, "size: 4096x64"),
        ({"backend": "stability-structure", "width": 64, "height": 640}, "size: 64x640 is outside"),
        ({"backend": "ai-render", "width": 64, "height": 64}, "size: 64x64 is not an SDXL size"),
        ({"backend": "diffusers", "steps": 0}, "steps"),
        ({"backend": "diffusers", "steps": 20, "strength": 0.96}, "strength: keeping 0.96 of the render leaves 0 of 20"),
        ({"backend": "diffusers", "control": "canny"}, "control: 'canny' is not one of"),
        ({"backend": "stability", "control": "depth"}, "control: depth needs backend diffusers"),
        ({"backend": "diffusers", "openpose_scale": 2.5}, "openpose_scale"),
        ({"backend": "diffusers", "depth_scale": -0.1}, "depth_scale"),
        ({"backend": "stability-structure", "control_strength": 1.2}, "control_strength"),
        ({"bone_map": {"tail": "x"}}, "bone_map: 'tail' is not a COCO-18 joint"),
        ({"bone_map": {"neck": "spine\n"}}, "bone_map: neck: 'spine\\n'"),
        ({"bone_map": {"neck": "x" * 64}}, "bone_map: neck: 'xxx"),
        ({"bone_map": ["neck"]}, "bone_map: must map"),
        ({"api_base_url": "file:///etc/passwd"}, "api_base_url"),
        ({"api_base_url": "http://x y"}, "api_base_url"),
    ],
)
def test_backend_settings_are_checked_before_anything_runs(overrides, message):
    with pytest.raises(JobValidationError, match=f"^{re.escape(message)}"):
        make_job(**overrides).validate()


def test_diffusers_takes_small_sizes_and_few_steps_and_keep_render_maps_to_strength():
    job = make_job(backend="diffusers", width=64, height=64, steps=2, strength=0.5, control="openpose+depth",
                   bone_map={"neck": "mixamorig:Spine2:tail", "nose": "Head"})
    job.validate()
    assert denoising_steps(job) == 1  # 2 steps x (1 - 0.5 kept)
    assert denoising_steps(make_job(steps=30, strength=0.35)) == 19


def test_backend_settings_round_trip(tmp_path):
    job = make_job(backend="diffusers", control="depth", depth_scale=0.6, bone_map={"left_eye": "eye.L:head"})
    job.write(tmp_path / "job.json")
    assert RenderJob.read(tmp_path / "job.json") == job
