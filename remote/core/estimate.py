"""The one cost estimate before a job: the add-on, the dashboard and the CLI
all call :func:`estimate` with the same assumed render time per item."""
from __future__ import annotations

from .cost import CostBreakdown, CostModel
from .jobspec import RenderJob

# How long one item is assumed to render on the pod, before anything is measured.
EXPECTED_RENDER_S = 60.0


def estimate(job: RenderJob, pod_type: str | None, *, items: int = 1, model: CostModel | None = None,
             expected_render_s: float = EXPECTED_RENDER_S) -> CostBreakdown:
    """Every item of the batch: its render time, its variations and the per-job overhead.
    A pod type the cost config does not price falls back to the config's default."""
    model = model or CostModel.load()
    if pod_type not in model.gpu_usd_per_hour:
        pod_type = None
    return model.estimate(job, pod_type, expected_render_s=expected_render_s, items=items)
