"""What one CLI call costs (``percall``), and a durable batch enqueue (``enqueue``).

Per call: wall time of one process, spawn to exit, for ``queuectl add -- true``,
``queuectl enqueue '{"command":"true"}'``, ``python -c pass`` run by the same interpreter,
and ``tsp true`` (a running server), interleaved (the order rotates every sample), median of
``--calls`` each. queuectl's home has no worker, so a call pays for submitting only; a tsp
call returns once its server has the job, and the job's own run happens in the client it
leaves behind.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import QUEUECTL, Bench, fresh, jobs_json, log, make_home, median, queuectl, wall
from bench.report import Figure
from bench.spooler import TaskSpooler

__all__ = ["run_enqueue", "run_percall"]


def run_percall(bench: Bench) -> None:
    folder = fresh(bench.base, "percall")
    home = folder / "home"
    make_home(home)
    tsp = bench.tools.get("tsp")
    server = TaskSpooler(tsp, folder / "tsp", 1) if tsp else None
    kinds: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "python": ([sys.executable, "-c", "pass"], None),
        "add": ([*QUEUECTL, "--home", str(home), "add", "--", "true"], None),
        "enqueue": ([*QUEUECTL, "--home", str(home), "enqueue", '{"command":"true"}'], None),
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
    for name, label, key, target in (
        ("enqueue", "one `queuectl enqueue` process", "enqueue_single_ratio", 4.0),
        ("add", "one `queuectl add -- true` process", "add_single_ratio", None),
    ):
        ours = median(times[name])
        detail = f"{ours * 1000:.0f} vs {python * 1000:.0f} ms"
        if "tsp" in times:
            detail += f"; `tsp true` {median(times['tsp']) * 1000:.1f} ms"
        bench.results.add(
            Figure(
                "percall",
                key,
                f"{label} / `python -c pass`",
                ours / python,
                "{:.2f}x",
                detail + f"; median of {len(times[name])}",
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
