"""Journal readers at scale: a home that ``--readers-jobs`` jobs went through (enqueued, then
run once: two journal records each), and the wall time and peak RSS of ``history``,
``show``, ``stats``, ``metrics``, ``fsck``, ``journal compact --retention 0s`` (on a copy)
and ``journal rebuild`` (on a copy, no worker running) over it.

The home is built in a child process through queuectl's own storage API (``Store.enqueue``,
``claims.claim``, ``scheduler.after_attempt``, ``commits.commit`` under each job's change
lock, 64 outcomes per commit, as a worker commits them), which is many times faster than
running the jobs. One job in ten fails (exit 2) and waits in failed/ for its retry, so stats
have more than one outcome. It is kept under ``<dir>/readers-cache/`` when ``--dir`` is
given (a couple of minutes to build), keyed by the job count and a hash of queuectl's
storage code, so a change to the disk format builds it anew.

Peak RSS is the command's own ``ru_maxrss``, taken by a small fresh process that runs it
(``MEASURE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from bench.common import QUEUECTL, ROOT, Bench, log
from bench.report import Figure

__all__ = ["build", "run"]

CACHE: Final = "readers-cache"
COMMIT_GROUP: Final = 64


def run(bench: Bench) -> None:
    count = bench.args.readers_jobs
    home = cached_home(bench.base, count)
    job_id = f"job-{count // 2:06d}"
    measured: dict[str, Run] = {}
    for name, args in (
        ("history", ["history", job_id]),
        ("show", ["show", job_id]),
        ("stats", ["stats"]),
        ("metrics", ["metrics"]),
        ("fsck", ["fsck"]),
    ):
        measured[name] = repeat(home, args)
        _log(name, measured[name])
    scratch = bench.base / "readers-scratch"
    for name, args in (
        ("compact", ["journal", "compact", "--retention", "0s"]),
        ("rebuild", ["journal", "rebuild"]),
    ):
        copy = _copy(home, scratch / name)
        measured[name] = measure(copy, args)
        _log(name, measured[name])
        shutil.rmtree(copy, ignore_errors=True)
    bench.results.raw["readers"] = {k: vars(v) for k, v in measured.items()}
    _figures(bench, count, measured)


def _log(name: str, run: Run) -> None:
    log(
        f"readers: {name} {run.seconds:.2f} s ({run.cpu:.2f} s CPU), {run.rss_mb:.0f} MB, "
        f"exit {run.code}: {run.said}"
    )


WALL_TARGETS: Final = {"history": 0.2, "show": 0.2, "stats": 1.0, "metrics": 1.0}
RSS_TARGETS: Final = {"stats": 150, "metrics": 150, "fsck": 150, "compact": 150, "rebuild": 150}
LABELS: Final = {
    "history": "`history ID`",
    "show": "`show ID`",
    "stats": "`stats`",
    "metrics": "`metrics`",
    "fsck": "`fsck`",
    "compact": "`journal compact --retention 0s` (a copy)",
    "rebuild": "`journal rebuild` (a copy)",
}


def _figures(bench: Bench, count: int, measured: dict[str, Run]) -> None:
    for name, run in measured.items():
        runs = "one run (modifies the home)" if name in ("compact", "rebuild") else "median of 3"
        telling = run.code != 0 or name in ("fsck", "compact", "rebuild")
        said = f"; exit {run.code}: {run.said}" if telling else ""
        bench.results.add(
            Figure(
                "readers",
                f"readers_{name}_s",
                f"{LABELS[name]}, {count} jobs: wall",
                run.seconds,
                "{:.2f} s",
                f"{run.cpu:.2f} s CPU; {runs}{said}",
                "<" if name in WALL_TARGETS else None,
                WALL_TARGETS.get(name),
            ),
            Figure(
                "readers",
                f"readers_{name}_rss_mb",
                f"{LABELS[name]}, {count} jobs: peak RSS",
                run.rss_mb,
                "{:.0f} MB",
                "ru_maxrss of the process",
                "<" if name in RSS_TARGETS else None,
                RSS_TARGETS.get(name),
            ),
        )


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float
    """User + system CPU seconds: steadier than wall time on a shared machine."""
    rss_mb: float
    code: int
    said: str
    """The last line the command printed (stdout, else stderr)."""


def repeat(home: Path, args: list[str], runs: int = 3) -> Run:
    """The median wall time of ``runs`` runs, the largest peak RSS."""
    results = [measure(home, args) for _ in range(runs)]
    middle = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    rss_mb = max(r.rss_mb for r in results)
    return Run(middle.seconds, middle.cpu, rss_mb, middle.code, middle.said)


MEASURE: Final = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    cpu = usage.ru_utime + usage.ru_stime
    print(seconds, cpu, usage.ru_maxrss, os.waitstatus_to_exitcode(status), file=out)
"""
"""Runs one command from a small fresh process and writes its wall time, CPU, peak RSS and
exit code. Not from the bench itself: Linux keeps a process's RSS high-water mark across
execve, and a child spawned by vfork (as subprocess does) starts with its parent's, so a
child of a bench that has read a large journal would report the bench's peak."""


def measure(home: Path, args: list[str]) -> Run:
    """One queuectl process: wall seconds, CPU, its own peak RSS, exit code."""
    with tempfile.TemporaryDirectory() as scratch:
        report, out, err = (Path(scratch) / name for name in ("report", "out", "err"))
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            subprocess.run(
                [sys.executable, "-c", MEASURE, str(report), *QUEUECTL, "--home", str(home), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                check=True,
            )
        seconds, cpu, rss_kib, code = report.read_text().split()
        said = _last_line(out) or _last_line(err)
    return Run(float(seconds), float(cpu), float(rss_kib) * 1024 / 1e6, int(code), said)


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:120] if lines else ""


def _copy(home: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(home), str(target)], check=True)
    return target


# ------------------------------------------------------------------ the home


def cached_home(base: Path, count: int) -> Path:
    folder = base / CACHE / f"{count}-{_format_hash()}"
    home, built = folder / "home", folder / "built"
    if built.exists():
        log(f"readers: reusing the home of {count} jobs in {folder}")
        return home
    for old in (base / CACHE).glob(f"{count}-*"):
        shutil.rmtree(old, ignore_errors=True)  # built by other storage code
    folder.mkdir(parents=True)
    log(f"readers: building a home {count} jobs went through (~{count / 700:.0f} s, once)")
    start = time.perf_counter()
    code = (
        "import sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
        "from bench.readers import build; build(Path(sys.argv[1]), int(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", code, str(home), str(count)], check=True)
    built.write_text(f"{count}\n")
    log(f"readers: built in {time.perf_counter() - start:.0f} s")
    return home


def _format_hash() -> str:
    """What the cached home depends on: queuectl's storage code and the builder's own."""
    import inspect

    digest = hashlib.sha256(inspect.getsource(build).encode())
    sources = sorted((ROOT / "queuectl" / "storage").glob("*.py"))
    for path in [*sources, ROOT / "queuectl" / "job.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build(root: Path, count: int) -> None:
    """Enqueue ``count`` jobs, then claim and settle each as a worker would (in-process)."""
    from queuectl.job import job_from_input, utcnow
    from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
    from queuectl.storage.claims import Claim
    from queuectl.storage.commit import Change
    from queuectl.storage.home import Home
    from queuectl.storage.store import Store

    store = Store(Home(root).ensure())
    jobs = [
        job_from_input(
            {"id": f"job-{i:06d}", "command": f"echo {i} && make -C /src target{i % 7}"},
            default_max_retries=3,
        )
        for i in range(count)
    ]
    store.enqueue(jobs, explicit_ids=set())
    began = utcnow() - timedelta(milliseconds=10 * count)
    batch: list[tuple[Claim, Change]] = []

    def flush() -> None:
        with contextlib.ExitStack() as locks:
            for _claim, change in batch:
                locks.enter_context(store.changing(change.job.id))
            store.commits.commit([change for _, change in batch])
        for claim, _change in batch:
            claim.release()
        batch.clear()

    for i, job in enumerate(jobs):
        started = began + timedelta(milliseconds=10 * i)
        claim = store.claims.claim(f"{job.id}.json", job.state, "bench:0", started)
        assert isinstance(claim, Claim), claim
        ok = i % 10 != 0
        outcome = Outcome(
            OutcomeKind.SUCCEEDED if ok else OutcomeKind.FAILED,
            exit_code=0 if ok else 2,
            error=None if ok else "exit code 2",
            started_at=started,
            finished_at=started + timedelta(milliseconds=5 + i % 40),
        )
        updated = after_attempt(claim.job, outcome, backoff_base=2, now=started)
        change = Change(updated, updated.state.value, remove=claim.path, attempt=True)
        batch.append((claim, change))
        if len(batch) == COMMIT_GROUP:
            flush()
    if batch:
        flush()
