"""Claims: the worker-facing seam (prepare, complete, put back), like dramatiq's consumer.

A claim of ``<state>/<id>.json`` (``prepare`` then ``complete``):

1. take the job's **run lock** (its byte in ``locks/claims.lock``, ``locks.job_offset``) on
   a new open file description, without waiting: busy means another worker runs or claims
   the job, or a command of an earlier run of it (a background child that kept fd 3) is
   still alive; then take its **change lock** (held only while files move);
2. read the file as untrusted input (``jobfile``), check it is a job for this folder, that no
   other folder holds a newer or equal copy of it, and that it is due;
3. in ``complete``, check the name still points at the file read, and
   ``rename_noreplace(<state>/<id>.json, processing/<id>.json)`` — **this line is the
   claim**: of all processes racing on one source, the kernel lets exactly one rename win,
   and NOREPLACE never overwrites a job already in processing/.

The run lock's descriptor goes to the command as fd 3 and stays held as long as the worker
or anything the command started (that kept fd 3) lives: that is "never two runs at once".
A drop (a file another tool wrote into pending/) is adopted on the way: validated as
``enqueue`` would, journaled, and rewritten as a canonical job file before it is claimed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from queuectl.errors import InvalidJob, QueueError
from queuectl.job import ID_PATTERN, MAX_CLAIMABLE_REV, Job, JobState, format_time, parse_time
from queuectl.storage.commit import Committer
from queuectl.storage.drops import STORED_ONLY_FIELDS, Rejector, is_young
from queuectl.storage.durable import fsync_dir, rename_noreplace, unlink_all
from queuectl.storage.folders import Folders
from queuectl.storage.gpus import GPU_STALL, Devices
from queuectl.storage.home import Home
from queuectl.storage.jobfile import Untrusted, read_job, read_open
from queuectl.storage.locks import Holder, LockFile, change_offset, gate_offset, job_offset
from queuectl.storage.queues import QueueStore
from queuectl.storage.slots import take_slot

__all__ = ["BUSY_RETRY_SECONDS", "Claim", "ClaimMiss", "Claims", "Prepared"]

BUSY_RETRY_SECONDS: Final = 0.005
"""Another process is moving the job's files this instant: look again very soon."""

CLAIMABLE: Final = frozenset({JobState.PENDING, JobState.FAILED})


@dataclass
class Claim:
    """A job this process now owns: its file is in processing/ and ``lock`` holds its run
    lock and its queue slot (hand ``lock.fd`` to the command)."""

    job: Job
    lock: Holder
    path: Path
    origin: JobState
    slot: int = 0
    gpus: list[str] | None = None
    """The devices it holds a place on (None: the job asked for none)."""

    @property
    def fd(self) -> int:
        return self.lock.fd

    def release(self) -> None:
        self.lock.close()


@dataclass
class Prepared:
    """A job file locked, read and checked, not yet claimed (still in its folder); ``inode``
    is what the name must still point at when the claim completes."""

    job: Job
    lock: Holder
    path: Path
    origin: JobState
    inode: int

    def release(self) -> None:
        self.lock.close()


@dataclass
class ClaimMiss:
    """Why a claim did not happen; ``retry_at`` is set when it is worth trying again later.
    ``locked``: the run lock was busy (the caller backs off: it may be held for long)."""

    reason: str
    retry_at: float | None = None
    rejected: bool = False
    locked: bool = False
    parked: str | None = None
    """The queue whose limit or pause kept the job back: try it again when that changes."""


Accept = Callable[[bytes, str, datetime], Job]
"""Validates a drop's bytes (with the id its file name gives) as ``enqueue`` would."""


class Claims:
    def __init__(
        self,
        home: Home,
        folders: Folders,
        commits: Committer,
        locks: LockFile,
        rejector: Rejector,
        change: Callable[[], Holder],
        accept: Accept,
        queues: QueueStore,
        adopting: Callable[[Job], contextlib.AbstractContextManager[None]],
        devices: Devices,
    ) -> None:
        self.devices = devices
        self.local_devices = True
        """False for a head whose commands run on a Dask cluster: a job's GPUs are then a
        Dask resource request, and the devices of this host are not taken."""
        self.queues = queues
        self._adopting = adopting
        self.home = home
        self.folders = folders
        self.commits = commits
        self.locks = locks
        self.rejector = rejector
        self._change = change
        self._accept = accept

    def claim(self, name: str, state: JobState, worker: str, now: datetime) -> Claim | ClaimMiss:
        """``prepare`` then ``complete``."""
        prepared = self.prepare(name, state, now)
        if isinstance(prepared, ClaimMiss):
            return prepared
        return self.complete(prepared, worker, now)

    def prepare(self, name: str, state: JobState, now: datetime) -> Prepared | ClaimMiss:
        """Lock, read and check a job file without taking it: nothing changes on disk
        (except adopting a drop). While the returned ``Prepared`` is open, other claimers
        find the job locked; ``release`` it to let them have it."""
        src = Path(f"{self.home.root}/{state.value}/{name}")  # hot path: no pathlib parsing
        job_id = name[:-5] if name.endswith(".json") else ""
        if not ID_PATTERN.fullmatch(job_id):
            if state is JobState.PENDING:
                return self._adopt(src, now)
            return self._reject(src, None, "is not named <id>.json")
        run = self.locks.holder()
        try:
            result = self._prepare_locked(run, src, job_id, state, now)
        except BaseException:
            run.close()
            raise
        if isinstance(result, ClaimMiss):
            run.close()
            if result is _ADOPT:
                return self._adopt(src, now)  # under the locks of the id its JSON names
        return result

    def _prepare_locked(
        self, run: Holder, src: Path, job_id: str, state: JobState, now: datetime
    ) -> Prepared | ClaimMiss:
        if not run.take(job_offset(job_id)):
            return ClaimMiss("locked", locked=True)
        change = self._change()
        if not change.take(change_offset(job_id)):
            return ClaimMiss("busy", retry_at=time.time() + BUSY_RETRY_SECONDS)
        try:
            try:
                raw, st = read_open(src)
            except FileNotFoundError:
                return ClaimMiss("gone")
            except Untrusted as exc:
                return self._reject(src, job_id, str(exc))
            except OSError as exc:
                return ClaimMiss(f"cannot read: {exc.strerror}", retry_at=time.time() + 1.0)
            try:
                job = Job.from_json(raw)
            except InvalidJob as exc:
                if state is JobState.PENDING:
                    return _ADOPT
                return self._reject(src, job_id, f"is not a valid job file: {exc}")
            problem = _mismatch(job, job_id, state)
            if problem is not None:
                return self._reject(src, job_id, problem)
            other = self._other_copies(job, state)
            if other is not None:
                return other
            due = _due(job, state)
            if due > now.timestamp():
                return ClaimMiss("not due", retry_at=due)
            return Prepared(job, run, src, state, st.st_ino)
        finally:
            change.drop(change_offset(job_id))

    def complete(self, prepared: Prepared, worker: str, now: datetime) -> Claim | ClaimMiss:
        """Take a prepared job: the rename into ``processing/`` is the claim. On a miss the
        prepared job's lock is released.

        Under the queue's gate (shared: ``pause`` waits for it), the queue must not be paused
        and a slot below its limit must be free: the slot is taken on the job's run-lock
        description, so the command holds it as long as it holds the job."""
        job, src = prepared.job, prepared.path
        change = self._change()
        if not change.take(change_offset(job.id)):
            prepared.release()
            return ClaimMiss("busy", retry_at=time.time() + BUSY_RETRY_SECONDS)
        gate = gate_offset(job.queue)
        if not change.take(gate, shared=True):
            change.drop(change_offset(job.id))
            prepared.release()
            return ClaimMiss("queue being paused", retry_at=time.time() + BUSY_RETRY_SECONDS)
        try:
            queue = self.queues.get(job.queue)
            if queue is None or queue.paused:
                prepared.release()
                return ClaimMiss(f"queue {job.queue} paused or gone", parked=job.queue)
            slot = take_slot(prepared.lock, self.locks, queue)
            if slot is None:
                prepared.release()
                return ClaimMiss(f"queue {job.queue} is at its limit", parked=job.queue)
            local = bool(job.gpus) and self.local_devices
            devices = self.devices.take(prepared.lock, job.gpus) if local else None
            if local and devices is None:
                prepared.release()
                return ClaimMiss(f"{job.gpus} GPU device(s) not free", parked=GPU_STALL)
            try:
                current = os.lstat(src)  # still the file we read (nobody replaced the name)?
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != prepared.inode:
                prepared.release()
                return ClaimMiss("gone")
            dst = self.home.job_path(JobState.PROCESSING, job.id)
            try:
                moved = rename_noreplace(src, dst)
            except FileNotFoundError:
                moved = False
            if not moved:
                prepared.release()
                return ClaimMiss("already in processing")
        except BaseException:
            prepared.release()
            raise
        finally:
            change.drop(gate)
            change.drop(change_offset(job.id))
        job.worker = worker
        job.started_at = format_time(now)
        return Claim(
            job=job, lock=prepared.lock, path=dst, origin=prepared.origin, slot=slot, gpus=devices
        )

    def put_back(self, claim: Claim) -> None:
        """Undo a claim whose command did not run to the end (a stop). Nothing was journaled
        for the claim, so the job returns unchanged to where it was claimed from. A command
        of it that escaped the stop keeps the job locked until it exits, as any leftover."""
        change = self._change()
        change.wait(change_offset(claim.job.id))
        try:
            back = self.home.job_path(claim.origin, claim.job.id)
            if rename_noreplace(claim.path, back):
                fsync_dir(back.parent)
        finally:
            change.drop(change_offset(claim.job.id))
            claim.release()

    # ---------------------------------------------------------------- checks

    def _other_copies(self, job: Job, state: JobState) -> ClaimMiss | None:
        """A second copy of the job elsewhere: an older one is what an interrupted commit
        left (removed here, or by recovery if it is in processing/); a newer or equal one
        means this file is a stale or careless copy (rejected)."""
        for other_state, path in self.folders.copies(job.id, besides=state):
            try:
                other = read_job(path, other_state)
            except FileNotFoundError:
                continue
            except (InvalidJob, OSError):
                continue  # a bad copy elsewhere: its own reader rejects it
            if (other.generation, other.rev) >= (job.generation, job.rev):
                return self._reject(
                    self.home.job_path(state, job.id),
                    job.id,
                    f"is an older or equal copy of job {job.id!r}, which is in "
                    f"{other_state.value}/ (rev {other.rev})",
                )
            if other_state is JobState.PROCESSING:
                return ClaimMiss("recovering", retry_at=time.time() + 1.0)
            unlink_all([path])  # an interrupted commit's old copy; we hold its change lock
        return None

    # ---------------------------------------------------------------- drops

    def _adopt(self, src: Path, now: datetime) -> Prepared | ClaimMiss:
        """A dropped file whose name is not ``<id>.json``: read it to learn its id first."""
        try:
            raw, st = read_open(src)
        except FileNotFoundError:
            return ClaimMiss("gone")
        except Untrusted as exc:
            return self._reject(src, None, str(exc))
        except OSError as exc:
            return ClaimMiss(f"cannot read: {exc.strerror}", retry_at=time.time() + 1.0)
        stem = src.name[:-5] if src.name.endswith(".json") else src.name
        try:
            job = self._accept(raw, stem, now)
        except InvalidJob as exc:
            if is_young(st.st_mtime, now.timestamp()):
                return ClaimMiss("being written", retry_at=st.st_mtime + 2.0)
            return self._reject(src, None, _stored_error(raw) or str(exc))
        run = self.locks.holder()
        try:
            if not run.take(job_offset(job.id)):
                run.close()
                return ClaimMiss("locked", locked=True)
            change = self._change()
            if not change.take(change_offset(job.id)):
                run.close()
                return ClaimMiss("busy", retry_at=time.time() + BUSY_RETRY_SECONDS)
            try:
                result = self._publish_drop(run, src, job, st.st_ino, now)
            finally:
                change.drop(change_offset(job.id))
        except BaseException:
            run.close()
            raise
        if isinstance(result, ClaimMiss):
            run.close()
        return result

    def _publish_drop(
        self, run: Holder, src: Path, job: Job, inode: int, now: datetime
    ) -> Prepared | ClaimMiss:
        canonical = self.home.job_path(job.state, job.id)
        for _state, path in self.folders.copies(job.id):
            if path != src:
                return self._reject(src, job.id, f"job id {job.id!r} already exists")
        try:
            if os.lstat(src).st_ino != inode:
                return ClaimMiss("gone")
        except FileNotFoundError:
            return ClaimMiss("gone")
        try:
            with self._adopting(job):
                self.commits.adopt(job, src, canonical, src.name)
        except InvalidJob as exc:
            return self._reject(src, job.id, str(exc))
        if job.state is not JobState.PENDING:
            return ClaimMiss(f"adopted into {job.state.value}/")  # blocked, held or dead
        try:
            st = os.lstat(canonical)
        except FileNotFoundError:
            return ClaimMiss("gone")
        return Prepared(job, run, canonical, JobState.PENDING, st.st_ino)

    def _reject(self, src: Path, job_id: str | None, reason: str) -> ClaimMiss:
        """Move a file that is not a valid job aside (under its change lock when it has a
        job's name, so a legitimate write of that name cannot be caught in between)."""
        change = self._change() if job_id else None
        locked_here = False
        if change is not None and job_id and change_offset(job_id) not in change.held:
            change.wait(change_offset(job_id))
            locked_here = True
        try:
            message = self.rejector.reject(src, reason)
        except OSError as exc:
            raise QueueError(f"cannot move {src} to rejected/: {exc.strerror}") from exc
        finally:
            if locked_here and change is not None and job_id:
                change.drop(change_offset(job_id))
        if message is None:
            return ClaimMiss("gone")
        return ClaimMiss(message, rejected=True)


def _mismatch(job: Job, job_id: str, state: JobState) -> str | None:
    if job.id != job_id:
        return f"holds job {job.id!r}, not {job_id!r}"
    if job.state is not state:
        return f"says state {job.state.value!r} but is in {state.value}/"
    if job.rev >= MAX_CLAIMABLE_REV:
        return f"has an implausible revision {job.rev}"
    return None


def _stored_error(raw: bytes) -> str | None:
    """Why a drop written to look like a stored job file is not one (None for a plain
    new-job drop, whose own validation error says more)."""
    from queuectl.job import parse_object

    try:
        if not STORED_ONLY_FIELDS & set(parse_object(raw)):
            return None
        Job.from_json(raw)
    except InvalidJob as exc:
        return f"is not a valid job file: {exc}"
    return None


_ADOPT: Final = ClaimMiss("a drop: adopt it")


def _due(job: Job, state: JobState) -> float:
    wanted = job.next_run_at if state is JobState.FAILED else job.run_at
    if not wanted:
        return 0.0
    try:
        return parse_time(wanted).timestamp()
    except ValueError:
        return 0.0
