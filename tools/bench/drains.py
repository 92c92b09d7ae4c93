"""The drain figures of every round so far: ``worker start --burst`` on N pending jobs,
timed from the journal (first start to last recorded completion), against the floor run
alternately, at C = 4, 1 and 16 threads in one worker process; the same N drained by P
worker processes of one thread each started together on one home (P = 4 and 16, against the
floor at C = P; every job must complete exactly once); and the drain without fsync
(``eatmydata``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import (
    QUEUECTL,
    REAPER,
    TIMEOUT,
    Bench,
    completion_rate,
    completions,
    floor,
    fresh,
    jobs_json,
    log,
    median_pair,
    queuectl,
)
from bench.report import Figure

__all__ = ["burst", "create_cost", "drain", "run"]


def create_cost(base: Path, files: int = 300) -> float:
    """Microseconds to create and write one small file in a fresh folder under ``base``.

    Inode allocation is what a queue that writes one file per state change pays most for,
    and on this machine kind it varies by more than 30x between folders of one filesystem,
    so the report shows it next to the drain figures.
    """
    folder = base / "create-probe"
    folder.mkdir(exist_ok=True)
    start = time.perf_counter()
    for i in range(files):
        fd = os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x" * 500)
        os.close(fd)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds / files * 1e6


def burst(home: Path, threads: int, wrapper: list[str] | None = None) -> None:
    """``worker start --count THREADS --burst`` until the home is drained."""
    command = [*QUEUECTL, "--home", str(home), "worker", "start", "--count", str(threads)]
    subprocess.run([*(wrapper or []), *command, "--burst"], capture_output=True, check=True)


def drain(
    base: Path, jobs: int, threads: int, wrapper: list[str] | None = None, processes: int = 1
) -> float:
    """Jobs/s of ``worker start --burst`` on ``jobs`` pending ``true`` jobs (from the
    journal, so interpreter start-up and the initial folder scan are not counted); with
    ``processes`` > 1, that many burst workers of ``threads`` each, started together."""
    home = fresh(base, f"drain-{threads}-{processes}-{len(wrapper or [])}")
    queuectl(home, "enqueue", "-", stdin=jobs_json(["true"] * jobs))
    if processes == 1:
        burst(home, threads, wrapper)
    else:
        command = [*QUEUECTL, "--home", str(home), "worker", "start", "--count", str(threads)]
        # Each log goes to a file: a pipe nobody reads while the bench waits for another
        # worker fills up, and its worker then blocks in its next log line.
        logs = [home.parent / f"{home.name}-worker-{k}.log" for k in range(processes)]
        procs = []
        for log_path in logs:
            with log_path.open("wb") as log_file:
                procs.append(REAPER.spawn([*command, "--burst"], stdout=log_file, stderr=log_file))
        for proc, log_path in zip(procs, logs, strict=True):
            proc.wait(timeout=TIMEOUT)
            REAPER.stop(proc)
            if proc.returncode != 0:
                tail = log_path.read_text(errors="replace").strip()[-300:]
                raise RuntimeError(f"burst worker exited {proc.returncode}: {tail}")
    done = len(os.listdir(home / "completed"))
    assert done == jobs, f"only {done} of {jobs} completed"
    ran = len(completions(home))
    assert ran == jobs, f"{ran} completions journaled for {jobs} jobs: a job ran twice?"
    return completion_rate(home)


def run(bench: Bench) -> None:
    args, results = bench.args, bench.results
    create_us = create_cost(bench.base)
    results.raw["create_us"] = create_us
    targets: dict[int, float | None] = {4: 0.85, 1: 0.8, 16: None}
    for threads in (4, 1, 16):
        # Floor and drain alternate, and the median pair is kept: on a shared 2-core
        # machine a single pair swings by +-15%.
        pairs = []
        for n in range(args.repeat):
            floor_rate = floor(["true"] * args.jobs, threads)
            drain_rate = drain(bench.base, args.jobs, threads)
            pairs.append((drain_rate / floor_rate, drain_rate, floor_rate))
            log(
                f"drains: C={threads} pair {n + 1}/{args.repeat}: floor {floor_rate:.0f}/s, "
                f"queuectl {drain_rate:.0f}/s = {pairs[-1][0]:.2f}x"
            )
        ratio, drain_rate, floor_rate = median_pair(pairs)
        results.raw[f"drain_c{threads}"] = {"pairs": pairs}
        results.add(
            Figure(
                "drains",
                f"drain_c{threads}_ratio",
                f"drain {args.jobs}, C={threads}, fsync on (journal: first start to last done)",
                ratio,
                "{:.2f}x floor",
                f"{drain_rate:.0f} vs floor {floor_rate:.0f} jobs/s; pairs "
                + " ".join(f"{p[0]:.2f}" for p in pairs),
                ">=" if targets[threads] else None,
                targets[threads],
            )
        )
    for processes in (4, 16):
        pairs = []
        for n in range(args.repeat):
            floor_rate = floor(["true"] * args.jobs, processes)
            drain_rate = drain(bench.base, args.jobs, 1, processes=processes)
            pairs.append((drain_rate / floor_rate, drain_rate, floor_rate))
            log(
                f"drains: {processes} processes pair {n + 1}/{args.repeat}: floor "
                f"{floor_rate:.0f}/s, queuectl {drain_rate:.0f}/s = {pairs[-1][0]:.2f}x"
            )
        ratio, drain_rate, floor_rate = median_pair(pairs)
        results.raw[f"drain_p{processes}"] = {"pairs": pairs}
        results.add(
            Figure(
                "drains",
                f"drain_p{processes}_ratio",
                f"drain {args.jobs} by {processes} worker processes of 1 thread, fsync on",
                ratio,
                "{:.2f}x floor",
                f"{drain_rate:.0f} vs floor {floor_rate:.0f} jobs/s (C={processes}); pairs "
                + " ".join(f"{p[0]:.2f}" for p in pairs),
            )
        )
    eatmydata = bench.tools.get("eatmydata")
    if eatmydata:
        plain = drain(bench.base, args.jobs, 4)
        unsynced = drain(bench.base, args.jobs, 4, wrapper=[eatmydata])
        log(f"drains: C=4 {plain:.0f}/s with fsync, {unsynced:.0f}/s without (eatmydata)")
        results.add(
            Figure(
                "drains",
                "drain_c4_nofsync_ratio",
                "drain C=4 without fsync (eatmydata) / with, back to back",
                unsynced / plain,
                "{:.2f}x",
                f"{unsynced:.0f} vs {plain:.0f} jobs/s: durability costs "
                f"{(1 - plain / unsynced) * 100:.0f}%",
            )
        )
    results.add(
        Figure(
            "drains",
            "create_us",
            "file create+write in the bench folder",
            create_us,
            "{:.0f} us",
            "what one new file costs on this filesystem (context for the drains)",
        )
    )
