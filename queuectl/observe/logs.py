"""``queuectl logs``: a run's captured output, and following a running attempt.

A finished run's output is in ``logs/<id>/<run>.out`` / ``.err``. A running attempt writes
into a pre-created file under ``tmp/``, which its worker names in ``workers/<id>.jobs``
(``storage.registry.running_jobs``): found that way from any process that shares the home,
a container other than the worker's included, without looking at the worker's /proc.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from queuectl.job import FINISHED_STATES
from queuectl.storage.registry import running_jobs
from queuectl.storage.store import Store

__all__ = ["follow", "live_outputs", "log_files"]


def log_files(store: Store, job_id: str, run: int | None) -> tuple[int, list[Path]]:
    """(run number, its existing output files) of a job; its latest run by default.

    Files are numbered by run, which counts across DLQ retries (``attempts`` restarts at 0
    there), so a retried job never shows an earlier run's output as its latest.
    """
    job = store.folders.load(job_id)  # NotFound for an unknown id
    folder = store.home.logs / job_id
    chosen = run if run is not None else job.runs
    if not chosen:
        return 0, []
    files = [folder / f"{chosen}.{suffix}" for suffix in ("out", "err")]
    return chosen, [p for p in files if p.exists()]


def live_outputs(store: Store, job_id: str) -> list[tuple[str, Path]]:
    """(``<run>.out`` / ``<run>.err``, file) of the job's running attempt, if any."""
    entry = running_jobs(store.home.workers).get(job_id)
    if entry is None:
        return []
    run = entry.get("run")
    found = []
    for stream in ("stdout", "stderr"):
        path = entry.get(stream)
        if isinstance(path, str) and Path(path).parent == store.home.tmp:
            found.append((f"{run}.{'out' if stream == 'stdout' else 'err'}", Path(path)))
    return found


def follow(store: Store, job_id: str, write: Callable[[bytes], None], poll: float = 0.2) -> None:
    """Print a job's output as it is written, attempt after attempt, until it finishes.
    Looks every ``poll`` seconds (a reader-side loop; workers are not involved)."""
    printed: dict[str, int] = {}
    done_attempts: set[str] = set()
    store.folders.load(job_id)  # NotFound for an unknown id, like plain ``logs``
    while True:
        found = store.folders.locate(job_id)
        for path in sorted((store.home.logs / job_id).glob("*.*"), key=_run_order):
            if path.name not in done_attempts:
                _print_new(path, printed, write, key=path.name)
                done_attempts.add(path.name)
        for key, path in live_outputs(store, job_id):
            if key not in done_attempts:
                _print_new(path, printed, write, key=key)
        if found is None or found[0] in FINISHED_STATES:
            return
        time.sleep(poll)


def _run_order(path: Path) -> tuple[int, bool]:
    """Run 9 before run 10, and each run's stdout before its stderr."""
    return (int(path.stem) if path.stem.isdigit() else 0, path.suffix != ".out")


def _print_new(
    path: Path, printed: dict[str, int], write: Callable[[bytes], None], key: str
) -> None:
    try:
        with open(path, "rb") as handle:
            handle.seek(printed.get(key, 0))
            data = handle.read()
    except OSError:
        return
    if data:
        write(data)
        printed[key] = printed.get(key, 0) + len(data)
