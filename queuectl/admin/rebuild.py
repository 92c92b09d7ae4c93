"""Replay the journal into the state tree.

The replay rule is the one the journal was designed for: per job id, the record with the
highest ``rev`` is the job's state (a ``deleted`` record means the job was cleaned up). Claims
are never journaled, so a job that was mid-run replays as the state it was claimed from and
simply runs again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from queuectl.errors import InvalidJob, QueueError
from queuectl.job import ID_PATTERN, Job, JobState
from queuectl.storage.journal import JournalScan, Record, scan
from queuectl.storage.store import Change, Store, read_job_file
from queuectl.worker.registry import live_workers

__all__ = ["DELETED", "RebuildReport", "existing_job_files", "latest_records", "rebuild"]

DELETED: Final = "deleted"
"""Event of a job removed by ``cleanup``: replay must not bring it back."""

BATCH: Final = 1000


def latest_records(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """The winning record per job id (highest rev; a later record wins a tie)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        job = record.data.get("job")
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            continue
        rev = job.get("rev", 0)
        known = latest.get(job["id"])
        if known is None or rev >= known["job"].get("rev", 0):
            latest[job["id"]] = record.data
    return latest


def journal_jobs(scan_result: JournalScan) -> dict[str, Job]:
    """Jobs that exist according to the journal (deleted ones left out)."""
    jobs = {}
    for job_id, data in latest_records(scan_result.records).items():
        if data.get("event") == DELETED:
            continue
        try:
            jobs[job_id] = Job.from_dict(data["job"])
        except InvalidJob:
            continue
    return jobs


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
    result = scan(store.home.journal)
    jobs = journal_jobs(result)
    existing = existing_job_files(store)
    report = RebuildReport(torn_tail=result.torn_tail)
    if on_total:
        on_total(len(jobs))
    batch: list[tuple[Change, list[Path]]] = []
    for job_id, job in jobs.items():
        target = store.home.job_path(job.state, job_id)
        others = [p for p in existing.get(job_id, []) if p != target]
        if _same_content(target, job):
            report.unchanged += 1
            _remove(others, report)
        else:
            batch.append((Change(job, "rebuilt"), others))
        if len(batch) >= BATCH:
            _flush(store, batch, report)
        if progress:
            progress(1)
    _flush(store, batch, report)
    report.unknown = sorted(
        p for job_id, paths in existing.items() if job_id not in jobs for p in paths
    )
    return report


def _flush(store: Store, batch: list[tuple[Change, list[Path]]], report: RebuildReport) -> None:
    if not batch:
        return
    store.write_files([change for change, _ in batch])
    report.written += len(batch)
    for _, others in batch:
        _remove(others, report)  # only now: the replacement is durable
    batch.clear()


def _remove(paths: list[Path], report: RebuildReport) -> None:
    for path in paths:
        try:
            os.unlink(path)
            report.removed += 1
        except FileNotFoundError:
            pass


def _same_content(path: Path, job: Job) -> bool:
    try:
        return read_job_file(path) == job.to_json()
    except OSError:
        return False
