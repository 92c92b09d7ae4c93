"""A deep queue: the first 1000 jobs of ``--depth`` pending against drains of 100 (the median
of five: one drain of 100 lasts ~60 ms and is noisy), ``status`` and ``list`` over the deep
home, and the worker's peak RSS while it works through it."""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import (
    REAPER,
    Bench,
    completion_rate,
    fresh,
    jobs_json,
    log,
    median,
    queuectl,
    start_worker,
    wait_for,
    wall,
)
from bench.drains import burst
from bench.report import Figure

__all__ = ["run"]

FIRST: int = 1000
SHALLOW: int = 100


def run(bench: Bench, threads: int = 4) -> None:
    deep, quick = bench.args.depth, bench.args.quick or bench.args.tiny
    first = min(FIRST, deep // 2)
    shallow_rates = []
    for number in range(3 if quick else 5):
        home = fresh(bench.base, f"depth-100-{number}")
        queuectl(home, "enqueue", "-", stdin=jobs_json(["true"] * SHALLOW))
        burst(home, threads)
        shallow_rates.append(completion_rate(home))
    shallow = median(shallow_rates)

    home = fresh(bench.base, "depth-deep")
    enqueue_s = wall(lambda: queuectl(home, "enqueue", "-", stdin=jobs_json(["true"] * deep)))
    status_s = median([wall(lambda: queuectl(home, "status")) for _ in range(3)])
    listing = ("list", "--state", "pending", "--limit", "20")
    list_s = median([wall(lambda: queuectl(home, *listing)) for _ in range(3)])
    worker = start_worker(home, threads)
    try:
        wait_for(lambda: _completed_at_least(home, first), timeout=600, what=f"{first} completed")
        rss_kib = _peak_rss_kib(worker.pid)
    finally:
        REAPER.stop(worker, timeout=120)
    deep_rate = completion_rate(home, first=first)
    log(f"depth: {shallow:.0f}/s at {SHALLOW}, {deep_rate:.0f}/s at {deep} (first {first})")
    bench.results.raw["depth"] = {"shallow_rates": shallow_rates, "deep_rate": deep_rate}
    bench.results.add(
        Figure(
            "depth",
            "depth_ratio",
            f"drain at {deep} pending (first {first}) / at {SHALLOW}",
            deep_rate / shallow,
            "{:.2f}x",
            f"{deep_rate:.0f} vs {shallow:.0f} jobs/s (C={threads})",
            ">=",
            0.8,
        ),
        Figure(
            "depth",
            "status_s",
            f"`status` with {deep} jobs",
            status_s,
            "{:.3f} s",
            "median of 3",
            "<=",
            0.3,
        ),
        Figure(
            "depth",
            "worker_peak_rss_mib",
            f"worker peak RSS with {deep} pending",
            rss_kib / 1024,
            "{:.1f} MiB",
            f"VmHWM after its first {first} jobs",
            "<=",
            100,
        ),
        Figure(
            "depth",
            "list_s",
            f"`list --state pending --limit 20`, {deep} jobs",
            list_s,
            "{:.3f} s",
            "median of 3",
        ),
        Figure(
            "depth",
            "deep_enqueue_jobs_per_s",
            f"enqueue of {deep} jobs (one `enqueue -`)",
            deep / enqueue_s,
            "{:.0f} jobs/s",
            f"{enqueue_s:.1f} s",
        ),
    )


def _completed_at_least(home: Path, count: int) -> bool:
    with os.scandir(home / "completed") as entries:
        return sum(1 for _ in entries) >= count


def _peak_rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return float("nan")
