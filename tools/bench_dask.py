#!/usr/bin/env python3
"""Benchmark queuectl on Dask against raw ``client.submit`` of the same commands, same run.

Usage: python tools/bench.py --executor dask [--jobs 1000] [--rounds 2] [--count 64] [--workers 2]
                                              [--nthreads 4] [--latency 100] [--json]
       (or python tools/bench_dask.py with the same options)

One ``dask scheduler`` and ``--workers`` ``dask worker`` processes on loopback (preloading
queuectl.remote.preload, the profiler off, allowed-failures 0). Each round runs, in ABBA
order, a batch of ``--jobs`` commands ``true``:

- raw: ``--count`` threads each calling ``client.submit(run_shell, "true", pure=False,
  retries=0).result()`` in a loop (``run_shell`` is ``subprocess.run(["/bin/sh", "-c", cmd])``);
- queuectl: the same jobs enqueued into a fresh home and drained by ``queuectl worker start
  --executor dask --count N --burst`` (timed from its "worker started" log line to its
  "burst:" line, so the head's connection set-up is not counted; every job is claimed,
  journaled and recorded as usual).

Latency: ``--latency`` jobs one at a time (``--count 1``), time between consecutive
completions in the head's log, against sequential raw round trips. Prints a table, or JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAMP = re.compile(r"^(\S+Z) \[\d+\] (.*)$")


def run_shell(command: str) -> int:
    return subprocess.run(["/bin/sh", "-c", command], check=False).returncode


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0",
        DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="False",
        DASK_LOGGING__DISTRIBUTED="warning",
    )
    env.pop("QUEUECTL_HOME", None)
    return env


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self, base: Path, workers: int, nthreads: int) -> None:
        self.base, self.port = base, _port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        preload = ["--preload", "queuectl.remote.preload", "--no-dashboard"]
        self._start(["scheduler", "--host", "127.0.0.1", "--port", str(self.port), *preload])
        for i in range(workers):
            local = str(base / f"w{i}")
            args = ["worker", self.address, "--nthreads", str(nthreads), "--host", "127.0.0.1"]
            self._start([*args, "--local-directory", local, *preload])

    def _start(self, args: list[str]) -> None:
        log = open(self.base / f"dask{len(self.procs)}.log", "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), *args],
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        if len(self.procs) == 1:
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait()


def raw(client: Any, jobs: int, threads: int) -> float:
    left = [jobs]
    guard = threading.Lock()

    def loop() -> None:
        while True:
            with guard:
                if left[0] <= 0:
                    return
                left[0] -= 1
            client.submit(run_shell, "true", pure=False, retries=0).result()

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started


def _log_times(log: Path) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text().splitlines():
        found = STAMP.match(line)
        if found:
            when = datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()
            out.append((when, found.group(2)))
    return out


def queuectl(
    base: Path, cluster: Cluster, jobs: int, count: int, tag: str
) -> list[tuple[float, str]]:
    home = base / f"home-{tag}"
    qc = [sys.executable, "-m", "queuectl", "--home", str(home)]
    batch = "".join(json.dumps({"command": "true"}) + "\n" for _ in range(jobs))
    subprocess.run([*qc, "enqueue", "-"], input=batch, text=True, capture_output=True, check=True)
    log = base / f"head-{tag}.log"
    with open(log, "wb") as err:
        done = subprocess.run(
            [*qc, "worker", "start", "--executor", "dask", "--scheduler", cluster.address,
             "--count", str(count), "--burst"],
            stderr=err, stdout=subprocess.DEVNULL, env=_env(),
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the head failed: {log.read_text()[-2000:]}")
    completed = len(list((home / "completed").glob("*.json")))
    if completed != jobs:
        raise SystemExit(f"only {completed} of {jobs} jobs completed")
    shutil.rmtree(home, ignore_errors=True)
    return _log_times(log)


def drain_seconds(times: list[tuple[float, str]]) -> float:
    start = next(t for t, m in times if m.startswith("worker started"))
    end = next(t for t, m in times if m.startswith("burst:"))
    return end - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    prog = os.environ.get("QUEUECTL_BENCH_PROG")  # "python tools/bench.py --executor dask"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA pairs (default 2)")
    parser.add_argument("--count", type=int, default=64, help="head threads / raw submitters")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nthreads", type=int, default=4)
    parser.add_argument("--latency", type=int, default=100, help="one-at-a-time samples")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(_env())
    from distributed import Client

    base = Path(tempfile.mkdtemp(prefix="queuectl-bench-dask-"))
    cluster = Cluster(base, args.workers, args.nthreads)
    try:
        client = Client(cluster.address, timeout=60, set_as_default=False)
        client.wait_for_workers(args.workers, timeout=120)
        client.submit(run_shell, "true", pure=False).result()  # warm up the workers
        raw_s: list[float] = []
        qc_s: list[float] = []
        for n in range(args.rounds):
            for which in ("raw", "qc", "qc", "raw"):
                if which == "raw":
                    raw_s.append(raw(client, args.jobs, args.count))
                else:
                    times = queuectl(base, cluster, args.jobs, args.count, f"{n}-{len(qc_s)}")
                    qc_s.append(drain_seconds(times))
        raw_lat = []
        for _ in range(args.latency):
            started = time.perf_counter()
            client.submit(run_shell, "true", pure=False, retries=0).result()
            raw_lat.append(time.perf_counter() - started)
        times = queuectl(base, cluster, args.latency, 1, "latency")
        done = [t for t, m in times if m.startswith("completed")]
        qc_lat = [b - a for a, b in itertools.pairwise(done)]
        client.close()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    raw_rate = [args.jobs / s for s in raw_s]
    qc_rate = [args.jobs / s for s in qc_s]
    result = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "count": args.count,
        "workers": f"{args.workers} x {args.nthreads} threads",
        "raw_per_s": [round(r, 1) for r in raw_rate],
        "queuectl_per_s": [round(r, 1) for r in qc_rate],
        "ratio_median": round(statistics.median(qc_rate) / statistics.median(raw_rate), 3),
        "latency_raw_ms": {
            "p50": round(1000 * percentile(raw_lat, 0.5), 2),
            "p99": round(1000 * percentile(raw_lat, 0.99), 2),
        },
        "latency_queuectl_ms": {
            "p50": round(1000 * percentile(qc_lat, 0.5), 2),
            "p99": round(1000 * percentile(qc_lat, 0.99), 2),
        },
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"1 scheduler, {result['workers']}, {args.count} submitters/threads, {args.jobs} x true")
    print(f"raw client.submit   jobs/s: {result['raw_per_s']}")
    print(f"queuectl on dask    jobs/s: {result['queuectl_per_s']}")
    print(f"ratio (medians): {result['ratio_median']}")
    lr, lq = result["latency_raw_ms"], result["latency_queuectl_ms"]
    print(f"one at a time, ms per job: raw p50 {lr['p50']} p99 {lr['p99']}", end="; ")
    print(f"queuectl p50 {lq['p50']} p99 {lq['p99']}")
    print(f"load average: {result['load_average']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
