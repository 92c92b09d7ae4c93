"""Where a waiting job belongs, and the user operations that move one: hold, release,
restart, edit, and settling a job that waits for its dependencies.

Dependencies: ``after`` ids must have completed, ``after_any`` ids must have finished
(completed, dead or cancelled). A job whose dependencies are not all satisfied waits in
``blocked/``; once they are, it moves to ``pending/`` (``unblocked``); if an ``after``
dependency ended dead or cancelled it goes to ``dead/`` with the reason (and its own
dependents follow, down a chain), unless its queue is paused: then nothing cascades, so the
user can fix and retry the failed dependency first. Workers settle blocked jobs when a
dependency reaches a final state (``worker.dependencies``); nothing here runs by itself.

Every operation takes the job's change lock, re-reads the job under it and commits the
change with the usual protocol, so none can race a claim, a commit or another operation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from queuectl.errors import InvalidJob, NotFound, QueueError
from queuectl.job import (
    FINISHED_STATES,
    ID_PATTERN,
    WAITING_STATES,
    Job,
    JobState,
    format_time,
    parse_time,
)
from queuectl.storage.commit import Change, Committer
from queuectl.storage.events import Event
from queuectl.storage.folders import Folders
from queuectl.storage.home import Home
from queuectl.storage.jobfile import read_job
from queuectl.storage.queues import QueueStore

__all__ = ["EDITABLE", "Verdict", "Workflow"]

EDITABLE: Final = frozenset({"command", "priority", "queue", "run_at", "max_retries", "labels"})


@dataclass(frozen=True)
class Verdict:
    """What a job's dependencies say: ``ready``; ``waiting`` for ``ids``; or ``failed``
    because dependency ``ids[0]`` ended ``ended``."""

    kind: str
    ids: tuple[str, ...] = ()
    ended: str = ""

    @property
    def reason(self) -> str:
        return f"dependency {self.ids[0]} ended {self.ended}" if self.kind == "failed" else ""


READY: Final = Verdict("ready")


class Workflow:
    def __init__(
        self,
        home: Home,
        folders: Folders,
        commits: Committer,
        queues: QueueStore,
        changing: Callable[[str], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.home = home
        self.folders = folders
        self.commits = commits
        self.queues = queues
        self._changing = changing

    # ---------------------------------------------------------------- dependencies

    def verdict(self, job: Job, known: dict[str, JobState] | None = None) -> Verdict:
        """Judge ``job``'s dependencies by where they are now (``known``: states of jobs
        not yet on disk, such as earlier jobs of the same enqueue batch)."""
        waiting = []
        for dep in job.after:
            state = self._state_of(dep, known)
            if state in (JobState.DEAD, JobState.CANCELLED):
                return Verdict("failed", (dep,), state.value)
            if state is None:
                return Verdict("failed", (dep,), "deleted")
            if state is not JobState.COMPLETED:
                waiting.append(dep)
        for dep in job.after_any:
            state = self._state_of(dep, known)
            if state is not None and state not in FINISHED_STATES:
                waiting.append(dep)
        return Verdict("waiting", tuple(waiting)) if waiting else READY

    def _state_of(self, job_id: str, known: dict[str, JobState] | None) -> JobState | None:
        """Where a dependency is, read under its change lock: a commit that moves it is
        either complete or not begun (mid-commit, a job has a copy in two folders)."""
        if known is not None and job_id in known:
            return known[job_id]
        with self._changing(job_id):
            found = self.folders.locate(job_id)
        return found[0] if found else None

    def placed(self, job: Job, now: datetime, known: dict[str, JobState] | None = None) -> Job:
        """``job`` (ready to run) in the folder its dependencies send it to: pending,
        blocked, or dead when an ``after`` dependency failed (unless its queue is paused)."""
        if not job.after and not job.after_any:
            return job
        verdict = self.verdict(job, known)
        if verdict.kind == "waiting":
            return replace(job, state=JobState.BLOCKED)
        if verdict.kind == "failed":
            if self._paused(job.queue):
                return replace(job, state=JobState.BLOCKED)
            return replace(
                job,
                state=JobState.DEAD,
                last_error=verdict.reason,
                finished_at=format_time(now),
                next_run_at=None,
            )
        return job

    def waiting_for(self, job: Job) -> list[str]:
        """The dependencies of a blocked job that are not satisfied yet."""
        verdict = self.verdict(job)
        return list(verdict.ids) if verdict.kind != "ready" else []

    def needed(self) -> dict[str, list[str]]:
        """Dependency id -> the blocked jobs that wait for it (cleanup and purge spare those)."""
        needed: dict[str, list[str]] = {}
        for job in self.folders.jobs(JobState.BLOCKED):
            for dep in (*job.after, *job.after_any):
                needed.setdefault(dep, []).append(job.id)
        return needed

    def settle_blocked(self, job_id: str, now: datetime) -> tuple[str, Job] | None:
        """Move a blocked job on if its dependencies allow it: (a line for the log, the job
        as it is now), or None when it stays (or is no longer blocked)."""
        with self._changing(job_id):
            path = self.home.job_path(JobState.BLOCKED, job_id)
            try:
                job = read_job(path, JobState.BLOCKED)
            except (OSError, InvalidJob):
                return None
            verdict = self.verdict(job)
            if verdict.kind == "waiting":
                return None
            stamp = format_time(now)
            if verdict.kind == "ready":
                moved = _next(job, JobState.PENDING, stamp, queued_at=stamp)
                self.commits.commit([Change(moved, Event.UNBLOCKED, remove=path)])
                return f"unblocked {job_id}: its dependencies are done", moved
            if self._paused(job.queue):
                return None  # nothing cascades while the queue is paused
            dead = _next(job, JobState.DEAD, stamp, last_error=verdict.reason, finished_at=stamp)
            self.commits.commit([Change(dead, Event.DEAD, remove=path)])
            return f"dead {job_id}: {verdict.reason}", dead

    def _paused(self, queue: str) -> bool:
        found = self.queues.get(queue)
        return bool(found and found.paused)

    # ---------------------------------------------------------------- user operations

    def hold(self, job_id: str, now: datetime) -> Job:
        """Keep a waiting job (pending, failed-waiting, blocked) from running until released."""
        with self._located(job_id, "hold") as (state, path, job):
            if state is JobState.HELD:
                return job
            if state not in (JobState.PENDING, JobState.FAILED, JobState.BLOCKED):
                raise QueueError(_refusal("hold", job_id, state))
            held = _next(job, JobState.HELD, format_time(now))
            self.commits.commit([Change(held, Event.HELD, remove=path)])
            return held

    def release(self, job_id: str, now: datetime) -> Job:
        """Let a held job run: back to failed-waiting if its retry is still due later, else
        wherever its dependencies send it (pending or blocked)."""
        with self._located(job_id, "release") as (state, path, job):
            if state is not JobState.HELD:
                raise QueueError(f"cannot release {job_id}: it is not held ({state.value})")
            stamp = format_time(now)
            if job.next_run_at and _later(job.next_run_at, now):
                released = _next(job, JobState.FAILED, stamp)
            else:
                released = self.placed(
                    _next(job, JobState.PENDING, stamp, next_run_at=None, queued_at=stamp), now
                )
            self.commits.commit([Change(released, Event.RELEASED, remove=path)])
            return released

    def restart(
        self, job_id: str, now: datetime, revive: Callable[[Job], None] | None = None
    ) -> Job:
        """Run a finished job again: attempts start over, runs and history go on.
        ``revive(job)`` is called before the commit (``Store.reviving``: its unique key)."""
        with self._located(job_id, "restart") as (state, path, job):
            if state not in FINISHED_STATES:
                raise QueueError(_refusal("restart", job_id, state))
            if revive is not None:
                revive(job)
            stamp = format_time(now)
            again = self.placed(
                _next(
                    job,
                    JobState.PENDING,
                    stamp,
                    attempts=0,
                    next_run_at=None,
                    queued_at=stamp,
                    finished_at=None,
                ),
                now,
            )
            self.commits.commit([Change(again, Event.RESTARTED, remove=path)])
            return again

    def edit(self, job_id: str, changes: dict[str, Any], now: datetime) -> Job:
        """Change fields of a job that is not running and not finished."""
        unknown = set(changes) - EDITABLE
        if unknown:
            raise QueueError(f"cannot edit {', '.join(sorted(unknown))}")
        target = [changes["queue"]] if "queue" in changes else []
        with self.queues.using(target):  # the queue cannot be removed meanwhile
            if target:
                self.queues.require(target[0])
            return self._edit(job_id, changes, now)

    def _edit(self, job_id: str, changes: dict[str, Any], now: datetime) -> Job:
        with self._located(job_id, "edit") as (state, path, job):
            if state not in WAITING_STATES:
                raise QueueError(_refusal("edit", job_id, state))
            data = {**job.to_dict(), **changes}
            try:
                edited = Job.from_dict(data)
            except InvalidJob as exc:
                raise InvalidJob(f"cannot edit {job_id}: {exc}") from None
            edited = replace(edited, state=state, rev=job.rev + 1, updated_at=format_time(now))
            self.commits.commit([Change(edited, Event.EDITED, remove=path)])
            return edited

    @contextlib.contextmanager
    def _located(self, job_id: str, action: str) -> Iterator[tuple[JobState, Path, Job]]:
        if not ID_PATTERN.fullmatch(job_id):
            raise NotFound(f"no job with id {job_id!r}")
        with self._changing(job_id):
            found = self.folders.locate(job_id)
            if found is None:
                raise NotFound(f"no job with id {job_id!r}")
            state, path = found
            if state is JobState.PROCESSING:
                raise QueueError(f"cannot {action} {job_id}: it is running")
            try:
                job = read_job(path, state)
            except (OSError, InvalidJob) as exc:
                raise QueueError(f"cannot {action} {job_id}: {exc}") from None
            yield state, path, job


def _next(job: Job, state: JobState, stamp: str, **changes: Any) -> Job:
    return replace(job, state=state, rev=job.rev + 1, updated_at=stamp, **changes)


def _later(stamp: str, now: datetime) -> bool:
    try:
        return parse_time(stamp) > now
    except ValueError:
        return False


def _refusal(action: str, job_id: str, state: JobState) -> str:
    if action == "restart":
        return f"cannot restart {job_id}: it has not finished ({state.value})"
    if state in FINISHED_STATES:
        return (
            f"cannot {action} {job_id}: it has finished ({state.value}); "
            f"use 'queuectl restart {job_id}'"
        )
    return f"cannot {action} {job_id}: it is {state.value}"
