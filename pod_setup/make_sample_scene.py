"""Build the bundled sample scene: the cube-to-character "golden" scene.

    python make_sample_scene.py OUT.blend [--samples N]     # with the bpy module
    blender --background --python make_sample_scene.py -- OUT.blend

A blocky character (body, head, arms, legs: cubes) on a ground plane, a camera
framing it and a sun light; Cycles on the CPU with few samples at 1024x1024,
the SDXL size the AI step needs.
"""
from __future__ import annotations

import argparse
import sys

import bpy


def build(samples: int) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "PoseFactorySample"
    parts = {
        "Body": ((0, 0, 1.6), (0.45, 0.25, 0.6)),
        "Head": ((0, 0, 2.55), (0.3, 0.3, 0.3)),
        "ArmL": ((0.65, 0, 1.75), (0.15, 0.15, 0.5)),
        "ArmR": ((-0.65, 0, 1.75), (0.15, 0.15, 0.5)),
        "LegL": ((0.22, 0, 0.5), (0.18, 0.18, 0.5)),
        "LegR": ((-0.22, 0, 0.5), (0.18, 0.18, 0.5)),
    }
    skin = bpy.data.materials.new("CharacterClay")
    skin.diffuse_color = (0.8, 0.55, 0.4, 1.0)
    for name, (location, scale) in parts.items():
        bpy.ops.mesh.primitive_cube_add(location=location)
        part = bpy.context.active_object
        part.name = name
        part.scale = scale
        part.data.materials.append(skin)
    bpy.ops.mesh.primitive_plane_add(size=10)
    bpy.context.active_object.name = "Ground"
    bpy.ops.object.camera_add(location=(0, -7, 2.2), rotation=(1.5, 0, 0))
    scene.camera = bpy.context.active_object
    bpy.ops.object.light_add(type="SUN", location=(3, -3, 6))
    bpy.context.active_object.data.energy = 3.0
    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.05, 0.08)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 1024
    scene.render.resolution_percentage = 100


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the .blend to write")
    parser.add_argument("--samples", type=int, default=4, help="Cycles samples (default 4)")
    args = parser.parse_args(argv)
    build(args.samples)
    bpy.ops.wm.save_as_mainfile(filepath=args.output)


if __name__ == "__main__":
    main()
