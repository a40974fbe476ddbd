"""Per-render settings that make the init image show what the artist's camera shows.

Called for every render of an opened scene (a batch renders many cameras and
poses from one scene), so everything here is derived from the artist's
settings captured when the scene was opened (:class:`ArtistFrame`), never
from values an earlier render of the same scene changed.

* Framing: the camera's frame, cropped (centred) to the SDXL size, square
  pixels (``remote.core.framing`` holds the math).
* Hygiene: the AI step gets an 8-bit sRGB PNG of the whole frame with the
  view transform applied: film transparency off (the world shows as it
  renders without transparency), no render region, one multiview view (the
  left eye), whatever output format the scene was set to.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from remote.core.framing import Crop, Lens, crop_for, display_aspect, fit_camera, nearest_sdxl_size
from remote.core.jobspec import AUTO_SIZE, RenderJob

log = logging.getLogger(__name__)
LENS_FIELDS = ("sensor_fit", "sensor_width", "sensor_height", "shift_x", "shift_y", "ortho_scale")


@dataclass
class ArtistFrame:
    """The scene's framing as the artist saved it, and each camera's lens before any render touched it."""

    aspect: float
    lenses: dict[str, Lens] = field(default_factory=dict)

    @classmethod
    def capture(cls, scene: Any) -> ArtistFrame:
        render = scene.render
        return cls(display_aspect(render.resolution_x, render.resolution_y, render.pixel_aspect_x,
                                  render.pixel_aspect_y))

    def lens(self, camera_data: Any) -> Lens:
        key = camera_data.name_full
        if key not in self.lenses:
            self.lenses[key] = Lens(**{name: getattr(camera_data, name) for name in LENS_FIELDS},
                                    orthographic=camera_data.type == "ORTHO")
        return self.lenses[key]


@dataclass(frozen=True)
class RenderSettings:
    """What :func:`configure` did, for the manifest."""

    size: tuple[int, int]
    crop: Crop
    changes: tuple[str, ...]  # the scene settings overridden for a clean init image
    view: str = ""  # the multiview view rendered, when the scene has several
    frame: ArtistFrame | None = field(default=None, repr=False, compare=False)  # to frame each camera rendered

    def to_manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"size": list(self.size), "cropped_percent": round(self.crop.cropped_share * 100, 2),
                                 "init_image_overrides": list(self.changes)}
        if self.view:
            entry["multiview_view"] = self.view
        return entry


def output_size(job: RenderJob, frame: ArtistFrame) -> tuple[int, int]:
    if (job.width, job.height) == AUTO_SIZE:
        return nearest_sdxl_size(frame.aspect)
    return job.width, job.height


def configure(scene: Any, job: RenderJob, frame: ArtistFrame) -> RenderSettings:
    """Set ``scene`` up to render the init image of its active camera at the job's size."""
    size = output_size(job, frame)
    frame_camera(scene, frame, size)
    changes = clean_output(scene)
    view = single_view(scene)
    if job.render_samples and scene.render.engine == "CYCLES":
        scene.cycles.samples = job.render_samples
    settings = RenderSettings(size, crop_for(frame.aspect, size), tuple(changes), view, frame)
    log.info("init image: %dx%d, %.1f%% of the camera frame cropped, overrides: %s", size[0], size[1],
             settings.crop.cropped_share * 100, ", ".join(changes) or "none")
    return settings


def frame_camera(scene: Any, frame: ArtistFrame, size: tuple[int, int]) -> None:
    """Output size with square pixels, and the active camera's lens set to frame the centred crop.

    Idempotent (always from the artist's lens), so it runs again before every
    render: a batch may switch to another camera between renders.
    """
    render = scene.render
    render.resolution_x, render.resolution_y = size
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    camera = scene.camera.data
    if camera.type == "PANO":
        log.warning("framing: panoramic camera %r rendered as it is set", camera.name)
        return
    fitted = fit_camera(frame.lens(camera), frame.aspect, size)
    for name in LENS_FIELDS:
        setattr(camera, name, getattr(fitted, name))


def clean_output(scene: Any) -> list[str]:
    """8-bit sRGB PNG of the whole frame over the world; returns what differed from the scene's settings."""
    render = scene.render
    changes = []
    if render.film_transparent:
        render.film_transparent = False
        changes.append("film transparency off")
    if render.use_border:
        render.use_border = False
        changes.append("render region off")
    settings = render.image_settings
    before = (settings.file_format, settings.color_mode, settings.color_depth)
    if hasattr(settings, "media_type"):  # Blender 5: a movie format must become an image one first
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    if settings.color_management != "FOLLOW_SCENE":
        settings.color_management = "FOLLOW_SCENE"  # the scene's view transform, into sRGB
        changes.append("output colour management follows the scene")
    if before != ("PNG", "RGB", "8"):
        changes.append(f"output {before[0]} {before[1]} {before[2]}-bit -> PNG RGB 8-bit")
    return changes


def single_view(scene: Any) -> str:
    """With multiview on, render one view only (the left eye); returns its name, or '' without multiview."""
    render = scene.render
    if not render.use_multiview:
        return ""
    names = [view.name for view in render.views if view.use] or [view.name for view in render.views]
    chosen = "left" if "left" in names else names[0]
    for view in render.views:
        view.use = view.name == chosen
    log.info("multiview: rendering view %r of %s", chosen, ", ".join(names))
    return chosen


def view_suffix(scene: Any, view: str) -> str:
    """The file-name suffix Blender adds for ``view`` (``_L`` for the left eye)."""
    return scene.render.views[view].file_suffix if view else ""
