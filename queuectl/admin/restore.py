"""``queuectl restore``: a backup into an empty or new home, or over one with ``--force``.

The archive is untrusted input from start to end (``storage.archive.TarReader`` parses it
strictly). Everything is written into ``<home>/.restore.<random>/`` first and checked
there as a whole:

- the first member is the manifest (``queuectl-backup.json``, format and version known),
  and what follows agrees with it: as many job files per state, queue files, journal files
  and records as it says, no more members or bytes than it says, and no more than the free
  space of the home (each member, and the total it declares);
- every member has a name of the layout (``<state>/<id>.json``, ``journal/NNNNNNNN.log``
  or ``.snap``, ``queues/<name>.json``, ``config.json``, ``logs/<id>/<run>.out|.err``)
  and a size its kind allows; every job file is a valid job of that folder and name, in
  one folder only; every journal record's checksum holds; config.json is valid settings;
- the job, queue and schedule files are exactly the winners of the archive's own journal
  (the same object, byte for byte as a rebuild would write it; the journal comes first in
  the archive, so each file is compared as it arrives), so the restored home passes
  ``fsck`` and ``journal rebuild`` finds nothing to change;
- the completion hooks' files are ``hooks/enabled`` (empty) and ``hooks/cursor.json`` (a
  place in one of the archive's journal segments).

Only then is the staged tree moved into place (``Staging.install``: one rename commits it,
then the old contents, for ``--force``, are moved aside and the new ones in, rolled forward
by the next command to open the home if a crash interrupts it; ``locks/`` stays). One
restore at a time per home (a flock of the home folder). On any failure the staging folder is
removed, and a home the restore created is removed again. The unique-key
entries (``unique/``) are not in the archive: they are derived from the jobs here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from filelock import FileLock

from queuectl.admin.backup import FORMAT, MANIFEST, VERSION
from queuectl.config import Config, ConfigError
from queuectl.errors import BadArchive, InvalidJob, JournalCorrupt, QueueError
from queuectl.job import ID_PATTERN, Job, JobState, parse_object
from queuectl.storage.archive import (
    MAX_MEMBER_BYTES,
    STAGING_PREFIX,
    Member,
    Staging,
    TarReader,
    recover,
    remove_empty_tree,
    restore_lock,
)
from queuectl.storage.home import STATE_DIRS, Home
from queuectl.storage.jobfile import MAX_JOB_FILE_BYTES
from queuectl.storage.journal import Journal, sources, verify_prefix, write_fresh_indexes
from queuectl.storage.queues import Queue
from queuectl.storage.records import decode_line
from queuectl.storage.registry import live_workers
from queuectl.storage.replay import Replay, Winner
from queuectl.storage.schedules import Schedule
from queuectl.storage.unique import entry_data, entry_name

__all__ = ["RestoreReport", "Target", "inspect_target", "restore"]

SMALL_BYTES: Final = 64 << 10
NAMED_BYTES: Final = 256 << 10
"""A queue or schedule file (a schedule holds a job's fields, command up to 128 KiB)."""
NAMED: Final[dict[str, tuple[str, Any]]] = {
    "queues": ("queue", Queue),
    "schedules": ("schedule", Schedule),
}
"""Folder -> (record key and index prefix, model) of the named objects (``storage.named``)."""
_STATES: Final = "|".join(STATE_DIRS)
_ID: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
LAYOUT: Final = {
    "job": re.compile(rf"(?P<state>{_STATES})/(?P<id>{_ID})\.json"),
    "journal": re.compile(r"journal/[0-9]{8}\.(log|snap)"),
    "named": re.compile(rf"(?P<folder>queues|schedules)/(?P<id>{_ID})\.json"),
    "hooks": re.compile(r"hooks/(?P<id>enabled|cursor\.json)"),
    "config": re.compile(r"config\.json"),
    "log": re.compile(rf"logs/(?P<id>{_ID})/[0-9]{{1,9}}\.(out|err)"),
}
LIMITS: Final = {
    "job": MAX_JOB_FILE_BYTES,
    "journal": MAX_MEMBER_BYTES,
    "named": NAMED_BYTES,
    "hooks": 4096,
    "config": SMALL_BYTES,
    "log": MAX_MEMBER_BYTES,
}


# ---------------------------------------------------------------------- the target


@dataclass
class Target:
    """What the home to restore into holds now."""

    root: Path
    exists: bool = False
    files: int = 0
    """Files that make it not empty (lock files, worker registrations and empty journal
    files do not count)."""
    jobs: int = 0
    is_home: bool = False

    @property
    def empty(self) -> bool:
        return self.files == 0


def inspect_target(root: Path) -> Target:
    target = Target(root)
    if not os.path.lexists(root):
        return target
    if not root.is_dir():
        raise QueueError(f"cannot restore into {root}: it is not a folder")
    target.exists = True
    target.is_home = (root / "journal").is_dir() and (root / "pending").is_dir()
    for folder, dirs, files in os.walk(root):
        top = Path(folder).relative_to(root).parts[:1]
        if top in (("locks",), ("workers",)) or (top and top[0].startswith(STAGING_PREFIX)):
            continue  # a restore's staging folder left by a crash: recover removes it
        target.files += sum(1 for d in dirs if os.path.islink(os.path.join(folder, d)))
        for name in files:
            if top == ("journal",) and _empty(os.path.join(folder, name)):
                continue
            target.files += 1
            if top and top[0] in STATE_DIRS and name.endswith(".json"):
                target.jobs += 1
    return target


def _empty(path: str) -> bool:
    try:
        return os.lstat(path).st_size == 0
    except FileNotFoundError:
        return True


@dataclass
class RestoreReport:
    root: Path
    manifest: dict[str, Any]
    jobs: dict[str, int] = field(default_factory=dict)
    queues: int = 0
    schedules: int = 0
    journal_records: int = 0
    log_files: int = 0
    replaced: bool = False

    @property
    def recovered(self) -> list[str]:
        found = self.manifest.get("recovered")
        return [str(x) for x in found] if isinstance(found, list) else []


def restore(
    root: Path,
    archive: Path,
    force: bool = False,
    confirm: Callable[[Target, dict[str, Any]], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Restore ``archive`` into the home at ``root`` (module docstring). ``confirm`` is
    asked before a home that is not empty is replaced (with ``force``)."""
    created = not os.path.lexists(root)
    if not created and not root.is_dir():
        raise QueueError(f"cannot restore into {root}: it is not a folder")
    if not created and not any(n.startswith(STAGING_PREFIX) for n in os.listdir(root)):
        _refuse(inspect_target(root), force)  # before anything is written (again, locked)
    added = [root] if created else _missing_folders(root)
    Home(root).ensure()  # finishes an install a crash interrupted
    fd = restore_lock(root, wait=False)
    if fd is None:
        raise QueueError(f"another restore is running for {root}")
    try:
        recover(root, locked=True)  # staging folders of restores that died
        return _restore_locked(root, archive, force, confirm, progress, on_total)
    except BaseException:
        for folder in added:
            remove_empty_tree(folder)
        raise
    finally:
        os.close(fd)


def _restore_locked(
    root: Path,
    archive: Path,
    force: bool,
    confirm: Callable[[Target, dict[str, Any]], bool] | None,
    progress: Callable[[int], None] | None,
    on_total: Callable[[int], None] | None,
) -> RestoreReport:
    target = inspect_target(root)
    staging = None
    try:
        _refuse(target, force)
        staging = Staging(root)
        report = _stage(staging, archive, progress, on_total)
        report.replaced = not target.empty
        staging.sync()
        if report.replaced and confirm is not None and not confirm(target, report.manifest):
            raise QueueError("nothing restored")
        with FileLock(root / "locks" / "journal.lock", thread_local=False):
            _refuse_live_workers(root)
            staging.install()
    except BaseException:
        if staging is not None:
            staging.discard()
        raise
    Home(root).ensure()
    return report


def _refuse(target: Target, force: bool) -> None:
    root = target.root
    if not target.empty and not force:
        raise QueueError(
            f"{root} is not empty ({target.jobs} job file(s), {target.files} file(s) in "
            "all); restore into an empty or new home, or replace its contents with --force"
        )
    if not target.empty and not target.is_home:
        raise QueueError(
            f"refusing to replace the contents of {root}: it does not look like a "
            "queuectl home (no journal/ and pending/ folders)"
        )
    _refuse_live_workers(root)


def _missing_folders(root: Path) -> list[Path]:
    from queuectl.storage.home import AUX_DIRS

    return [root / name for name in (*STATE_DIRS, *AUX_DIRS) if not (root / name).exists()]


def _refuse_live_workers(root: Path) -> None:
    if (root / "workers").is_dir() and live_workers(root / "workers"):
        raise QueueError(f"workers are running for {root}; stop them first (queuectl worker stop)")


# ---------------------------------------------------------------------- reading the archive


class _Seen:
    """What the staged members hold, checked against the manifest and the archive's
    journal as they arrive (the journal comes first in the archive, so each job and queue
    file is compared with its winning record at once, and nothing is kept per job but its
    folder and unique key)."""

    def __init__(self, staging: Staging, archive: Path, manifest: dict[str, Any]) -> None:
        self.staging = staging
        self.archive = archive
        self.manifest = manifest
        self.jobs: dict[str, str] = {}
        """id -> folder"""
        self.unique: dict[str, tuple[int, str]] = {}
        """unique key -> (generation, id) of the newest job that has it"""
        self.named: dict[str, set[str]] = {folder: set() for folder in NAMED}
        self.hooks: set[str] = set()
        self.journal_files: list[str] = []
        self.journal_records = 0
        self.winners: dict[str, Winner] | None = None
        self.logs = 0
        self.config = False
        self.members = 0
        self.bytes = 0
        self._journal: Journal | None = None
        self._fds: dict[Path, int] = {}

    def bad(self, problem: str) -> BadArchive:
        return BadArchive(f"{self.archive}: {problem}")

    # ---- the journal, once all of it is staged

    def close_journal(self) -> dict[str, Winner]:
        if self.winners is not None:
            return self.winners
        directory = self.staging.folder("journal")
        read = sources(directory)
        if len(self.journal_files) != self.manifest["journal"]["files"] or len(read) != len(
            self.journal_files
        ):
            raise self.bad("it does not hold the journal files its manifest lists")
        for source in read:
            try:
                self.journal_records += verify_prefix(source, source.stat().st_size)
            except JournalCorrupt as exc:
                where = f"{source.name} at byte {exc.offset}"
                raise self.bad(f"its journal is damaged ({where})") from None
        if self.journal_records != self.manifest["journal"]["records"]:
            raise self.bad(
                f"its journal has {self.journal_records} records, its manifest says "
                f"{self.manifest['journal']['records']}"
            )
        write_fresh_indexes(directory)
        locks = self.staging.folder(".locks")
        self._journal = Journal(directory, locks / "journal.lock")
        replay = Replay()
        with self._journal.reading():
            for fields, source in self._journal.rows():
                replay.add(fields, source)
        self.winners = replay.winners()
        return self.winners

    def record(self, winner: Winner) -> dict[str, Any] | None:
        fd = self._fds.get(winner.source)
        if fd is None:
            fd = self._fds[winner.source] = os.open(winner.source, os.O_RDONLY | os.O_CLOEXEC)
        return decode_line(os.pread(fd, winner.length, winner.offset))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._journal is not None:
            self._journal.close()


def _stage(
    staging: Staging,
    archive: Path,
    progress: Callable[[int], None] | None,
    on_total: Callable[[int], None] | None,
) -> RestoreReport:
    with TarReader(archive) as reader:
        members = reader.members()
        first = next(members, None)
        if first is None:
            raise BadArchive(f"{archive} is empty: not a queuectl backup")
        seen = _Seen(staging, archive, _manifest(archive, first))
        try:
            _check_space(staging, seen.manifest)
            if on_total:
                on_total(seen.manifest["members"])
            for member in members:
                _take(member, seen)
                if progress:
                    progress(1)
            return _finish(seen)
        finally:
            seen.close()


def _manifest(archive: Path, member: Member) -> dict[str, Any]:
    if member.name != MANIFEST:
        raise BadArchive(
            f"{archive} is not a queuectl backup: its first member is {member.name!r}, "
            f"not {MANIFEST}"
        )
    if member.size > SMALL_BYTES:
        raise BadArchive(f"{archive}: {MANIFEST} is larger than {SMALL_BYTES} bytes")
    try:
        manifest = json.loads(member.read(SMALL_BYTES))
    except (ValueError, RecursionError):
        raise BadArchive(f"{archive}: {MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadArchive(f"{archive}: {MANIFEST} does not describe a queuectl backup")
    if manifest.get("version") != VERSION:
        raise BadArchive(
            f"{archive} is a backup of format version {manifest.get('version')!r}; "
            f"this queuectl reads version {VERSION}"
        )
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise BadArchive(f"{archive}: {MANIFEST} is damaged ({problem})")
    return manifest


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 53


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    jobs = manifest.get("jobs")
    if not isinstance(jobs, dict) or set(jobs) - set(STATE_DIRS):
        return "'jobs' must map state names to counts"
    if not all(_count(n) for n in jobs.values()):
        return "'jobs' must map state names to counts"
    journal = manifest.get("journal")
    if not isinstance(journal, dict) or not all(
        _count(journal.get(k)) for k in ("files", "records")
    ):
        return "'journal' must give files and records"
    for key in ("queues", "schedules", "log_files", "members", "bytes"):
        if not _count(manifest.get(key)):
            return f"{key!r} must be a count"
    hooks = manifest.get("hooks")
    if not isinstance(hooks, dict) or not all(
        isinstance(hooks.get(k), bool) for k in ("enabled", "cursor")
    ):
        return "'hooks' must say whether enabled and cursor are there"
    if not isinstance(manifest.get("config"), bool):
        return "'config' must be true or false"
    recovered = manifest.get("recovered")
    if not isinstance(recovered, list) or not all(
        isinstance(x, str) and ID_PATTERN.fullmatch(x) for x in recovered
    ):
        return "'recovered' must list job ids"
    if not isinstance(manifest.get("created_at"), str):
        return "'created_at' must be a time"
    return None


def _check_space(staging: Staging, manifest: dict[str, Any]) -> None:
    free = staging.free_bytes()
    if manifest["bytes"] > free:
        raise BadArchive(
            f"the backup needs {manifest['bytes']} bytes but only {free} are free in "
            f"{staging.home_root}"
        )
    inodes = staging.free_inodes()
    if inodes is not None and manifest["members"] > inodes:
        raise BadArchive(
            f"the backup has {manifest['members']} files but only {inodes} more can be "
            f"created in {staging.home_root}"
        )


def _take(member: Member, seen: _Seen) -> None:
    free = seen.staging.free_bytes()
    if member.size > free:
        raise seen.bad(
            f"member {member.name!r} needs {member.size} bytes but only {free} are free in "
            f"{seen.staging.home_root}"
        )
    seen.members += 1
    seen.bytes += member.size
    if seen.members > seen.manifest["members"] or seen.bytes > seen.manifest["bytes"]:
        raise seen.bad(f"it holds more than its manifest says (at {member.name!r})")
    kind, found = _classify(member.name)
    if kind is None or found is None:
        raise seen.bad(f"member {member.name!r} is not part of a queuectl backup")
    if member.size > LIMITS[kind]:
        raise seen.bad(
            f"member {member.name!r} is {member.size} bytes, more than a {kind} file may "
            f"have ({LIMITS[kind]})"
        )
    if kind == "journal":
        if seen.winners is not None:
            raise seen.bad(f"{member.name} comes after job or queue files (not queuectl's order)")
        seen.journal_files.append(member.name)
        seen.staging.write(member.name, member)
    elif kind == "config":
        seen.config = True
        seen.staging.write_bytes(member.name, _read_all(member))
    elif kind == "log":
        seen.logs += 1
        seen.staging.write(member.name, member, member.mtime)
    elif kind == "named":
        _take_named(member, found["folder"], found["id"], seen)
    elif kind == "hooks":
        _take_hooks(member, found["id"], seen)
    else:
        _take_job(member, found["state"], found["id"], seen)


def _classify(name: str) -> tuple[str | None, dict[str, str] | None]:
    for kind, pattern in LAYOUT.items():
        matched = pattern.fullmatch(name)
        if matched is not None:
            return kind, matched.groupdict()
    return None, None


def _read_all(member: Member) -> bytes:
    parts = []
    while chunk := member.read():
        parts.append(chunk)
    return b"".join(parts)


def _take_named(member: Member, folder: str, name: str, seen: _Seen) -> None:
    """A queue or schedule file: valid, laid out as queuectl writes it, and the object of
    its winning journal record."""
    kind, model = NAMED[folder]
    data = _read_all(member)
    try:
        item: Any = model.from_dict(json.loads(data))
    except (ValueError, RecursionError, InvalidJob) as exc:
        raise seen.bad(f"{member.name} is not a valid {kind}: {exc}") from None
    winner = seen.close_journal().get(f"{kind}:{name}")
    recorded = None
    if winner is not None and not winner.gone:
        recorded = _winning_named(seen, winner, kind, model)
    laid_out = (json.dumps(item.to_dict(), indent=2) + "\n").encode()
    if item.name != name or item != recorded or data != laid_out:
        raise seen.bad(f"{kind} {name!r} disagrees with its journal")
    seen.named[folder].add(name)
    seen.staging.write_bytes(member.name, data)


def _winning_named(seen: _Seen, winner: Winner, kind: str, model: Any) -> Any | None:
    record = seen.record(winner)
    try:
        return model.from_dict(record.get(kind) if record else None)
    except InvalidJob:
        return None


def _take_hooks(member: Member, name: str, seen: _Seen) -> None:
    """``hooks/enabled`` is empty; ``hooks/cursor.json`` names a place in one of the
    archive's journal segments, at most its end."""
    data = _read_all(member)
    if name == "enabled":
        if data:
            raise seen.bad("hooks/enabled is not empty")
    else:
        seen.close_journal()
        try:
            cursor = json.loads(data)
        except (ValueError, RecursionError):
            raise seen.bad("hooks/cursor.json is not valid JSON") from None
        if not isinstance(cursor, dict) or set(cursor) != {"segment", "offset"}:
            raise seen.bad("hooks/cursor.json must give a segment and an offset")
        segment, offset = cursor["segment"], cursor["offset"]
        if not (_count(segment) and _count(offset)) or segment < 1:
            raise seen.bad("hooks/cursor.json must give a segment and an offset")
        path = seen.staging.root / "journal" / f"{segment:08d}.log"
        if path.exists() and offset > path.stat().st_size:
            raise seen.bad("hooks/cursor.json points past the end of its journal segment")
    seen.hooks.add(name)
    seen.staging.write_bytes(member.name, data)


def _take_job(member: Member, state: str, job_id: str, seen: _Seen) -> None:
    """A job file must be a valid job of its folder and name, laid out as queuectl writes
    it, and hold exactly its winning journal record's job (what a rebuild would write)."""
    data = _read_all(member)
    try:
        fields = parse_object(data)
        job = Job.from_dict(fields)
    except InvalidJob as exc:
        raise seen.bad(f"{member.name} is not a valid job: {exc}") from None
    if job.id != job_id:
        raise seen.bad(f"{member.name} holds job {job.id!r}")
    if job.state.value != state or job.state is JobState.PROCESSING:
        raise seen.bad(f"{member.name} says state {job.state.value!r}")
    if job_id in seen.jobs:
        raise seen.bad(f"job {job_id!r} is in two folders")
    winner = seen.close_journal().get(job_id)
    if winner is None or winner.gone:
        raise seen.bad(f"job {job_id!r} has a file but its journal does not have it")
    record = seen.record(winner)
    recorded = record.get("job") if record else None
    if recorded != fields or job.to_json() != data:
        raise seen.bad(
            f"job {job_id!r} ({state}, rev {job.rev}) disagrees with its journal "
            f"({winner.state}, rev {winner.rev})"
        )
    seen.jobs[job_id] = state
    if job.unique_key:
        newest = seen.unique.get(job.unique_key)
        if newest is None or newest[0] < job.generation:
            seen.unique[job.unique_key] = (job.generation, job_id)
    seen.staging.write_bytes(member.name, data, member.mtime)


# ---------------------------------------------------------------------- checking it whole


def _finish(seen: _Seen) -> RestoreReport:
    winners = seen.close_journal()
    report = RestoreReport(seen.staging.home_root, seen.manifest)
    for state in seen.jobs.values():
        report.jobs[state] = report.jobs.get(state, 0) + 1
    declared = {k: v for k, v in seen.manifest["jobs"].items() if v}
    if report.jobs != declared:
        raise seen.bad(
            f"it does not hold the jobs its manifest lists (manifest: {_counts(declared)}; "
            f"archive: {_counts(report.jobs)})"
        )
    named = {folder: len(names) for folder, names in seen.named.items()}
    if named != {"queues": seen.manifest["queues"], "schedules": seen.manifest["schedules"]}:
        raise seen.bad("it does not hold the queues and schedules its manifest lists")
    if seen.config != seen.manifest["config"]:
        raise seen.bad("it does not hold the settings its manifest lists")
    hooks = seen.manifest["hooks"]
    if seen.hooks != {
        n for n, key in (("enabled", "enabled"), ("cursor.json", "cursor")) if hooks[key]
    }:
        raise seen.bad("it does not hold the completion hooks' files its manifest lists")
    if seen.logs > seen.manifest["log_files"]:
        raise seen.bad("it holds more log files than its manifest says")
    folders = {kind: folder for folder, (kind, _model) in NAMED.items()}
    for name, winner in winners.items():
        if winner.gone:
            continue
        kind, colon, rest = name.partition(":")
        if not colon:
            if name not in seen.jobs and _valid_job(seen, winner):
                raise seen.bad(f"job {name!r} is in its journal but has no file")
        elif kind in folders and rest not in seen.named[folders[kind]]:
            model = NAMED[folders[kind]][1]
            if _winning_named(seen, winner, kind, model) is not None:
                raise seen.bad(f"{name} is in its journal but has no file")
    if seen.config:
        try:
            Config(seen.staging.root / "config.json").stored()
        except ConfigError as exc:
            raise seen.bad(f"its config.json cannot be used ({exc})") from None
    for key, (_gen, job_id) in seen.unique.items():
        seen.staging.write_bytes(f"unique/{entry_name(key)}", entry_data(key, job_id))
    report.queues, report.schedules = named["queues"], named["schedules"]
    report.log_files = seen.logs
    report.journal_records = seen.journal_records
    return report


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


def _valid_job(seen: _Seen, winner: Winner) -> bool:
    """Whether a winning record is a job a rebuild would write (one that is not is left
    out by backup and rebuild alike)."""
    record = seen.record(winner)
    data = record.get("job") if record else None
    try:
        return isinstance(data, dict) and Job.from_dict(data) is not None
    except InvalidJob:
        return False
