"""What the AI step is sent: a clean 8-bit sRGB PNG of the whole frame, whatever
the scene's transparency, render region, multiview or output settings."""
from __future__ import annotations

from PIL import Image

from tests.fixtures.marker_scene import marker_boxes
from tests.test_pod_render_job import run_job

EDGE_MARKERS = {"left", "right", "top", "bottom", "centre"}


def render(tmp_path, scene, stability_server, **overrides):
    completed, manifest = run_job(tmp_path, scene, stability_server, backend="none", key=None, width=1344,
                                  height=768, **overrides)
    assert completed.returncode == 0, completed.stderr
    return tmp_path / "out" / "render.png", manifest


def png_header(path):
    data = path.read_bytes()
    return data[24], data[25]  # IHDR bit depth, colour type (2: RGB)


def test_film_transparent_sends_the_world_not_black(tmp_path, marker_scene, stability_server):
    scene = marker_scene(world=(0.5, 0.5, 0.5), extra="scene.render.film_transparent = True\n"
                                                      "scene.render.image_settings.color_mode = 'RGBA'")
    png, manifest = render(tmp_path, scene, stability_server)
    image = Image.open(png)
    assert image.mode == "RGB" and png_header(png) == (8, 2)
    corner = image.getpixel((5, 5))
    assert all(180 <= channel <= 196 for channel in corner), corner  # linear 0.5 grey in sRGB, not black
    assert "film transparency off" in manifest["init_image_overrides"]


def test_a_render_region_is_ignored_the_whole_frame_is_sent(tmp_path, marker_scene, stability_server):
    scene = marker_scene(extra="scene.render.use_border = True\nscene.render.use_crop_to_border = True\n"
                               "scene.render.border_min_x, scene.render.border_max_x = 0.4, 0.6\n"
                               "scene.render.border_min_y, scene.render.border_max_y = 0.4, 0.6")
    png, manifest = render(tmp_path, scene, stability_server)
    assert Image.open(png).size == (1344, 768)
    assert EDGE_MARKERS <= set(marker_boxes(png))
    assert "render region off" in manifest["init_image_overrides"]


def test_stereo_multiview_sends_the_left_eye_as_render_png(tmp_path, marker_scene, stability_server):
    scene = marker_scene(extra="scene.render.use_multiview = True\nscene.render.views_format = 'STEREO_3D'")
    png, manifest = render(tmp_path, scene, stability_server)
    assert png.is_file() and manifest["multiview_view"] == "left"
    assert sorted(p.name for p in png.parent.glob("*.png")) == ["render.png"]
    assert manifest["render"] == "render.png" and EDGE_MARKERS <= set(marker_boxes(png))


def test_sixteen_bit_png_and_exr_outputs_still_send_an_8_bit_png(tmp_path, marker_scene, stability_server):
    for n, extra in enumerate(["scene.render.image_settings.file_format = 'PNG'\n"
                               "scene.render.image_settings.color_mode = 'RGBA'\n"
                               "scene.render.image_settings.color_depth = '16'",
                               "scene.render.image_settings.file_format = 'OPEN_EXR'\n"
                               "scene.render.image_settings.color_depth = '32'"]):
        scene = marker_scene(extra=extra)
        (tmp_path / str(n)).mkdir()
        png, manifest = render(tmp_path / str(n), scene, stability_server)
        assert png_header(png) == (8, 2), extra
        assert any(o.startswith("output ") and o.endswith("-> PNG RGB 8-bit") for o in manifest["init_image_overrides"])
        assert EDGE_MARKERS <= set(marker_boxes(png))
