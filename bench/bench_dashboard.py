"""Dashboard page load (server time): 1,000 jobs with 10,000 images vs 10 jobs.

    .venv/bin/python -m bench.bench_dashboard [--jobs 1000] [--images 10] [--baseline 10] [--repeat 40]

Builds two data dirs the way the pipeline leaves them (records, manifests,
PNGs, ledger lines), then times requests through Flask's test client (the
whole app: routing, guards, readers, templates; no network): the jobs list,
a job page, the costs page and the live-status JSON, warm (median of
``--repeat``) and the first request (cold caches). "changed" times the jobs
list right after one record was replaced, as while a job runs. Target: the
large data dir's warm page ≤ 3× the small one's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from remote.dashboard.app import create_app
from remote.jobs.state import STAGES, JobRecord
from tests.fixtures.dashboard_data import make_job


def build(root: Path, jobs: int, images: int) -> list[str]:
    ids = []
    for n in range(jobs):
        job_id = f"2026{(n // 28) % 12 + 1:02d}{n % 28 + 1:02d}-{n % 24:02d}0000-{n:06x}"
        make_job(root, job_id, images=images, cost=f"0.{n % 97:02d}{n % 7}",
                 at=f"2026-{(n // 28) % 12 + 1:02d}-{n % 28 + 1:02d}T{n % 24:02d}:00:00+00:00",
                 host="local" if n % 3 else "runpod", backend="none" if n % 5 else "stability")
        ids.append(job_id)
    return ids


def timed(client, url: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) for one request; the test client runs the app in this thread."""
    wall, cpu = time.perf_counter(), time.thread_time()
    response = client.get(url)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    assert response.status_code == 200, (url, response.status_code)
    return wall, cpu


class Site:
    def __init__(self, root: Path, ids: list[str]) -> None:
        self.client = create_app(root, presets_folder=root / "presets").test_client()
        self.record_path = root / "jobs" / f"{ids[0]}.json"
        self.record = JobRecord.load(self.record_path)
        self.urls = {"jobs list": "/", "job page": f"/jobs/{ids[len(ids) // 2]}", "costs": "/costs",
                     "live JSON": f"/api/jobs/{ids[0]}", "running JSON": "/api/jobs", "jobs list (a record changed)": "/"}
        self.step = 0

    def request(self, name: str) -> tuple[float, float]:
        if name == "jobs list (a record changed)":
            self.step += 1
            self.record.stage = STAGES[self.step % len(STAGES)]
            self.record.save(self.record_path)  # as the pipeline does at each stage of a running job
        return timed(self.client, self.urls[name])


def measure(small: Site, large: Site, repeat: int) -> dict[str, tuple[float, float, float, float]]:
    """Per request: (small wall, large wall, small CPU, large CPU), medians; the two sites alternate so both see
    the same machine load."""
    figures = {}
    for name in small.urls:
        first_small, first_large = small.request(name), large.request(name)
        figures[f"{name} (first)"] = (first_small[0], first_large[0], first_small[1], first_large[1])
        runs: list[tuple[float, float, float, float]] = []
        for _ in range(repeat):
            a, b = small.request(name), large.request(name)
            runs.append((a[0], b[0], a[1], b[1]))
        figures[name] = tuple(statistics.median(run[i] for run in runs) for i in range(4))  # type: ignore[assignment]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        started = time.perf_counter()
        small_ids, large_ids = build(small, args.baseline, args.images), build(large, args.jobs, args.images)
        print(f"built {args.baseline} and {args.jobs} jobs ({args.jobs * args.images} images) in "
              f"{time.perf_counter() - started:.1f}s")
        figures = measure(Site(small, small_ids), Site(large, large_ids), args.repeat)
    print(f"{'request':30} {'wall ' + str(args.baseline):>10} {'wall ' + str(args.jobs):>10} {'ratio':>6}   "
          f"{'CPU ' + str(args.baseline):>9} {'CPU ' + str(args.jobs):>9} {'ratio':>6}")
    worst = 0.0
    for name, (wall_small, wall_large, cpu_small, cpu_large) in figures.items():
        if "(first)" not in name:
            worst = max(worst, wall_large / wall_small)
        print(f"{name:30} {wall_small * 1000:7.2f} ms {wall_large * 1000:7.2f} ms {wall_large / wall_small:5.2f}x   "
              f"{cpu_small * 1000:6.2f} ms {cpu_large * 1000:6.2f} ms {cpu_large / max(cpu_small, 1e-9):5.2f}x")
    print(f"worst warm wall ratio: {worst:.2f}x (target <= 3x): {'met' if worst <= 3 else 'NOT met'}")
    return 0 if worst <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
