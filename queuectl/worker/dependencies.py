"""Moving blocked jobs on when their dependencies finish, without re-reading them per claim.

Each worker process keeps, for the jobs in ``blocked/``, which ids they wait for (one read
per blocked job: a scan at start, then inotify on ``blocked/``). When a job reaches a final
state anywhere in the home (its file appears in ``completed/``, ``dead/`` or ``cancelled/``:
inotify, watched only while something is blocked), the jobs waiting for it are settled
(``Workflow.settle_blocked``: under each one's change lock, to ``pending/`` or, if an
``after`` dependency failed, to ``dead/``, which in turn settles its own dependents).

A blocked job is also settled when it arrives (its dependencies may have finished while it
was being enqueued) and by the periodic rescan, so nothing depends on seeing every event.
Every worker process does this; the change lock makes the first one do it and the others
find the job gone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final

from queuectl.errors import InvalidJob, QueueError, describe
from queuectl.job import JobState, utcnow
from queuectl.storage.jobfile import is_job_name, read_job
from queuectl.storage.store import Store

__all__ = ["DependencyTracker"]

FINAL_FOLDERS: Final = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


class DependencyTracker:
    def __init__(
        self,
        store: Store,
        log: Callable[[str], None],
        released: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self.log = log
        self.released = released
        """Told (job id, queue) of each job moved to pending/, so the index has it at once."""
        self._waits: dict[str, tuple[str, ...]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._guard = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether anything is blocked (the final-state folders need watching)."""
        with self._guard:
            return bool(self._waits)

    def scan(self) -> None:
        """Read every blocked job (at start and on each rescan) and settle what can move."""
        directory = self.store.home.state_dir(JobState.BLOCKED)
        present = set()
        for name in os.listdir(directory):
            if is_job_name(name) and name.endswith(".json"):
                present.add(name[:-5])
                self.arrived(name)
        with self._guard:
            gone = [job_id for job_id in self._waits if job_id not in present]
        for job_id in gone:
            self._forget(job_id)

    def arrived(self, name: str) -> None:
        """A file appeared (or changed) in blocked/: learn what it waits for, then try it."""
        if not name.endswith(".json"):
            return
        job_id = name[:-5]
        try:
            job = read_job(self.store.home.job_path(JobState.BLOCKED, job_id), JobState.BLOCKED)
        except (OSError, InvalidJob):
            self._forget(job_id)
            return
        waits = tuple(dict.fromkeys((*job.after, *job.after_any)))
        with self._guard:
            self._waits[job_id] = waits
            for dep in waits:
                self._dependents.setdefault(dep, set()).add(job_id)
        self.settle(job_id)

    def finished(self, name: str) -> None:
        """A job reached a final state: settle whatever waited for it."""
        if not name.endswith(".json"):
            return
        with self._guard:
            waiting = sorted(self._dependents.get(name[:-5], ()))
        for job_id in waiting:
            self.settle(job_id)

    def settle(self, job_id: str) -> None:
        try:
            done = self.store.workflow.settle_blocked(job_id, utcnow())
        except QueueError as exc:
            self.log(f"error: cannot settle blocked job {job_id}: {describe(exc)}")
            return
        if done is None:
            if not os.path.lexists(self.store.home.job_path(JobState.BLOCKED, job_id)):
                self._forget(job_id)
            return
        message, job = done
        self.log(message)
        self._forget(job_id)
        if job.state is JobState.PENDING:
            self.released(job_id, job.queue)

    def settle_queue(self, queue: str) -> None:
        """A queue was resumed: what it held back from cascading may move now."""
        for job_id in self.blocked_ids():
            try:
                job = read_job(self.store.home.job_path(JobState.BLOCKED, job_id), None)
            except (OSError, InvalidJob):
                continue
            if job.queue == queue:
                self.settle(job_id)

    def blocked_ids(self) -> list[str]:
        with self._guard:
            return sorted(self._waits)

    def _forget(self, job_id: str) -> None:
        with self._guard:
            for dep in self._waits.pop(job_id, ()):
                dependents = self._dependents.get(dep)
                if dependents is not None:
                    dependents.discard(job_id)
                    if not dependents:
                        del self._dependents[dep]
