"""Keeping a home bounded: removing old finished jobs, and compacting the journal.

``cleanup`` deletes finished job files and their logs and journals a ``deleted`` record for
each, so a replay does not bring them back. ``compact`` folds every journal segment whose
records are all older than the retention into one snapshot (the latest record of each job
still kept) and then deletes those segments; a snapshot plus the newer segments rebuild
exactly what a full replay would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock

from queuectl.admin.rebuild import DELETED, latest_records
from queuectl.job import Job, JobState, format_time, parse_time
from queuectl.storage.durable import fsync_dir, fsync_fd, write_tmp
from queuectl.storage.journal import (
    Record,
    encode_record,
    iter_segment,
    segment_numbers,
    snapshot_numbers,
    snapshot_path,
)
from queuectl.storage.store import Store, read_job_file

__all__ = ["CompactReport", "cleanup", "compact", "purge"]

FINISHED = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


def cleanup(
    store: Store,
    older_than: float,
    states: tuple[JobState, ...],
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Delete finished jobs whose last change is older than ``older_than`` seconds."""
    cutoff = now - timedelta(seconds=older_than)
    removed: list[Job] = []
    for state in states:
        for job in list(store.jobs(state)):
            if _last_change(job) >= cutoff:
                continue
            try:
                os.unlink(store.home.job_path(state, job.id))
            except FileNotFoundError:
                continue
            shutil.rmtree(store.home.logs / job.id, ignore_errors=True)
            removed.append(job)
            if progress:
                progress(1)
    for state in states:
        fsync_dir(store.home.state_dir(state))
    _journal_deleted(store, removed, now)
    return [job.id for job in removed]


def purge(store: Store, job_ids: list[str], now: datetime) -> tuple[list[str], list[str]]:
    """Delete dead jobs and their logs; returns (purged ids, ids not in the DLQ)."""
    removed: list[Job] = []
    missing: list[str] = []
    for job_id in job_ids:
        path = store.home.job_path(JobState.DEAD, job_id)
        try:
            job = Job.from_json(read_job_file(path))
            os.unlink(path)
        except (OSError, ValueError):
            missing.append(job_id)
            continue
        shutil.rmtree(store.home.logs / job_id, ignore_errors=True)
        removed.append(job)
    _journal_deleted(store, removed, now)
    return [job.id for job in removed], missing


def _journal_deleted(store: Store, jobs: list[Job], now: datetime) -> None:
    if jobs:
        fsync_dir(store.home.state_dir(jobs[0].state))
    stamp = format_time(now)
    store.journal.append(
        [
            {
                "ts": stamp,
                "event": DELETED,
                "pid": os.getpid(),
                "job": replace(job, rev=job.rev + 1, updated_at=stamp).to_dict(),
            }
            for job in jobs
        ]
    )


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
    directory = store.home.journal
    cutoff = format_time(now - timedelta(seconds=retention))
    with FileLock(store.home.locks / "compact.lock", thread_local=False):
        boundary = _boundary(store, cutoff)
        previous = snapshot_numbers(directory)
        start = previous[-1] if previous else 0
        folded = [n for n in segment_numbers(directory) if start <= n < boundary]
        if not folded:
            return CompactReport(0, None, 0, 0)
        sources = [snapshot_path(directory, start)] if previous else []
        sources += [directory / f"{n:08d}.log" for n in folded]
        latest = latest_records(_records(sources))
        kept = {k: v for k, v in latest.items() if v.get("event") != DELETED}
        snapshot = _write_snapshot(store, boundary, kept)
        for number in folded:
            os.unlink(directory / f"{number:08d}.log")
        for number in previous:
            if number < boundary:
                os.unlink(snapshot_path(directory, number))
        fsync_dir(directory)
    return CompactReport(len(folded), snapshot, len(kept), len(latest) - len(kept))


def _boundary(store: Store, cutoff: str) -> int:
    """First segment number that must be kept whole (its newest record is recent)."""
    directory = store.home.journal
    with store.journal.exclusive():
        numbers = segment_numbers(directory)
        for number in numbers:
            newest = _newest_ts(directory / f"{number:08d}.log")
            if newest is not None and newest >= cutoff:
                return number
        # Everything is old: start a fresh segment so the current one can be folded too.
        following = (numbers[-1] + 1) if numbers else 1
        fd = os.open(directory / f"{following:08d}.log", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        fsync_dir(directory)
        return following


def _newest_ts(path: Path) -> str | None:
    newest = None
    for _, record in iter_segment(path):
        if record is not None and isinstance(record.get("ts"), str):
            newest = max(newest or "", record["ts"])
    return newest


def _records(sources: list[Path]) -> Iterator[Record]:
    for path in sources:
        for offset, data in iter_segment(path):
            if data is not None:
                yield Record(path, offset, data)


def _write_snapshot(store: Store, boundary: int, kept: dict[str, dict[str, Any]]) -> Path:
    data = b"".join(encode_record(record) for record in kept.values())
    tmp, fd = write_tmp(store.home.tmp, "snapshot", data)
    try:
        fsync_fd(fd, tmp)
    finally:
        os.close(fd)
    target = snapshot_path(store.home.journal, boundary)
    os.replace(tmp, target)
    fsync_dir(store.home.journal)
    return target
