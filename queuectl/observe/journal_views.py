"""Looking back and waiting: attempt history and statistics from the journal, logs, waiting.

Everything here is read-only. The journal is the source for history and statistics because
it keeps every attempt (a job file keeps only its last ``HISTORY_LIMIT``), including attempts
of jobs that were retried from the DLQ or cleaned up since.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from queuectl.errors import NotFound, QueueError
from queuectl.job import JobState, parse_time
from queuectl.storage.journal import scan
from queuectl.storage.store import Store

__all__ = [
    "AttemptFigures",
    "attempt_figures",
    "attempts",
    "compute_stats",
    "log_files",
    "wait_for",
]

ATTEMPT_EVENTS: Final = frozenset({"completed", "failed", "dead", "recovered", "cancelled"})
"""Journal events that end an attempt (``recovered``: its worker died)."""

FINISHED: Final = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)

WAIT_POLL_SECONDS: Final = 0.1
"""``wait`` looks at the state folders this often: a CLI-side wait on other processes,
cheap (a few stats per job) and not on any worker's path."""


# ------------------------------------------------------------------ attempts


def attempts(records: Iterable[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """Every finished attempt of one job, oldest first, from journal records."""
    found = []
    runs = _RunCounter()
    for record in records:
        job = record.get("job")
        if not isinstance(job, dict) or job.get("id") != job_id:
            continue
        if not runs.ended_an_attempt(record):
            continue
        history = job.get("history") or []
        entry = dict(history[-1]) if history else {}
        if record.get("event") == "recovered" and not entry.get("outcome"):
            entry["outcome"] = "worker_lost"
        entry.setdefault("finished_at", job.get("finished_at"))
        entry.setdefault("exit_code", job.get("last_exit_code"))
        entry.setdefault("error", job.get("last_error"))
        entry["event"] = record.get("event")
        found.append(entry)
    for number, entry in enumerate(found, 1):
        entry["run"] = number  # counts across DLQ retries, which reset ``attempts``
    return found


class _RunCounter:
    """Tells which records end an attempt: the ones that raise the job's ``attempts``.

    ``cancelled`` ends an attempt only when the job was running; a ``retried`` from the DLQ
    resets the count to 0.
    """

    def __init__(self) -> None:
        self._attempts: dict[str, int] = {}

    def ended_an_attempt(self, record: dict[str, Any]) -> bool:
        job = record.get("job") or {}
        job_id, attempts = job.get("id"), job.get("attempts")
        if not isinstance(attempts, int):
            return False
        before = self._attempts.get(job_id, 0)
        self._attempts[job_id] = attempts
        return record.get("event") in ATTEMPT_EVENTS and attempts > before


def journal_records(store: Store) -> list[dict[str, Any]]:
    return [record.data for record in scan(store.home.journal).records]


# ------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class AttemptFigures:
    command: str
    outcome: str
    finished: datetime
    waited: float | None
    ran: float | None


def compute_stats(
    records: list[dict[str, Any]], since: datetime | None, now: datetime
) -> dict[str, Any]:
    """Throughput, outcomes, queue wait and run time percentiles, busiest commands."""
    done = [a for a in attempt_figures(records) if since is None or a.finished >= since]
    window_start = since or (min(a.finished for a in done) if done else now)
    minutes = max((now - window_start).total_seconds() / 60, 1 / 60)
    outcomes = Counter(a.outcome for a in done)
    return {
        "since": window_start.isoformat(),
        "attempts": len(done),
        "finished_per_minute": round(len(done) / minutes, 2),
        "outcomes": dict(sorted(outcomes.items())),
        "queue_wait_seconds": _percentiles([a.waited for a in done if a.waited is not None]),
        "run_seconds": _percentiles([a.ran for a in done if a.ran is not None]),
        "busiest_commands": [
            {"command": command, "attempts": count}
            for command, count in Counter(a.command for a in done).most_common(5)
        ],
    }


def attempt_figures(records: list[dict[str, Any]]) -> list[AttemptFigures]:
    """One AttemptFigures per attempt-ending record; queue wait runs from when the job last became
    runnable (its creation, or the record that put it back) to the attempt's start."""
    folder = AttemptFolder()
    folder.feed(records)
    return folder.found


class AttemptFolder:
    """``attempt_figures`` as a running fold: records appended to a journal later can be fed
    on their own (the metrics cache folds a growing journal once, not once per scrape)."""

    def __init__(self) -> None:
        self.runnable_since: dict[str, datetime] = {}
        self.runs = _RunCounter()
        self.found: list[AttemptFigures] = []

    def feed(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            job = record.get("job")
            if not isinstance(job, dict):
                continue
            job_id = job.get("id")
            event = record.get("event")
            stamp = _time(record.get("ts"))
            if event in ("enqueued", "retried"):
                self.runnable_since[job_id] = _time(job.get("run_at")) or stamp or datetime.min
            if not self.runs.ended_an_attempt(record) or stamp is None:
                continue
            started, finished = _time(job.get("started_at")), _time(job.get("finished_at"))
            since = self.runnable_since.get(job_id) or _time(job.get("created_at"))
            self.found.append(
                AttemptFigures(
                    command=" ".join(str(job.get("command", "")).split())[:60],
                    outcome=_outcome_name(event, job),
                    finished=finished or stamp,
                    waited=_seconds(since, started),
                    ran=_seconds(started, finished),
                )
            )
            next_run = _time(job.get("next_run_at"))
            self.runnable_since[job_id] = next_run or stamp


def _outcome_name(event: str, job: dict[str, Any]) -> str:
    if event == "recovered":
        return "worker_lost"
    if event == "completed":
        return "completed"
    if str(job.get("last_error") or "").startswith("timeout"):
        return "timeout" if event == "failed" else "dead_timeout"
    return str(event)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3)}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or start == datetime.min:
        return None
    return max(0.0, (end - start).total_seconds())


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


# ------------------------------------------------------------------ logs


def log_files(store: Store, job_id: str, run: int | None) -> tuple[int, list[Path]]:
    """(run number, its existing output files) of a job; its latest run by default.

    Files are numbered by run, which counts across DLQ retries (``attempts`` restarts at 0
    there), so a retried job never shows an earlier run's output as its latest.
    """
    job = store.load(job_id)  # NotFound for an unknown id
    folder = store.home.logs / job_id
    chosen = run if run is not None else job.runs
    if not chosen:
        return 0, []
    files = [folder / f"{chosen}.{suffix}" for suffix in ("out", "err")]
    return chosen, [p for p in files if p.exists()]


def follow(store: Store, job_id: str, write: Callable[[bytes], None], poll: float = 0.2) -> None:
    """Print a job's output as it is written, attempt after attempt, until it finishes.

    A running attempt writes into a pre-created file under ``tmp/``; it is found through
    ``/proc``: the command's shell carries ``QUEUECTL_JOB_ID`` in its environment and its
    stdout and stderr are that file. Finished attempts are read from ``logs/<id>/``.
    Looks every ``poll`` seconds (a reader-side loop; workers are not involved).
    """
    printed: dict[str, int] = {}
    done_attempts: set[str] = set()
    store.load(job_id)  # NotFound for an unknown id, like plain ``logs``
    while True:
        found = store.locate(job_id)
        for path in sorted((store.home.logs / job_id).glob("*.*"), key=_run_order):
            if path.name not in done_attempts:
                _print_new(path, printed, write, key=_live_key(path))
                done_attempts.add(path.name)
        for stream, path in _live_outputs(store, job_id):
            _print_new(path, printed, write, key=stream)
        if found is None or found[0] in FINISHED:
            return
        time.sleep(poll)


def _run_order(path: Path) -> tuple[int, bool]:
    """Run 9 before run 10, and each run's stdout before its stderr."""
    return (int(path.stem) if path.stem.isdigit() else 0, path.suffix != ".out")


def _live_key(path: Path) -> str:
    """Finished files continue where the live view of the same attempt stopped."""
    return f"{path.stem}.{path.suffix.lstrip('.')}"


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


def _live_outputs(store: Store, job_id: str) -> list[tuple[str, Path]]:
    """(``<attempt>.out``/``.err``, file) of the running attempt, found through /proc."""
    wanted = f"QUEUECTL_JOB_ID={job_id}".encode()
    home = f"QUEUECTL_HOME={store.home.root}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted not in environ or home not in environ:
            continue
        attempt = next(
            (e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"QUEUECTL_RUN=")),
            "0",
        )
        found = []
        for fd, suffix in ((1, "out"), (2, "err")):
            try:
                target = Path(os.readlink(proc / "fd" / str(fd)))
            except OSError:
                continue
            if target.parent == store.home.tmp:
                found.append((f"{attempt}.{suffix}", target))
        if found:
            return found
    return []


# ------------------------------------------------------------------ waiting


def wait_for(
    store: Store,
    job_ids: list[str],
    timeout: float | None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, JobState]:
    """Block until every job is completed, dead or cancelled; their final states."""
    for job_id in job_ids:
        if store.locate(job_id) is None:
            raise NotFound(f"no job with id {job_id!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    done: dict[str, JobState] = {}
    while True:
        for job_id in job_ids:
            if job_id in done:
                continue
            found = store.locate(job_id)
            if found is not None and found[0] in FINISHED:
                done[job_id] = found[0]
                if progress:
                    progress(1)
        if len(done) == len(job_ids):
            return done
        if deadline is not None and time.monotonic() > deadline:
            waiting = sorted(set(job_ids) - set(done))
            raise QueueError(f"timed out waiting for: {' '.join(waiting)}")
        time.sleep(WAIT_POLL_SECONDS)
