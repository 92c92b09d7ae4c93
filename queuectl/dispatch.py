"""Which job to try next, without listing ``pending/`` per claim.

Each worker process keeps a ``RunnableIndex``: a heap of (runnable-since time, arrival order,
file name) built by one folder scan at start-up and kept current by inotify events. Claiming
pops the heap top (O(log n)), so its cost does not grow with the number of files in
``pending/`` or ``completed/``. Entries can be stale (another process claimed the job first);
the claim then fails cheaply and the entry is dropped.

The ``Dispatcher`` thread feeds the index, recovers orphaned jobs in ``processing/`` and, in
burst mode, notices when the home has been drained.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

from queuectl.errors import QueueError
from queuectl.job import Job, JobState, utcnow
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.store import Store
from queuectl.watch import DirWatcher, open_watcher

__all__ = ["RECOVERY_INTERVAL_SECONDS", "Dispatcher", "RunnableIndex"]

RECOVERY_INTERVAL_SECONDS: Final = 1.0
"""How often ``processing/`` is checked for jobs whose worker and command are both gone."""

RESCAN_INTERVAL_SECONDS: Final = 60.0
"""A full rescan of pending/ and failed/, in case a change notification was ever missed."""

POLL_INTERVAL_SECONDS: Final = 0.2
"""Rescan interval when inotify is unavailable."""

Key = tuple[str, str]  # (state folder, file name)


class RunnableIndex:
    """Thread-safe heap of jobs to try, ordered by (runnable since, arrival)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, str]] = []
        self._queued: dict[Key, float] = {}
        self._order = itertools.count()
        self._closed = False
        self._clock = clock

    def add(self, state: JobState, name: str, due: float) -> None:
        key = (state.value, name)
        with self._cond:
            known = self._queued.get(key)
            if known is not None and known <= due:
                return
            self._queued[key] = due
            heapq.heappush(self._heap, (due, next(self._order), state.value, name))
            self._cond.notify()

    def add_many(self, items: list[tuple[JobState, str, float]]) -> None:
        """Add a whole folder scan at once: one heapify (O(n)) instead of n pushes."""
        with self._cond:
            for state, name, due in items:
                key = (state.value, name)
                known = self._queued.get(key)
                if known is None or due < known:
                    self._queued[key] = due
                    self._heap.append((due, next(self._order), state.value, name))
            heapq.heapify(self._heap)
            self._cond.notify_all()

    def take(self) -> tuple[JobState, str] | None:
        """Block until a job is runnable (or the index is closed, then None)."""
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, state, name = self._heap[0]
                if self._queued.get((state, name)) != due:
                    heapq.heappop(self._heap)  # superseded by an earlier entry
                    continue
                wait = due - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                del self._queued[(state, name)]
                return JobState(state), name
            return None

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Dispatcher(threading.Thread):
    """Feeds the index from inotify, recovers orphans, detects a drained home in burst mode."""

    def __init__(
        self,
        store: Store,
        index: RunnableIndex,
        *,
        stopping: threading.Event,
        on_drained: Callable[[], None] | None,
        is_idle: Callable[[], bool],
        log: Callable[[str], None],
        recovery_interval: float = RECOVERY_INTERVAL_SECONDS,
    ) -> None:
        super().__init__(name="queuectl-dispatcher", daemon=True)
        self.store = store
        self.index = index
        self.stopping = stopping
        self.on_drained = on_drained
        self.is_idle = is_idle
        self.log = log
        self.recovery_interval = recovery_interval
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.error: BaseException | None = None

    def wake(self) -> None:
        """Called by worker threads when they go idle and by the stop path."""
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by the pool, never silently lost
            self.error = exc
            self.stopping.set()
            self.index.close()

    def _loop(self) -> None:
        home = self.store.home
        watcher = open_watcher([home.state_dir(JobState.PENDING), home.state_dir(JobState.FAILED)])
        self.rescan()
        self.recover()
        rescan_every = RESCAN_INTERVAL_SECONDS if watcher else POLL_INTERVAL_SECONDS
        next_rescan = time.monotonic() + rescan_every
        next_recovery = time.monotonic() + self.recovery_interval
        try:
            while not self.stopping.is_set():
                timeout = max(0.0, min(next_rescan, next_recovery) - time.monotonic())
                readable = [self._wake_r] + ([watcher.fileno()] if watcher else [])
                ready, _, _ = select.select(readable, [], [], timeout)
                if self._wake_r in ready:
                    _drain(self._wake_r)
                if watcher is not None and watcher.fileno() in ready:
                    self._handle_events(watcher)
                now = time.monotonic()
                if now >= next_rescan:
                    self.rescan()
                    next_rescan = now + rescan_every
                if now >= next_recovery:
                    self.recover()
                    next_recovery = time.monotonic() + self.recovery_interval
                if self.on_drained is not None and self._drained():
                    self.on_drained()
                    return
        finally:
            if watcher is not None:
                watcher.close()

    def _handle_events(self, watcher: DirWatcher) -> None:
        pending_dir = self.store.home.state_dir(JobState.PENDING)
        for event in watcher.read():
            if event.directory is None:
                self.rescan()
            elif _is_candidate(event.name):
                state = JobState.PENDING if event.directory == pending_dir else JobState.FAILED
                self.index.add(state, event.name, self._due(state, event.directory / event.name))

    def rescan(self) -> None:
        """Index every pending and failed job: one stat per pending file, one heapify."""
        now = time.time()
        pending = [
            (JobState.PENDING, name, min(mtime / 1e9, now))
            for mtime, name in self.store.job_entries(JobState.PENDING)
        ]
        self.index.add_many(pending)
        directory = self.store.home.state_dir(JobState.FAILED)
        failed = [
            (JobState.FAILED, name, self._due(JobState.FAILED, directory / name))
            for name in self.store.job_names(JobState.FAILED)
        ]
        self.index.add_many(failed)

    def _due(self, state: JobState, path: Path) -> float:
        now = time.time()
        try:
            if state is JobState.PENDING:
                return min(os.lstat(path).st_mtime, now)
            job = Job.from_json(path.read_bytes())
        except (OSError, QueueError):
            return now  # the claim will sort it out (gone, or rejected with a reason)
        if not job.next_run_at:
            return now
        from queuectl.job import parse_time

        try:
            return parse_time(job.next_run_at).timestamp()
        except ValueError:
            return now

    def recover(self) -> None:
        """Return jobs whose worker and command are both gone to the queue (or the DLQ)."""
        directory = self.store.home.state_dir(JobState.PROCESSING)
        for name in os.listdir(directory):
            if not _is_candidate(name):
                continue
            done = self.store.recover_orphan(name, self._lost)
            if done is not None:
                self.log(done)
                self.index.add(JobState.PENDING, name, time.time())

    def _lost(self, job: Job) -> Job:
        outcome = Outcome(OutcomeKind.WORKER_LOST, error="worker lost while running it")
        backoff = self.store.config.get("backoff-base")
        return after_attempt(replace(job, worker=None), outcome, backoff_base=backoff, now=utcnow())

    def _drained(self) -> bool:
        if len(self.index) or not self.is_idle():
            return False
        return all(
            self.store.count(s) == 0
            for s in (JobState.PENDING, JobState.FAILED, JobState.PROCESSING)
        )

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)


def _is_candidate(name: str) -> bool:
    return not name.startswith(".") and not name.endswith((".tmp", "~"))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
