"""The overview's charts: attempts finished per time step by outcome, and queue wait and
run time percentiles, over the last hour or a longer range.

Fed one journal index row per finished attempt (``feed``) and kept as one small aggregate
per minute for ``KEPT_MINUTES``: outcome counts, and run and wait times as counts in
logarithmic bins (each ``BIN_RATIO`` wide, so a percentile read from them is within 2 % of
the exact one). A chart asks for 60 to 168 steps of 1 to 60 minutes; it merges those
minutes, which costs the same at 100 attempts an hour as at 100,000, and nothing is sorted
per request. Minutes are those of the attempt's end (``finished``), in UTC epoch minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from queuectl.storage.journal_index import FINISHED, OUTCOME, STARTED, WAITED, number

__all__ = ["OUTCOME_GROUPS", "RANGES", "Series"]

RANGES: Final = {"1h": (1, 60), "6h": (5, 72), "24h": (15, 96), "7d": (60, 168)}
"""Range name -> (minutes per step, steps)."""

KEPT_MINUTES: Final = 7 * 24 * 60 + 60

BIN_RATIO: Final = 1.04
FLOOR_SECONDS: Final = 0.001
"""Times at or below a millisecond share the first bin."""

OUTCOME_GROUPS: Final = {
    "completed": "completed",
    "failed": "failed",
    "timeout": "failed",
    "worker_lost": "failed",
    "dead": "dead",
    "dead_timeout": "dead",
    "cancelled": "cancelled",
}
"""How the journal names an attempt's end (``events.outcome_name``) -> the chart's series:
completed; failed and will be retried; dead (no retries left); cancelled."""

_LOG_RATIO: Final = math.log(BIN_RATIO)


def _bin(seconds: float) -> int:
    if seconds <= FLOOR_SECONDS:
        return 0
    return 1 + int(math.log(seconds / FLOOR_SECONDS) / _LOG_RATIO)


def _value(index: int) -> float:
    """The middle of a bin (geometrically), as seconds."""
    if index == 0:
        return FLOOR_SECONDS
    return FLOOR_SECONDS * BIN_RATIO ** (index - 0.5)


@dataclass
class _Minute:
    outcomes: dict[str, int] = field(default_factory=dict)
    run: dict[int, int] = field(default_factory=dict)
    wait: dict[int, int] = field(default_factory=dict)


class Series:
    def __init__(self) -> None:
        self._minutes: dict[int, _Minute] = {}
        self._newest = 0

    def reset(self) -> None:
        self._minutes = {}
        self._newest = 0

    def add(self, fields: list[str]) -> None:
        """Count one index row that ended an attempt."""
        finished = number(fields[FINISHED])
        if finished is None:
            return
        minute = int(finished // 60)
        if minute < self._newest - KEPT_MINUTES:
            return
        if minute > self._newest:
            self._newest = minute
            self._forget_old()
        bucket = self._minutes.get(minute)
        if bucket is None:
            bucket = self._minutes[minute] = _Minute()
        outcome = OUTCOME_GROUPS.get(fields[OUTCOME], "failed")
        bucket.outcomes[outcome] = bucket.outcomes.get(outcome, 0) + 1
        started = number(fields[STARTED])
        if started is not None:
            _add(bucket.run, _bin(max(0.0, finished - started)))
        waited = number(fields[WAITED])
        if waited is not None:
            _add(bucket.wait, _bin(max(0.0, waited)))

    def _forget_old(self) -> None:
        if len(self._minutes) <= KEPT_MINUTES + 60:
            return
        oldest = self._newest - KEPT_MINUTES
        for minute in [m for m in self._minutes if m < oldest]:
            del self._minutes[minute]

    def chart(self, range_name: str, now: float) -> dict[str, Any]:
        """The steps of one range ending now: for each, its start (epoch seconds), the
        attempts per outcome group, and wait and run p50/p95 (None without attempts)."""
        step, count = RANGES[range_name]
        last = int(now // 60) // step * step
        first = last - (count - 1) * step
        steps = []
        overall = _Minute()
        for start in range(first, last + 1, step):
            merged = _Minute()
            for minute in range(start, start + step):
                found = self._minutes.get(minute)
                if found is not None:
                    _merge(merged, found)
            _merge(overall, merged)
            steps.append(
                {
                    "t": start * 60,
                    **{group: merged.outcomes.get(group, 0) for group in _GROUPS},
                    "wait": _percentiles(merged.wait),
                    "run": _percentiles(merged.run),
                }
            )
        finished = sum(overall.outcomes.values())
        return {
            "range": range_name,
            "step_seconds": step * 60,
            "start": first * 60,
            "end": (last + step) * 60,
            "steps": steps,
            "totals": {
                "finished": finished,
                **{group: overall.outcomes.get(group, 0) for group in _GROUPS},
                "per_minute": round(finished / (count * step), 2),
                "wait": _percentiles(overall.wait),
                "run": _percentiles(overall.run),
            },
        }


_GROUPS: Final = ("completed", "failed", "dead", "cancelled")


def _add(bins: dict[int, int], index: int) -> None:
    bins[index] = bins.get(index, 0) + 1


def _merge(into: _Minute, other: _Minute) -> None:
    for name, value in other.outcomes.items():
        into.outcomes[name] = into.outcomes.get(name, 0) + value
    for mine, theirs in ((into.run, other.run), (into.wait, other.wait)):
        for index, value in theirs.items():
            mine[index] = mine.get(index, 0) + value


def _percentiles(bins: dict[int, int]) -> dict[str, float | None]:
    """p50 and p95 by nearest rank (as ``stats`` computes them), from binned counts."""
    total = sum(bins.values())
    if not total:
        return {"p50": None, "p95": None}
    wanted = {"p50": round(0.5 * (total - 1)), "p95": round(0.95 * (total - 1))}
    found: dict[str, float | None] = {}
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        for name, rank in wanted.items():
            if name not in found and rank < seen:
                found[name] = round(_value(index), 4)
    return {"p50": found.get("p50"), "p95": found.get("p95")}
