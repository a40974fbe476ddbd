"""The camera's framing at an SDXL size: pure math, shared by the add-on and the pod.

The artist's camera frames a rectangle of the display aspect of the scene's
resolution (pixel aspect included). The init image keeps that framing:

* the default size is the SDXL size nearest that aspect;
* any size of another aspect is a centred *crop* of the camera's frame, never
  more than the camera frames (Blender itself would widen the view along the
  shorter side with ``sensor_fit`` Auto);
* pixels are square in the init image.

:func:`fit_camera` turns the camera's lens settings into the ones that render
exactly that crop; :func:`crop_for` says how much of the frame a size cuts, so
the panel can say it before anything is paid for. No ``bpy`` here.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from .jobspec import SDXL_SIZES

log = logging.getLogger(__name__)


def display_aspect(res_x: int, res_y: int, pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0) -> float:
    """Width / height of the image the artist sees (Blender's pixel aspect stretches it)."""
    if min(res_x, res_y) <= 0 or min(pixel_aspect_x, pixel_aspect_y) <= 0:
        raise ValueError(f"resolution {res_x}x{res_y} with pixel aspect {pixel_aspect_x}:{pixel_aspect_y} has no aspect")
    return (res_x * pixel_aspect_x) / (res_y * pixel_aspect_y)


def nearest_sdxl_size(aspect: float) -> tuple[int, int]:
    """The SDXL size whose aspect is nearest ``aspect`` (on a log scale: 2:1 and 1:2 are as far from 1:1)."""
    return min(SDXL_SIZES, key=lambda size: abs(math.log(size[0] / size[1]) - math.log(aspect)))


@dataclass(frozen=True)
class Crop:
    """The centred part of the camera's frame an output size keeps (fractions of width and height)."""

    keep_x: float
    keep_y: float

    @property
    def cropped_share(self) -> float:
        """The share of the camera's frame area the size cuts away (0: none)."""
        return 1.0 - self.keep_x * self.keep_y

    @property
    def percent(self) -> int:
        return round(self.cropped_share * 100)


def crop_for(aspect: float, size: tuple[int, int]) -> Crop:
    """What ``size`` keeps of a camera frame of display ``aspect``."""
    target = size[0] / size[1]
    if target < aspect:  # narrower than the camera: full height, cut the sides
        return Crop(target / aspect, 1.0)
    return Crop(1.0, aspect / target)  # wider (or equal): full width, cut top and bottom


@dataclass(frozen=True)
class Lens:
    """The camera settings that decide its frame.

    ``sensor_fit`` is Blender's AUTO, HORIZONTAL or VERTICAL; for an
    orthographic camera ``ortho_scale`` takes the role of the sensor size.
    Shifts are in units of the frame's larger side, as Blender defines them.
    """

    sensor_fit: str
    sensor_width: float
    sensor_height: float
    shift_x: float = 0.0
    shift_y: float = 0.0
    ortho_scale: float = 0.0
    orthographic: bool = False


def frame_size(lens: Lens, aspect: float) -> tuple[float, float]:
    """The frame's width and height in sensor units (ortho units for an orthographic camera)."""
    fit = lens.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if aspect >= 1.0 else "VERTICAL"
        size = lens.ortho_scale if lens.orthographic else lens.sensor_width  # Auto maps it to the larger side
    elif fit == "HORIZONTAL":
        size = lens.ortho_scale if lens.orthographic else lens.sensor_width
    else:
        size = lens.ortho_scale if lens.orthographic else lens.sensor_height
    if fit == "HORIZONTAL":
        return size, size / aspect
    return size * aspect, size


def fit_camera(lens: Lens, aspect: float, size: tuple[int, int]) -> Lens:
    """Lens settings that render the centred crop of ``lens``'s frame (display ``aspect``) at ``size``.

    The result uses an explicit horizontal fit, so it means the same whatever
    the output size; the frame centre (shift) stays where the artist put it.
    """
    width, height = frame_size(lens, aspect)
    crop = crop_for(aspect, size)
    new_width, new_height = width * crop.keep_x, height * crop.keep_y
    # Shift is relative to the larger side, which may change with the crop.
    scale = max(width, height) / max(new_width, new_height)
    fitted = Lens(
        sensor_fit="HORIZONTAL",
        sensor_width=lens.sensor_width if lens.orthographic else new_width,
        sensor_height=lens.sensor_height,
        shift_x=lens.shift_x * scale,
        shift_y=lens.shift_y * scale,
        ortho_scale=new_width if lens.orthographic else lens.ortho_scale,
        orthographic=lens.orthographic,
    )
    log.debug("framing: aspect %.4f at %dx%d keeps %.3f x %.3f of the frame", aspect, size[0], size[1],
              crop.keep_x, crop.keep_y)
    return fitted
