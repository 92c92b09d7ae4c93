"""What one CLI call costs (``percall``), and a durable batch enqueue (``enqueue``).

Per call: wall time of one process, spawn to exit, for ``queuectl add -- true``, ``status``,
``queuectl enqueue '{"command":"true"}'``, ``python -c pass`` run by the same interpreter,
and ``tsp true`` (a running server), interleaved (the order rotates every sample), median of
``--calls`` each. queuectl's home has no worker, so a call pays for submitting only; a tsp
call returns once its server has the job, and the job's own run happens in the client it
leaves behind. The ``_nopyc`` kinds run a copy of the package without ``__pycache__`` and
with ``PYTHONDONTWRITEBYTECODE=1`` (``uncompiled_copy``): what every call costs in a sandbox
that sets the variable on a source checkout; the others run with bytecode (``allow_bytecode``).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import (
    QUEUECTL,
    Bench,
    fresh,
    jobs_json,
    log,
    make_home,
    median,
    queuectl,
    uncompiled_copy,
    wall,
)
from bench.report import Figure, Side
from bench.spooler import TaskSpooler

__all__ = ["run_enqueue", "run_percall"]


TARGET: float = 3.0
"""The issue's target for one plain call: at most 3x ``python -c pass``."""


def run_percall(bench: Bench) -> None:
    folder = fresh(bench.base, "percall")
    home = folder / "home"
    make_home(home)
    tsp = bench.tools.get("tsp")
    server = TaskSpooler(tsp, folder / "tsp", 1) if tsp else None
    raw = uncompiled_copy(folder)
    at = ["--home", str(home)]
    kinds: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "python": ([sys.executable, "-c", "pass"], None),
        "add": ([*QUEUECTL, *at, "add", "--", "true"], None),
        "enqueue": ([*QUEUECTL, *at, "enqueue", '{"command":"true"}'], None),
        "status": ([*QUEUECTL, *at, "status"], None),
        "add_nopyc": ([*QUEUECTL, *at, "add", "--", "true"], raw),
        "enqueue_nopyc": ([*QUEUECTL, *at, "enqueue", '{"command":"true"}'], raw),
    }
    if server is not None:
        kinds["tsp"] = (server.command("true"), server.env)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    names = list(kinds)
    try:
        for i in range(bench.args.calls):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                command, env = kinds[name]
                times[name].append(wall(lambda c=command, e=env: _call(c, e)))
            if server is not None:
                time.sleep(0.005)  # let the tsp job of this sample run before the next sample
    finally:
        if server is not None:
            server.close()
    bench.results.raw["percall_s"] = times
    python = median(times["python"])
    log("percall: " + ", ".join(f"{k} {median(v) * 1000:.1f} ms" for k, v in times.items()))
    tsp_ms = f"; `tsp true` {median(times['tsp']) * 1000:.1f} ms" if "tsp" in times else ""
    for name, label, target in (
        ("enqueue", "one `queuectl enqueue JSON` process", TARGET),
        ("add", "one `queuectl add -- true` process", TARGET),
        ("status", "one `queuectl status` process (empty home)", TARGET),
        ("enqueue_nopyc", "one `enqueue` process, no bytecode", None),
        ("add_nopyc", "one `add -- true` process, no bytecode", None),
    ):
        ours = median(times[name])
        n = len(times[name])
        detail = f"{ours * 1000:.0f} vs {python * 1000:.0f} ms{tsp_ms}; median of {n}"
        if name.endswith("_nopyc"):
            detail += "; PYTHONDONTWRITEBYTECODE=1 and no __pycache__ (every module compiled)"
        bench.results.add(
            Figure(
                "percall",
                f"{name}_single_ratio",
                f"{label} / `python -c pass`",
                ours / python,
                "{:.2f}x",
                detail,
                "<=" if target else None,
                target,
            )
        )
    if "tsp" in times:
        bench.results.add(
            Figure(
                "percall",
                "tsp_single_ratio",
                "one `tsp true` process / `python -c pass`",
                median(times["tsp"]) / python,
                "{:.2f}x",
                f"{median(times['tsp']) * 1000:.1f} vs {python * 1000:.0f} ms",
            )
        )
    tsp_s = median(times["tsp"]) if "tsp" in times else None
    for name, what in (("add", "`add -- true`"), ("enqueue", "`enqueue JSON`")):
        bench.results.side(
            Side(
                f"one submitting process: queuectl {what}, `tsp true`",
                "ms",
                median(times[name]) * 1000,
                tsp_s * 1000 if tsp_s else None,
                python * 1000,
                "python -c pass",
                higher_is_better=False,
            )
        )
    bench.results.side(
        Side(
            "enqueue throughput, one process per job (`add`)",
            "jobs/s",
            1 / median(times["add"]),
            1 / tsp_s if tsp_s else None,
        )
    )
    # Enqueue throughput one process per job (a shell loop of calls): 1 / the median call.
    loop = f"queuectl {1 / median(times['add']):.1f} jobs/s (`add`)"
    if "tsp" in times:
        loop += f" vs tsp {1 / median(times['tsp']):.0f} jobs/s"
    bench.results.add(
        Figure(
            "percall",
            "enqueue_loop_jobs_per_s",
            "enqueue throughput, one process per job",
            1 / median(times["enqueue"]),
            "{:.1f} jobs/s",
            f"`enqueue`; {loop}",
        )
    )


def _call(command: list[str], env: dict[str, str] | None) -> None:
    subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def run_enqueue(bench: Bench) -> None:
    count = bench.args.batch
    home = fresh(bench.base, "enqueue-batch")
    make_home(home)
    data = jobs_json(["true"] * count)
    seconds = wall(lambda: queuectl(home, "enqueue", "-", stdin=data))
    bench.results.add(
        Figure(
            "enqueue",
            "enqueue_batch_jobs_per_s",
            f"batch enqueue of {count}, durable (one `enqueue -`)",
            count / seconds,
            "{:.0f} jobs/s",
            f"{seconds:.2f} s including the interpreter's start",
            ">=",
            5000,
        )
    )
