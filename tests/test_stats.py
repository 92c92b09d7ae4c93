"""``compute_stats``: every figure checked exactly, with attempts made the way a worker makes
them (claim, ``after_attempt``, commit) at injected times, then read back from the journal's
index as ``queuectl stats`` reads it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from queuectl.job import Job, job_from_input
from queuectl.observe.stats import compute_stats
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.commit import Change
from queuectl.storage.events import Event
from queuectl.storage.home import Home
from queuectl.storage.store import Claim, Store

T0 = datetime(2026, 11, 23, 12, 0, 0).astimezone()
LATER = T0 + timedelta(hours=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(Home(tmp_path / "home").ensure())


def add(store: Store, job_id: str, t: float = 0, command: str = "cmd", **spec: object) -> None:
    data = {"id": job_id, "command": command, "max_retries": 5, **spec}
    store.enqueue([job_from_input(data, default_max_retries=5, now=at(t))])


def attempt(
    store: Store,
    job_id: str,
    start: float,
    end: float,
    kind: OutcomeKind = OutcomeKind.SUCCEEDED,
    error: str | None = None,
    backoff: float = 1.0,
) -> Job:
    """One attempt of ``job_id`` running from ``start`` to ``end`` (seconds after T0)."""
    found = store.folders.locate(job_id)
    assert found is not None
    taken = store.claims.claim(f"{job_id}.json", found[0], "w", at(start))
    assert isinstance(taken, Claim), taken
    outcome = Outcome(
        kind,
        exit_code=0 if kind is OutcomeKind.SUCCEEDED else 1,
        error=error,
        started_at=at(start),
        finished_at=at(end),
    )
    updated = after_attempt(taken.job, outcome, backoff_base=backoff, now=at(end))
    event = Event.RECOVERED if kind is OutcomeKind.WORKER_LOST else updated.state.value
    store.commits.commit([Change(updated, event, remove=taken.path, attempt=True)])
    taken.release()
    return updated


def test_no_attempts_gives_zeroes_and_no_percentiles(store: Store) -> None:
    figures = compute_stats(store, None, LATER)
    assert figures["attempts"] == 0
    assert figures["finished_per_minute"] == 0
    assert figures["outcomes"] == {}
    assert figures["queue_wait_seconds"] == {"p50": None, "p95": None}
    assert figures["run_seconds"] == {"p50": None, "p95": None}
    assert figures["busiest_commands"] == []


def test_outcomes_name_worker_loss_and_timeouts(store: Store) -> None:
    timeout = "timeout: killed after 1s"
    add(store, "a")
    attempt(store, "a", 1, 2, OutcomeKind.WORKER_LOST, "worker lost while running it")
    attempt(store, "a", 3, 4)
    add(store, "t", max_retries=1)
    attempt(store, "t", 1, 2, OutcomeKind.TIMED_OUT, timeout, backoff=0)
    attempt(store, "t", 3, 5, OutcomeKind.TIMED_OUT, timeout)
    add(store, "d", max_retries=0)
    attempt(store, "d", 1, 2, OutcomeKind.FAILED, "exit code 9")
    figures = compute_stats(store, None, LATER)
    assert figures["attempts"] == 5
    assert figures["outcomes"] == {
        "completed": 1,
        "dead": 1,
        "dead_timeout": 1,
        "timeout": 1,
        "worker_lost": 1,
    }


def test_a_cancel_of_a_waiting_job_is_not_an_attempt(store: Store) -> None:
    add(store, "w")
    store.cancel_waiting("w", at(1))
    assert compute_stats(store, None, LATER)["attempts"] == 0


def test_queue_wait_starts_when_the_job_last_became_runnable(store: Store) -> None:
    add(store, "a", max_retries=1)
    attempt(store, "a", 2, 3, OutcomeKind.FAILED, "exit code 1", backoff=7)  # waited 2 s
    # retry due at 3 + 7 = 10; starts at 14: waited 4 s, not 14 from creation
    attempt(store, "a", 14, 15, OutcomeKind.FAILED, "exit code 1")
    store.retry_dead("a", at(100))
    attempt(store, "a", 101, 102)  # waited 1 s from the DLQ retry
    add(store, "late", run_at=at(50).isoformat())
    attempt(store, "late", 53, 54)  # scheduled for 50: waited 3 s, not 53
    figures = compute_stats(store, None, LATER)
    assert figures["attempts"] == 4
    assert figures["queue_wait_seconds"] == {"p50": 2.5, "p95": 4.0}
    assert figures["run_seconds"] == {"p50": 1.0, "p95": 1.0}


def test_percentiles_are_the_median_and_the_nearest_rank_95th(store: Store) -> None:
    for i in range(1, 21):  # run times 1..20 s, each started the moment it was created
        add(store, f"j{i}")
        attempt(store, f"j{i}", 0, i)
    figures = compute_stats(store, None, LATER)
    assert figures["run_seconds"] == {"p50": 10.5, "p95": 19.0}
    assert figures["queue_wait_seconds"] == {"p50": 0.0, "p95": 0.0}


def test_since_limits_the_window_and_the_rate_uses_it(store: Store) -> None:
    for i in range(9):  # attempts finish at minute 0, 1, ... 8
        add(store, f"j{i}")
        attempt(store, f"j{i}", 60 * i, 60 * i)
    now = T0 + timedelta(minutes=10)
    recent = compute_stats(store, T0 + timedelta(minutes=6), now)
    assert recent["attempts"] == 3  # minutes 6, 7, 8
    assert recent["finished_per_minute"] == 0.75  # 3 attempts over the 4-minute window
    everything = compute_stats(store, None, now)
    assert everything["attempts"] == 9
    assert everything["finished_per_minute"] == 0.9  # from the first finish to now: 10 min


def test_busiest_commands_top_five_by_attempts_clipped_to_60_characters(store: Store) -> None:
    long = "python   -m  build " + "x" * 80
    counts = {long: 6, "a": 5, "b": 4, "c": 3, "d": 2, "e": 1}
    for n, (command, count) in enumerate(counts.items()):
        add(store, f"j{n}", command=command, max_retries=10)
        for k in range(count):
            attempt(store, f"j{n}", k, k, OutcomeKind.FAILED, "exit code 1", backoff=0)
    busiest = compute_stats(store, None, LATER)["busiest_commands"]
    assert len(busiest) == 5
    assert busiest[0] == {"command": ("python -m build " + "x" * 80)[:60], "attempts": 6}
    assert len(busiest[0]["command"]) == 60
    assert [b["command"] for b in busiest[1:]] == ["a", "b", "c", "d"]
    assert [b["attempts"] for b in busiest[1:]] == [5, 4, 3, 2]


def test_stats_read_the_index_not_the_records(store: Store) -> None:
    """The figures come from the index lines: a record's JSON is never parsed (the index of
    a finished job says everything stats needs)."""
    add(store, "a")
    attempt(store, "a", 0, 1)
    segment = store.home.journal / "00000001.log"
    segment.write_bytes(b"x" * segment.stat().st_size)  # the records themselves destroyed
    assert compute_stats(store, None, LATER)["attempts"] == 1
