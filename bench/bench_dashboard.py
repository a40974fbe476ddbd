"""Dashboard page load (server time): 1,000 jobs with 10,000 images vs 10 jobs.

    .venv/bin/python bench/bench_dashboard.py [--jobs 1000] [--images 10] [--baseline 10] [--repeat 40]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from remote.dashboard import create_app
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


def timed(client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def measure(root: Path, ids: list[str], repeat: int) -> dict[str, float]:
    client = create_app(root, presets_folder=root / "presets").test_client()
    urls = {"jobs list": "/", "job page": f"/jobs/{ids[len(ids) // 2]}", "costs": "/costs",
            "live JSON": f"/api/jobs/{ids[0]}", "running JSON": "/api/jobs"}
    figures = {f"{name} (first)": timed(client, url) for name, url in urls.items()}
    for name, url in urls.items():
        figures[name] = statistics.median(timed(client, url) for _ in range(repeat))
    record = root / "jobs" / f"{ids[0]}.json"
    changed = []
    for _ in range(repeat):
        record.write_bytes(record.read_bytes())  # a new mtime, as a running job's stage change
        record.parent.touch()
        changed.append(timed(client, "/"))
    figures["jobs list (a record changed)"] = statistics.median(changed)
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
        base, big = measure(small, small_ids, args.repeat), measure(large, large_ids, args.repeat)
    print(f"{'request':34} {args.baseline:>6} jobs {args.jobs:>6} jobs   ratio")
    worst = 0.0
    for name in base:
        ratio = big[name] / base[name]
        if "(first)" not in name:
            worst = max(worst, ratio)
        print(f"{name:34} {base[name] * 1000:8.2f} ms {big[name] * 1000:8.2f} ms {ratio:6.2f}x")
    print(f"worst warm ratio: {worst:.2f}x (target <= 3x): {'met' if worst <= 3 else 'NOT met'}")
    return 0 if worst <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
