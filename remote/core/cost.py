"""What a job costs: an estimate before it runs, the actual figure after.

Prices come from ``pod_setup/cost_config.yaml`` (or another file of the same
shape): GPU dollars per hour by pod type, dollars per image by engine and
steps, and per backend (``stability-structure``: a flat 5 credits an image;
``diffusers``: nothing per image, its denoising steps are GPU seconds). An image is counted when the API generated it, content-filtered ones
included (the generation ran; counting it keeps the actual figure on the safe
side); a variation that came back ERROR is not.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, load_yaml
from .jobspec import RenderJob, denoising_steps

LIVE_RATE_ENV = "POSEFACTORY_GPU_USD_PER_HOUR"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "pod_setup" / "cost_config.yaml"


class CostConfigError(ValueError):
    pass


@dataclass(frozen=True)
class CostBreakdown:
    gpu_seconds: float
    gpu_usd: float
    images: int
    images_usd: float
    pod_type: str
    backend: str = "stability"

    @property
    def total_usd(self) -> float:
        return round(self.gpu_usd + self.images_usd, 4)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_usd": self.total_usd}


class CostModel:
    def __init__(self, config: dict[str, Any], source: str = "<dict>") -> None:
        try:
            self.gpu_usd_per_hour = {str(k): float(v) for k, v in config["gpu_usd_per_hour"].items()}
            self.default_pod_type = str(config.get("default_pod_type", "A40"))
            self.image_pricing = {
                engine: (float(p["usd_at_reference_steps"]), int(p["reference_steps"]), int(p.get("min_billed_steps", 0)))
                for engine, p in config["image_pricing"].items()
            }
            self.overhead_seconds = float(config.get("overhead_seconds_per_job", 0))
            self.backend_image_usd = {str(k): float(v) for k, v in (config.get("backend_usd_per_image") or {}).items()}
            diffusers = config.get("diffusers_estimate") or {}
            self.diffusers_step_s = float(diffusers.get("seconds_per_step_1024", 0.25))
            self.controlnet_share = float(diffusers.get("controlnet_step_share", 0.35))
            self.diffusers_load_s = float(diffusers.get("load_seconds", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CostConfigError(f"{source}: not a valid cost config ({type(exc).__name__}: {exc})") from None
        figures = {**{f"gpu_usd_per_hour.{k}": v for k, v in self.gpu_usd_per_hour.items()},
                   **{f"image_pricing.{k}.usd_at_reference_steps": v[0] for k, v in self.image_pricing.items()},
                   "overhead_seconds_per_job": self.overhead_seconds}
        for key, value in figures.items():
            if not math.isfinite(value) or value < 0:
                raise CostConfigError(f"{source}: {key}: {value} is not a finite, non-negative number")
        for engine, (_, reference_steps, _) in self.image_pricing.items():
            if reference_steps <= 0:
                raise CostConfigError(f"{source}: image_pricing.{engine}.reference_steps: must be positive")

    @classmethod
    def load(cls, path: Path | str | None = None) -> CostModel:
        path = Path(path or DEFAULT_CONFIG)
        try:
            return cls(load_yaml(path.read_text(encoding="utf-8"), str(path)), str(path))
        except OSError as exc:
            raise CostConfigError(f"{path}: cannot read the cost config ({exc.strerror})") from None
        except ConfigError as exc:
            raise CostConfigError(str(exc)) from None

    def gpu_rate(self, pod_type: str | None) -> float:
        live = os.environ.get(LIVE_RATE_ENV)  # a RunPod pod's live USD/h (v2 "cost", remote/runpod/pods.py)
        if live:
            try:
                return max(0.0, float(live))
            except ValueError:
                raise CostConfigError(f"${LIVE_RATE_ENV}: {live[:20]!r} is not a price per hour") from None
        pod_type = pod_type or self.default_pod_type
        if pod_type not in self.gpu_usd_per_hour:
            raise CostConfigError(f"unknown pod type {pod_type!r}; known: {', '.join(sorted(self.gpu_usd_per_hour))}")
        return self.gpu_usd_per_hour[pod_type]

    def image_usd(self, engine_id: str, steps: int) -> float:
        if engine_id not in self.image_pricing:
            raise CostConfigError(f"no price for engine {engine_id!r}")
        usd, reference_steps, min_steps = self.image_pricing[engine_id]
        return usd * max(steps, min_steps) / reference_steps

    def backend_image_price(self, job: RenderJob) -> float:
        """Dollars per generated image for the job's backend."""
        if job.backend in self.backend_image_usd:
            return self.backend_image_usd[job.backend]
        return self.image_usd(job.engine_id, job.steps)

    def breakdown(self, *, pod_type: str | None, gpu_seconds: float, job: RenderJob, images: int) -> CostBreakdown:
        pod = pod_type or self.default_pod_type
        # A backend that costs nothing per image counts no images (its work is in the GPU seconds).
        image_price = self.backend_image_price(job) if images else 0.0
        return CostBreakdown(
            gpu_seconds=round(gpu_seconds, 3),
            gpu_usd=round(self.gpu_rate(pod) * gpu_seconds / 3600, 4),
            images=images if image_price else 0,
            images_usd=round(image_price * images, 4),
            pod_type=pod,
            backend=job.backend,
        )

    def ai_gpu_seconds(self, job: RenderJob, items: int = 1) -> float:
        """Expected GPU seconds of the AI step itself (only diffusers runs on the pod's GPU): one load, then steps."""
        if job.backend != "diffusers":
            return 0.0
        controls = 0 if job.control == "none" else len(job.control.split("+"))
        pixels = (job.width * job.height) or 1024 * 1024  # 0x0: the pod picks an SDXL size, about 1024²
        per_step = self.diffusers_step_s * pixels / (1024 * 1024) * (1 + self.controlnet_share * controls)
        return self.diffusers_load_s + items * job.variations * denoising_steps(job) * per_step

    def estimate(self, job: RenderJob, pod_type: str | None, expected_render_s: float, items: int = 1) -> CostBreakdown:
        """Before a job: every variation of every item billed, render times plus the AI step's and the per-job overhead."""
        return self.breakdown(pod_type=pod_type, job=job,
                              gpu_seconds=expected_render_s * items + self.overhead_seconds
                              + self.ai_gpu_seconds(job, items),
                              images=0 if job.backend == "none" else job.variations * items)

    def actual(self, job: RenderJob, pod_type: str | None, gpu_seconds: float, images_generated: int) -> CostBreakdown:
        """After a job: the measured GPU seconds and the images the backend generated."""
        return self.breakdown(pod_type=pod_type, gpu_seconds=gpu_seconds, job=job, images=images_generated)
