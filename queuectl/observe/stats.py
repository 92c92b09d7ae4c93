"""``queuectl stats``: throughput, outcomes, queue wait and run time, from the journal.

One pass over the journal's index (one short line per attempt), memory bounded by the
attempts in the window. Attempts that ``journal compact`` folded into a snapshot are counted
by the metrics (which keep totals) but are not in these windowed figures.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from queuectl.job import format_time
from queuectl.storage.journal_index import (
    ATTEMPT_COLUMNS,
    COMMAND,
    FINISHED,
    OUTCOME,
    STARTED,
    WAITED,
    number,
)
from queuectl.storage.store import Store

__all__ = ["compute_stats", "percentiles"]


def compute_stats(store: Store, since: datetime | None, now: datetime) -> dict[str, Any]:
    """Throughput, outcomes, queue wait and run time percentiles, busiest commands."""
    start = since.timestamp() if since is not None else None
    outcomes: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    waited: list[float] = []
    ran: list[float] = []
    first: float | None = None
    with store.journal.reading():
        for fields, _source in store.journal.rows():
            if len(fields) < ATTEMPT_COLUMNS:
                continue
            finished = number(fields[FINISHED])
            if finished is None or (start is not None and finished < start):
                continue
            first = finished if first is None else min(first, finished)
            outcomes[fields[OUTCOME]] += 1
            commands[fields[COMMAND]] += 1
            began = number(fields[STARTED])
            if began is not None:
                ran.append(max(0.0, finished - began))
            wait = number(fields[WAITED])
            if wait is not None:
                waited.append(wait)
    count = sum(outcomes.values())
    window_start = since or (datetime.fromtimestamp(first, UTC) if first is not None else now)
    minutes = max((now - window_start).total_seconds() / 60, 1 / 60)
    return {
        "since": format_time(window_start),
        "attempts": count,
        "finished_per_minute": round(count / minutes, 2),
        "outcomes": dict(sorted(outcomes.items())),
        "queue_wait_seconds": percentiles(waited),
        "run_seconds": percentiles(ran),
        "busiest_commands": [
            {"command": command, "attempts": n} for command, n in commands.most_common(5)
        ],
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3)}
