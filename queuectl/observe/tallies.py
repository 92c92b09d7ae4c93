"""Counters of finished attempts: by outcome, and histograms of run time and queue wait.

Folded from the journal's index lines (one per attempt), so the metrics cost a pass over
short text lines rather than a JSON parse per record. ``journal compact`` stores the tallies
of what it folds away in its snapshot (a ``totals`` record), and readers add them back:
a Prometheus counter never goes down.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from queuectl.storage.journal_index import ATTEMPT_COLUMNS, FINISHED, OUTCOME, STARTED, WAITED

__all__ = ["BUCKETS", "Histogram", "Tallies"]

BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
"""Seconds; from a shell builtin to an hour-long batch job."""


@dataclass
class Histogram:
    """Cumulative-style Prometheus histogram: counts per bucket (not cumulative here; the
    renderer adds them up), plus sum and count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1

    def merge(self, data: object) -> None:
        if not isinstance(data, dict):
            return
        counts = data.get("counts")
        if isinstance(counts, list) and len(counts) == len(self.counts):
            for i, value in enumerate(counts):
                if isinstance(value, int) and not isinstance(value, bool):
                    self.counts[i] += value
        total, count = data.get("sum"), data.get("count")
        if isinstance(total, int | float) and not isinstance(total, bool):
            self.total += float(total)
        if isinstance(count, int) and not isinstance(count, bool):
            self.count += count

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": round(self.total, 6), "count": self.count}


@dataclass
class Tallies:
    outcomes: Counter[str] = field(default_factory=Counter)
    run: Histogram = field(default_factory=Histogram)
    wait: Histogram = field(default_factory=Histogram)

    def add_row(self, fields: list[str]) -> None:
        """Count one index line if it ended an attempt."""
        if len(fields) < ATTEMPT_COLUMNS:
            return
        self.outcomes[fields[OUTCOME]] += 1
        started, finished = _number(fields[STARTED]), _number(fields[FINISHED])
        if started is not None and finished is not None:
            self.run.add(max(0.0, finished - started))
        waited = _number(fields[WAITED])
        if waited is not None:
            self.wait.add(waited)

    def merge(self, data: object) -> None:
        """Add a snapshot's ``totals``."""
        if not isinstance(data, dict):
            return
        outcomes = data.get("outcomes")
        if isinstance(outcomes, dict):
            for name, count in outcomes.items():
                if isinstance(name, str) and isinstance(count, int):
                    self.outcomes[name] += count
        self.run.merge(data.get("run_seconds"))
        self.wait.merge(data.get("queue_wait_seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "run_seconds": self.run.to_dict(),
            "queue_wait_seconds": self.wait.to_dict(),
        }


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
