"""Benchmark: Create Pod to the first image, laptop side, split into waiting and our own work.

    .venv/bin/python -m bench.bench_create_pod [--boot 3] [--runs 2]

The RunPod v2 stand-in runs in a child process (``--serve``) with real
loopback sshds as its pods (booting ``--boot`` seconds, like a quick pod),
so this process holds only the laptop's side. Each run, in a fresh config
and data dir: ``remote.jobs.provision.create_pod_host`` (catalog, key pair,
create, RUNNING, SSH, set-up) then ``remote.jobs.pipeline.run_job`` of the
sample scene (backend none) on the new host, then terminate.

* **API waiting**: wall time inside the REST client's requests and in the
  wait for RUNNING (the pod's boot);
* **our own work**: this process's CPU time (all its threads: packing,
  hashing, the bridge, validation, key and host-entry files);
* **pod / SSH waiting**: the rest of the wall time (ssh clients, sshd, the
  pod's set-up and render, in other processes).

The child processes' CPU (ssh, ssh-keygen) is shown apart: OpenSSH's work.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def serve(boot_s: float) -> None:
    """The child: the stand-in with real sshd pods, its URL on stdout, until stdin closes."""
    from http.server import ThreadingHTTPServer

    from tests.fixtures.runpod_pod_machines import PodMachines
    from tests.fixtures.runpod_v2_standin import RunPodV2
    from tests.fixtures.runpod_v2_standin_http import make_handler

    api = RunPodV2()
    api.boot_s_for_new_pods = boot_s
    root = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    api.machines = PodMachines(root, {"POSEFACTORY_BPY_PYTHON": sys.executable})
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()
    api.machines.close()


class Clock:
    """Wall time spent in the wrapped calls (not nested: the RUNNING wait's own requests count once)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def wrap(self, owner: object, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - start
        setattr(owner, name, timed)


def one_run(scene: Path, work: Path) -> dict[str, float]:
    from remote.core.jobspec import RenderJob
    from remote.jobs import provision
    from remote.jobs.pipeline import run_job

    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    os.environ["POSEFACTORY_DATA_DIR"] = str(work / "data")
    api = Clock()
    api.wrap(provision, "_wait_running")
    from remote.runpod.rest import RestClient
    api.wrap(RestClient, "_request")
    cpu0, children0, wall0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    created = provision.create_pod_host(provision.PodRequest(max_price=1.0, workspace=str(work / "ws")), lambda _: None)
    job = RenderJob(blend_path="", output_dir="", prompt="a knight", backend="none", render_samples=1)
    result = run_job(job, scene, host=created.host, hosts_file=None, local_output_dir=work / "out", api_key=None,
                     progress=lambda _: None, cancel=threading.Event())
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.status != "done" or not result.raw_render:
        raise SystemExit(f"the job did not finish: {result.status} {result.error}")
    provision.terminate_pod(created.pod.id)
    return {"wall": wall, "api": api.seconds, "own": cpu, "pod": wall - api.seconds - cpu,
            "children_cpu": (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boot", type=float, default=3.0, help="seconds the stand-in's pods take to boot")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.boot)
    work = Path(tempfile.mkdtemp(prefix="bench-create-pod-"))
    scene = work / "sample.blend"
    subprocess.run([sys.executable, str(REPO / "pod_setup" / "make_sample_scene.py"), str(scene), "--samples", "1"],
                   check=True, capture_output=True, timeout=300)
    child = subprocess.Popen([sys.executable, "-m", "bench.bench_create_pod", "--serve", "--boot", str(args.boot)],
                             cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        os.environ["RUNPOD_API_BASE_URL"] = child.stdout.readline().strip()
        os.environ["RUNPOD_API_KEY"] = "rp-test-key-0123456789abcdef"  # the stand-in's
        runs = [one_run(scene, work / f"run{n}") for n in range(args.runs)]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    print(f"Create Pod → first image on the stand-in (pods boot in {args.boot:g}s), median of {args.runs}:")
    for key, label in (("wall", "total wall"), ("api", "API waiting (requests + the pod's boot)"),
                       ("pod", "pod / SSH waiting (set-up, render, ssh)"), ("own", "our own work (this process's CPU)"),
                       ("children_cpu", "OpenSSH clients' CPU (child processes)")):
        values = [run[key] for run in runs]
        print(f"  {label:45s} {statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    own = statistics.median(run["own"] for run in runs)
    print(f"  our own work ≤ 2 s: {'yes' if own <= 2.0 else 'NO'} ({own / statistics.median(r['wall'] for r in runs):.0%} of the wall)")


if __name__ == "__main__":
    main()
