"""Pure decisions: how long to back off, and where a job goes after an attempt. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from queuectl.job import Job, JobState, format_time

__all__ = ["MAX_BACKOFF_SECONDS", "Outcome", "OutcomeKind", "after_attempt", "backoff_seconds"]

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


def backoff_seconds(attempts: int, base: float) -> float:
    """Delay before the next run after ``attempts`` finished runs: ``base ** attempts``."""
    try:
        return min(float(base) ** attempts, MAX_BACKOFF_SECONDS)
    except OverflowError:
        return MAX_BACKOFF_SECONDS


def after_attempt(job: Job, outcome: Outcome, *, backoff_base: float, now: datetime) -> Job:
    """The job as it must be stored after one finished attempt.

    ``attempts`` counts finished runs; a failed run goes to ``dead`` once
    ``attempts > max_retries``, otherwise to ``failed`` until ``base ** attempts`` seconds pass.
    A run whose worker died counts as a run too (it may have done its work), but it is
    retried at once: nothing suggests waiting would help.
    """
    attempts = job.attempts + 1
    stamp = format_time(now)
    common = {
        "attempts": attempts,
        "rev": job.rev + 1,
        "updated_at": stamp,
        "last_exit_code": outcome.exit_code,
        "started_at": format_time(outcome.started_at) if outcome.started_at else job.started_at,
        "finished_at": format_time(outcome.finished_at) if outcome.finished_at else stamp,
        "worker": job.worker,
    }
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return _copy(job, state=JobState.COMPLETED, last_error=None, next_run_at=None, **common)
    error = outcome.error or outcome.kind.value
    if attempts > job.max_retries:
        return _copy(job, state=JobState.DEAD, last_error=error, next_run_at=None, **common)
    if outcome.kind is OutcomeKind.WORKER_LOST:
        return _copy(job, state=JobState.PENDING, last_error=error, next_run_at=None, **common)
    delay = backoff_seconds(attempts, backoff_base)
    try:
        due = format_time(now + timedelta(seconds=delay))
    except OverflowError:
        due = "9999-12-31T23:59:59.000Z"
    return _copy(job, state=JobState.FAILED, last_error=error, next_run_at=due, **common)


def _copy(job: Job, **fields: object) -> Job:
    from dataclasses import replace

    return replace(job, **fields)  # type: ignore[arg-type]
