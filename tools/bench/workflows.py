"""Workflow drains against the plain drain of the same N in the same round.

Every drain here runs on an already-running worker (up and idle, past a warm-up job) and is
timed from spawning the command that submits the work to the last job done, seen through the
jobs' own output (``Drain``, ``append`` commands: each adds a line, the last also creates a
mark). A burst worker is not used: it exits while jobs still wait in blocked/ (found by this
bench; reported). One round:

- plain, C = 4: ``enqueue -`` of N jobs;
- queues: 10 queues made with ``queue add qK --parallel 2``, the N jobs spread round-robin,
  C = 4 (target >= 0.9x the plain drain);
- fan-out: one job and N jobs that each wait for it (``after``), C = 4;
- release: N jobs enqueued held (``"held": true``), then one ``queuectl release`` of all ids,
  C = 4, timed from the release;
- plain, C = 1, and the chain: N jobs each ``after`` the one before, C = 1 (target >= 0.8x).

The median over ``--repeat`` rounds of each ratio is reported, with the submitting command's
own duration.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import (
    QUEUECTL,
    REAPER,
    Bench,
    Drain,
    fresh,
    log,
    make_home,
    marks,
    median,
    median_pair,
    queuectl,
    start_worker,
)
from bench.report import Figure
from bench.sidebyside import Submission, warm_up

__all__ = ["run"]

QUEUES = 10
PARALLEL = 2

# (key, label, the plain drain it is compared with, target)
VARIANTS = (
    ("queues", f"{QUEUES} queues of --parallel {PARALLEL}, round-robin, C=4", "plain4", 0.9),
    ("fanout", "fan-out: 1 job, N dependents, C=4", "plain4", None),
    ("release", "N held jobs, one `release` of all ids, C=4", "plain4", None),
    ("chain", "dependency chain (each after the one before), C=1", "plain1", 0.8),
)


def run(bench: Bench) -> None:
    n = bench.args.chain
    rounds: list[dict[str, float]] = []
    for number in range(bench.args.repeat):
        row: dict[str, float] = {}
        folder = fresh(bench.base, "workflows")
        for key, threads, kind in ORDER:
            rate, submit_s = timed(folder / key, n, threads, kind)
            row[key], row[f"{key}_submit"] = rate, submit_s
            log(f"workflows: round {number + 1}: {key} {rate:.0f} jobs/s (submit {submit_s:.2f} s)")
        rounds.append(row)
    bench.results.raw["workflows"] = rounds
    for key, label, base_key, target in VARIANTS:
        pairs = [(r[key] / r[base_key], r[key], r[base_key]) for r in rounds]
        ratio, rate, base_rate = median_pair(pairs)
        detail = (
            f"{rate:.0f} vs plain {base_rate:.0f} jobs/s; submitting took "
            f"{median([r[f'{key}_submit'] for r in rounds]):.2f} s (plain "
            f"{median([r[f'{base_key}_submit'] for r in rounds]):.2f} s)"
        )
        if len(rounds) > 1:
            detail += "; rounds " + " ".join(f"{p[0]:.2f}" for p in pairs)
        bench.results.add(
            Figure(
                "workflows",
                f"workflow_{key}_ratio",
                f"N={n} {label}",
                ratio,
                "{:.2f}x plain",
                detail,
                ">=" if target else None,
                target,
            )
        )


def timed(folder: Path, n: int, threads: int, kind: Kind) -> tuple[float, float]:
    """(jobs/s from the submitting command's spawn to the last job done, its own seconds)."""
    drain = Drain(folder, n + kind.extra, "append")
    home = folder / "home"
    make_home(home)
    kind.prepare(home, drain)
    worker = start_worker(home, threads)
    try:
        with marks(drain.marks_dir) as watch:
            warm_up(home, watch.path("warm"))
            watch.wait("warm", timeout=120)
            command, data = kind.submit(home, drain)
            start = time.perf_counter()
            submit = Submission(command, data)
            end = drain.finished(watch, timeout=1800)
            submitted = submit.join()
    finally:
        REAPER.stop(worker)
    drain.check()
    return drain.count / (end - start), submitted - start


class Kind:
    """One kind of drain: what is set up before the worker starts (not timed), and the
    command (and its stdin) that submits the work once the worker is idle."""

    extra = 0
    """Jobs besides the N (the fan-out's common dependency)."""

    def prepare(self, home: Path, drain: Drain) -> None:
        pass

    def submit(self, home: Path, drain: Drain) -> tuple[list[str], str]:
        return enqueue(home, [{"command": c} for c in drain.commands])


def enqueue(home: Path, jobs: list[dict[str, Any]]) -> tuple[list[str], str]:
    data = "".join(json.dumps(job) + "\n" for job in jobs)
    return [*QUEUECTL, "--home", str(home), "enqueue", "-"], data


class Queues(Kind):
    def prepare(self, home: Path, drain: Drain) -> None:
        for k in range(QUEUES):
            queuectl(home, "queue", "add", f"q{k}", "--parallel", str(PARALLEL))

    def submit(self, home: Path, drain: Drain) -> tuple[list[str], str]:
        jobs = [{"command": c, "queue": f"q{i % QUEUES}"} for i, c in enumerate(drain.commands)]
        return enqueue(home, jobs)


class FanOut(Kind):
    extra = 1

    def submit(self, home: Path, drain: Drain) -> tuple[list[str], str]:
        root, *rest = drain.commands
        jobs: list[dict[str, Any]] = [{"id": "root", "command": root}]
        jobs += [{"id": f"d{i:06d}", "command": c, "after": ["root"]} for i, c in enumerate(rest)]
        return enqueue(home, jobs)


class Chain(Kind):
    def submit(self, home: Path, drain: Drain) -> tuple[list[str], str]:
        jobs: list[dict[str, Any]] = []
        for i, command in enumerate(drain.commands):
            job: dict[str, Any] = {"id": f"c{i:06d}", "command": command}
            if i:
                job["after"] = [f"c{i - 1:06d}"]
            jobs.append(job)
        return enqueue(home, jobs)


class Release(Kind):
    @staticmethod
    def ids(drain: Drain) -> list[str]:
        return [f"h{i:06d}" for i in range(drain.count)]

    def prepare(self, home: Path, drain: Drain) -> None:
        held = zip(self.ids(drain), drain.commands, strict=True)
        _, data = enqueue(home, [{"id": i, "command": c, "held": True} for i, c in held])
        queuectl(home, "enqueue", "-", stdin=data)

    def submit(self, home: Path, drain: Drain) -> tuple[list[str], str]:
        return [*QUEUECTL, "--home", str(home), "release", *self.ids(drain)], ""


ORDER: tuple[tuple[str, int, Kind], ...] = (
    ("plain4", 4, Kind()),
    ("queues", 4, Queues()),
    ("fanout", 4, FanOut()),
    ("release", 4, Release()),
    ("plain1", 1, Kind()),
    ("chain", 1, Chain()),
)
