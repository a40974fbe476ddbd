"""ControlNet inputs drawn from Blender's own data, not estimated from pixels.

* ``control-openpose.png``: the COCO-18 skeleton of every armature that deforms a rendered mesh,
  joints projected through the render camera, drawn the way the standard
  OpenPose renderer draws it (keypoint order, limb pairs, colours, black
  background) so the OpenPose ControlNets see what they were trained on.
* ``control-depth.png``: the render's own Z pass as inverse depth (near =
  bright, the way MiDaS-style depth maps the depth ControlNets were trained
  on look), normalised over what the camera hit; empty background is black.

Which armatures count and which bone is which joint: ``skeleton.py`` (the
humanoid map of ``remote/core/humanoid.py``). Hands are drawn too, the 21
OpenPose hand keypoints per hand, where the rig has finger bones.

Two call sites in the render job: :func:`prepare` before the render (turns on
the Z pass and arranges for the pass to be saved when the render completes:
the Render Result fix replaces the render result afterwards) and
:func:`write` after it. Both need bpy; the drawing and the EXR reading are
plain numpy and tested without it.
"""
from __future__ import annotations

import colorsys
import logging
import math
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pod_setup import skeleton
from remote.core.humanoid import check_skeletons
from remote.core.jobspec import COCO18_JOINTS, RenderJob

log = logging.getLogger(__name__)

# The standard OpenPose body renderer: limb pairs (joint indices) and one colour per limb/joint.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
JOINT_RADIUS_PX = 4
LIMB_HALF_WIDTH_PX = 4

# The OpenPose hand renderer: 20 edges from the wrist out along each finger, each its own hue, two
# pixels wide; keypoints as blue discs.
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    pair for finger in range(5) for pair in ((0 if k == 0 else 4 * finger + k, 4 * finger + k + 1) for k in range(4)))
HAND_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(round(c * 255) for c in colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0))
    for index in range(len(HAND_EDGES)))
HAND_POINT_COLOR = (0, 0, 255)
HAND_LINE_HALF_WIDTH_PX = 1.0

Point = tuple[float, float]


# --- drawing (numpy only) -------------------------------------------------------------------------

def draw_openpose(skeletons: Sequence[Sequence[Point | None]], width: int, height: int,
                  hands: Sequence[Sequence[Point | None]] = ()) -> np.ndarray:
    """An RGB uint8 image of the skeletons (18 pixel positions each, None where off-screen or unmapped)
    and hands (21 each), bodies first as the OpenPose renderer draws them."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for joints in skeletons:
        for index, (a, b) in enumerate(LIMBS):
            if joints[a] is not None and joints[b] is not None:
                _fill(canvas, joints[a], joints[b], [int(c * 0.6) for c in COLORS[index]])
        for index, joint in enumerate(joints):
            if joint is not None:
                _fill(canvas, joint, joint, list(COLORS[index]))  # a == b: the joint's disc
    for points in hands:
        for index, (a, b) in enumerate(HAND_EDGES):
            if points[a] is not None and points[b] is not None:
                _fill(canvas, points[a], points[b], list(HAND_COLORS[index]), line=HAND_LINE_HALF_WIDTH_PX)
        for point in points:
            if point is not None:
                _fill(canvas, point, point, list(HAND_POINT_COLOR))
    return canvas


def _fill(canvas: np.ndarray, a: Point, b: Point, color: list[int], line: float = 0.0) -> None:
    """Paint the renderer's shape from a to b: a limb ellipse LIMB_HALF_WIDTH_PX across, a straight
    line ``line`` px either side (hands), or (a == b) a joint disc.

    Only the shape's bounding box is computed, so a 1024 px canvas costs what the skeleton covers.
    """
    reach = max(LIMB_HALF_WIDTH_PX, JOINT_RADIUS_PX) + 1
    x0, x1 = max(int(min(a[0], b[0]) - reach), 0), min(int(max(a[0], b[0]) + reach) + 1, canvas.shape[1])
    y0, y1 = max(int(min(a[1], b[1]) - reach), 0), min(int(max(a[1], b[1]) + reach) + 1, canvas.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5  # pixel centres
    if math.hypot(b[0] - a[0], b[1] - a[1]) < 1e-6:
        mask = (xs - a[0]) ** 2 + (ys - a[1]) ** 2 <= JOINT_RADIUS_PX ** 2
    elif line:
        mask = _segment_distance(xs, ys, a, b) <= line
    else:
        mask = _ellipse_mask(xs, ys, a, b)
    canvas[y0:y1, x0:x1][mask] = color


def _ellipse_mask(xs: np.ndarray, ys: np.ndarray, a: Point, b: Point) -> np.ndarray:
    """The renderer's limb: an ellipse from joint a to joint b, LIMB_HALF_WIDTH_PX across."""
    mid_x, mid_y = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    along = (xs - mid_x) * ux + (ys - mid_y) * uy
    across = -(xs - mid_x) * uy + (ys - mid_y) * ux
    return (along / (length / 2)) ** 2 + (across / LIMB_HALF_WIDTH_PX) ** 2 <= 1.0


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: Point, b: Point) -> np.ndarray:
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip(((xs - a[0]) * dx + (ys - a[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(xs - (a[0] + t * dx), ys - (a[1] + t * dy))


def depth_to_image(z: np.ndarray, far: float) -> np.ndarray:
    """Inverse depth normalised over what was hit (z < far): nearest 255, farthest hit ~0, background 0."""
    hit = np.isfinite(z) & (z > 0) & (z < far)
    image = np.zeros(z.shape + (3,), dtype=np.uint8)
    if not hit.any():
        return image
    inverse = np.zeros(z.shape, dtype=np.float64)
    inverse[hit] = 1.0 / z[hit]
    low, high = inverse[hit].min(), inverse[hit].max()
    scaled = (inverse - low) / (high - low) if high > low else np.ones(z.shape)
    # The farthest hit stays just above black so it still reads as "something" against the background.
    value = np.where(hit, np.round(8 + scaled * 247), 0).astype(np.uint8)
    image[...] = value[..., None]
    return image


def save_png(rgb: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 array as an 8-bit RGB PNG with Blender's own image API (the pod's
    Blender has no Pillow): a byte image, not colour managed, so every value is written as it is."""
    import bpy

    height, width, _ = rgb.shape
    image = bpy.data.images.new("posefactory-control", width, height, alpha=False)
    try:
        image.colorspace_settings.is_data = True  # the ControlNet reads values, not colours
        rgba = np.ones((height, width, 4), dtype=np.float32)
        rgba[..., :3] = rgb[::-1] / 255.0  # Blender's rows run bottom to top
        image.pixels.foreach_set(rgba.ravel())
        image.filepath_raw = str(path)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)
    return path


# --- the Z pass: an uncompressed multilayer EXR as Blender writes it ----------------------------------

class ExrError(ValueError):
    pass


def read_exr_channel(path: Path, suffix: str) -> np.ndarray:
    """The float (H, W) channel whose name ends with ``suffix`` from an uncompressed scanline EXR (single- or multi-part)."""
    data = path.read_bytes()
    if data[:4] != struct.pack("<I", 20000630):
        raise ExrError(f"{path}: not an OpenEXR file")
    flags = struct.unpack("<I", data[4:8])[0]
    multipart = bool(flags & 0x1000)
    position, headers = 8, []
    while True:
        header: dict[str, bytes] = {}
        while data[position] != 0:
            name_end = data.index(b"\0", position)
            type_end = data.index(b"\0", name_end + 1)
            size = struct.unpack("<i", data[type_end + 1:type_end + 5])[0]
            header[data[position:name_end].decode()] = data[type_end + 5:type_end + 5 + size]
            position = type_end + 5 + size
        position += 1
        headers.append(header)
        if not multipart or data[position] == 0:
            position += 1 if multipart else 0
            break
    tables = []
    for header in headers:
        x0, y0, x1, y1 = struct.unpack("<iiii", header["dataWindow"])
        count = struct.unpack("<i", header["chunkCount"])[0] if "chunkCount" in header else y1 - y0 + 1
        tables.append(struct.unpack(f"<{count}Q", data[position:position + 8 * count]))
        position += 8 * count
    for part, header in enumerate(headers):
        channels = _channel_list(header["channels"])
        names = [name for name, _ in channels]
        wanted = [name for name in names if name.endswith(suffix)]
        if not wanted:
            continue
        if header["compression"] != b"\x00":
            raise ExrError(f"{path}: compressed EXR parts are not read here (write with exr_codec NONE)")
        x0, y0, x1, y1 = struct.unpack("<iiii", header["dataWindow"])
        width, height = x1 - x0 + 1, y1 - y0 + 1
        result = np.zeros((height, width), dtype=np.float32)
        for offset in tables[part]:
            at = offset + (4 if multipart else 0)
            y, _size = struct.unpack("<ii", data[at:at + 8])
            at += 8
            for name, pixel_type in channels:
                dtype = {0: "<u4", 1: "<f2", 2: "<f4"}[pixel_type]
                row = np.frombuffer(data, dtype=dtype, count=width, offset=at)
                if name == wanted[0]:
                    result[y - y0] = row.astype(np.float32)
                at += width * np.dtype(dtype).itemsize
        return result
    raise ExrError(f"{path}: no channel ending in {suffix!r}")


def _channel_list(raw: bytes) -> list[tuple[str, int]]:
    channels, position = [], 0
    while raw[position] != 0:
        end = raw.index(b"\0", position)
        pixel_type = struct.unpack("<i", raw[end + 1:end + 5])[0]
        channels.append((raw[position:end].decode(), pixel_type))
        position = end + 17
    return channels


# --- bpy: joints, the Z pass, the two call sites --------------------------------------------------

def project(scene: Any, points: Sequence[Any]) -> list[Point | None]:
    """Pixel positions (x right, y down) through the scene camera; None behind it or off-screen."""
    from bpy_extras.object_utils import world_to_camera_view

    width, height = render_size(scene)
    pixels: list[Point | None] = []
    for point in points:
        if point is None:
            pixels.append(None)
            continue
        ndc = world_to_camera_view(scene, scene.camera, point)
        if ndc.z <= 0 or not (0.0 <= ndc.x <= 1.0 and 0.0 <= ndc.y <= 1.0):
            pixels.append(None)
        else:
            pixels.append((ndc.x * width, (1.0 - ndc.y) * height))
    return pixels


def render_size(scene: Any) -> tuple[int, int]:
    scale = scene.render.resolution_percentage / 100
    return int(scene.render.resolution_x * scale), int(scene.render.resolution_y * scale)


def kinds(job: RenderJob) -> list[str]:
    """The control images the job needs: [], ["openpose"], ["depth"] or both."""
    return [] if job.control == "none" else job.control.split("+")


class _DepthCapture:
    """Saves the Z pass when the render completes, before the Render Result fix replaces the result."""

    def __init__(self) -> None:
        self.exr_path: Path | None = None

    def arm(self) -> None:
        import bpy

        if self.exr_path is not None:  # left by a render that failed before write() read it
            shutil.rmtree(self.exr_path.parent, ignore_errors=True)
        self.exr_path = Path(tempfile.mkdtemp(prefix="posefactory-depth-")) / "passes.exr"
        if self not in bpy.app.handlers.render_complete:
            bpy.app.handlers.render_complete.append(self)

    def disarm(self) -> None:
        import bpy

        if self in bpy.app.handlers.render_complete:
            bpy.app.handlers.render_complete.remove(self)

    def __call__(self, scene: Any, _depsgraph: Any = None) -> None:
        import bpy

        self.disarm()
        settings = scene.render.image_settings
        kept = {name: getattr(settings, name) for name in ("media_type", "file_format", "color_mode", "color_depth",
                                                           "exr_codec", "compression")}
        try:
            settings.media_type = "MULTI_LAYER_IMAGE"
            settings.color_depth = "32"
            settings.exr_codec = "NONE"
            # By type: after the Render Result fix, the image *named* 'Render Result' is a loaded file.
            result = next(image for image in bpy.data.images if image.type == "RENDER_RESULT")
            result.save_render(str(self.exr_path), scene=scene)
        except (StopIteration, RuntimeError, TypeError) as exc:
            log.warning("could not save the Z pass: %s", exc)
        finally:
            for name, value in kept.items():
                try:
                    setattr(settings, name, value)
                except TypeError:  # a setting the restored format does not have
                    pass


_depth_capture = _DepthCapture()


def prepare(job: RenderJob) -> None:
    """Before the render: turn on the Z pass and arm its capture when the job wants depth."""
    _depth_capture.disarm()  # a capture a failed render left armed must not fire for this one
    if "depth" not in kinds(job):
        return
    import bpy

    scene: Any = bpy.context.scene  # always set while a job runs
    for view_layer in scene.view_layers:
        view_layer.use_pass_z = True
    _depth_capture.arm()
    log.info("depth control: Z pass on, captured at render completion")


def openpose_on_screen(scene: Any, bone_map: dict[str, str]) -> tuple[list, list, list[dict[str, Any]]]:
    """Every counted armature's 18 joints and its hands in pixels (None off-screen or unmapped), and
    per armature what was found: its map, its convention, the joints on screen and those missing."""
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    skeletons, hands, report = [], [], []
    for armature in skeleton.armatures(scene):
        mapping = skeleton.humanoid_map(armature, bone_map)
        body, hand_points = skeleton.posed_joints(armature.evaluated_get(depsgraph), mapping)
        pixels = project(scene, body)
        skeletons.append(pixels)
        hands += [project(scene, points) for points in hand_points.values()]
        on_screen = [joint for joint, pixel in zip(COCO18_JOINTS, pixels) if pixel is not None]
        report.append({"armature": armature.name, "convention": mapping.convention, "mapped": mapping.body_count,
                       "joints": {joint: str(ref) for joint, ref in mapping.joints.items()},
                       "on_screen": len(on_screen), "hands": sorted(hand_points),
                       "missing": [joint for joint in COCO18_JOINTS if joint not in on_screen]})
        log.info("openpose control: %s: %s, %d on screen", armature.name, mapping.summary(), len(on_screen))
    return skeletons, hands, report


@dataclass
class Written:
    """What :func:`write` made for one render: the images by kind, what each armature put on screen
    (OpenPose), the lines saying which image would condition the AI step on nothing (``problems``:
    no paid step may run on them) and what is thin (``warnings``: the item goes on and says so)."""

    paths: dict[str, Path] = field(default_factory=dict)
    skeletons: list[dict[str, Any]] | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def write(job: RenderJob, output_dir: Path) -> Written:
    """After the render: write the job's control images next to render.png."""
    import bpy

    scene: Any = bpy.context.scene
    width, height = render_size(scene)
    written = Written()
    if "openpose" in kinds(job):
        skeletons, hands, written.skeletons = openpose_on_screen(scene, job.bone_map)
        written.paths["openpose"] = save_png(draw_openpose(skeletons, width, height, hands),
                                             output_dir / "control-openpose.png")
        check = check_skeletons(written.skeletons)
        if check.line:
            (written.problems if check.empty else written.warnings).append(check.line)
    if "depth" in kinds(job):
        _depth_capture.disarm()
        exr = _depth_capture.exr_path
        if exr is None or not exr.is_file():
            from .job_errors import EXIT_RENDER, JobFailed

            raise JobFailed(EXIT_RENDER, "the render left no Z pass for the depth control image")
        z = read_exr_channel(exr, "Depth.Z")
        shutil.rmtree(exr.parent, ignore_errors=True)
        _depth_capture.exr_path = None
        far = scene.camera.data.clip_end if scene.camera else 1e9
        depth = depth_to_image(z, far)
        written.paths["depth"] = save_png(depth, output_dir / "control-depth.png")
        if not depth.any():
            written.problems.append(f"depth control: the camera sees nothing nearer than its clip end ({far:g} m); "
                                    "the depth image is empty")
    return written
