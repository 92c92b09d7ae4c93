"""Pure decisions: how long to back off, and where a job goes after an attempt. No I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from queuectl.job import HISTORY_LIMIT, Job, JobState, format_time, parse_time

__all__ = [
    "MAX_BACKOFF_SECONDS",
    "Outcome",
    "OutcomeKind",
    "after_attempt",
    "backoff_seconds",
    "worker_lost",
]

MAX_BACKOFF_SECONDS: Final = 10 * 365 * 86400.0
"""``base ** attempts`` overflows quickly; delays are capped at ten years so they stay dates."""


class OutcomeKind(StrEnum):
    """Why an attempt ended; kept apart from the job's state, as pueue does."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the command exited non-zero
    TIMED_OUT = "timed_out"  # job-timeout expired and the process group was killed
    KILLED = "killed"  # the command died from a signal
    SPAWN_FAILED = "spawn_failed"  # /bin/sh could not be started at all
    WORKER_LOST = "worker_lost"  # its worker died; found by recovery


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    exit_code: int | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stderr_tail: str | None = None


@dataclass(frozen=True)
class Backoff:
    """How long a failed job waits: ``base ** attempts``, capped at ``cap`` seconds when cap
    is positive, then shortened by up to ``jitter`` (a fraction) so that jobs that failed
    together do not all retry in the same instant."""

    base: float = 2.0
    cap: float = 0.0
    jitter: float = 0.0

    def seconds(self, attempts: int, rng: random.Random | None = None) -> float:
        delay = backoff_seconds(attempts, self.base)
        if self.cap > 0:
            delay = min(delay, self.cap)
        if self.jitter > 0:
            delay *= 1 - self.jitter * (rng or random).random()
        return delay


AGING_SECONDS: Final = 60.0
"""Priority aging: a job counts as runnable ``priority * AGING_SECONDS`` earlier than it
became runnable. So one priority step is worth a minute of waiting: a priority-0 job that has
waited 10 minutes goes before a priority-9 job that just arrived, and nothing starves."""


def queue_key(runnable_since: float, priority: int) -> float:
    """Sort key among runnable jobs (smaller runs first): FIFO, shifted by priority."""
    return runnable_since - priority * AGING_SECONDS


def backoff_seconds(attempts: int, base: float) -> float:
    """Delay before the next run after ``attempts`` finished runs: ``base ** attempts``."""
    try:
        return min(float(base) ** attempts, MAX_BACKOFF_SECONDS)
    except OverflowError:
        return MAX_BACKOFF_SECONDS


def after_attempt(
    job: Job,
    outcome: Outcome,
    *,
    backoff_base: Backoff | float,
    now: datetime,
    rng: random.Random | None = None,
) -> Job:
    """The job as it must be stored after one finished attempt.

    ``attempts`` counts finished runs; a failed run goes to ``dead`` once
    ``attempts > max_retries``, otherwise to ``failed`` until its backoff has passed
    (``backoff_base`` is a ``Backoff`` policy, or just the base of ``base ** attempts``).
    A run whose worker died counts as a run too (it may have done its work), but it is
    retried at once: nothing suggests waiting would help. Every attempt is appended to the
    job's ``history`` (the last ``HISTORY_LIMIT``), so the DLQ shows why a job died.
    """
    policy = backoff_base if isinstance(backoff_base, Backoff) else Backoff(float(backoff_base))
    attempts = job.attempts + 1
    stamp = format_time(now)
    started = format_time(outcome.started_at) if outcome.started_at else job.started_at
    finished = format_time(outcome.finished_at) if outcome.finished_at else stamp
    common = {
        "attempts": attempts,
        "runs": job.runs + 1,
        "rev": job.rev + 1,
        "updated_at": stamp,
        "last_exit_code": outcome.exit_code,
        "started_at": started,
        "finished_at": finished,
        "worker": job.worker,
        "history": [*job.history, _history_entry(job, outcome, attempts, started, finished)][
            -HISTORY_LIMIT:
        ],
    }
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return _copy(job, state=JobState.COMPLETED, last_error=None, next_run_at=None, **common)
    error = outcome.error or outcome.kind.value
    if attempts > job.max_retries:
        return _copy(job, state=JobState.DEAD, last_error=error, next_run_at=None, **common)
    if outcome.kind is OutcomeKind.WORKER_LOST:
        return _copy(
            job,
            state=JobState.PENDING,
            last_error=error,
            next_run_at=None,
            queued_at=stamp,
            **common,
        )
    delay = policy.seconds(attempts, rng)
    try:
        due = format_time(now + timedelta(seconds=delay))
    except OverflowError:
        due = "9999-12-31T23:59:59.000Z"
    return _copy(
        job, state=JobState.FAILED, last_error=error, next_run_at=due, queued_at=due, **common
    )


def worker_lost(job: Job, backoff: Backoff, now: datetime, found_by: str = "") -> Job:
    """The job after a run whose worker died (found by recovery or fsck): the run counts
    (it may have done its work) and the job goes back to pending, or dead after its last
    retry."""
    error = "worker lost while running it" + (f" (found by {found_by})" if found_by else "")
    outcome = Outcome(OutcomeKind.WORKER_LOST, error=error)
    return after_attempt(replace(job, worker=None), outcome, backoff_base=backoff, now=now)


def _history_entry(
    job: Job, outcome: Outcome, attempt: int, started: str | None, finished: str
) -> dict[str, object]:
    duration = None
    if outcome.started_at and outcome.finished_at:
        duration = round((outcome.finished_at - outcome.started_at).total_seconds(), 3)
    return {
        "attempt": attempt,
        "run": job.runs + 1,
        "outcome": outcome.kind.value,
        "exit_code": outcome.exit_code,
        "started_at": started,
        "finished_at": finished,
        "duration": duration,
        "waited": _waited(job.queued_at, outcome.started_at),
        "worker": job.worker,
        "error": outcome.error,
        "stderr_tail": outcome.stderr_tail,
    }


def _waited(queued_at: str | None, started: datetime | None) -> float | None:
    """Seconds the attempt waited in the queue: from when the job last became runnable."""
    if not queued_at or started is None:
        return None
    try:
        return round(max(0.0, (started - parse_time(queued_at)).total_seconds()), 3)
    except ValueError:
        return None


def _copy(job: Job, **fields: object) -> Job:
    return replace(job, **fields)  # type: ignore[arg-type]
