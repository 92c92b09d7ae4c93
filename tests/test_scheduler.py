"""Backoff and the state a job moves to after an attempt; ``now`` is always injected."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from queuectl.job import Job, JobState, format_time, parse_time
from queuectl.scheduler import (
    MAX_BACKOFF_SECONDS,
    Outcome,
    OutcomeKind,
    after_attempt,
    backoff_seconds,
)

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
STARTED = NOW - timedelta(seconds=5)

FAILURES = [
    OutcomeKind.FAILED,
    OutcomeKind.TIMED_OUT,
    OutcomeKind.KILLED,
    OutcomeKind.SPAWN_FAILED,
]


def running_job(attempts: int = 0, max_retries: int = 3, rev: int = 2) -> Job:
    return Job(
        id="job-1",
        command="false",
        state=JobState.PENDING,
        attempts=attempts,
        max_retries=max_retries,
        created_at="2026-11-23T11:00:00.000Z",
        updated_at="2026-11-23T11:00:00.000Z",
        rev=rev,
        started_at=format_time(STARTED),
        worker="host:1:1",
        extra={"custom": "kept"},
    )


def failed(kind: OutcomeKind = OutcomeKind.FAILED, code: int | None = 1) -> Outcome:
    return Outcome(kind, exit_code=code, error=f"{kind.value} ({code})")


# ------------------------------------------------------------------ backoff


@pytest.mark.parametrize(
    ("attempts", "base", "expected"),
    [
        (0, 2, 1.0),
        (1, 2, 2.0),
        (3, 2, 8.0),
        (10, 2, 1024.0),
        (4, 1.5, 5.0625),
        (5, 1, 1.0),
        (2, 10, 100.0),
    ],
)
def test_backoff_is_base_to_the_attempts(attempts: int, base: float, expected: float) -> None:
    assert backoff_seconds(attempts, base) == pytest.approx(expected)


def test_backoff_is_capped() -> None:
    assert backoff_seconds(40, 2) == MAX_BACKOFF_SECONDS
    assert backoff_seconds(5, 1000) == MAX_BACKOFF_SECONDS
    # just below the cap is not touched
    assert backoff_seconds(28, 2) == 2.0**28 < MAX_BACKOFF_SECONDS


@pytest.mark.parametrize(("attempts", "base"), [(10_000, 2), (1_000_000, 1000), (2000, 1.5)])
def test_backoff_overflow_returns_the_cap(attempts: int, base: float) -> None:
    assert backoff_seconds(attempts, base) == MAX_BACKOFF_SECONDS


# ------------------------------------------------------------------ after_attempt


def test_success_completes_the_job() -> None:
    job = running_job(attempts=1)
    job = replace(job, last_error="previous failure", next_run_at="2026-11-23T11:59:00.000Z")
    finished = NOW - timedelta(seconds=1)
    outcome = Outcome(OutcomeKind.SUCCEEDED, exit_code=0, started_at=STARTED, finished_at=finished)
    done = after_attempt(job, outcome, backoff_base=2, now=NOW)
    assert done.state is JobState.COMPLETED
    assert done.attempts == 2
    assert done.rev == job.rev + 1
    assert done.last_exit_code == 0
    assert done.last_error is None
    assert done.next_run_at is None
    assert done.updated_at == format_time(NOW)
    assert done.started_at == format_time(STARTED)
    assert done.finished_at == format_time(finished)
    assert done.worker == "host:1:1"
    assert done.extra == {"custom": "kept"}
    assert done.id == job.id and done.command == job.command
    # the input is not mutated
    assert job.state is JobState.PENDING and job.attempts == 1


def test_success_on_last_allowed_attempt_still_completes() -> None:
    job = running_job(attempts=3, max_retries=3)
    done = after_attempt(job, Outcome(OutcomeKind.SUCCEEDED, exit_code=0), backoff_base=2, now=NOW)
    assert done.state is JobState.COMPLETED
    assert done.attempts == 4


@pytest.mark.parametrize("kind", FAILURES)
@pytest.mark.parametrize("attempts_before", [0, 1, 2])
def test_failure_with_retries_left_backs_off(kind: OutcomeKind, attempts_before: int) -> None:
    job = running_job(attempts=attempts_before, max_retries=3)
    after = after_attempt(job, failed(kind), backoff_base=2, now=NOW)
    attempts = attempts_before + 1
    assert after.state is JobState.FAILED
    assert after.attempts == attempts
    assert after.next_run_at is not None
    assert parse_time(after.next_run_at) == NOW + timedelta(seconds=2**attempts)
    assert after.last_error == f"{kind.value} (1)"
    assert after.last_exit_code == 1
    assert after.rev == job.rev + 1


def test_backoff_uses_the_given_base() -> None:
    after = after_attempt(running_job(attempts=1), failed(), backoff_base=3, now=NOW)
    assert after.attempts == 2
    assert parse_time(after.next_run_at or "") == NOW + timedelta(seconds=9)
    fractional = after_attempt(running_job(attempts=1), failed(), backoff_base=1.5, now=NOW)
    assert parse_time(fractional.next_run_at or "") == NOW + timedelta(seconds=2.25)


def test_failure_when_attempts_equal_max_retries_still_retries() -> None:
    after = after_attempt(running_job(attempts=2, max_retries=3), failed(), backoff_base=2, now=NOW)
    assert after.attempts == 3
    assert after.state is JobState.FAILED


@pytest.mark.parametrize("kind", FAILURES)
def test_failure_beyond_max_retries_is_dead(kind: OutcomeKind) -> None:
    job = running_job(attempts=3, max_retries=3)
    after = after_attempt(job, failed(kind, code=7), backoff_base=2, now=NOW)
    assert after.state is JobState.DEAD
    assert after.attempts == 4
    assert after.next_run_at is None
    assert after.last_error == f"{kind.value} (7)"
    assert after.last_exit_code == 7


def test_max_retries_zero_means_exactly_one_run() -> None:
    after = after_attempt(running_job(attempts=0, max_retries=0), failed(), backoff_base=2, now=NOW)
    assert after.state is JobState.DEAD
    assert after.attempts == 1


def test_total_runs_are_max_retries_plus_one() -> None:
    job = running_job(attempts=0, max_retries=4)
    states = []
    for _ in range(5):
        job = after_attempt(job, failed(), backoff_base=2, now=NOW)
        states.append(job.state)
    assert states == [JobState.FAILED] * 4 + [JobState.DEAD]
    assert job.attempts == 5


def test_error_defaults_to_the_outcome_kind() -> None:
    after = after_attempt(running_job(), Outcome(OutcomeKind.TIMED_OUT), backoff_base=2, now=NOW)
    assert after.last_error == "timed_out"
    assert after.last_exit_code is None


def test_finished_at_defaults_to_now() -> None:
    job = running_job()
    after = after_attempt(job, failed(), backoff_base=2, now=NOW)
    assert after.finished_at == format_time(NOW)
    assert after.started_at == job.started_at


def test_worker_lost_returns_to_pending_immediately() -> None:
    job = replace(running_job(attempts=1, max_retries=3), next_run_at="2026-11-23T11:00:02Z")
    outcome = Outcome(OutcomeKind.WORKER_LOST, error="worker lost (host:1:1)")
    after = after_attempt(job, outcome, backoff_base=2, now=NOW)
    assert after.state is JobState.PENDING
    assert after.attempts == 2
    assert after.next_run_at is None
    assert after.last_error == "worker lost (host:1:1)"
    assert after.rev == job.rev + 1


def test_worker_lost_when_exhausted_is_dead() -> None:
    job = running_job(attempts=3, max_retries=3)
    after = after_attempt(job, Outcome(OutcomeKind.WORKER_LOST), backoff_base=2, now=NOW)
    assert after.state is JobState.DEAD
    assert after.attempts == 4
    assert after.last_error == "worker_lost"
    zero = after_attempt(
        running_job(attempts=0, max_retries=0),
        Outcome(OutcomeKind.WORKER_LOST),
        backoff_base=2,
        now=NOW,
    )
    assert zero.state is JobState.DEAD


def test_huge_backoff_is_capped_to_a_date() -> None:
    job = running_job(attempts=500, max_retries=1000)
    after = after_attempt(job, failed(), backoff_base=1000, now=NOW)
    assert after.state is JobState.FAILED
    assert parse_time(after.next_run_at or "") == NOW + timedelta(seconds=MAX_BACKOFF_SECONDS)


def test_backoff_past_year_9999_saturates() -> None:
    late = datetime(9999, 6, 1, tzinfo=UTC)
    after = after_attempt(
        running_job(attempts=40, max_retries=1000), failed(), backoff_base=2, now=late
    )
    assert after.state is JobState.FAILED
    assert after.next_run_at == "9999-12-31T23:59:59.000Z"
    assert parse_time(after.next_run_at) > late
