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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from queuectl.job import JobState
from queuectl.observe.journal_views import AttemptFolder
from queuectl.storage.journal import decode_line, scan
from queuectl.storage.store import Store
from queuectl.worker.registry import live_workers

__all__ = ["BUCKETS", "cached_records", "render", "snapshot"]

BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
"""Seconds; from a shell builtin to an hour-long batch job."""


@dataclass
class _Cached:
    files: list[tuple[str, int, int]]
    """(name, inode, size) of every journal file when it was read; the last one may grow."""
    end: int
    """Offset just past the last complete line read from the last file."""
    records: list[dict[str, Any]]
    attempts: AttemptFolder
    """The records folded into per-attempt figures, extended as the journal grows."""


class _JournalCache:
    """Reads each journal once, then only what was appended since: a dashboard scraped every
    few seconds next to running workers re-parsed the whole journal per scrape (1.4-2 s at
    45 MB). One entry per journal folder. Anything but growth of the newest file (rotation,
    compaction, a repair, damage) means a full read again."""

    def __init__(self) -> None:
        self._entries: dict[str, _Cached] = {}
        self._guard = threading.Lock()

    def records(self, store: Store) -> list[dict[str, Any]]:
        return self.current(store).records

    def current(self, store: Store) -> _Cached:
        """The journal as read and folded so far, brought up to date. One reader at a time
        per process: the fold is extended in place."""
        directory = store.home.journal
        key = str(directory)
        with self._guard:
            files = _journal_files(directory)
            cached = self._entries.get(key)
            if cached is not None:
                grown = _appended(directory, cached, files)
                if grown is not None:
                    self._entries[key] = grown
                    return grown
            found = scan(directory)
            records = [r.data for r in found.records]
            folder = AttemptFolder()
            folder.feed(records)
            end = _end_of_records(directory, files, found.records)
            self._entries[key] = _Cached(files, end, records, folder)
            return self._entries[key]


def _journal_files(directory: Path) -> list[tuple[str, int, int]]:
    out = []
    for entry in os.scandir(directory):
        if entry.name.endswith((".log", ".snap")):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            out.append((entry.name, st.st_ino, st.st_size))
    # Segment N.log is written after snapshot N.snap: the last entry must be the newest log.
    return sorted(out, key=lambda f: (f[0].split(".")[0], f[0].endswith(".log")))


def _appended(
    directory: Path, cached: _Cached, files: list[tuple[str, int, int]]
) -> _Cached | None:
    """The cache extended by the lines appended to the newest file; None when the journal
    changed in any other way."""
    if not files or len(files) != len(cached.files) or files[:-1] != cached.files[:-1]:
        return None
    name, inode, size = files[-1]
    if (name, inode) != cached.files[-1][:2] or size < cached.end:
        return None
    if size == cached.end:
        return cached
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, size - cached.end, cached.end)
        finally:
            os.close(fd)
    except OSError:
        return None
    complete = data[: data.rfind(b"\n") + 1]
    added = []
    for line in complete.splitlines(keepends=True):
        record = decode_line(line)
        if record is None:
            return None  # damage: let a full read report it properly
        added.append(record)
    cached.attempts.feed(added)
    return _Cached(files, cached.end + len(complete), cached.records + added, cached.attempts)


def _end_of_records(directory: Path, files: list[tuple[str, int, int]], found: list[Any]) -> int:
    """Where a full read stopped in the newest file: just past its last valid line."""
    if not files:
        return 0
    newest = directory / files[-1][0]
    last = next((r for r in reversed(found) if r.segment == newest), None)
    if last is None:
        return 0
    with open(newest, "rb") as handle:
        handle.seek(last.offset)
        return last.offset + len(handle.readline())


_cache = _JournalCache()


def cached_records(store: Store) -> list[dict[str, Any]]:
    """The journal's records, re-read only when it changed (shared by /metrics and the page)."""
    return _cache.records(store)


def snapshot(store: Store) -> dict[str, Any]:
    """The numbers behind the metrics: counts, workers, and per-attempt figures."""
    attempts = _cache.current(store).attempts.found
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
