"""The state folders: durable writes, claims by rename, look-ups. The only writer of job files.

Protocol for every state change (``Store.commit``):

1. write the new job JSON to ``tmp/`` and fsync it (``syncfs`` for large batches);
2. rename it into the destination folder, then fsync that folder;
3. only now unlink the old copy, so a job file is never removed before its replacement is
   durable (a crash in between leaves two copies; the higher ``rev`` wins);
4. append one journal record per change and fsync the journal;
5. only then return, so the caller can tell the user.

A claim (``Store.claim``) takes a kernel ``flock`` on the job file and then renames it from
``pending/`` (or ``failed/``) into ``processing/``. The rename is what makes a claim exclusive
across processes; the lock stays held by the worker, and by the job's command, which inherits
the descriptor, for as long as either lives, so a file in ``processing/`` whose lock can be
taken belongs to nobody and may be recovered.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Final

from queuectl.config import Config
from queuectl.errors import AlreadyExists, InvalidJob, NotFound, QueueError, StorageError
from queuectl.job import (
    ID_PATTERN,
    Job,
    JobState,
    file_text,
    format_time,
    job_from_input,
    object_text,
    parse_time,
    utcnow,
)
from queuectl.storage.durable import (
    FILE_MODE,
    fsync_dir,
    fsync_fd,
    read_regular_file,
    rename_noreplace,
    reuse_tmp,
    sync_all,
    unlink_all,
    write_tmp,
)
from queuectl.storage.home import Home
from queuectl.storage.journal import Journal, frame_payload

__all__ = [
    "DROP_GRACE_SECONDS",
    "Change",
    "Claim",
    "ClaimMiss",
    "Prepared",
    "Store",
    "read_job_file",
    "with_state",
]

MAX_JOB_FILE_BYTES: Final = 4 << 20
"""Dropped files larger than this are rejected unread."""

DROP_GRACE_SECONDS: Final = 2.0
"""A dropped file that does not parse is left alone until it has been unchanged this long,
because its writer may still be writing it."""


BUSY_RETRY_SECONDS: Final = 0.005

ENQUEUE_CHUNK: Final = 256
"""Jobs per group commit in a batch enqueue (each keeps a locked file open until journaled)."""


@dataclass
class Change:
    """One job written to the folder of ``job.state``; ``remove`` is the copy it replaces."""

    job: Job
    event: str
    remove: Path | None = None
    exclusive: bool = False
    """Refuse (AlreadyExists) instead of replacing an existing file at the destination."""
    recycle: bool = False
    """Keep the removed file as a blank for a later write: only when nothing else (a
    leftover process of the job's command) can still hold it open."""


@dataclass
class _LockedJob:
    """A job file this process holds the lock of through ``fd``, from ``origin``."""

    job: Job
    fd: int
    path: Path
    origin: JobState

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Claim(_LockedJob):
    """A job this process now owns: its file sits in processing/ and ``fd`` holds the lock."""


@dataclass
class Prepared(_LockedJob):
    """A job file opened, locked, checked and parsed, but not claimed (still in its folder);
    ``inode`` is what the name must still point at when the claim completes."""

    inode: int = 0


@dataclass
class ClaimMiss:
    """Why a claim did not happen; ``retry_at`` is set when it is worth trying again later."""

    reason: str
    retry_at: float | None = None
    rejected: bool = False


class _Blanks:
    """Old job files kept in tmp/ (as ``.blank.<pid>.<n>.tmp``) to be overwritten later."""

    LIMIT: Final = 1024

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._guard = threading.Lock()
        self._count = itertools.count()

    def take(self) -> Path | None:
        with self._guard:
            return self._paths.pop() if self._paths else None

    def put(self, path: Path) -> None:
        with self._guard:
            self._paths.append(path)

    def keep(self, old: Path, tmp_dir: Path) -> bool:
        with self._guard:
            if len(self._paths) >= self.LIMIT:
                return False
        blank = tmp_dir / f".blank.{os.getpid()}.{next(self._count)}.tmp"
        try:
            os.rename(old, blank)
        except OSError:
            return False
        self.put(blank)
        return True

    def discard(self) -> None:
        with self._guard:
            paths, self._paths = self._paths, []
        unlink_all(paths)


@dataclass
class _Published:
    """Files moved into place; ``fds`` still hold their locks until ``release``."""

    paths: list[Path]
    fds: list[int]

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@dataclass
class _Opened:
    fd: int
    path: Path
    st: os.stat_result
    raw: bytes = field(default=b"", repr=False)


class Store:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.journal = Journal(home.journal, home.locks / "journal.lock")
        self.config = Config(home.config_file)
        self._blanks = _Blanks()

    # ---------------------------------------------------------------- look-ups

    def locate(self, job_id: str) -> tuple[JobState, Path] | None:
        """Find a job in any state folder. Checks follow the usual flow of a job, so a job
        moving while we look is still seen in one of the places we check next."""
        if not ID_PATTERN.fullmatch(job_id):
            return None
        for state in (
            JobState.DEAD,
            JobState.CANCELLED,
            JobState.PENDING,
            JobState.FAILED,
            JobState.PROCESSING,
            JobState.COMPLETED,
        ):
            path = self.home.job_path(state, job_id)
            if os.path.lexists(path):
                return state, path
        return None

    def load(self, job_id: str) -> Job:
        for _ in range(3):  # the job may move between folders while we read it
            found = self.locate(job_id)
            if found is None:
                break
            state, path = found
            try:
                job = Job.from_json(read_job_file(path))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise QueueError(f"cannot read job file {path}: {exc.strerror}") from None
            except InvalidJob as exc:
                raise QueueError(f"job file {path} is damaged: {exc}") from None
            job.state = state  # the folder is authoritative (processing keeps the old text)
            return job
        raise NotFound(f"no job with id {job_id!r}")

    def job_names(self, state: JobState) -> list[str]:
        """File names in a state folder, oldest first (by the time they entered it)."""
        return [name for _, name in self.job_entries(state)]

    def job_names_as_ids(self, state: JobState) -> list[str]:
        """Ids of the canonical job files in a folder, oldest first."""
        return [n[:-5] for n in self.job_names(state) if n.endswith(".json")]

    def job_entries(self, state: JobState) -> list[tuple[int, str]]:
        """(mtime in ns, file name) for each job file in a folder, oldest first."""
        entries = []
        with os.scandir(self.home.state_dir(state)) as it:
            for entry in it:
                if _is_job_name(entry.name):
                    try:
                        entries.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
                    except FileNotFoundError:
                        continue
        entries.sort()
        return entries

    def count(self, state: JobState | str) -> int:
        with os.scandir(self.home.state_dir(state)) as it:
            return sum(1 for entry in it if _is_job_name(entry.name))

    def jobs(self, state: JobState, limit: int | None = None) -> Iterator[Job]:
        names = self.job_names(state)
        produced = 0
        for name in names:
            if limit is not None and produced >= limit:
                return
            path = self.home.state_dir(state) / name
            try:
                job = Job.from_json(read_job_file(path))
            except (InvalidJob, OSError):
                continue  # moved meanwhile, or a drop not yet adopted
            job.state = state
            produced += 1
            yield job

    # ---------------------------------------------------------------- writes

    def commit(self, changes: list[Change]) -> None:
        """Apply changes durably (see the module docstring): publish, journal, then unlink.

        The old copies go only after the journal has the change, so a crash at any point
        leaves something recovery can finish (``recover_orphan``), and the journal never
        lags behind a settled file. New jobs (``exclusive`` changes) are published locked and
        withdrawn again if the journal append fails, so an enqueue that reports an error
        leaves no job behind and no worker can have claimed one in between.
        """
        if not changes:
            return
        withdraw = all(c.exclusive and c.remove is None for c in changes)
        encoded = [c.job.encoded_fields() for c in changes]
        published = self._write_and_publish(
            changes, keep_locked=withdraw, texts=[file_text(fields) for fields in encoded]
        )
        try:
            stamp, pid = format_time(utcnow()), os.getpid()
            self.journal.append_lines(
                [
                    _record_line(c.event, stamp, pid, fields)
                    for c, fields in zip(changes, encoded, strict=True)
                ]
            )
        except BaseException:
            if withdraw:
                unlink_all(published.paths)
                for directory in {p.parent for p in published.paths}:
                    fsync_dir(directory)
            raise
        finally:
            published.release()
        self._unlink_old(changes, published.paths)

    def write_files(self, changes: list[Change]) -> None:
        """Commit without the journal: for rebuild and repairs, whose state it already has."""
        published = self._write_and_publish(changes, keep_locked=False)
        self._unlink_old(changes, published.paths)

    def _write_and_publish(
        self, changes: list[Change], keep_locked: bool, texts: list[bytes] | None = None
    ) -> _Published:
        """Steps 1-2: durable tmp files, renamed into their folders, folders fsynced."""
        tmps: list[Path] = []
        fds: list[int] = []
        try:
            for number, change in enumerate(changes):
                data = texts[number] if texts is not None else change.job.to_json()
                reused = None
                blank = self._blanks.take()
                if blank is not None and not keep_locked:
                    reused = reuse_tmp(blank, data)
                elif blank is not None:
                    self._blanks.put(blank)
                path, fd = reused or write_tmp(self.home.tmp, change.job.id, data)
                tmps.append(path)
                fds.append(fd)
                if keep_locked:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else sees it yet
            sync_all(fds, tmps)
            paths = self._publish(changes, tmps)
        except BaseException:
            unlink_all(tmps)
            for fd in fds:
                os.close(fd)
            raise
        if not keep_locked:
            for fd in fds:
                os.close(fd)
            fds = []
        return _Published(paths, fds)

    def _publish(self, changes: list[Change], tmps: list[Path]) -> list[Path]:
        published: list[Path] = []
        try:
            for change, tmp in zip(changes, tmps, strict=True):
                dst = self.home.job_path(change.job.state, change.job.id)
                if change.exclusive:
                    if not rename_noreplace(tmp, dst):
                        raise AlreadyExists(f"job {change.job.id!r} already exists")
                else:
                    os.replace(tmp, dst)
                published.append(dst)
            for directory in {p.parent for p in published}:
                fsync_dir(directory)
        except BaseException as exc:
            # Nothing was unlinked yet, so withdrawing the new copies loses nothing.
            unlink_all(published)
            unlink_all(tmps)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot move job files into place: {exc.strerror}") from exc
            raise
        return published

    def _unlink_old(self, changes: list[Change], published: list[Path]) -> None:
        for change, dst in zip(changes, published, strict=True):
            if change.remove is None or change.remove == dst:
                continue
            if change.recycle and self._blanks.keep(change.remove, self.home.tmp):
                continue
            try:
                os.unlink(change.remove)
            except FileNotFoundError:
                pass

    def discard_blanks(self) -> None:
        self._blanks.discard()

    def enqueue(
        self,
        jobs: list[Job],
        explicit_ids: set[str] | None = None,
        on_group: Callable[[list[Job]], None] | None = None,
        chunk: int = ENQUEUE_CHUNK,
    ) -> None:
        """Add new jobs; ``on_group`` hears of each group as soon as it is durable.

        Ids given by users (``explicit_ids``; None means all) must be new in every state;
        generated ids are unique by construction and only guarded by RENAME_NOREPLACE. Groups
        of ``chunk`` jobs share one sync and one journal fsync (group commit) and bound the
        number of open files; if the disk fails midway, exactly the reported jobs exist.
        """
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                raise AlreadyExists(f"job {job.id!r} already exists")
            check = explicit_ids is None or job.id in explicit_ids
            if check and self.locate(job.id) is not None:
                raise AlreadyExists(f"job {job.id!r} already exists")
            seen.add(job.id)
        for start in range(0, len(jobs), chunk):
            group = jobs[start : start + chunk]
            self.commit([Change(job, "enqueued", exclusive=True) for job in group])
            if on_group is not None:
                on_group(group)

    def retry_dead(self, job_id: str, now: datetime) -> Job:
        """Move a dead job back to pending with attempts reset (the journal keeps history)."""
        if not ID_PATTERN.fullmatch(job_id):
            raise NotFound(f"job {job_id!r} is not in the dead letter queue")
        opened = self._open_locked(self.home.job_path(JobState.DEAD, job_id))
        if isinstance(opened, ClaimMiss):
            if opened.reason == "busy":
                raise QueueError(f"job {job_id!r} is being changed by another process")
            raise NotFound(f"job {job_id!r} is not in the dead letter queue")
        try:
            job = Job.from_json(_read_all(opened.fd))
            retried = with_state(job, JobState.PENDING, now, attempts=0, next_run_at=None)
            self.commit([Change(retried, "retried", remove=opened.path)])
        finally:
            os.close(opened.fd)
        return retried

    def cancel_waiting(self, job_id: str, now: datetime) -> Job | None:
        """Cancel a job that is not running (pending, failed, or orphaned in processing/).

        Returns None when the job is running (its lock is held): the caller must then ask
        its worker to stop it. Raises NotFound / QueueError when there is nothing to cancel.
        """
        found = self.locate(job_id)
        if found is None:
            raise NotFound(f"no job with id {job_id!r}")
        state, path = found
        if state in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED):
            raise QueueError(f"job {job_id!r} has already finished ({state.value})")
        opened = self._open_locked(path)
        if isinstance(opened, ClaimMiss):
            if opened.reason == "busy":
                return None  # running, or being claimed this instant
            raise QueueError(f"job {job_id!r} moved while cancelling it; try again")
        try:
            job = Job.from_json(_read_all(opened.fd))
            cancelled = with_state(
                job,
                JobState.CANCELLED,
                now,
                next_run_at=None,
                last_error="cancelled",
                finished_at=format_time(now),
            )
            self.commit([Change(cancelled, "cancelled", remove=opened.path)])
        finally:
            os.close(opened.fd)
        return cancelled

    def set_config(self, key: str, value: object) -> None:
        """Persist one setting atomically; the lock serialises concurrent ``config set``."""
        from filelock import FileLock

        with FileLock(self.home.locks / "config.lock", thread_local=False):
            values = dict(self.config.values())
            values[key] = value
            data = (json.dumps(values, indent=2) + "\n").encode()
            path, fd = write_tmp(self.home.tmp, "config", data)
            try:
                fsync_fd(fd, path)
            finally:
                os.close(fd)
            os.replace(path, self.home.config_file)
            fsync_dir(self.home.root)

    # ---------------------------------------------------------------- claims

    def claim(self, name: str, state: JobState, worker: str, now: datetime) -> Claim | ClaimMiss:
        """Try to take ``<state>/<name>`` for this process: ``prepare_claim`` then
        ``complete_claim``.

        Order matters: lock first, then verify the path still names the locked file, then
        rename. Every other claimer or recoverer needs the same lock, so at most one of them
        can get past the lock for a given file, and the rename publishes the claim atomically.
        """
        prepared = self.prepare_claim(name, state, now)
        if isinstance(prepared, ClaimMiss):
            return prepared
        return self.complete_claim(prepared, worker, now)

    def prepare_claim(self, name: str, state: JobState, now: datetime) -> Prepared | ClaimMiss:
        """Open, lock, check and parse a job file without taking it: nothing changes on disk.
        While the returned ``Prepared`` is open, other claimers find the file busy; ``release``
        it to let them have it (a worker holds one only while its current command ends)."""
        src = Path(f"{self.home.root}/{state.value}/{name}")  # hot path: no pathlib parsing
        opened = self._open_locked(src)
        if isinstance(opened, ClaimMiss):
            return opened
        try:
            job = self._parse_for_claim(opened, state, now)
            if isinstance(job, ClaimMiss):
                if opened.fd >= 0:
                    os.close(opened.fd)
                    opened.fd = -1
                return job
            wanted = job.next_run_at if state is JobState.FAILED else job.run_at
            if wanted:
                due = _timestamp(wanted)
                if due > now.timestamp():
                    return self._miss_closing(opened, "not due", retry_at=due)
        except BaseException:
            if opened.fd >= 0:
                os.close(opened.fd)
            raise
        return Prepared(job, opened.fd, opened.path, state, inode=opened.st.st_ino)

    def complete_claim(self, prepared: Prepared, worker: str, now: datetime) -> Claim | ClaimMiss:
        """Take a prepared job: the rename into ``processing/`` is the claim."""
        fd, src, job = prepared.fd, prepared.path, prepared.job
        prepared.fd = -1  # ownership of the descriptor moves to the Claim (or is closed)
        try:
            current = os.lstat(src)  # still the file we locked (nobody replaced the name)?
        except FileNotFoundError:
            current = None
        except BaseException:
            os.close(fd)
            raise
        if current is None or current.st_ino != prepared.inode:
            os.close(fd)
            return ClaimMiss("gone")
        dst = self.home.job_path(JobState.PROCESSING, job.id)
        try:
            moved = rename_noreplace(src, dst)
        except FileNotFoundError:
            moved = False
        except BaseException:
            os.close(fd)
            raise
        if not moved:
            os.close(fd)
            return ClaimMiss("already in processing")
        job.worker = worker
        job.started_at = format_time(now)
        return Claim(job=job, fd=fd, path=dst, origin=prepared.origin)

    def _open_locked(self, src: Path) -> _Opened | ClaimMiss:
        try:
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return ClaimMiss("gone")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return self._reject(src, "is a symbolic link")
            try:
                if not stat.S_ISREG(os.lstat(src).st_mode):  # a socket, a device: ENXIO
                    return self._reject(src, "is not a regular file")
            except FileNotFoundError:
                return ClaimMiss("gone")
            return ClaimMiss(f"cannot open: {exc.strerror}", retry_at=time.time() + 1.0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            # Another claimer (the file will be gone) or an enqueue still journaling it (it
            # will be free within an fsync): look again very soon rather than forget it.
            return ClaimMiss("busy", retry_at=time.time() + BUSY_RETRY_SECONDS)
        st = os.fstat(fd)
        try:
            current = os.lstat(src)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_ino, current.st_dev) != (st.st_ino, st.st_dev):
            os.close(fd)
            return ClaimMiss("gone")
        return _Opened(fd=fd, path=src, st=st)

    def _parse_for_claim(self, opened: _Opened, state: JobState, now: datetime) -> Job | ClaimMiss:
        st = opened.st
        if not stat.S_ISREG(st.st_mode):
            return self._reject_opened(opened, "is not a regular file")
        if st.st_size > MAX_JOB_FILE_BYTES:
            return self._reject_opened(opened, f"is larger than {MAX_JOB_FILE_BYTES} bytes")
        distrust = _distrust(st)
        if distrust:
            return self._reject_opened(opened, distrust)
        opened.raw = _read_all(opened.fd, st.st_size)
        name = opened.path.name
        try:
            job = Job.from_json(opened.raw)
            if job.state is state and name == f"{job.id}.json":
                return job
        except InvalidJob:
            pass
        if state is not JobState.PENDING:
            return self._reject_opened(opened, f"is not a valid job file for {state.value}/")
        return self._adopt(opened, now)

    def _adopt(self, opened: _Opened, now: datetime) -> Job | ClaimMiss:
        """Turn a file dropped into pending/ by another tool into a journaled job."""
        name = opened.path.name
        stem = name[:-5] if name.endswith(".json") else name
        try:
            job = job_from_input(
                opened.raw,
                default_max_retries=self.config.get("max-retries"),
                fallback_id=stem,
                source="drop",
                now=now,
            )
        except InvalidJob as exc:
            young_until = opened.st.st_mtime + DROP_GRACE_SECONDS
            if young_until > now.timestamp():
                # Possibly still being written: look again once it has settled.
                return self._miss_closing(opened, "being written", retry_at=young_until)
            return self._reject_opened(opened, str(exc))
        canonical = self.home.job_path(JobState.PENDING, job.id)
        found = self.locate(job.id)
        if found is not None and found[1] != opened.path:
            return self._reject_opened(opened, f"job id {job.id!r} already exists")
        path, fd = write_tmp(self.home.tmp, job.id, job.to_json())
        try:
            fsync_fd(fd, path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody can see it yet
            if canonical == opened.path:
                os.replace(path, canonical)
            elif not rename_noreplace(path, canonical):
                os.unlink(path)
                os.close(fd)
                return self._reject_opened(opened, f"job id {job.id!r} already exists")
            fsync_dir(canonical.parent)
        except BaseException:
            unlink_all([path])
            os.close(fd)
            raise
        if canonical != opened.path:
            os.unlink(opened.path)
        os.close(opened.fd)
        opened.fd, opened.path, opened.st = fd, canonical, os.fstat(fd)
        self.journal.append(
            [
                {
                    "ts": format_time(now),
                    "event": "enqueued",
                    "pid": os.getpid(),
                    "job": job.to_dict(),
                    "file": name,
                }
            ]
        )
        return job

    def put_back(self, claim: Claim, command_ran: bool = False) -> None:
        """Undo a claim whose command did not run to the end (a stop). Nothing was journaled
        for the claim, so the job returns unchanged to where it was claimed from.

        If the command was started, a process that escaped its killed group could still hold
        the old file's lock; the job is then written back as a fresh file so that no stray
        lock holder can keep it from being claimed again.
        """
        back = self.home.job_path(claim.origin, claim.job.id)
        try:
            if command_ran:
                stored = Job.from_json(_read_all(claim.fd))
                self.write_files([Change(stored, "put back", remove=claim.path)])
            else:
                rename_noreplace(claim.path, back)
        finally:
            claim.release()

    def _miss_closing(
        self, opened: _Opened, reason: str, retry_at: float | None = None
    ) -> ClaimMiss:
        os.close(opened.fd)
        opened.fd = -1
        return ClaimMiss(reason, retry_at=retry_at)

    def _reject_opened(self, opened: _Opened, reason: str) -> ClaimMiss:
        miss = self._reject(opened.path, reason)
        os.close(opened.fd)
        opened.fd = -1
        return miss

    def _reject(self, src: Path, reason: str) -> ClaimMiss:
        """Move a file that is not a valid job aside into rejected/, with its reason."""
        target = self.home.rejected / src.name
        suffix = 0
        while True:
            try:
                if rename_noreplace(src, target):
                    break
            except FileNotFoundError:
                return ClaimMiss("gone")
            suffix += 1
            target = self.home.rejected / f"{src.name}.{suffix}"
        message = f"{src.parent.name}/{src.name} {reason}"
        reason_path = target.with_name(target.name + ".reason")
        fd = os.open(reason_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, (message + "\n").encode())
        finally:
            os.close(fd)
        fsync_dir(self.home.rejected)
        self.journal.append(
            [
                {
                    "ts": format_time(utcnow()),
                    "event": "rejected",
                    "pid": os.getpid(),
                    "file": target.name,
                    "reason": message,
                }
            ]
        )
        return ClaimMiss(message, rejected=True)

    def rejected(self) -> list[tuple[str, str]]:
        """(file name, reason) for every rejected file, oldest first."""
        out = []
        for entry in sorted(os.scandir(self.home.rejected), key=lambda e: e.name):
            if entry.name.endswith(".reason"):
                continue
            reason_file = self.home.rejected / (entry.name + ".reason")
            try:
                reason = reason_file.read_text().strip()
            except OSError:
                reason = "(no reason recorded)"
            out.append((entry.name, reason))
        return out

    # ---------------------------------------------------------------- recovery

    def try_lock_orphan(self, name: str) -> tuple[Job, int, Path] | None:
        """Lock a processing/ file whose owner (worker and command) are gone, if it is one."""
        src = self.home.state_dir(JobState.PROCESSING) / name
        opened = self._open_locked(src)
        if isinstance(opened, ClaimMiss):
            return None
        try:
            if not stat.S_ISREG(opened.st.st_mode):
                self._reject_opened(opened, "is not a regular file")
                return None
            job = Job.from_json(_read_all(opened.fd))
        except InvalidJob as exc:
            self._reject_opened(opened, f"is not a valid job file ({exc})")
            return None
        except BaseException:
            os.close(opened.fd)
            raise
        return job, opened.fd, src

    def recover_orphan(self, name: str, lost: Callable[[Job], Job]) -> str | None:
        """Settle a processing/ job whose worker and command are gone; describe what was done.

        A worker that died inside ``commit`` left either its new copy already published
        (finish: journal it again, which is idempotent, and drop the processing copy), or its
        durable tmp file (finish publishing it), or nothing: then the run is lost and
        ``lost(job)`` decides the job's next state.
        """
        locked = self.try_lock_orphan(name)
        if locked is None:
            return None
        job, fd, path = locked
        try:
            newer = self._newer_copy(job)
            if newer is not None:
                self.journal.append([_record(newer.state.value, newer)])
                os.unlink(path)
                return f"finished the interrupted commit of {job.id} ({newer.state.value})"
            pending_tmp = self._newer_tmp(job)
            if pending_tmp is not None:
                tmp, finished = pending_tmp
                os.replace(tmp, self.home.job_path(finished.state, finished.id))
                fsync_dir(self.home.state_dir(finished.state))
                self.journal.append([_record(finished.state.value, finished)])
                os.unlink(path)
                return f"finished the interrupted commit of {job.id} ({finished.state.value})"
            updated = lost(job)
            self.commit([Change(updated, "recovered", remove=path)])
            return f"recovered {job.id}: its worker died; now {updated.state.value}"
        finally:
            os.close(fd)

    def _newer_copy(self, job: Job) -> Job | None:
        for state in JobState:
            if state is JobState.PROCESSING:
                continue
            try:
                other = Job.from_json(read_job_file(self.home.job_path(state, job.id)))
            except (OSError, InvalidJob):
                continue
            if other.rev > job.rev and other.state is state:
                return other
        return None

    def _newer_tmp(self, job: Job) -> tuple[Path, Job] | None:
        best: tuple[Path, Job] | None = None
        for entry in os.scandir(self.home.tmp):
            parts = entry.name.rsplit(".", 3)
            if len(parts) != 4 or parts[0] != job.id or parts[3] != "tmp":
                continue
            try:
                candidate = Job.from_json(read_job_file(entry.path))
            except (OSError, InvalidJob):
                continue
            if candidate.id != job.id:
                continue  # the name says one job, the text another: not ours to publish
            if candidate.rev > job.rev and (best is None or candidate.rev > best[1].rev):
                best = (Path(entry.path), candidate)
        return best


_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _record_line(event: str, stamp: str, pid: int, fields: list[tuple[str, str]]) -> bytes:
    """The journal line of ``_record``, built from the job's already encoded fields."""
    head = f'{{"ts":{_dumps(stamp)},"event":{_dumps(event)},"pid":{pid},"job":'
    return frame_payload(f"{head}{object_text(fields)}}}".encode("utf-8", "backslashreplace"))


def _record(event: str, job: Job) -> dict[str, object]:
    return {"ts": format_time(utcnow()), "event": event, "pid": os.getpid(), "job": job.to_dict()}


def read_job_file(path: str | os.PathLike[str]) -> bytes:
    """A job file's bytes, never blocking on a FIFO or following a symlink someone put in a
    state folder (``list`` and ``show`` once hung on a FIFO in pending/)."""
    return read_regular_file(path, MAX_JOB_FILE_BYTES)


def _distrust(st: os.stat_result) -> str | None:
    """Why a file must not be run even though it sits in our folder (Postfix treats its
    world-writable maildrop as hostile in the same way)."""
    if st.st_uid != os.geteuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {st.st_mode & 0o777:o})"
    if st.st_nlink > 1:
        return "has other hard links (its content could be changed from elsewhere)"
    return None


def _is_job_name(name: str) -> bool:
    """Hidden files and ``*.tmp`` are writes in progress by other tools (the nq convention)."""
    return not name.startswith(".") and not name.endswith((".tmp", "~"))


def _read_all(fd: int, size: int | None = None) -> bytes:
    """The whole file; ``size`` (from an fstat the caller already made) saves a syscall."""
    if size is None:
        size = os.fstat(fd).st_size
    first = os.pread(fd, size + 1, 0)
    if len(first) <= size:
        return first  # the usual case: one read
    chunks = [first]
    offset = len(first)
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _timestamp(text: str) -> float:
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return 0.0


def with_state(job: Job, state: JobState, now: datetime, **changes: object) -> Job:
    """A copy of ``job`` in a new state, one revision later."""
    return replace(job, state=state, rev=job.rev + 1, updated_at=format_time(now), **changes)
