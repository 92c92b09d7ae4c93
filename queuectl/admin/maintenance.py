"""Keeping a home bounded: removing old finished jobs, and compacting the journal.

``cleanup`` and ``purge`` delete through ``Store.delete``: under each job's change lock,
journaled (``deleted``) before the logs and the file go, so neither races a ``dlq retry`` and
a SIGKILL midway never brings a deleted job back.

``compact`` folds every journal segment whose records are all older than the retention into
one snapshot: the latest record of each job still kept (copied byte for byte) and one
``totals`` record with the attempt counters of everything folded, so the metrics' counters
never go down and run numbers (which every record carries) never change. A snapshot plus the
newer segments rebuild exactly what a full replay would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from filelock import FileLock

from queuectl.errors import UsageError
from queuectl.job import Job, JobState, format_time, parse_time
from queuectl.observe.tallies import Tallies
from queuectl.storage.events import Entry, Event, plain_entry
from queuectl.storage.journal import segment_numbers, segment_path, snapshot_numbers, snapshot_path
from queuectl.storage.journal_index import EVENT, ID, LENGTH, OFFSET, TS
from queuectl.storage.replay import Replay, Winner
from queuectl.storage.store import Store

__all__ = ["CompactReport", "cleanup", "compact", "purge"]


def cleanup(
    store: Store,
    older_than: float,
    states: tuple[JobState, ...],
    now: datetime,
    progress: Callable[[int], None] | None = None,
    keep: Callable[[Job], str | None] | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Delete finished jobs whose last change is older than ``older_than`` seconds;
    returns (deleted ids, [(id, why it was kept)])."""
    try:
        cutoff = now - timedelta(seconds=older_than)
    except OverflowError:
        raise UsageError("--older-than is too long") from None

    needed = store.workflow.needed()

    def spare(job: Job) -> str | None:
        if _last_change(job) >= cutoff:
            return "too recent"
        if job.id in needed:
            return _needed_by(needed[job.id])
        return keep(job) if keep is not None else None

    targets = [(job_id, state) for state in states for job_id in store.folders.ids(state)]
    deleted, skipped = store.delete(targets, now, keep=spare, progress=progress)
    return deleted, [s for s in skipped if s[1] != "too recent"]


def purge(
    store: Store,
    job_ids: list[str],
    now: datetime,
    keep: Callable[[Job], str | None] | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Delete dead jobs and their logs; returns (purged ids, [(id, why not)])."""
    targets = [(job_id, JobState.DEAD) for job_id in job_ids]
    needed = store.workflow.needed()

    def spare(job: Job) -> str | None:
        if job.id in needed:
            return _needed_by(needed[job.id])
        return keep(job) if keep is not None else None

    return store.delete(targets, now, keep=spare)


def _needed_by(waiting: list[str]) -> str:
    shown = ", ".join(waiting[:5]) + (" ..." if len(waiting) > 5 else "")
    return f"unfinished job(s) depend on it: {shown}"


def _last_change(job: Job) -> datetime:
    try:
        return parse_time(job.finished_at or job.updated_at)
    except ValueError:
        return parse_time("1970-01-01T00:00:00+00:00")


@dataclass
class CompactReport:
    segments_folded: int
    snapshot: Path | None
    jobs_kept: int
    jobs_dropped: int


def compact(store: Store, retention: float, now: datetime) -> CompactReport:
    """Fold segments older than ``retention`` seconds into a snapshot, then delete them."""
    journal = store.journal
    directory = journal.directory
    try:
        cutoff = (now - timedelta(seconds=retention)).timestamp()
    except OverflowError:
        raise UsageError("the retention is too long") from None
    with FileLock(store.home.locks / "compact.run.lock", thread_local=False):
        with journal.exclusive():
            boundary = _boundary(store, cutoff)
        previous = snapshot_numbers(directory)
        start = previous[-1] if previous else 0
        folded = [n for n in segment_numbers(directory) if start <= n < boundary]
        if not folded:
            return CompactReport(0, None, 0, 0)
        sources = [snapshot_path(directory, start)] if previous else []
        sources += [segment_path(directory, n) for n in folded]
        with journal.compacting():
            best, tallies = _fold(store, sources)
            kept = {k: v for k, v in best.items() if not v.gone}
            snapshot = journal.write_snapshot(
                boundary, _snapshot_entries(store, kept, tallies, now), store.home.tmp
            )
            journal.remove([snapshot_path(directory, n) for n in previous if n < boundary])
            journal.remove([segment_path(directory, n) for n in folded])
    return CompactReport(len(folded), snapshot, len(kept), len(best) - len(kept))


def _fold(store: Store, sources: list[Path]) -> tuple[dict[str, Winner], Tallies]:
    """Winning record per job and the attempt tallies of the folded files, from the index."""
    replay = Replay()
    tallies = Tallies()
    for source in sources:
        for fields in store.journal.source_rows(source):
            if fields[ID] == "-":
                if fields[EVENT] == Event.TOTALS:
                    record = store.journal.read_at(source, int(fields[OFFSET]), int(fields[LENGTH]))
                    if record is not None:
                        tallies.merge(record.get("totals"))
                continue
            tallies.add_row(fields)
            replay.add(fields, source)
    return replay.winners(), tallies


def _snapshot_entries(
    store: Store, kept: dict[str, Winner], tallies: Tallies, now: datetime
) -> Iterator[Entry]:
    """The kept records byte for byte (each indexed as a state, not as an attempt), then the
    totals record."""
    for job_id, won in kept.items():
        try:
            with open(won.source, "rb") as handle:
                handle.seek(won.offset)
                line = handle.read(won.length)
        except OSError:
            continue
        tail = f"{won.generation}\t{won.rev}\t{won.state}\t{won.ts}"
        yield Entry(line, f"{job_id}\t{won.event}", tail)
    yield plain_entry(Event.TOTALS, format_time(now), totals=tallies.to_dict())


def _boundary(store: Store, cutoff: float) -> int:
    """First segment number that must be kept whole (its newest record is recent, or the
    hook runner has not read all of it yet). Called under the journal lock: with everything
    old, it starts a fresh segment so the current one can be folded too."""
    directory = store.journal.directory
    numbers = segment_numbers(directory)
    unread = _hook_cursor_segment(store)
    for number in numbers:
        if unread is not None and number >= unread:
            return number
        newest = _newest_ts(store, segment_path(directory, number))
        if newest is not None and newest >= cutoff:
            return number
    if unread is not None and numbers and unread <= numbers[-1]:
        return unread
    return store.journal.start_segment()


def _hook_cursor_segment(store: Store) -> int | None:
    """The segment the hook runner reads (its cursor), while hooks are wanted: a snapshot
    keeps states, not the events a hook runs for, so compaction must not fold the final
    states whose hooks have not run yet (hooks run at least once, never skipped)."""
    if not store.hooks.wanted(bool(store.config.get("on-finish"))):
        return None
    cursor = store.hooks.cursor()
    return cursor.segment if cursor is not None else None


def _newest_ts(store: Store, path: Path) -> float | None:
    newest: float | None = None
    for fields in store.journal.source_rows(path):
        try:
            stamp = float(fields[TS])
        except (ValueError, IndexError):
            continue
        newest = stamp if newest is None else max(newest, stamp)
    return newest
