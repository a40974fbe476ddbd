"""Bones as the humanoid map reads them: rest positions in world space (Z up), the points of a bone a
joint can be, and the vector arithmetic on plain tuples (no mathutils: the laptop and the pod alike)."""
from __future__ import annotations

import math
from dataclasses import dataclass

Vec = tuple[float, float, float]


def sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def norm(a: Vec) -> float:
    return math.sqrt(dot(a, a))


def unit(a: Vec) -> Vec:
    length = norm(a) or 1.0
    return (a[0] / length, a[1] / length, a[2] / length)


@dataclass(frozen=True)
class Bone:
    """One bone at rest: world-space head and tail, Z up."""

    name: str
    parent: str | None
    head: Vec
    tail: Vec
    deform: bool = True
    # The bone's rest frame in world space: its local X, Y (head→tail) and Z axes, scale included.
    axes: tuple[Vec, Vec, Vec] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def to_local(self, world_offset: Vec) -> Vec:
        """A world-space offset from the head in the bone's rest frame (the frame posing moves)."""
        x, y, z = (dot(world_offset, axis) / (dot(axis, axis) or 1.0) for axis in self.axes)
        return (x, y, z)


@dataclass(frozen=True)
class JointRef:
    """A point of a bone: its head, its tail, or a point in the bone's own rest frame (``offset``,
    metres along the bone's local X, Y (head→tail) and Z) for face joints read from the head's shape."""

    bone: str
    end: str = "head"  # head | tail | offset
    offset: Vec = (0.0, 0.0, 0.0)

    def __str__(self) -> str:
        if self.end == "offset":
            return f"{self.bone}@" + ",".join(f"{v:.4f}" for v in self.offset)
        return f"{self.bone}:{self.end}"

    @classmethod
    def parse(cls, text: str) -> JointRef:
        """``bone``, ``bone:head``, ``bone:tail`` (as a job's ``bone_map`` writes them) or ``bone@x,y,z``."""
        if "@" in text:
            name, _, numbers = text.rpartition("@")
            values = tuple(float(v) for v in numbers.split(","))
            if len(values) == 3 and all(math.isfinite(v) for v in values):
                return cls(name, "offset", (values[0], values[1], values[2]))
        if text.endswith((":head", ":tail")):
            name, end = text.rsplit(":", 1)
            return cls(name, end)
        return cls(text, "head")
