import json

import pytest

from remote.jobspec import SDXL_SIZES, JobValidationError, RenderJob


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
        ({"batch": 0}, "batch"),
        ({"batch": True}, "batch"),
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
