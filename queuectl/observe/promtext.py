"""Prometheus text exposition (format 0.0.4) of a queue home.

Gauges for jobs per state and live workers, counters of attempt outcomes, and histograms of
run time and queue wait, all computed from the state folders and the journal, so that
``queuectl metrics`` (for node_exporter's textfile collector or cron) and the dashboard's
``/metrics`` say exactly the same thing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from queuectl.job import JobState
from queuectl.observe.tallies import BUCKETS, Histogram, Tallies
from queuectl.storage.events import Event
from queuectl.storage.journal import Follower
from queuectl.storage.registry import live_workers
from queuectl.storage.store import Store

__all__ = ["BUCKETS", "render", "snapshot"]


class _Followed:
    """Tallies of one journal, kept current by a ``Follower`` (per process, per home)."""

    def __init__(self, store: Store) -> None:
        self.follower = Follower(store.journal)
        self.tallies = Tallies()
        self.guard = threading.Lock()

    def current(self, store: Store) -> Tallies:
        with self.guard:
            self.follower.advance(self._reset, self._row)
            return self.tallies

    def _reset(self) -> None:
        self.tallies = Tallies()

    def _row(self, fields: list[str], source: Path) -> None:
        if fields[0] == "-":
            if fields[1] == Event.TOTALS:
                record = self.follower.journal.read_at(source, int(fields[2]), int(fields[3]))
                if record is not None:
                    self.tallies.merge(record.get("totals"))
            return
        self.tallies.add_row(fields)


_followed: dict[str, _Followed] = {}
_followed_guard = threading.Lock()


def tallies(store: Store) -> Tallies:
    """Attempt counters of the whole journal (snapshots' totals included), brought up to
    date; shared by ``queuectl metrics`` and the dashboard."""
    key = str(store.home.journal)
    with _followed_guard:
        followed = _followed.get(key)
        if followed is None:
            followed = _followed[key] = _Followed(store)
    return followed.current(store)


def snapshot(store: Store) -> dict[str, Any]:
    """The numbers behind the metrics: counts, workers, and attempt tallies."""
    counted = tallies(store)
    return {
        "jobs": {state.value: store.folders.count(state) for state in JobState},
        "workers": len(live_workers(store.home.workers)),
        "outcomes": dict(counted.outcomes),
        "run_seconds": counted.run,
        "wait_seconds": counted.wait,
    }


def render(figures: dict[str, Any]) -> str:
    """The Prometheus text format for a ``snapshot``."""
    lines = [
        "# HELP queuectl_jobs Jobs in each state folder.",
        "# TYPE queuectl_jobs gauge",
        *(f'queuectl_jobs{{state="{state}"}} {count}' for state, count in figures["jobs"].items()),
        "# HELP queuectl_workers Live worker processes.",
        "# TYPE queuectl_workers gauge",
        f"queuectl_workers {figures['workers']}",
        "# HELP queuectl_attempts_total Finished attempts by outcome, from the journal.",
        "# TYPE queuectl_attempts_total counter",
        *(
            f'queuectl_attempts_total{{outcome="{_label(outcome)}"}} {count}'
            for outcome, count in sorted(figures["outcomes"].items())
        ),
    ]
    lines += _histogram("queuectl_run_seconds", "Run time of attempts.", figures["run_seconds"])
    lines += _histogram(
        "queuectl_queue_wait_seconds",
        "Time from runnable to started, per attempt.",
        figures["wait_seconds"],
    )
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, values: Histogram | Iterable[float]) -> list[str]:
    histogram = values if isinstance(values, Histogram) else _filled(values)
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    for bound, count in zip(BUCKETS, histogram.counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {histogram.count}')
    lines.append(f"{name}_sum {histogram.total:.6f}")
    lines.append(f"{name}_count {histogram.count}")
    return lines


def _filled(values: Iterable[float]) -> Histogram:
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    return histogram


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
