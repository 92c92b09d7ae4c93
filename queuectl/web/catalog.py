"""The dashboard's picture of every job file, kept current without re-reading the home.

At 100,000 jobs a request cannot parse 100,000 files, nor even list them every time (one
``listdir`` of a 100,000-entry folder costs tens of milliseconds). So the catalog keeps a
``Summary`` per file, read once, and on each ``refresh`` looks only at what changed:

- a state folder is listed again only when its mtime moved, which every file created,
  renamed in or out, or replaced in it does (a claim's rename, a commit's publish and
  unlink). A listing is trusted only once the folder's mtime is older than
  ``RACY_SECONDS`` at the time it was taken: filesystem timestamps are coarse, so a change
  in the same tick as the listing could leave the mtime as it was (git's "racily clean"
  index entries);
- a file replaced in place (an edit, a failed attempt rescheduled in ``failed/``) keeps
  its name, so names alone would miss it; every such change is a commit, and a commit
  writes the file *before* it appends its journal record, so the ids of the records
  appended since the last refresh (``feed``) are read again, and read their new content.

A job is in two folders for a moment during a commit (the new copy is published before
the old one is unlinked); the copy with the higher ``rev`` wins. A file queuectl did not
write in place and that no record mentions (someone editing a job file by hand) is seen
only when its folder changes next; the job page always reads the file itself.

The catalog also keeps, as it goes, the counters the views need: jobs per queue and state,
labels, and which jobs wait for which (so nothing is counted per request).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from queuectl.job import JobState
from queuectl.storage.home import Home
from queuectl.storage.jobfile import is_job_name
from queuectl.web.summary import Summary, read_summary

__all__ = ["RACY_SECONDS", "Catalog"]

RACY_SECONDS: Final = 2.0
"""A folder modified this shortly before it was listed is listed again on the next
refresh, whatever its mtime says then."""

CHANGE_LOG_LIMIT: Final = 200_000
"""Changes remembered for incremental re-sorting; an order older than that is rebuilt."""

_K = TypeVar("_K")

_PREFERENCE: Final = {state.value: rank for rank, state in enumerate(JobState)}


@dataclass
class _Folder:
    state: str
    path: str
    mtime_ns: int = -1
    listed_at: float = 0.0
    entries: dict[str, Summary] = field(default_factory=dict)
    """File name -> its summary."""


class Catalog:
    """Not thread-safe: the dashboard calls it under one lock."""

    def __init__(self, home: Home, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        """Wall-clock seconds, as filesystem timestamps count (injected by tests)."""
        self._folders = {
            state.value: _Folder(state.value, str(home.state_dir(state))) for state in JobState
        }
        self.jobs: dict[str, Summary] = {}
        """Job id -> the summary of its winning copy."""
        self.version = 0
        self.per_queue: dict[tuple[str, str], int] = {}
        """(queue, state) -> jobs."""
        self.labels: dict[str, int] = {}
        self.dependents: dict[str, set[str]] = {}
        """Dependency id -> ids of the jobs that name it in ``after`` or ``after_any``."""
        self.read_files = 0
        self.listed_files = 0
        """Progress of the first refresh, for the page to show while it lasts."""
        self._log: list[tuple[int, str]] = []
        self._log_floor = 0

    # ---------------------------------------------------------------- reading

    def counts(self) -> dict[str, int]:
        """Files per state folder as of the last refresh (what ``status`` counts)."""
        return {state: len(folder.entries) for state, folder in self._folders.items()}

    def changes_since(self, version: int) -> set[str] | None:
        """Ids whose summary changed after ``version``; None when that is too long ago."""
        if version < self._log_floor:
            return None
        changed = set()
        for position in range(len(self._log) - 1, -1, -1):
            at, job_id = self._log[position]
            if at <= version:
                break
            changed.add(job_id)
        return changed

    # ---------------------------------------------------------------- refreshing

    def refresh(self, touched: Iterable[str] = ()) -> None:
        """Bring the summaries up to date: changed folders listed, touched ids read again."""
        fresh: set[str] = set()
        listings = [(f, self._listing(f)) for f in self._folders.values()]
        self.listed_files = sum(len(names) for _f, names in listings if names is not None)
        for folder, names in listings:
            if names is not None:
                self._apply_listing(folder, names, fresh)
        for job_id in touched:
            if job_id not in fresh:
                self._reread(job_id)

    def _listing(self, folder: _Folder) -> set[str] | None:
        """The folder's job file names, or None when it cannot have changed."""
        try:
            mtime = os.stat(folder.path).st_mtime_ns
        except OSError:
            return set()
        if mtime == folder.mtime_ns and mtime / 1e9 < folder.listed_at - RACY_SECONDS:
            return None
        started = self._clock()
        try:
            names = {name for name in os.listdir(folder.path) if is_job_name(name)}
        except OSError:
            names = set()
        folder.mtime_ns, folder.listed_at = mtime, started
        return names

    def _apply_listing(self, folder: _Folder, names: set[str], fresh: set[str]) -> None:
        entries = folder.entries
        for name in [n for n in entries if n not in names]:
            gone = entries.pop(name)
            self._settle(gone.id)
        for name in names:
            if name in entries:
                continue
            summary = read_summary(folder.path, name, folder.state)
            self.read_files += 1
            if summary is not None:
                entries[name] = summary
                fresh.add(summary.id)
                self._settle(summary.id)

    def _reread(self, job_id: str) -> None:
        name = f"{job_id}.json"
        for folder in self._folders.values():
            if name not in folder.entries:
                continue
            summary = read_summary(folder.path, name, folder.state)
            if summary is None:
                del folder.entries[name]  # moved on; the folder's next listing says where
            else:
                folder.entries[name] = summary
        self._settle(job_id)

    # ---------------------------------------------------------------- the merged view

    def _settle(self, job_id: str) -> None:
        """Choose the winning copy of ``job_id`` and keep the counters in step."""
        copies = [
            entry
            for folder in self._folders.values()
            for name in (f"{job_id}.json", job_id)
            if (entry := folder.entries.get(name)) is not None and entry.id == job_id
        ]
        best = max(copies, key=_rank) if copies else None
        old = self.jobs.get(job_id)
        if best is old:
            return
        if old is not None:
            self._count(old, -1)
        if best is None:
            del self.jobs[job_id]
        else:
            self.jobs[job_id] = best
            self._count(best, 1)
        self.version += 1
        self._log.append((self.version, job_id))
        if len(self._log) > CHANGE_LOG_LIMIT:
            cut = len(self._log) // 2
            self._log_floor = self._log[cut - 1][0]
            del self._log[:cut]

    def _count(self, summary: Summary, step: int) -> None:
        _bump(self.per_queue, (summary.queue, summary.state), step)
        for label in summary.labels:
            _bump(self.labels, label, step)
        for dependency in summary.after:
            waiting = self.dependents.setdefault(dependency, set())
            if step > 0:
                waiting.add(summary.id)
            else:
                waiting.discard(summary.id)
                if not waiting:
                    del self.dependents[dependency]


def _rank(summary: Summary) -> tuple[bool, int, int]:
    """A valid copy beats a damaged one, then the later revision wins."""
    return (summary.invalid is None, summary.rev, _PREFERENCE[summary.state])


def _bump(counter: dict[_K, int], key: _K, step: int) -> None:
    value = counter.get(key, 0) + step
    if value > 0:
        counter[key] = value
    else:
        counter.pop(key, None)
