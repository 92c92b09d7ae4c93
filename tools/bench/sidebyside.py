"""queuectl next to task-spooler, timed the way a user sees a drain, each a ratio to the floor
of the same round, at C = 1 and 4 (commands `true` and `append`) and C = 16 (`true`).

One round, at C slots/threads and one command variant, runs in this order: the floor, queuectl
with an already-running worker, tsp with an already-running server, queuectl start-then-drain,
tsp start-then-drain. The figures are the median over ``--repeat`` rounds of each ratio.

- already running: the worker (or the tsp server with its slots) is up and idle (it has run a
  warm-up job), then the N jobs are submitted: one ``queuectl enqueue -`` of N lines, or a
  shell loop of N ``tsp`` calls. Timed from the first submission to the last job done; how
  long submitting took is reported too.
- start-then-drain: N jobs are queued first; timed from ``queuectl worker start --burst
  --count C`` being spawned to the last job done. For tsp the C slots are held by blocker jobs
  (``cat`` on a FIFO the bench keeps open) while the N jobs queue; timed from the bench
  closing the FIFO, which ends the blockers.
- first start to last completion: queuectl's classic figure, from the journal of the
  start-then-drain home (tsp records no such times, so it has none).

"Last job done" is seen through what the commands do (``Drain``): the last creates a file,
``append`` commands each add a line and the bench waits for N lines; it never asks a queue.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

from bench.common import (
    QUEUECTL,
    REAPER,
    Bench,
    Drain,
    completion_rate,
    floor,
    fresh,
    jobs_json,
    log,
    make_home,
    marks,
    median,
    median_pair,
    queuectl,
    start_worker,
)
from bench.report import Figure, Side
from bench.spooler import TaskSpooler

__all__ = ["run"]

SYSTEMS = (
    ("queuectl_running", "already-running worker, queuectl"),
    ("tsp_running", "already-running server, tsp"),
    ("queuectl_start", "start-then-drain, queuectl"),
    ("tsp_start", "start-then-drain, tsp"),
    ("queuectl_first", "first start to last done (journal), queuectl"),
)


def run(bench: Bench) -> None:
    args, results = bench.args, bench.results
    tsp = bench.tools.get("tsp")
    n = args.tsp_jobs
    results.note(
        f"vs tsp: N = {n} jobs for task-spooler, queuectl and the floor alike in that section "
        "(a tsp server holds at most about 1,000 waiting jobs); the drains section keeps "
        f"N = {args.jobs}"
    )
    for threads, variants in ((1, ("true", "append")), (4, ("true", "append")), (16, ("true",))):
        for variant in variants:
            rounds = []
            for number in range(args.repeat):
                row = one_round(bench, n, threads, variant, tsp)
                rounds.append(row)
                shown = ", ".join(
                    f"{key} {row[key] / row['floor']:.2f}x" for key, _ in SYSTEMS if key in row
                )
                log(
                    f"vs tsp: C={threads} {variant} round {number + 1}/{args.repeat}: "
                    f"floor {row['floor']:.0f}/s, {shown}"
                )
            results.raw[f"side_c{threads}_{variant}"] = rounds
            report(bench, rounds, threads, variant)


def report(bench: Bench, rounds: list[dict[str, float]], threads: int, variant: str) -> None:
    for key, label in SYSTEMS:
        if key not in rounds[0]:
            continue
        ratio, rate, floor_rate = median_pair(
            [(r[key] / r["floor"], r[key], r["floor"]) for r in rounds]
        )
        detail = f"{rate:.0f} vs floor {floor_rate:.0f} jobs/s"
        submit_key = f"{key}_submit"
        if submit_key in rounds[0]:
            detail += f"; submitting took {median([r[submit_key] for r in rounds]):.2f} s"
        other = key.replace("queuectl", "tsp") if key.startswith("queuectl") else ""
        target = None
        if other and other in rounds[0]:
            versus = median([r[key] / r[other] for r in rounds])
            detail += f"; {versus:.2f}x tsp"
            # The target: a durable drain at least task-spooler's ratio to the floor.
            tsp_ratio, tsp_rate, _ = median_pair(
                [(r[other] / r["floor"], r[other], r["floor"]) for r in rounds]
            )
            target = round(tsp_ratio, 2)
            bench.results.side(
                Side(
                    f"drain N={rounds[0]['n']:.0f} C={threads} {variant}, " + label.split(",")[0],
                    "jobs/s",
                    rate,
                    tsp_rate,
                    floor_rate,
                    "floor",
                    tsp_ratio=tsp_ratio,
                    versus=versus,
                )
            )
        if len(rounds) > 1:
            detail += "; rounds " + " ".join(f"{r[key] / r['floor']:.2f}" for r in rounds)
        bench.results.add(
            Figure(
                "vs tsp",
                f"side_c{threads}_{variant}_{key}",
                f"N={rounds[0]['n']:.0f} C={threads} {variant}: {label}",
                ratio,
                "{:.2f}x floor",
                detail,
                ">=" if target is not None else None,
                target,
            )
        )


def one_round(
    bench: Bench, n: int, threads: int, variant: str, tsp: str | None
) -> dict[str, float]:
    folder = fresh(bench.base, f"side-c{threads}-{variant}")
    row: dict[str, float] = {"n": n}
    row["floor"] = floor(Drain(folder / "floor", n, variant).commands, threads)
    row["queuectl_running"], row["queuectl_running_submit"] = queuectl_running(
        Drain(folder / "qr", n, variant), threads
    )
    if tsp:
        row["tsp_running"], row["tsp_running_submit"] = tsp_running(
            tsp, Drain(folder / "tr", n, variant), threads
        )
    row["queuectl_start"], row["queuectl_first"] = queuectl_start(
        Drain(folder / "qs", n, variant), threads
    )
    if tsp:
        row["tsp_start"] = tsp_start(tsp, Drain(folder / "ts", n, variant), threads)
    return row


def queuectl_running(drain: Drain, threads: int) -> tuple[float, float]:
    """(jobs/s, seconds the ``enqueue -`` took) with a worker up and idle beforehand."""
    home = drain.folder / "home"
    make_home(home)
    worker = start_worker(home, threads)
    try:
        with marks(drain.marks_dir) as watch:
            warm_up(home, watch.path("warm"))
            watch.wait("warm", timeout=120)
            start = time.perf_counter()
            command = [*QUEUECTL, "--home", str(home), "enqueue", "-"]
            submit = Submission(command, jobs_json(drain.commands))
            end = drain.finished(watch)
            submitted = submit.join()
    finally:
        REAPER.stop(worker)
    drain.check()
    return drain.count / (end - start), submitted - start


def queuectl_start(drain: Drain, threads: int) -> tuple[float, float]:
    """(jobs/s from spawning a burst worker, jobs/s first start to last done by the journal)."""
    home = drain.folder / "home"
    queuectl(home, "enqueue", "-", stdin=jobs_json(drain.commands))
    with marks(drain.marks_dir) as watch:
        start = time.perf_counter()
        worker = start_worker(home, threads, burst=True)
        try:
            end = drain.finished(watch)
            worker.wait(timeout=300)
        finally:
            REAPER.stop(worker)
    drain.check()
    return drain.count / (end - start), completion_rate(home)


def tsp_running(tsp: str, drain: Drain, threads: int) -> tuple[float, float]:
    with TaskSpooler(tsp, drain.folder / "tsp", threads) as server, marks(drain.marks_dir) as watch:
        server.run("touch", str(watch.path("warm")))
        watch.wait("warm", timeout=60)
        script = server.script("submit.sh", drain.commands)
        start = time.perf_counter()
        submit = Submission(["/bin/sh", str(script)], "", env=server.env)
        end = drain.finished(watch)
        submitted = submit.join()
    drain.check()
    return drain.count / (end - start), submitted - start


def tsp_start(tsp: str, drain: Drain, threads: int) -> float:
    with TaskSpooler(tsp, drain.folder / "tsp", threads) as server, marks(drain.marks_dir) as watch:
        gate = drain.folder / "gate"
        os.mkfifo(gate)
        # Held open read-write, the FIFO has a writer: each blocker's cat opens it at once and
        # reads until the bench closes it (EOF), which is the start signal.
        held = os.open(gate, os.O_RDWR)
        token = REAPER.on_exit(lambda: _close(held))
        try:
            for slot in range(threads):
                mark = shlex.quote(str(watch.path(f"blocker{slot}")))
                server.run("/bin/sh", "-c", f": > {mark}; exec cat {shlex.quote(str(gate))}")
            watch.wait(*(f"blocker{slot}" for slot in range(threads)), timeout=60)
            script = server.script("submit.sh", drain.commands)
            subprocess.run(["/bin/sh", str(script)], env=server.env, check=True)
            start = time.perf_counter()
        finally:
            REAPER.done(token)
        end = drain.finished(watch)
    drain.check()
    return drain.count / (end - start)


def warm_up(home: Path, mark: Path) -> None:
    """One job through the idle worker: once its mark appears the worker is past start-up."""
    import json

    queuectl(home, "enqueue", json.dumps({"command": f": > {shlex.quote(str(mark))}"}))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class Submission:
    """A submitting process fed ``data`` on stdin from a thread, so the bench can watch for
    the last job meanwhile; ``join`` returns when it exited (perf_counter)."""

    def __init__(self, command: list[str], data: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.ended = 0.0
        self.error = b""
        self._thread = threading.Thread(target=self._feed, args=(data.encode(),), daemon=True)
        self._thread.start()

    def _feed(self, data: bytes) -> None:
        _, self.error = self.proc.communicate(data)
        self.ended = time.perf_counter()

    def join(self) -> float:
        self._thread.join()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.proc.args} exited {self.proc.returncode}: {self.error!r}")
        return self.ended
