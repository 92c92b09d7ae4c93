"""Replay the journal into the state tree.

The replay rule is the one the journal was designed for: per job id, the record with the
highest (generation, rev) is the job's state; a winning ``deleted`` or ``withdrawn`` record
means the job does not exist (a later life of the id has a higher generation, so it wins over
its predecessor's deletion). Claims are never journaled, so a job that was mid-run replays as
the state it was claimed from and simply runs again.

Winners are found from the journal's index (one small tuple per job, whatever the journal's
size); only the winning records themselves are read and parsed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from queuectl.errors import InvalidJob, QueueError
from queuectl.job import FINISHED_STATES, ID_PATTERN, Job, JobState
from queuectl.storage.commit import Change
from queuectl.storage.events import Event
from queuectl.storage.jobfile import read_job_file
from queuectl.storage.named import NamedStore
from queuectl.storage.registry import live_workers
from queuectl.storage.replay import Replay, Winner
from queuectl.storage.store import Store
from queuectl.storage.unique import Keyed, expected_holders

__all__ = [
    "RebuildReport",
    "Winner",
    "existing_job_files",
    "journal_jobs",
    "keyed_job",
    "named_stores",
    "rebuild",
    "winners",
    "winning_named",
]

BATCH: Final = 1000


def winners(store: Store) -> dict[str, Winner]:
    """The winning record of every id the journal knows (``storage.replay``)."""
    replay = Replay()
    with store.journal.reading():
        for fields, source in store.journal.rows():
            replay.add(fields, source)
    return replay.winners()


NAMED_KINDS: Final = ("queue", "schedule")
"""Kinds of named objects journaled as ``<kind>:<name>`` (``storage.named``)."""


def split(best: dict[str, Winner]) -> tuple[dict[str, Winner], dict[str, dict[str, Winner]]]:
    """(jobs, named objects by kind and name) of the winners.

    Job ids never contain ``:``; ids that do are named objects (``queue:gpu``) or history
    that is not state at all (``hook:<id>``, a completion hook's result), which is dropped.
    """
    jobs: dict[str, Winner] = {}
    named: dict[str, dict[str, Winner]] = {kind: {} for kind in NAMED_KINDS}
    for key, winner in best.items():
        kind, colon, name = key.partition(":")
        if not colon:
            jobs[key] = winner
        elif kind in named:
            named[kind][name] = winner
    return jobs, named


def winning_named(store: Store, kind: NamedStore[Any], winner: Winner) -> Any | None:
    """The object a named store's winning record describes, or None if it cannot be read."""
    record = store.journal.read_at(winner.source, winner.offset, winner.length)
    try:
        return kind.model.from_dict(record.get(kind.kind) if record else None)
    except InvalidJob:
        return None


def named_stores(store: Store) -> list[NamedStore[Any]]:
    return [store.queues, store.schedules]


def winning_job(store: Store, winner: Winner) -> Job | None:
    record = store.journal.read_at(winner.source, winner.offset, winner.length)
    data = record.get("job") if record else None
    if not isinstance(data, dict):
        return None
    try:
        return Job.from_dict(data)
    except InvalidJob:
        return None


def journal_jobs(store: Store, best: dict[str, Winner] | None = None) -> Iterator[Job]:
    """Jobs that exist according to the journal (one record read at a time)."""
    for winner in split(best if best is not None else winners(store))[0].values():
        if not winner.gone:
            job = winning_job(store, winner)
            if job is not None:
                yield job


def existing_job_files(store: Store) -> dict[str, list[Path]]:
    """Every ``<state>/<id>.json`` in the tree, by id (normally one path per id)."""
    found: dict[str, list[Path]] = {}
    for state in JobState:
        directory = store.home.state_dir(state)
        for name in os.listdir(directory):
            if name.endswith(".json") and ID_PATTERN.fullmatch(name[:-5]):
                found.setdefault(name[:-5], []).append(directory / name)
    return found


@dataclass
class RebuildReport:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    unknown: list[Path] = field(default_factory=list)
    torn_tail: tuple[Path, int] | None = None


def rebuild(
    store: Store,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Make the state folders match the journal. Refuses while workers run (they move files)."""
    if live_workers(store.home.workers):
        raise QueueError(
            "workers are running for this home; stop them first (queuectl worker stop)"
        )
    from queuectl.storage.journal import check

    _count, torn = check(store.home.journal)
    best, named = split(winners(store))
    for kind in named_stores(store):
        _rebuild_named(store, kind, named[kind.kind])
    existing = existing_job_files(store)
    report = RebuildReport(torn_tail=torn)
    if on_total:
        on_total(len(best))
    batch: list[tuple[Change, list[Path]]] = []
    keyed: list[Keyed] = []
    for job_id, winner in best.items():
        paths = existing.get(job_id, [])
        if winner.gone:
            _remove(store, paths, report)
        else:
            job = winning_job(store, winner)
            if job is not None and job.unique_key:
                keyed.append(keyed_job(job))
            if job is not None:
                target = store.home.job_path(job.state, job_id)
                others = [p for p in paths if p != target]
                if _same_content(target, job):
                    report.unchanged += 1
                    _remove(store, others, report)
                else:
                    batch.append((Change(job, Event.FSCK), others))
        if len(batch) >= BATCH:
            _flush(store, batch, report)
        if progress:
            progress(1)
    _flush(store, batch, report)
    _rebuild_unique(store, keyed)
    report.unknown = sorted(
        p for job_id, paths in existing.items() if job_id not in best for p in paths
    )
    return report


def keyed_job(job: Job) -> Keyed:
    assert job.unique_key
    return Keyed(job.id, job.unique_key, job.state not in FINISHED_STATES, job.updated_at)


def _rebuild_unique(store: Store, keyed: list[Keyed]) -> None:
    """Rewrite ``unique/`` from the jobs (without it, a wiped folder let a second live job
    with a held key be created)."""
    for key, (holder, _live) in expected_holders(keyed).items():
        if store.unique.holder_of(key) != holder.id:
            store.unique.record(key, holder.id)


def _rebuild_named(store: Store, kind: NamedStore[Any], found: dict[str, Winner]) -> None:
    for name, winner in found.items():
        if winner.gone:
            kind.remove_file(name)
            continue
        item = winning_named(store, kind, winner)
        if item is not None and kind.read_file(name) != item:
            kind.write_file(item)


def _flush(store: Store, batch: list[tuple[Change, list[Path]]], report: RebuildReport) -> None:
    if not batch:
        return
    store.commits.write_files([change for change, _ in batch])
    report.written += len(batch)
    for _, others in batch:
        _remove(store, others, report)  # only now: the replacement is durable
    batch.clear()


def _remove(store: Store, paths: list[Path], report: RebuildReport) -> None:
    if paths:
        report.removed += store.commits.discard_copies(paths)


def _same_content(path: Path, job: Job) -> bool:
    try:
        return read_job_file(path) == job.to_json()
    except OSError:
        return False
