"""Prometheus text exposition (format 0.0.4) of a queue home.

Gauges for jobs per state and live workers, counters of attempt outcomes, and histograms of
run time and queue wait, all computed from the state folders and the journal, so that
``queuectl metrics`` (for node_exporter's textfile collector or cron) and the dashboard's
``/metrics`` say exactly the same thing.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from queuectl.job import JobState
from queuectl.journal import scan
from queuectl.observe import attempt_figures
from queuectl.registry import live_workers
from queuectl.store import Store

__all__ = ["BUCKETS", "cached_records", "render", "snapshot"]

BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
"""Seconds; from a shell builtin to an hour-long batch job."""


class _JournalCache:
    """Re-reads a journal only when its segments changed, so a dashboard scraped every few
    seconds does not re-parse an unchanged journal. One entry per journal folder, keyed by
    each segment's name, size, mtime and inode."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[Any, ...], list[dict[str, Any]]]] = {}
        self._guard = threading.Lock()

    def records(self, store: Store) -> list[dict[str, Any]]:
        directory = store.home.journal
        stamp = tuple(
            sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns, e.inode())
                for e in os.scandir(directory)
            )
        )
        key = str(directory)
        with self._guard:
            cached = self._entries.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        records = [r.data for r in scan(directory).records]
        with self._guard:
            self._entries[key] = (stamp, records)
        return records


_cache = _JournalCache()


def cached_records(store: Store) -> list[dict[str, Any]]:
    """The journal's records, re-read only when it changed (shared by /metrics and the page)."""
    return _cache.records(store)


def snapshot(store: Store) -> dict[str, Any]:
    """The numbers behind the metrics: counts, workers, and per-attempt figures."""
    attempts = attempt_figures(_cache.records(store))
    return {
        "jobs": {state.value: store.count(state) for state in JobState},
        "workers": len(live_workers(store.home.workers)),
        "outcomes": dict(Counter(a.outcome for a in attempts)),
        "run_seconds": [a.ran for a in attempts if a.ran is not None],
        "wait_seconds": [a.waited for a in attempts if a.waited is not None],
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


def _histogram(name: str, help_text: str, values: Iterable[float]) -> list[str]:
    values = list(values)
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound in BUCKETS:
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {sum(1 for v in values if v <= bound)}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {len(values)}')
    lines.append(f"{name}_sum {sum(values):.6f}")
    lines.append(f"{name}_count {len(values)}")
    return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
