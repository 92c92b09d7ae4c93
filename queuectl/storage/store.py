"""``Store``: one home's storage, and the operations users ask for by name.

The parts, each a seam of its own:

- ``folders``  (``folders.Folders``)   reading the state folders;
- ``commits``  (``commit.Committer``)  the commit protocol, the only writer of job files;
- ``claims``   (``claims.Claims``)     the worker-facing claim / complete / put back;
- ``recovery`` (``recovery.Recovery``) settling jobs whose worker died;
- ``journal``  (``journal.Journal``)   the event journal and its readers;
- ``locks``    (``locks.LockFile``)    the job, slot and process locks.

What is left here is the user operations (enqueue, DLQ retry, cancel of a waiting job,
deletion, settings), each a few lines over those parts, and the per-job change lock they all
take (``changing``), so two processes never move one job's files at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from queuectl.config import Config
from queuectl.errors import AlreadyExists, InvalidJob, NotFound, QueueError
from queuectl.job import (
    FINISHED_STATES,
    ID_PATTERN,
    Job,
    JobState,
    format_time,
    job_from_input,
    parse_time,
    utcnow,
)
from queuectl.storage.claims import Claim, ClaimMiss, Claims, Prepared
from queuectl.storage.commit import Change, Committer
from queuectl.storage.drops import DROP_GRACE_SECONDS, Rejector
from queuectl.storage.durable import fsync_dir, fsync_fd, write_tmp
from queuectl.storage.events import Event
from queuectl.storage.folders import Folders
from queuectl.storage.gpus import Devices
from queuectl.storage.home import Home
from queuectl.storage.hooks import HookLedger
from queuectl.storage.jobfile import MAX_JOB_FILE_BYTES, read_job
from queuectl.storage.journal import Journal
from queuectl.storage.locks import Holder, LockFile, ProcessMark, change_offset, job_offset
from queuectl.storage.queues import QueueStore
from queuectl.storage.schedules import ScheduleStore
from queuectl.storage.unique import UniqueIndex
from queuectl.storage.workflow import Workflow

__all__ = [
    "DROP_GRACE_SECONDS",
    "ENQUEUE_CHUNK",
    "Change",
    "Claim",
    "ClaimMiss",
    "Prepared",
    "Store",
    "with_state",
]

ENQUEUE_CHUNK: Final = 256
"""Jobs per group commit in a batch enqueue: one sync and one journal fsync per group."""

CHANGE_WAIT_SECONDS: Final = 5.0
"""How long a user operation waits for another process to finish moving a job's files."""

DELETE_CHUNK: Final = 256


class Store:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.journal = Journal(home.journal, home.locks / "journal.lock")
        self.config = Config(home.config_file)
        self.locks = LockFile(home.claims_lock)
        self.mark = ProcessMark(self.locks)
        self.folders = Folders(home)
        self.commits = Committer(home, self.journal, self.mark)
        self.rejector = Rejector(home, self.journal)
        self.queues = QueueStore(home, self.journal, self.locks, self.mark)
        self.unique = UniqueIndex(home, self.locks, self.mark)
        self.devices = Devices(self.locks, self.config.values)
        self.hooks = HookLedger(home, self.journal, self.mark)
        self.schedules = ScheduleStore(home, self.journal, self.locks, self.mark)
        self._local = threading.local()
        self.workflow = Workflow(home, self.folders, self.commits, self.queues, self.changing)
        self.claims = Claims(
            home,
            self.folders,
            self.commits,
            self.locks,
            self.rejector,
            self.change_holder,
            self.accept_drop,
            self.queues,
            self.adopting,
            self.devices,
        )
        from queuectl.storage.recovery import Recovery

        self.recovery = Recovery(
            home,
            self.folders,
            self.commits,
            self.journal,
            self.locks,
            self.rejector,
            self.change_holder,
        )

    # ---------------------------------------------------------------- the change lock

    def change_holder(self) -> Holder:
        """This thread's description for change locks (never handed to a command)."""
        holder: Holder | None = getattr(self._local, "holder", None)
        if holder is None or not holder.open:
            holder = self._local.holder = self.locks.holder()
        return holder

    @contextlib.contextmanager
    def changing(self, job_id: str, timeout: float = CHANGE_WAIT_SECONDS) -> Iterator[None]:
        """Hold ``job_id``'s change lock: no claim, commit, recovery or user operation of
        any process moves that job's files meanwhile. Re-entrant within a thread."""
        holder = self.change_holder()
        offset = change_offset(job_id)
        if offset in holder.held:
            yield
            return
        deadline = time.monotonic() + timeout
        while not holder.take(offset):
            if time.monotonic() > deadline:
                raise QueueError(f"job {job_id!r} is being changed by another process; try again")
            time.sleep(0.002)  # holders keep it for one commit: a few milliseconds
        try:
            yield
        finally:
            holder.drop(offset)

    # ---------------------------------------------------------------- new jobs

    def accept_drop(self, raw: bytes, fallback_id: str, now: datetime) -> Job:
        """A dropped file's job, validated exactly as ``enqueue`` validates input (its
        unique key is checked when it is published: ``adopting``)."""
        job = job_from_input(
            raw,
            default_max_retries=self.config.get("max-retries"),
            fallback_id=fallback_id,
            source="drop",
            now=now,
        )
        self.check_new(job)
        return job if job.state is JobState.HELD else self.workflow.placed(job, now)

    @contextlib.contextmanager
    def adopting(self, job: Job) -> Iterator[None]:
        """Around publishing an adopted drop: its unique key, like ``enqueue``'s."""
        with self.queues.using([job.queue]):
            if self.queues.get(job.queue) is None:  # removed since the drop was checked
                raise InvalidJob(
                    f"no queue named {job.queue!r}; create it with: queuectl queue add {job.queue}"
                )
            if not job.unique_key:
                yield
                return
            with self._adopting_unique(job):
                yield

    @contextlib.contextmanager
    def _adopting_unique(self, job: Job) -> Iterator[None]:
        assert job.unique_key
        with self.unique.locked([job.unique_key]):
            holder = self._unique_holder(job.unique_key, job.unique_for, utcnow())
            if holder is not None and holder != job.id:
                raise InvalidJob(f"unique key {job.unique_key!r} is held by job {holder!r}")
            self.unique.record(job.unique_key, job.id)
            yield

    def check_new(self, job: Job, batch: set[str] | None = None, label: str = "") -> None:
        """What a new job must satisfy beyond its own fields: whatever enqueue accepts, a
        worker must be able to read and run (exit 2 otherwise). ``label`` names the job in
        errors (default: by its id; a generated id means nothing to the user)."""
        label = label or f"job {job.id!r}"
        size = len(job.to_json())
        if size > MAX_JOB_FILE_BYTES // 2:
            raise InvalidJob(
                f"{label} is {size} bytes as a file; at most {MAX_JOB_FILE_BYTES // 2} "
                "(its command and env are too large)"
            )
        if self.queues.get(job.queue) is None:
            raise InvalidJob(
                f"no queue named {job.queue!r}; create it with: queuectl queue add {job.queue}"
            )
        if job.gpus:
            devices, _per = self.devices.current()
            if job.gpus > len(devices) and job.gpus > self._remote_gpus():
                raise InvalidJob(
                    f"{label} asks for {job.gpus} GPU device(s); {len(devices)} are "
                    "configured (queuectl config set gpus 0,1,... or auto)"
                )
        for dep in (*job.after, *job.after_any):
            if dep == job.id:
                raise InvalidJob(f"{label} cannot depend on itself")
            if (batch is None or dep not in batch) and self.folders.locate(dep) is None:
                raise InvalidJob(f"unknown dependency {dep!r}: no job with that id")

    def _remote_gpus(self) -> int:
        """The most GPUs a worker of a running ``--executor dask`` head's cluster advertises:
        a remote job's ``--gpus`` is checked against that, not only the local setting."""
        from queuectl.storage.remote_heads import RemoteHeads

        return RemoteHeads(self.home.root).advertised_gpus()

    def enqueue(
        self,
        jobs: list[Job],
        explicit_ids: set[str] | None = None,
        on_group: Callable[[list[Job]], None] | None = None,
        chunk: int = ENQUEUE_CHUNK,
    ) -> dict[str, str]:
        """Add new jobs; ``on_group`` hears of each group as soon as it is durable.

        Ids given by users (``explicit_ids``; None means all) must be new in every state:
        their change locks are held while they are checked and published, so two enqueues of
        one id cannot both succeed. Generated ids are unique by construction. A job whose
        ``unique_key`` another job still holds is not created: the result maps its id to the
        holder's. Each job goes where its dependencies send it (pending, blocked, or dead if
        one already failed; held with ``held``). If the disk fails midway, exactly the
        reported groups exist.
        """
        with self.queues.using({job.queue for job in jobs}):  # no queue removed meanwhile
            return self._enqueue(jobs, explicit_ids, on_group, chunk)

    def _enqueue(
        self,
        jobs: list[Job],
        explicit_ids: set[str] | None,
        on_group: Callable[[list[Job]], None] | None,
        chunk: int,
    ) -> dict[str, str]:
        seen: set[str] = set()
        for number, job in enumerate(jobs, 1):
            if job.id in seen:
                raise AlreadyExists(f"job {job.id!r} already exists")
            named = explicit_ids is None or job.id in explicit_ids
            label = (
                "" if named else ("the job" if len(jobs) == 1 else f"job {number} of {len(jobs)}")
            )
            self.check_new(job, seen, label)
            seen.add(job.id)
        checked = [j.id for j in jobs if explicit_ids is None or j.id in explicit_ids]
        keys = [j.unique_key for j in jobs if j.unique_key]
        with contextlib.ExitStack() as locks:
            if keys:
                locks.enter_context(self.unique.locked(keys))
            for job_id in checked:
                locks.enter_context(self.changing(job_id))
                if self.folders.locate(job_id) is not None:
                    raise AlreadyExists(f"job {job_id!r} already exists")
            placed, duplicates = self._place_new(jobs, utcnow())
            if any(job.on_finish for job in placed):
                self.hooks.enable(per_job=True)  # before the jobs exist: none is missed
            for start in range(0, len(placed), chunk):
                group = placed[start : start + chunk]
                for job in group:
                    if job.unique_key:
                        self.unique.record(job.unique_key, job.id)
                self.commits.publish_new(group)
                if on_group is not None:
                    on_group(group)
        return duplicates

    def _place_new(self, jobs: list[Job], now: datetime) -> tuple[list[Job], dict[str, str]]:
        known: dict[str, JobState] = {}
        keys: dict[str, str] = {}
        placed: list[Job] = []
        duplicates: dict[str, str] = {}
        for job in jobs:
            if job.unique_key:
                holder = keys.get(job.unique_key) or self._unique_holder(
                    job.unique_key, job.unique_for, now
                )
                if holder is not None:
                    duplicates[job.id] = holder
                    continue
                keys[job.unique_key] = job.id
            where = job if job.state is JobState.HELD else self.workflow.placed(job, now, known)
            known[job.id] = where.state
            placed.append(where)
        return placed, duplicates

    def _unique_holder(self, key: str, window: float | None, now: datetime) -> str | None:
        """The id of the job that still holds ``key`` against a new job whose
        ``unique_for`` is ``window``, if any (called under the key's lock)."""
        found = self._holding(key, window, now)
        return found[0] if found is not None else None

    def _holding(
        self, key: str, window: float | None, now: datetime, besides: str | None = None
    ) -> tuple[str, str] | None:
        """(id, state) of the job the key's entry names if it still holds the key: it is not
        finished, or it completed within ``window`` seconds (the window of the job being
        created or revived; the holder's own ``unique_for`` does not count)."""
        job_id = self.unique.holder_of(key)
        if job_id is None or job_id == besides:
            return None
        found = self.folders.locate(job_id)
        if found is None:
            return None
        try:
            job = read_job(found[1], found[0])
        except (OSError, InvalidJob):
            return None
        if job.unique_key != key:
            return None
        if job.state not in FINISHED_STATES:
            return job.id, job.state.value
        if job.state is JobState.COMPLETED and job.finished_at and window is not None:
            try:
                age = (now - parse_time(job.finished_at)).total_seconds()
            except ValueError:
                return None
            if age <= window:
                return job.id, f"completed {age:.0f}s ago, within {window:g}s"
        return None

    # ---------------------------------------------------------------- user operations

    def unfinished_in(self, queue: str) -> int:
        """How many jobs that are not finished name ``queue`` (reads their files)."""
        unfinished = tuple(s for s in JobState if s not in FINISHED_STATES)
        counts = self.folders.queue_counts(unfinished)
        return sum(counts.get(queue, {}).values())

    def restart(self, job_id: str, now: datetime) -> Job:
        """Run a finished job again (``Workflow.restart``), unless another job holds its
        unique key (``reviving``)."""
        with self.reviving(job_id, "restart", now) as revive:
            return self.workflow.restart(job_id, now, revive)

    @contextlib.contextmanager
    def reviving(self, job_id: str, verb: str, now: datetime) -> Iterator[Callable[[Job], None]]:
        """Around bringing a finished job back (restart, dlq retry): the unique key rule of
        ``enqueue`` applies to it. Refused (exit 1) while another job holds its key: one
        waiting, held, blocked, running or failed-waiting, or one that completed within the
        revived job's own ``unique_for`` (the window of the job that becomes live counts, as
        at enqueue). Otherwise the key's entry names the revived job before it is committed.

        The key's lock is taken before the job's change lock (the order ``enqueue`` uses),
        so the key is peeked at first and checked again under both locks."""
        key = self._unique_key_of(job_id)
        with self.unique.locked([key] if key else []):

            def revive(job: Job) -> None:
                if job.unique_key != key:
                    raise QueueError(f"cannot {verb} {job_id}: it changed meanwhile; try again")
                if not job.unique_key:
                    return
                holder = self._holding(job.unique_key, job.unique_for, now, job.id)
                if holder is not None:
                    raise QueueError(
                        f"unique key {job.unique_key!r} is held by job {holder[0]} "
                        f"({holder[1]}); {verb} it once that one is done, or cancel it"
                    )
                self.unique.record(job.unique_key, job.id)

            yield revive

    def _unique_key_of(self, job_id: str) -> str | None:
        found = self.folders.locate(job_id) if ID_PATTERN.fullmatch(job_id) else None
        if found is None:
            return None
        try:
            return read_job(found[1], found[0]).unique_key
        except (OSError, InvalidJob):
            return None

    def retry_dead(self, job_id: str, now: datetime) -> Job:
        """Move a dead job back to pending with attempts reset (the journal keeps history),
        unless another job holds its unique key (``reviving``)."""
        with self.reviving(job_id, "retry", now) as revive:
            return self._retry_dead(job_id, now, revive)

    def _retry_dead(self, job_id: str, now: datetime, revive: Callable[[Job], None]) -> Job:
        if not ID_PATTERN.fullmatch(job_id):
            raise NotFound(f"job {job_id!r} is not in the dead letter queue")
        with self.changing(job_id):
            path = self.home.job_path(JobState.DEAD, job_id)
            job = self._read_for_change(path, JobState.DEAD, "in the dead letter queue")
            revive(job)
            stamp = format_time(now)
            retried = with_state(
                job, JobState.PENDING, now, attempts=0, next_run_at=None, queued_at=stamp
            )
            # A dependent whose dependency failed waits for it again (blocked/).
            retried = self.workflow.placed(retried, now)
            if retried.state is JobState.DEAD:
                retried = replace(retried, state=JobState.BLOCKED)
            self.commits.commit([Change(retried, Event.RETRIED, remove=path)])
        return retried

    def cancel_waiting(self, job_id: str, now: datetime) -> Job | None:
        """Cancel a job that is not running (pending, failed, or orphaned in processing/).

        Returns None when the job is running (its run lock is held): the caller must then
        ask its worker to stop it. Raises NotFound / QueueError when there is nothing to
        cancel.
        """
        found = self.folders.locate(job_id)
        if found is None:
            raise NotFound(f"no job with id {job_id!r}")
        state, path = found
        if state in FINISHED_STATES:
            raise QueueError(f"job {job_id!r} has already finished ({state.value})")
        run = self.locks.holder()
        try:
            if state is JobState.PROCESSING and not run.take(job_offset(job_id)):
                return None  # running: its worker stops it
            with self.changing(job_id):
                if not os.path.lexists(path):
                    raise QueueError(f"job {job_id!r} moved while cancelling it; try again")
                job = self._read_for_change(path, state, f"in {state.value}/")
                cancelled = with_state(
                    job,
                    JobState.CANCELLED,
                    now,
                    next_run_at=None,
                    last_error="cancelled",
                    finished_at=format_time(now),
                )
                self.commits.commit([Change(cancelled, Event.CANCELLED, remove=path)])
        finally:
            run.close()
        return cancelled

    def delete(
        self,
        targets: Iterable[tuple[str, JobState]],
        now: datetime,
        keep: Callable[[Job], str | None] = lambda _job: None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Delete jobs for good (``cleanup``, ``dlq purge``): under each job's change lock,
        journaled before anything is removed. ``keep(job)`` returns a reason to spare a job.
        Returns (deleted ids, [(id, why not)])."""
        deleted: list[str] = []
        skipped: list[tuple[str, str]] = []
        chunk: list[tuple[str, JobState]] = []
        for target in targets:
            chunk.append(target)
            if len(chunk) >= DELETE_CHUNK:
                self._delete_chunk(chunk, now, keep, deleted, skipped, progress)
                chunk = []
        self._delete_chunk(chunk, now, keep, deleted, skipped, progress)
        return deleted, skipped

    def _delete_chunk(
        self,
        chunk: list[tuple[str, JobState]],
        now: datetime,
        keep: Callable[[Job], str | None],
        deleted: list[str],
        skipped: list[tuple[str, str]],
        progress: Callable[[int], None] | None,
    ) -> None:
        if not chunk:
            return
        with contextlib.ExitStack() as locks:
            victims: list[tuple[Job, Path]] = []
            for job_id, state in chunk:
                if not ID_PATTERN.fullmatch(job_id):
                    skipped.append((job_id, f"not in {state.value}/"))
                    continue
                locks.enter_context(self.changing(job_id))
                path = self.home.job_path(state, job_id)
                try:
                    job = read_job(path, state)
                except FileNotFoundError:
                    skipped.append((job_id, f"not in {state.value}/"))
                    continue
                except (OSError, InvalidJob) as exc:
                    skipped.append((job_id, f"cannot be read: {exc}"))
                    continue
                reason = keep(job)
                if reason is not None:
                    skipped.append((job_id, reason))
                    continue
                victims.append((job, path))
            removed = self.commits.delete(victims, now)
        deleted.extend(job.id for job in removed)
        if progress is not None:
            progress(len(chunk))

    def _read_for_change(self, path: Path, state: JobState, where: str) -> Job:
        try:
            return read_job(path, state)
        except FileNotFoundError:
            raise NotFound(f"job {path.stem!r} is not {where}") from None
        except OSError as exc:
            raise QueueError(f"cannot read job file {path}: {exc.strerror}") from None
        except InvalidJob as exc:
            raise QueueError(f"job file {path} is not a valid job: {exc}") from None

    # ---------------------------------------------------------------- settings

    def set_config(self, key: str, value: object) -> None:
        """Persist one setting atomically; the lock serialises concurrent ``config set``.
        A config.json that cannot be read is never overwritten (``Config.stored`` raises)."""
        self.write_config(lambda values: {**values, key: value})

    def write_config(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        from filelock import FileLock

        with FileLock(self.home.locks / "config.lock", thread_local=False):
            values = change(dict(self.config.stored()))
            data = (json.dumps(values, indent=2) + "\n").encode()
            path, fd = write_tmp(self.home.tmp, "config", data, self.mark.name)
            try:
                fsync_fd(fd, path)
            finally:
                os.close(fd)
            os.replace(path, self.home.config_file)
            fsync_dir(self.home.root)

    def close(self) -> None:
        self.commits.discard_blanks()
        self.journal.close()
        self.mark.close()
        self.locks.close()


def with_state(job: Job, state: JobState, now: datetime, **changes: Any) -> Job:
    """A copy of ``job`` in a new state, one revision later."""
    return replace(job, state=state, rev=job.rev + 1, updated_at=format_time(now), **changes)
