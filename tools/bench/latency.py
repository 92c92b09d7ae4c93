"""Idle latency: how long a job waits for an idle worker, from the enqueueing process's start
(what a user waits for) and from its return (the figure of earlier rounds).

Three kinds of submission alternate, each creating a mark file the bench hears of through
inotify (``IN_CREATE``):

- ``queuectl enqueue '{"command": ": > MARK"}'`` timed from the moment it prints the id
  (the job is durable then): the figure of earlier rounds;
- ``queuectl add -- touch MARK`` timed from the moment the process is spawned, and from its
  return;
- ``tsp touch MARK`` with an idle tsp server (one slot), from the spawn.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench.common import (
    QUEUECTL,
    REAPER,
    Bench,
    fresh,
    make_home,
    marks,
    percentile,
    queuectl,
    start_worker,
)
from bench.report import Figure, Side
from bench.spooler import TaskSpooler

__all__ = ["run"]


def run(bench: Bench) -> None:
    results = bench.results
    folder = fresh(bench.base, "latency")
    home = folder / "home"
    make_home(home)
    tsp = bench.tools.get("tsp")
    server = TaskSpooler(tsp, folder / "tsp", 1) if tsp else None
    worker = start_worker(home, 1)
    samples: dict[str, list[tuple[float, float]]] = {"enqueue": [], "add": [], "tsp": []}
    try:
        with marks(folder / "marks") as watch:
            queuectl(home, "enqueue", json.dumps({"command": f": > {watch.path('warm')}"}))
            watch.wait("warm", timeout=120)
            for i in range(bench.args.latency):
                for kind in samples:
                    if kind == "tsp" and server is None:
                        continue
                    mark = watch.path(f"{kind}-{i}")
                    command = _command(kind, home, str(mark), server)
                    spawned, returned = _submit(command, server.env if kind == "tsp" else None)
                    seen = watch.wait(mark.name, timeout=60)
                    samples[kind].append((seen - spawned, seen - returned))
    finally:
        REAPER.stop(worker)
        if server is not None:
            server.close()
    results.raw["latency"] = samples
    _figures(bench, samples)


def _command(kind: str, home: Any, mark: str, server: TaskSpooler | None) -> list[str]:
    if kind == "enqueue":
        job = json.dumps({"command": f": > {mark}"})
        return [*QUEUECTL, "--home", str(home), "enqueue", job]
    if kind == "add":
        return [*QUEUECTL, "--home", str(home), "add", "--", "touch", mark]
    assert server is not None
    return server.command("touch", mark)


def _submit(command: list[str], env: dict[str, str] | None) -> tuple[float, float]:
    """(spawned, returned) perf_counter times; "returned" is when the id was printed (the
    job is durable then), which for queuectl is just before the process exits."""
    spawned = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    returned = time.perf_counter()
    proc.stdout.close()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:6]} exited {proc.returncode}")
    return spawned, returned


def _figures(bench: Bench, samples: dict[str, list[tuple[float, float]]]) -> None:
    add = bench.results.add
    from_return = [r for _, r in samples["enqueue"]]
    n = len(from_return)
    add(
        Figure(
            "latency",
            "latency_p50_ms",
            "idle latency p50, from `enqueue` returning",
            percentile(from_return, 0.5) * 1000,
            "{:.1f} ms",
            f"{n} samples; the earlier rounds' figure",
            "<=",
            20,
        ),
        Figure(
            "latency",
            "latency_p95_ms",
            "idle latency p95, from `enqueue` returning",
            percentile(from_return, 0.95) * 1000,
            "{:.1f} ms",
            "",
            "<=",
            50,
        ),
    )
    start = [s for s, _ in samples["add"]]
    add_return = [r for _, r in samples["add"]]
    # The target: at most the one-process call's own time + 5 ms (the call time of
    # these very samples: spawn to the printed id).
    call_ms = percentile([s - r for s, r in samples["add"]], 0.5) * 1000
    add(
        Figure(
            "latency",
            "latency_start_p50_ms",
            "idle latency p50, from `queuectl add -- touch F` spawned",
            percentile(start, 0.5) * 1000,
            "{:.1f} ms",
            f"p95 {percentile(start, 0.95) * 1000:.1f} ms; from its return p50 "
            f"{percentile(add_return, 0.5) * 1000:.1f} ms; target: the call's own "
            f"{call_ms:.1f} ms + 5",
            "<=",
            round(call_ms + 5, 1),
        )
    )
    tsp_p50 = percentile([s for s, _ in samples["tsp"]], 0.5) if samples["tsp"] else None
    bench.results.side(
        Side(
            "idle latency p50, from the submitting process's spawn",
            "ms",
            percentile(start, 0.5) * 1000,
            tsp_p50 * 1000 if tsp_p50 else None,
            call_ms,
            "the add call itself",
            higher_is_better=False,
        )
    )
    if samples["tsp"]:
        tsp_start = [s for s, _ in samples["tsp"]]
        add(
            Figure(
                "latency",
                "latency_tsp_start_p50_ms",
                "idle latency p50, from `tsp touch F` spawned",
                percentile(tsp_start, 0.5) * 1000,
                "{:.1f} ms",
                f"p95 {percentile(tsp_start, 0.95) * 1000:.1f} ms; queuectl add's p50 is "
                f"{percentile(start, 0.5) / percentile(tsp_start, 0.5):.1f}x this",
            )
        )
