"""A batch through the RunPod Serverless path: 1 vs 4 workers, and its overhead per item.

    .venv/bin/python -m bench.bench_serverless [--items 16] [--samples 1] [--pod-items 2]

In one run, on the sample scene (moto as the bucket, our stand-in of the
hosted endpoint API, real workers: the SDK's local test server running
pod_setup/serverless/handler.py with the bpy module):

* the batch with 1 worker and K=1, then with 4 workers and K=4: wall times
  and their ratio, against the ideal min(workers, cores); each worker pinned
  to one core (``--no-pin``: unpinned, each render uses every core);
* per item: the serverless path's wall time (1 worker) minus the worker's
  own execution time (what RunPod bills) = the path's overhead per item
  (scene upload, URL signing, /run + /status polling, output download);
* the pod path for comparison: ``run_job`` on the built-in ``local`` host,
  ``--pod-items`` jobs one after another, per item.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1, help="Cycles samples of the sample scene")
    parser.add_argument("--pod-items", type=int, default=2, help="jobs through the pod path, for the comparison")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let every worker use every core")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    work = Path(tempfile.mkdtemp(prefix="pf-bench-serverless-"))
    os.environ.update(POSEFACTORY_DATA_DIR=str(work / "data"), POSEFACTORY_BPY_PYTHON=sys.executable,
                      AWS_ACCESS_KEY_ID="bench-key-id", AWS_SECRET_ACCESS_KEY="bench-secret-key")
    from moto.server import ThreadedMotoServer

    from remote.core.config import parse_host
    from remote.core.jobspec import RenderJob
    from remote.jobs.pipeline import run_job
    from remote.runpod.serverless import BatchItem, run_batch
    from tests.fixtures import free_port
    from tests.fixtures.serverless_api import ENDPOINT_ID, VALID_KEY, start_endpoint
    from tests.fixtures.serverless_worker import start_worker

    scene = work / "scene.blend"
    subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene),
                    "--samples", str(args.samples)], check=True, capture_output=True)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="x",
                 aws_secret_access_key="x").create_bucket(Bucket="bench-bucket")
    os.environ["RUNPOD_API_KEY"] = VALID_KEY
    cores = os.cpu_count() or 1
    # Each worker pinned to one core: on RunPod every worker has a machine of its
    # own; unpinned, each Cycles render takes every core and parallel workers only contend.
    workers = [start_worker(work / "workers", cpus=str(n % cores) if args.pin else None) for n in range(4)]
    try:
        runs = {}
        for count in (1, 4):
            api, server = start_endpoint([w.url for w in workers[:count]])
            os.environ["RUNPOD_ENDPOINT_BASE_URL"] = api.base_url
            host = parse_host("bench", "farm", {
                "serverless": {"endpoint_id": ENDPOINT_ID, "max_concurrent": count},
                "storage": {"endpoint_url": f"http://127.0.0.1:{port}", "bucket": "bench-bucket",
                            "prefix": f"run{count}/", "region": "us-east-1"}})
            items = [BatchItem(f"item-{n:02d}", RenderJob(blend_path=str(scene), output_dir="", prompt=f"item {n}",
                                                          backend="none")) for n in range(args.items)]
            started = time.monotonic()
            results = run_batch(host, items, work / f"out-{count}", on_item=lambda r: None, cancel=threading.Event(),
                                progress=lambda line: None, record_event=lambda e: None, batch_id=f"bench{count}")
            wall = time.monotonic() - started
            failed = [r for r in results if r.status != "done"]
            if failed:
                raise SystemExit(f"{len(failed)} item(s) failed: {failed[0].error}")
            runs[count] = (wall, [r.execution_s for r in results])
            server.shutdown()
            print(f"{count} worker(s), K={count}: {args.items} items in {wall:.1f} s "
                  f"({wall / args.items:.2f} s/item; worker execution median {statistics.median(runs[count][1]):.2f} s)")
        ratio = runs[1][0] / runs[4][0]
        ideal = min(4, cores)
        print(f"speed-up 4 vs 1 worker: {ratio:.2f}x (ideal min(workers, cores) = {ideal} on {cores} cores: "
              f"{ratio / ideal * 100:.0f}% of ideal)")
        per_item = runs[1][0] / args.items
        overhead = per_item - statistics.mean(runs[1][1])
        print(f"serverless path, 1 worker: {per_item:.2f} s/item, of which the worker executed "
              f"{statistics.mean(runs[1][1]):.2f} s: overhead {overhead:.2f} s/item")
    finally:
        for worker in workers:
            worker.stop()
        moto.stop()

    pod = []
    for n in range(args.pod_items):
        started = time.monotonic()
        result = run_job(RenderJob(blend_path="", output_dir="", prompt=f"pod {n}", backend="none"), scene,
                         host="local", hosts_file=None, local_output_dir=work / "pod-out", api_key=None,
                         progress=lambda p: None, cancel=threading.Event())
        if result.status != "done":
            raise SystemExit(f"pod path failed: {result.error}")
        pod.append(time.monotonic() - started)
    pod_item = statistics.median(pod)
    print(f"pod path (local host, one job per item): {pod_item:.2f} s/item (median of {len(pod)}); "
          f"serverless minus pod: {per_item - pod_item:+.2f} s/item")


if __name__ == "__main__":
    main()
