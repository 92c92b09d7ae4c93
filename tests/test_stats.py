"""``compute_stats``: a pure function over journal records, so every figure is checked exactly
with synthetic records and an injected ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from queuectl.observe.journal_views import compute_stats

T0 = datetime(2026, 11, 23, 12, 0, 0).astimezone()
LATER = T0 + timedelta(hours=1)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rec(event: str, job_id: str, attempts: int, t: float, **job: Any) -> dict[str, Any]:
    """A journal record as ``Record.data``; the job carries only the fields stats reads."""
    body = {"id": job_id, "attempts": attempts, "command": "cmd", "created_at": at(0)}
    return {"ts": at(t), "event": event, "job": {**body, **job}}


def ran(event: str, job_id: str, attempts: int, start: float, end: float, **job: Any) -> dict:
    """The record that ends an attempt which ran from ``start`` to ``end``."""
    return rec(event, job_id, attempts, end, started_at=at(start), finished_at=at(end), **job)


def test_no_records_gives_zeroes_and_no_percentiles() -> None:
    figures = compute_stats([], None, LATER)
    assert figures["attempts"] == 0
    assert figures["finished_per_minute"] == 0
    assert figures["outcomes"] == {}
    assert figures["queue_wait_seconds"] == {"p50": None, "p95": None}
    assert figures["run_seconds"] == {"p50": None, "p95": None}
    assert figures["busiest_commands"] == []


def test_outcomes_name_worker_loss_and_timeouts() -> None:
    timeout = "timeout: killed after 1s"
    records = [
        rec("enqueued", "a", 0, 0),
        ran("recovered", "a", 1, 1, 2, last_error="worker lost while running it"),
        ran("completed", "a", 2, 3, 4),
        rec("enqueued", "t", 0, 0),
        ran("failed", "t", 1, 1, 2, last_error=timeout, next_run_at=at(3)),
        ran("dead", "t", 2, 3, 5, last_error=timeout),
        rec("enqueued", "d", 0, 0),
        ran("dead", "d", 1, 1, 2, last_error="exit code 9"),
    ]
    figures = compute_stats(records, None, LATER)
    assert figures["attempts"] == 5
    assert figures["outcomes"] == {
        "completed": 1,
        "dead": 1,
        "dead_timeout": 1,
        "timeout": 1,
        "worker_lost": 1,
    }


def test_a_record_journaled_twice_counts_once() -> None:
    """Recovery re-journals an interrupted commit with the same attempts: not a new attempt."""
    done = ran("completed", "a", 1, 1, 2)
    figures = compute_stats([rec("enqueued", "a", 0, 0), done, dict(done)], None, LATER)
    assert figures["attempts"] == 1


def test_queue_wait_starts_when_the_job_last_became_runnable() -> None:
    records = [
        rec("enqueued", "a", 0, 0),
        ran("failed", "a", 1, 2, 3, next_run_at=at(10)),  # waited 2 s from creation
        ran("dead", "a", 2, 14, 15),  # waited 4 s from its retry time, not 14 from creation
        rec("retried", "a", 0, 100),  # back from the DLQ
        ran("completed", "a", 1, 101, 102),  # waited 1 s from the retry
        rec("enqueued", "late", 0, 0, run_at=at(50)),
        ran("completed", "late", 1, 53, 54),  # scheduled for 50: waited 3 s, not 53
    ]
    figures = compute_stats(records, None, LATER)
    assert figures["attempts"] == 4
    assert figures["queue_wait_seconds"] == {"p50": 2.5, "p95": 4.0}
    assert figures["run_seconds"] == {"p50": 1.0, "p95": 1.0}


def test_percentiles_are_the_median_and_the_nearest_rank_95th() -> None:
    records = []
    for i in range(1, 21):  # run times 1..20 s, each started the moment it was created
        records.append(rec("enqueued", f"j{i}", 0, 0))
        records.append(ran("completed", f"j{i}", 1, 0, i))
    figures = compute_stats(records, None, LATER)
    assert figures["run_seconds"] == {"p50": 10.5, "p95": 19.0}
    assert figures["queue_wait_seconds"] == {"p50": 0.0, "p95": 0.0}


def test_since_limits_the_window_and_the_rate_uses_it() -> None:
    records = []
    for i in range(9):  # attempts finish at minute 0, 1, ... 8
        records.append(rec("enqueued", f"j{i}", 0, 0))
        records.append(ran("completed", f"j{i}", 1, 60 * i, 60 * i))
    now = T0 + timedelta(minutes=10)
    recent = compute_stats(records, T0 + timedelta(minutes=6), now)
    assert recent["attempts"] == 3  # minutes 6, 7, 8
    assert recent["finished_per_minute"] == 0.75  # 3 attempts over the 4-minute window
    everything = compute_stats(records, None, now)
    assert everything["attempts"] == 9
    assert everything["finished_per_minute"] == 0.9  # from the first finish to now: 10 min


def test_busiest_commands_top_five_by_attempts_clipped_to_60_characters() -> None:
    long = "python   -m  build " + "x" * 80
    counts = {long: 6, "a": 5, "b": 4, "c": 3, "d": 2, "e": 1}
    records = []
    for n, (command, count) in enumerate(counts.items()):
        job_id = f"j{n}"
        records.append(rec("enqueued", job_id, 0, 0, command=command))
        for attempt in range(1, count + 1):
            records.append(
                ran("failed", job_id, attempt, attempt, attempt, command=command, next_run_at=None)
            )
    busiest = compute_stats(records, None, LATER)["busiest_commands"]
    assert len(busiest) == 5
    assert busiest[0] == {"command": ("python -m build " + "x" * 80)[:60], "attempts": 6}
    assert len(busiest[0]["command"]) == 60
    assert [b["command"] for b in busiest[1:]] == ["a", "b", "c", "d"]
    assert [b["attempts"] for b in busiest[1:]] == [5, 4, 3, 2]
