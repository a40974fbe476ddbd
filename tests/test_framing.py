"""Framing: the pure rule (remote/core/framing.py) and real renders of a 16:9
scene with markers at the edges of the camera's frame."""
from __future__ import annotations

import math

import pytest

from remote.core.framing import Lens, crop_for, display_aspect, fit_camera, frame_size, nearest_sdxl_size
from remote.core.jobspec import SDXL_SIZES
from tests.fixtures.marker_scene import expected_centre, marker_boxes
from tests.fixtures.stability_server import png_size
from tests.test_pod_render_job import run_job


def test_nearest_size_for_common_aspects():
    assert nearest_sdxl_size(16 / 9) == (1344, 768)
    assert nearest_sdxl_size(1.0) == (1024, 1024)
    assert nearest_sdxl_size(9 / 16) == (768, 1344)
    assert nearest_sdxl_size(4 / 3) == (1152, 896)
    assert nearest_sdxl_size(2.39) == (1536, 640)
    assert nearest_sdxl_size(10.0) == (1536, 640) and nearest_sdxl_size(0.1) == (640, 1536)
    for width, height in SDXL_SIZES:
        assert nearest_sdxl_size(width / height) == (width, height)
        assert crop_for(width / height, (width, height)).percent == 0


def test_crop_of_an_explicit_size():
    square = crop_for(16 / 9, (1024, 1024))
    assert square.keep_x == pytest.approx(9 / 16) and square.keep_y == 1 and square.percent == 44
    portrait_shot_wide = crop_for(1.0, (1344, 768))
    assert portrait_shot_wide.keep_x == 1 and portrait_shot_wide.keep_y == pytest.approx(768 / 1344)
    assert crop_for(16 / 9, (1344, 768)).percent == 2
    assert display_aspect(960, 1080, 2.0, 1.0) == pytest.approx(16 / 9)
    with pytest.raises(ValueError):
        display_aspect(0, 1080)


@pytest.mark.parametrize("fit", ["AUTO", "HORIZONTAL", "VERTICAL"])
@pytest.mark.parametrize("aspect", [16 / 9, 1.0, 0.6])
@pytest.mark.parametrize("size", [(1024, 1024), (1344, 768), (640, 1536)])
def test_fitted_lens_frames_exactly_the_centred_crop(fit, aspect, size):
    lens = Lens(fit, 36.0, 24.0, shift_x=0.1, shift_y=-0.05)
    width, height = frame_size(lens, aspect)
    fitted = fit_camera(lens, aspect, size)
    new_width, new_height = frame_size(fitted, size[0] / size[1])
    crop = crop_for(aspect, size)
    assert new_width == pytest.approx(width * crop.keep_x) and new_height == pytest.approx(height * crop.keep_y)
    # The frame's centre (the shift, in sensor units) stays where the artist put it.
    assert fitted.shift_x * max(new_width, new_height) == pytest.approx(lens.shift_x * max(width, height))
    assert fitted.shift_y * max(new_width, new_height) == pytest.approx(lens.shift_y * max(width, height))


def test_orthographic_lens_crops_its_ortho_scale():
    lens = Lens("AUTO", 36.0, 24.0, ortho_scale=16.0, orthographic=True)
    fitted = fit_camera(lens, 16 / 9, (1024, 1024))
    assert fitted.ortho_scale == pytest.approx(9.0) and fitted.sensor_fit == "HORIZONTAL"
    assert math.isclose(fitted.sensor_width, 36.0)


def check_markers(png, size, keep, tolerance=4.0):
    """Every marker inside the kept crop is where the camera put it; every other one is absent."""
    boxes = marker_boxes(png)
    for name in ("left", "right", "top", "bottom", "centre", "above", "below"):
        expected = expected_centre(name, size, keep)
        if expected is None:
            assert name not in boxes, f"{name} should be cropped away, found at {boxes.get(name)}"
            continue
        assert name in boxes, f"{name} missing; found {sorted(boxes)}"
        x0, y0, x1, y1 = boxes[name]
        centre = ((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2)
        assert abs(centre[0] - expected[0]) <= tolerance and abs(centre[1] - expected[1]) <= tolerance, \
            f"{name} at {centre}, expected {expected}"
    return boxes


def test_sixteen_nine_scene_at_its_nearest_size_keeps_every_edge_marker(tmp_path, marker_scene, stability_server):
    scene = marker_scene((1920, 1080))
    completed, manifest = run_job(tmp_path, scene, stability_server, backend="none", key=None, width=0, height=0)
    assert completed.returncode == 0, completed.stderr
    png = tmp_path / "out" / "render.png"
    assert png_size(png.read_bytes()) == (1344, 768) and manifest["size"] == [1344, 768]
    crop = crop_for(16 / 9, (1344, 768))
    assert manifest["cropped_percent"] == pytest.approx(crop.cropped_share * 100, abs=0.01)
    boxes = check_markers(png, (1344, 768), (crop.keep_x, crop.keep_y))
    assert {"left", "right", "top", "bottom", "centre"} <= set(boxes) and not {"above", "below"} & set(boxes)


def test_sixteen_nine_scene_at_1024_square_is_cropped_never_widened(tmp_path, marker_scene, stability_server):
    scene = marker_scene((1920, 1080), shift=(0.05, 0.02))
    completed, manifest = run_job(tmp_path, scene, stability_server, backend="none", key=None)
    assert completed.returncode == 0, completed.stderr
    png = tmp_path / "out" / "render.png"
    assert png_size(png.read_bytes()) == (1024, 1024) and manifest["cropped_percent"] == pytest.approx(43.75)
    boxes = check_markers(png, (1024, 1024), (9 / 16, 1.0))
    # Top and bottom stay at the image's edges: nothing above or below the camera's frame is shown.
    assert {"top", "bottom", "centre"} <= set(boxes) and not {"left", "right", "above", "below"} & set(boxes)


def test_pixel_aspect_is_honoured_with_square_pixels(tmp_path, marker_scene, stability_server):
    # 960x1080 at pixel aspect 2:1 shows a 16:9 picture: the init image must be that picture, unsquashed.
    scene = marker_scene((960, 1080), pixel_aspect_x=2.0, sensor_fit="VERTICAL")
    completed, manifest = run_job(tmp_path, scene, stability_server, backend="none", key=None, width=0, height=0)
    assert completed.returncode == 0, completed.stderr
    png = tmp_path / "out" / "render.png"
    assert manifest["size"] == [1344, 768]
    crop = crop_for(16 / 9, (1344, 768))
    boxes = check_markers(png, (1344, 768), (crop.keep_x, crop.keep_y))
    x0, y0, x1, y1 = boxes["centre"]
    assert abs((x1 - x0) - (y1 - y0)) <= 2  # a square marker stays square


def test_every_camera_of_a_batch_keeps_its_framing(tmp_path, marker_scene, stability_server):
    # Two cameras framing the same markers; a batch renders both from one opened scene at 1024².
    scene = marker_scene((1920, 1080), extra="second = camera.copy(); second.data = camera.data.copy(); "
                                             "second.name = 'Cam2'; scene.collection.objects.link(second)")
    completed, manifest = run_job(tmp_path, scene, stability_server, backend="none", key=None, cameras="Cam,Cam2")
    assert completed.returncode == 0, completed.stderr
    renders = sorted((tmp_path / "out").glob("*/render.png"))
    assert [p.parent.name for p in renders] == ["current--Cam", "current--Cam2"]
    for png in renders:
        boxes = check_markers(png, (1024, 1024), (9 / 16, 1.0))
        assert not {"above", "below"} & set(boxes), png
