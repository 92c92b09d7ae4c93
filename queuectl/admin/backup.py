"""``queuectl backup``: one ``.tar.gz`` of a home, taken while workers keep running.

The state folders move while they are read, so the backup is not read from them. It is
read from the journal, up to a cut:

1. Under the journal lock (appends wait, for a few milliseconds) note the cut: the journal
   files, how many bytes of each belong to the backup (all of a sealed segment; of the
   newest, up to its last complete record), and the (generation, rev) of every job file in
   ``processing/``. Every job whose enqueue returned before this moment is in the journal
   before the cut (enqueue journals first), and every outcome before the cut is complete.
2. Replay the journal up to the cut (``storage.replay``: the highest (generation, rev) per
   id wins) and write each job file from its winning record, exactly as ``journal rebuild``
   would: one file per job, in one folder, never torn. Queue and schedule files come from
   the ``queue:<name>`` and ``schedule:<name>`` winners the same way (``hook:<id>`` records
   are history, not state: they stay in the journal only).
3. A job that was running at the cut (its processing/ copy is its winning record: claims
   are not journaled) is written as its worker would find it after a crash:
   ``scheduler.worker_lost`` (pending again, or dead after its last retry, the attempt
   counted), with the matching ``recovered`` record appended to the archive's journal, so
   that the restored home's journal and folders agree.
4. Copy the journal files up to the cut (their checksums verified), config.json, the
   completion hooks' state (``hooks/enabled``, and ``hooks/cursor.json`` no further than
   the cut, so the restored home runs no hook twice that the source had run before the cut
   and misses none after it), and with ``--logs`` the output logs of the jobs in the backup.

Compaction is held off (``Journal.reading``) for the whole backup, so no journal file goes
away while it is read. The archive's layout is ``storage.archive``'s; what is in it is
described by its first member, ``queuectl-backup.json`` (``MANIFEST``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

from queuectl import __version__
from queuectl.admin.rebuild import named_stores, split
from queuectl.config import backoff_policy
from queuectl.errors import InvalidJob, JournalCorrupt, QueueError, UsageError
from queuectl.job import ID_PATTERN, Job, JobState, format_time, parse_time, utcnow
from queuectl.scheduler import worker_lost
from queuectl.storage.archive import MAX_MEMBER_BYTES, ArchiveWriter
from queuectl.storage.events import Event, job_entry
from queuectl.storage.hooks import Cursor
from queuectl.storage.jobfile import read_job
from queuectl.storage.journal import clean_end, verify_prefix
from queuectl.storage.journal_index import LENGTH, OFFSET
from queuectl.storage.named import NamedStore
from queuectl.storage.records import decode_line
from queuectl.storage.replay import Replay, Winner
from queuectl.storage.store import Store

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "BackupReport",
    "Cut",
    "backup",
    "take_cut",
]

FORMAT: Final = "queuectl-backup"
VERSION: Final = 1
MANIFEST: Final = "queuectl-backup.json"
CLAIMABLE: Final = frozenset({JobState.PENDING.value, JobState.FAILED.value})
LOG_NAME: Final = re.compile(r"[0-9]{1,9}\.(out|err)")


@dataclass
class Cut:
    """Where the backup ends: the journal files and how many bytes of each it covers, and
    the job files that sat in processing/ at that moment, id -> (generation, rev)."""

    sources: list[Path]
    ends: dict[Path, int]
    running: dict[str, tuple[int, int]]
    taken_at: datetime


@dataclass
class BackupReport:
    path: Path
    jobs: dict[str, int] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Jobs whose winning record is not a valid job (left out, as rebuild leaves them)."""
    unjournaled: list[str] = field(default_factory=list)
    """Job files the journal does not know (left out: the journal is the source)."""
    queues: int = 0
    schedules: int = 0
    hooks: dict[str, bool] = field(default_factory=dict)
    """Which completion-hook files it holds: ``enabled``, ``cursor``."""
    journal_files: int = 0
    journal_records: int = 0
    log_files: int = 0
    members: int = 0
    size: int = 0


def take_cut(store: Store) -> Cut:
    """Step 1 of the module docstring (call inside ``store.journal.reading()``)."""
    with store.journal.exclusive():
        sources = store.journal.sources()
        ends: dict[Path, int] = {}
        for number, source in enumerate(sources):
            size = os.stat(source).st_size
            ends[source] = clean_end(source, size) if number == len(sources) - 1 else size
        running = _processing_copies(store)
        taken_at = utcnow()
    return Cut(sources, ends, running, taken_at)


def _processing_copies(store: Store) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    directory = store.home.state_dir(JobState.PROCESSING)
    for name in os.listdir(directory):
        if not name.endswith(".json") or not ID_PATTERN.fullmatch(name[:-5]):
            continue
        try:
            job = read_job(directory / name, None)
        except (OSError, InvalidJob):
            continue  # not a job anybody runs; fsck reports it
        found[job.id] = (job.generation, job.rev)
    return found


def backup(
    store: Store,
    target: Path,
    logs: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BackupReport:
    """Write a backup of ``store``'s home to ``target`` (module docstring)."""
    if target.is_dir():
        raise UsageError(f"{target} is a folder; give the name of the archive to write")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: no folder {target.parent}")
    home = store.home.root.resolve()
    if target.parent.resolve() == home or home in target.parent.resolve().parents:
        raise UsageError(f"write the backup outside the home {store.home.root}")
    step = progress or (lambda _n: None)
    settings = store.config.stored() if store.home.config_file.exists() else None
    policy = backoff_policy(store.config.values())
    with store.journal.reading():
        cut = take_cut(store)
        counts = _verify(cut)
        best = _replay(store, cut, counts)
        every_job, every_named = split(best)
        jobs = {k: v for k, v in every_job.items() if not v.gone}
        named = {
            kind: {k: v for k, v in winners.items() if not v.gone}
            for kind, winners in every_named.items()
        }
        hooks = _hook_files(store, cut)
        if on_total:
            on_total(2 * len(jobs))
        with tempfile.TemporaryFile(dir=target.parent) as spool:
            plan = _plan_jobs(store, cut, jobs, policy, spool, step)
            report = _write(
                store, target, cut, counts, plan, named, hooks, settings, logs, spool, step
            )
    report.unjournaled = _unjournaled(store, cut, best)
    return report


def _unjournaled(store: Store, cut: Cut, best: dict[str, Winner]) -> list[str]:
    """Job files of lives older than the cut that the journal does not know (so they are
    not in the backup; ``fsck --repair`` journals them). Newer ones were enqueued after
    the cut."""
    before = int(cut.taken_at.timestamp()) * 1_000_000_000
    found = []
    for state in JobState:
        directory = store.home.state_dir(state)
        for name in os.listdir(directory):
            if not name.endswith(".json") or name[:-5] in best:
                continue
            try:
                job = read_job(directory / name, None)
            except (OSError, InvalidJob):
                continue
            if job.generation < before:
                found.append(job.id)
    return sorted(found)


# ---------------------------------------------------------------------- the journal


def _verify(cut: Cut) -> dict[Path, int]:
    """Records per journal file up to the cut, every checksum verified."""
    counts: dict[Path, int] = {}
    for source in cut.sources:
        try:
            counts[source] = verify_prefix(source, cut.ends[source])
        except JournalCorrupt as exc:
            raise JournalCorrupt(
                f"{str(exc).split(';')[0]}: nothing was backed up; "
                "run queuectl fsck --repair first",
                path=exc.path,
                offset=exc.offset,
            ) from None
    return counts


def _replay(store: Store, cut: Cut, counts: dict[Path, int]) -> dict[str, Winner]:
    """Winners of the journal up to the cut, from its index (from the records themselves
    for a file whose index does not cover exactly its records)."""
    replay = Replay()
    for source in cut.sources:
        end = cut.ends[source]
        if sum(1 for _ in _rows_upto(store, source, end)) != counts[source]:
            rows: Iterator[list[str]] = _derived_rows(source, end)
        else:
            rows = _rows_upto(store, source, end)
        for fields in rows:
            replay.add(fields, source)
    return replay.winners()


def _rows_upto(store: Store, source: Path, end: int) -> Iterator[list[str]]:
    for fields in store.journal.source_rows(source):
        try:
            stop = int(fields[OFFSET]) + int(fields[LENGTH])
        except (IndexError, ValueError):
            continue
        if stop <= end:
            yield fields


def _derived_rows(source: Path, end: int) -> Iterator[list[str]]:
    from queuectl.storage.journal_index import derived_lines

    with open(source, "rb") as handle:
        data = handle.read(end)
    for line in derived_lines(data, 0):
        yield line.decode("utf-8", "replace").rstrip("\n").split("\t")


# ---------------------------------------------------------------------- the jobs


@dataclass
class _Planned:
    state: str
    job_id: str
    offset: int
    length: int
    mtime: float


@dataclass
class _Plan:
    jobs: list[_Planned] = field(default_factory=list)
    recovered: list[tuple[str, bytes]] = field(default_factory=list)
    """(id, the ``recovered`` journal line) of each job that was running at the cut."""
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0


def _plan_jobs(
    store: Store,
    cut: Cut,
    jobs: dict[str, Winner],
    policy: Any,
    spool: IO[bytes],
    step: Callable[[int], None],
) -> _Plan:
    """Each job's file from its winning record, written to ``spool`` (its size must be in
    the manifest, which comes first in the archive)."""
    plan = _Plan()
    stamp = format_time(cut.taken_at)
    handles: dict[Path, int] = {}
    try:
        rank = {source: number for number, source in enumerate(cut.sources)}
        order = sorted(jobs.items(), key=lambda kv: (rank[kv[1].source], kv[1].offset))
        for job_id, winner in order:
            step(1)
            fd = handles.get(winner.source)
            if fd is None:
                fd = handles[winner.source] = os.open(winner.source, os.O_RDONLY | os.O_CLOEXEC)
            job = _winning_job(fd, winner, job_id)
            if job is None:
                plan.skipped.append(job_id)
                continue
            running = cut.running.get(job_id) == (winner.generation, winner.rev)
            if running and job.state.value in CLAIMABLE:
                job = worker_lost(job, policy, cut.taken_at, "backup")
                line = job_entry(Event.RECOVERED, job, stamp, attempt=True).line
                plan.recovered.append((job_id, line))
            data = job.to_json()
            plan.jobs.append(_Planned(job.state.value, job_id, plan.bytes, len(data), _mtime(job)))
            spool.write(data)
            plan.bytes += len(data)
    finally:
        for fd in handles.values():
            os.close(fd)
    spool.flush()
    return plan


def _winning_job(fd: int, winner: Winner, job_id: str) -> Job | None:
    record = decode_line(os.pread(fd, winner.length, winner.offset))
    data = record.get("job") if record else None
    if not isinstance(data, dict):
        return None
    try:
        job = Job.from_dict(data)
    except InvalidJob:
        return None
    if (job.id, job.generation, job.rev) != (job_id, winner.generation, winner.rev):
        return None
    return job


def _mtime(job: Job) -> float:
    try:
        return parse_time(job.updated_at).timestamp()
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------- the archive


def _write(
    store: Store,
    target: Path,
    cut: Cut,
    counts: dict[Path, int],
    plan: _Plan,
    named: dict[str, dict[str, Winner]],
    hooks: dict[str, bytes],
    settings: dict[str, Any] | None,
    logs: bool,
    spool: IO[bytes],
    step: Callable[[int], None],
) -> BackupReport:
    now = cut.taken_at.timestamp()
    named_files = [
        (f"{kind.folder}/{name}.json", data)
        for kind in named_stores(store)
        for name, data in _named_files(store, kind, named[kind.kind])
    ]
    hook_files = [(f"hooks/{name}", data) for name, data in sorted(hooks.items())]
    journal = _journal_members(cut, plan)
    log_files = _log_files(store, {p.job_id for p in plan.jobs}) if logs else []
    config = None if settings is None else (json.dumps(settings, indent=2) + "\n").encode()
    report = BackupReport(target)
    for planned in plan.jobs:
        report.jobs[planned.state] = report.jobs.get(planned.state, 0) + 1
    report.recovered = [job_id for job_id, _ in plan.recovered]
    report.skipped = plan.skipped
    report.queues = sum(1 for name, _ in named_files if name.startswith("queues/"))
    report.schedules = sum(1 for name, _ in named_files if name.startswith("schedules/"))
    report.hooks = {name: name in hooks for name in ("enabled", "cursor.json")}
    report.journal_files = len(journal)
    report.journal_records = sum(counts.values()) + len(plan.recovered)
    report.log_files = len(log_files)
    sizes = (
        plan.bytes
        + sum(len(data) for _, data in (*named_files, *hook_files))
        + sum(size + len(extra) for _, _, size, extra in journal)
        + sum(size for _, _, size in log_files)
        + (len(config) if config is not None else 0)
    )
    report.members = len(plan.jobs) + len(named_files) + len(hook_files)
    report.members += len(journal) + len(log_files)
    report.members += config is not None
    manifest = _manifest(store, cut, report, sizes, logs, config is not None)
    writer = ArchiveWriter(target)
    try:
        writer.add_bytes(MANIFEST, manifest, now)
        if config is not None:
            writer.add_bytes("config.json", config, now)
        for name, source, size, extra in journal:  # first: restore checks files against it
            _add_journal_file(writer, name, source, size, extra, now)
        for name, data in (*named_files, *hook_files):
            writer.add_bytes(name, data, now)
        spool.seek(0)
        for planned in plan.jobs:
            data = spool.read(planned.length)
            writer.add_bytes(f"{planned.state}/{planned.job_id}.json", data, planned.mtime)
            step(1)
        report.log_files = sum(_add_log(writer, name, path, size) for name, path, size in log_files)
        report.members -= len(log_files) - report.log_files
        report.size = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return report


def _manifest(
    store: Store, cut: Cut, report: BackupReport, sizes: int, logs: bool, config: bool
) -> bytes:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": format_time(cut.taken_at),
        "queuectl": __version__,
        "home": str(store.home.root),
        "logs": logs,
        "config": config,
        "jobs": {state.value: report.jobs.get(state.value, 0) for state in JobState},
        "recovered": report.recovered,
        "queues": report.queues,
        "schedules": report.schedules,
        "hooks": {"enabled": report.hooks["enabled"], "cursor": report.hooks["cursor.json"]},
        "journal": {"files": report.journal_files, "records": report.journal_records},
        "log_files": report.log_files,
        "members": report.members,
        "bytes": sizes,
    }
    return (json.dumps(manifest, indent=2) + "\n").encode()


def _named_files(
    store: Store, kind: NamedStore[Any], winners: dict[str, Winner]
) -> list[tuple[str, bytes]]:
    """(name, file) of each queue or schedule, from its winning record, laid out as
    ``NamedStore.write_file`` writes it."""
    out = []
    for name, winner in sorted(winners.items()):
        record = store.journal.read_at(winner.source, winner.offset, winner.length)
        try:
            item = kind.model.from_dict(record.get(kind.kind) if record else None)
        except InvalidJob:
            continue
        if item.name == name:
            out.append((name, (json.dumps(item.to_dict(), indent=2) + "\n").encode()))
    return out


def _hook_files(store: Store, cut: Cut) -> dict[str, bytes]:
    """The completion hooks' state as of the cut: ``enabled`` as it is, the cursor moved
    back to the cut if the runner has read past it (those records are not in the backup)."""
    files: dict[str, bytes] = {}
    if os.path.lexists(store.hooks.directory / "enabled"):
        files["enabled"] = b""
    cursor = store.hooks.cursor()
    if cursor is not None:
        files["cursor.json"] = cursor_file(_clamp(cursor, cut))
    return files


def _clamp(cursor: Cursor, cut: Cut) -> Cursor:
    logs = [s for s in cut.sources if s.suffix == ".log"]
    if not logs:
        return cursor
    last = int(logs[-1].stem)
    if cursor.segment > last or (cursor.segment == last and cursor.offset > cut.ends[logs[-1]]):
        return Cursor(last, cut.ends[logs[-1]])
    return cursor


def cursor_file(cursor: Cursor) -> bytes:
    return json.dumps({"segment": cursor.segment, "offset": cursor.offset}).encode()


def _journal_members(cut: Cut, plan: _Plan) -> list[tuple[str, Path | None, int, bytes]]:
    """(member name, file, bytes of it, lines appended) per journal file; the recovered
    records go at the end of the newest segment (a new one after a lone snapshot)."""
    extra = b"".join(line for _, line in plan.recovered)
    members: list[tuple[str, Path | None, int, bytes]] = [
        (f"journal/{s.name}", s, cut.ends[s], b"") for s in cut.sources
    ]
    if extra:
        if cut.sources and cut.sources[-1].suffix == ".log":
            name, source, size, _ = members[-1]
            members[-1] = (name, source, size, extra)
        else:
            number = int(cut.sources[-1].stem) if cut.sources else 1
            members.append((f"journal/{number:08d}.log", None, 0, extra))
    return members


def _add_journal_file(
    writer: ArchiveWriter, name: str, source: Path | None, size: int, extra: bytes, now: float
) -> None:
    if source is None:
        writer.add_bytes(name, extra, now)
        return
    with open(source, "rb") as handle:
        try:
            writer.add_file(name, handle.fileno(), size, now, suffix=extra)
        except QueueError as exc:
            raise QueueError(f"{exc} (journal file {source} changed while it was read)") from None


def _log_files(store: Store, job_ids: set[str]) -> list[tuple[str, Path, int]]:
    found = []
    try:
        folders = sorted(os.listdir(store.home.logs))
    except FileNotFoundError:
        return []
    for job_id in folders:
        if job_id not in job_ids:
            continue
        try:
            entries = list(os.scandir(store.home.logs / job_id))
        except (NotADirectoryError, FileNotFoundError):
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if not LOG_NAME.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            if size <= MAX_MEMBER_BYTES:
                found.append((f"logs/{job_id}/{entry.name}", Path(entry.path), size))
    return found


def _add_log(writer: ArchiveWriter, name: str, path: Path, size: int) -> bool:
    """A log up to the size the manifest counted (a straggler may still be appending to
    it). One removed meanwhile (cleanup, purge) is left out: the manifest's log count and
    sizes are upper bounds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        mtime = os.fstat(fd).st_mtime
        writer.add_file(name, fd, size, mtime, pad=True)
    finally:
        os.close(fd)
    return True
