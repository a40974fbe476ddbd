"""Which device Cycles renders on: the best GPU kind the pod has, or the CPU.

In background mode Blender's preferences start with no compute device, so
without this a rented GPU pod renders on its CPU at the GPU's price. The
choice itself (:func:`choose_device`) is pure, fed the device list Cycles
reports, so every pod kind can be tested on a machine without a GPU;
:func:`select_device` asks Cycles and applies the choice to the preferences
(once per Blender process), :func:`use_device` to an opened scene.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .job_errors import EXIT_RENDER, JobFailed

log = logging.getLogger(__name__)

# Fastest first: OptiX and CUDA list the same NVIDIA cards; OptiX is faster on RTX.
GPU_KINDS: tuple[str, ...] = ("OPTIX", "CUDA", "HIP", "ONEAPI")


@dataclass(frozen=True)
class Device:
    """One entry of Cycles' device list: ``kind`` is its type (CPU, CUDA, OPTIX, HIP, ONEAPI, METAL)."""

    kind: str
    name: str
    id: str = ""


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # CPU or one of GPU_KINDS
    names: tuple[str, ...]
    warning: str = ""
    ids: tuple[str, ...] = field(default=(), repr=False)

    @property
    def gpu(self) -> bool:
        return self.kind != "CPU"

    def to_manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": self.kind, "names": list(self.names)}
        if self.warning:
            entry["warning"] = self.warning
        return entry


def choose_device(devices: Iterable[Device], mode: str) -> DeviceChoice:
    """The device kind to render on and every device of that kind.

    ``mode`` ``cpu`` always picks the CPU; ``gpu`` raises ``JobFailed`` when
    there is no GPU; ``auto`` falls back to the CPU with a warning.
    """
    listed = list(devices)
    cpus = [d for d in listed if d.kind == "CPU"]
    cpu = DeviceChoice("CPU", tuple(d.name for d in cpus) or ("CPU",), ids=tuple(d.id for d in cpus))
    if mode == "cpu":
        return cpu
    for kind in GPU_KINDS:
        gpus = [d for d in listed if d.kind == kind]
        if gpus:
            return DeviceChoice(kind, tuple(d.name for d in gpus), ids=tuple(d.id for d in gpus))
    found = ", ".join(f"{d.kind} {d.name}" for d in listed) or "none"
    if mode == "gpu":
        raise JobFailed(EXIT_RENDER, f"render_device gpu: Cycles finds no GPU ({'/'.join(GPU_KINDS)}) on this pod "
                                     f"(devices: {found}); nothing was rendered or sent to the AI step")
    return DeviceChoice(cpu.kind, cpu.names, warning=f"no GPU found by Cycles (devices: {found}): rendering on the CPU",
                        ids=cpu.ids)


def _cycles_preferences() -> Any:
    import bpy

    return bpy.context.preferences.addons["cycles"].preferences


def cycles_devices() -> list[Device]:
    """Every device Cycles can use here, after refreshing its list (needs bpy)."""
    preferences = _cycles_preferences()
    preferences.refresh_devices()
    return [Device(d.type, d.name, d.id) for d in preferences.devices]


def select_device(mode: str) -> DeviceChoice:
    """Choose the device and enable exactly its devices in Cycles' preferences (needs bpy)."""
    choice = choose_device(cycles_devices(), mode)
    preferences = _cycles_preferences()
    if choice.gpu:
        preferences.compute_device_type = choice.kind
        preferences.refresh_devices()
    for device in preferences.devices:
        device.use = device.type == choice.kind
    if choice.warning:
        log.warning("render device: %s", choice.warning)
    log.info("render device: %s %s (mode %s)", choice.kind, ", ".join(choice.names), mode)
    return choice


def use_device(scene: Any, choice: DeviceChoice) -> None:
    """Point an opened scene at the chosen device (the setting is saved per scene)."""
    if scene.render.engine == "CYCLES":
        scene.cycles.device = "GPU" if choice.gpu else "CPU"
