#!/usr/bin/env python3
"""Measure the dashboard at scale: API answer times in a deep home, and what a polling page
costs a draining worker.

Usage: python tools/dashbench.py [--depth 100000] [--drain 1000] [--pairs 4] [--rounds 20]
                                [--dir DIR] [--json]

1. A home with ``--depth`` jobs: 600 of them run first through a real worker (completed,
   retried and dead ones, so the journal, the charts and the job pages have attempts), the
   rest enqueued for much later (pending). A real ``queuectl dashboard`` serves it.
2. Every endpoint the page calls is asked ``--rounds`` times (20: the issue's "median of
   20"), one round of all of them every 0.6 s, which is longer than the dashboard's 0.5 s
   refresh interval, so each round pays one refresh of the catalog (the order of the
   endpoints rotates, so each of them pays it in some rounds). Median and p95 per endpoint.
3. Alternating pairs of drains of ``--drain`` ``true`` jobs by a burst worker (4 threads,
   on its own queue in the same deep home): one with nothing watching, one with a client
   doing what an open page does every 2 s (the overview and a jobs page). Jobs/s of each,
   and their ratio, per pair.

Homes are created under ``--dir`` (default: a fresh folder in your home directory).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUEUECTL = [sys.executable, "-m", "queuectl"]
NEVER = "2099-01-01T00:00:00Z"
HISTORY = 600
POLL_SECONDS = 2.0
ROUND_SECONDS = 0.6


def queuectl(home: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*QUEUECTL, "--home", str(home), *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"queuectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def lines(jobs: Iterator[dict[str, Any]]) -> str:
    return "".join(json.dumps(job) + "\n" for job in jobs)


def build_home(home: Path, depth: int) -> None:
    home.mkdir(parents=True)
    queuectl(home, "queue", "add", "drain")
    queuectl(home, "config", "set", "backoff-base", "1.01")

    def history() -> Iterator[dict[str, Any]]:
        for i in range(HISTORY):
            if i % 50 == 7:
                yield {"id": f"flaky-{i}", "command": "echo retry; exit 1", "max_retries": 1}
            else:
                yield {"id": f"build-{i}", "command": f"echo building part {i}"}

    queuectl(home, "enqueue", "-", stdin=lines(history()))
    queuectl(home, "worker", "start", "--burst", "--count", "4")

    # Generated ids: a batch with explicit ids holds one change lock per job until it is
    # published, and a kernel's byte-range locks on one file are a list (quadratic at 100k).
    def deep() -> Iterator[dict[str, Any]]:
        for i in range(depth - HISTORY):
            labels = ["nightly"] if i % 10 == 0 else []
            yield {"command": f"backup --volume v{i % 97} --part {i}",
                   "run_at": NEVER, "labels": labels, "priority": i % 5}  # fmt: skip

    queuectl(home, "enqueue", "-", stdin=lines(deep()))


@contextmanager
def dashboard(home: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [*QUEUECTL, "--home", str(home), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()[3].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def fetch(url: str) -> tuple[int, float]:
    """(HTTP status, seconds) of one GET, the body read to its end."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    return status, time.perf_counter() - start


def warm(base: str) -> float:
    """Seconds until the first read of the home is done (the jobs view stops saying 503)."""
    start = time.perf_counter()
    while fetch(base + "/api/jobs")[0] == 503:
        time.sleep(0.2)
    return time.perf_counter() - start


ENDPOINTS = [
    ("overview (1 h)", "/api/overview"),
    ("overview (7 d)", "/api/overview?range=7d"),
    ("jobs, newest first", "/api/jobs"),
    ("jobs, state=dead", "/api/jobs?state=dead"),
    ("jobs, label + priority", "/api/jobs?label=nightly&sort=priority&order=desc"),
    ("jobs, search 'v42 --part 9'", "/api/jobs?q=v42%20--part%209"),
    ("jobs, id order, page 1000", "/api/jobs?sort=id&page=1000"),
    ("job page", "/api/jobs/flaky-57"),
    ("job output", "/api/jobs/flaky-57/output?run=2&stream=out"),
    ("queues", "/api/queues"),
    ("workers", "/api/workers"),
    ("status", "/api/status"),
]


def api_times(base: str, rounds: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {name: [] for name, _ in ENDPOINTS}
    for round_number in range(rounds):
        shift = round_number % len(ENDPOINTS)
        for name, path in ENDPOINTS[shift:] + ENDPOINTS[:shift]:
            status, seconds = fetch(base + path)
            if status != 200:
                raise SystemExit(f"{path} answered {status}")
            times[name].append(seconds)
        time.sleep(ROUND_SECONDS)
    return {
        name: {
            "median_ms": statistics.median(values) * 1000,
            "p95_ms": sorted(values)[max(0, round(0.95 * len(values)) - 1)] * 1000,
            "max_ms": max(values) * 1000,
        }
        for name, values in times.items()
    }


def journal_sizes(home: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (home / "journal").glob("*.log")}


def steady_rate(home: Path, before: dict[str, int]) -> float:
    """Jobs/s of the drain from its journal records (appended after ``before``): completions
    over the time from the first start to the last completion, as tools/bench.py counts,
    so the worker's start-up (indexing 100,000 pending jobs) is left out."""
    done = []
    for path in sorted((home / "journal").glob("*.log")):
        with open(path, "rb") as handle:
            handle.seek(before.get(path.name, 0))
            for line in handle:
                _, _, payload = line.partition(b" ")
                try:
                    record = json.loads(payload)
                except ValueError:
                    continue
                if record.get("event") == "completed":
                    done.append((parse_time(record["ts"]), parse_time(record["job"]["started_at"])))
    begin = min(started for _, started in done)
    return len(done) / max(max(end for end, _ in done) - begin, 1e-6)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def drain(home: Path, jobs: int, base: str | None) -> tuple[float, float]:
    """(jobs/s from the worker's start to its exit, jobs/s of the drain itself) of a burst
    worker draining ``jobs`` jobs of queue ``drain``, with a client polling like an open
    page every 2 s when ``base`` is given."""
    queuectl(home, "enqueue", "-", stdin=lines({"command": "true", "queue": "drain"}
                                               for _ in range(jobs)))  # fmt: skip
    stop = threading.Event()
    before = journal_sizes(home)

    def poll() -> None:
        while not stop.wait(POLL_SECONDS):
            fetch(f"{base}/api/overview")
            fetch(f"{base}/api/jobs")

    poller = threading.Thread(target=poll, daemon=True) if base else None
    start = time.perf_counter()
    if poller:
        poller.start()
    queuectl(home, "worker", "start", "--burst", "--count", "4", "--queue", "drain")
    seconds = time.perf_counter() - start
    stop.set()
    if poller:
        poller.join()
    return jobs / seconds, steady_rate(home, before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=100_000)
    parser.add_argument("--drain", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base_dir = Path(tempfile.mkdtemp(prefix="queuectl-dashbench-", dir=args.dir or Path.home()))
    home = base_dir / "home"
    out: dict[str, Any] = {"depth": args.depth, "drain": args.drain}
    try:
        started = time.perf_counter()
        build_home(home, args.depth)
        out["build_s"] = time.perf_counter() - started
        with dashboard(home) as base:
            out["first_read_s"] = warm(base)
            out["api"] = api_times(base, args.rounds)
            pairs = []
            for _ in range(args.pairs):
                alone, alone_steady = drain(home, args.drain, None)
                watched, watched_steady = drain(home, args.drain, base)
                pairs.append(
                    {
                        "alone": alone,
                        "polled": watched,
                        "ratio": watched / alone,
                        "alone_steady": alone_steady,
                        "polled_steady": watched_steady,
                        "steady_ratio": watched_steady / alone_steady,
                    }
                )
            out["pairs"] = pairs
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"home of {args.depth} jobs built in {out['build_s']:.0f} s; "
          f"the dashboard's first read took {out['first_read_s']:.1f} s")  # fmt: skip
    print(f"\n{'endpoint':32} {'median':>9} {'p95':>9} {'max':>9}")
    for name, figures in out["api"].items():
        print(f"{name:32} {figures['median_ms']:7.1f}ms {figures['p95_ms']:7.1f}ms "
              f"{figures['max_ms']:7.1f}ms")  # fmt: skip
    print(f"\ndrain of {args.drain} jobs, 4 threads: jobs/s without and with a page polling")
    print("  (worker start to exit; the drain itself from the journal)")
    for p in out["pairs"]:
        whole = f"{p['alone']:7.1f}  {p['polled']:7.1f}   ratio {p['ratio']:.2f}"
        steady = f"{p['alone_steady']:7.1f}  {p['polled_steady']:7.1f}   {p['steady_ratio']:.2f}"
        print(f"  {whole}   |   {steady}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
