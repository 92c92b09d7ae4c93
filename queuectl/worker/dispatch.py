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
import json
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from queuectl.config import backoff_policy
from queuectl.job import Job, JobState, parse_time, utcnow
from queuectl.scheduler import queue_key, worker_lost
from queuectl.storage.durable import read_regular
from queuectl.storage.jobfile import MAX_JOB_FILE_BYTES, is_job_name
from queuectl.storage.store import Store
from queuectl.worker.watch import DirWatcher, open_watcher

__all__ = ["RECOVERY_INTERVAL_SECONDS", "Dispatcher", "RunnableIndex"]

RECOVERY_INTERVAL_SECONDS: Final = 1.0
"""How often ``processing/`` is checked for jobs whose worker and command are both gone."""

RESCAN_INTERVAL_SECONDS: Final = 60.0
"""A full scan of pending/ and failed/, in case a change notification was ever missed."""

RESCAN_CHUNK: Final = 1000
"""A scan of pending/ and failed/ reads and indexes this many files per step."""

RESCAN_PACE_SECONDS: Final = 0.25
"""Between two chunks of a scan, unless the workers are about to run out of indexed jobs."""

POLL_INTERVAL_SECONDS: Final = 0.2
"""Rescan interval when inotify is unavailable."""

Key = tuple[str, str]  # (state folder, file name)


class RunnableIndex:
    """Thread-safe index of jobs to try next.

    Jobs whose time has not come (a retry's ``next_run_at``, a ``run_at``, a claim to try again
    shortly) wait in a heap ordered by that time; runnable ones sit in a heap ordered by
    ``queue_key(runnable since, priority)``: oldest first, with each priority step worth a
    minute of waiting (aging), so high priorities go first and nothing starves.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._cond = threading.Condition()
        self._waiting: list[tuple[float, int, str, str]] = []
        self._ready: list[tuple[float, int, str, str]] = []
        self._queued: dict[Key, tuple[float, int]] = {}
        self._order = itertools.count()
        self._closed = False
        self._clock = clock

    def add(self, state: JobState, name: str, due: float, priority: int = 0) -> None:
        with self._cond:
            if self._put(state, name, due, priority, self._clock()):
                self._cond.notify()

    def add_many(self, items: list[tuple[JobState, str, float, int]]) -> None:
        """Add a chunk of a folder scan under one lock hold."""
        with self._cond:
            now = self._clock()
            # Into a big heap a chunk is pushed entry by entry; re-heapifying 100,000 entries
            # for every chunk of 1,000 would cost more.
            bulk = len(items) * 8 >= len(self._ready) + len(self._waiting)
            for state, name, due, priority in items:
                self._put(state, name, due, priority, now, heap_push=not bulk)
            if bulk:
                heapq.heapify(self._ready)
                heapq.heapify(self._waiting)
            self._cond.notify_all()

    def _put(
        self,
        state: JobState,
        name: str,
        due: float,
        priority: int,
        now: float,
        heap_push: bool = True,
    ) -> bool:
        key = (state.value, name)
        known = self._queued.get(key)
        if known is not None and known[0] <= due and known[1] >= priority:
            return False
        self._queued[key] = (due, priority)
        if due <= now:
            entry = (queue_key(due, priority), next(self._order), state.value, name)
            target = self._ready
        else:
            entry = (due, next(self._order), state.value, name)
            target = self._waiting
        if heap_push:
            heapq.heappush(target, entry)
        else:
            target.append(entry)
        return True

    def take(self, block: bool = True) -> tuple[JobState, str] | None:
        """Block until a job is runnable (or the index is closed, then None); with
        ``block=False``, None at once when nothing is runnable now."""
        entry = self.take_entry(block)
        return None if entry is None else (entry[0], entry[1])

    def take_entry(self, block: bool = True) -> tuple[JobState, str, float, int] | None:
        """``take``, with the entry's runnable-since time and priority, so that an entry taken
        too early can be put back with ``add`` exactly where it was."""
        with self._cond:
            while not self._closed:
                now = self._clock()
                self._promote(now)
                if self._ready:
                    _, _, state, name = heapq.heappop(self._ready)
                    key = (state, name)
                    if key not in self._queued or self._queued[key][0] > now:
                        continue  # superseded (claimed, or re-added for later)
                    due, priority = self._queued.pop(key)
                    return JobState(state), name, due, priority
                if not block:
                    return None
                self._cond.wait(self._waiting[0][0] - now if self._waiting else None)
            return None

    def _promote(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            due, order, state, name = heapq.heappop(self._waiting)
            known = self._queued.get((state, name))
            if known is not None and known[0] == due:
                heapq.heappush(self._ready, (queue_key(due, known[1]), order, state, name))

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def runnable(self) -> int:
        """About how many entries are runnable now (stale ones included)."""
        return len(self._ready)

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
        on_cancel: Callable[[str], None] | None = None,
        on_stop: Callable[[bool], None] | None = None,
        own_id: str = "",
        on_tick: Callable[[], float | None] | None = None,
    ) -> None:
        super().__init__(name="queuectl-dispatcher", daemon=True)
        self.on_stop = on_stop
        self.own_id = own_id
        self.on_tick = on_tick
        self.store = store
        self.index = index
        self.stopping = stopping
        self.on_drained = on_drained
        self.is_idle = is_idle
        self.log = log
        self.recovery_interval = recovery_interval
        self.on_cancel = on_cancel
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.error: BaseException | None = None
        self._scan: Iterator[bool] | None = None

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
        watcher = open_watcher(
            [
                home.state_dir(JobState.PENDING),
                home.state_dir(JobState.FAILED),
                home.cancel_requests,
                home.stop_requests,
            ]
        )
        self._start_scan()
        self.recover()
        self.check_stop_request()
        rescan_every = RESCAN_INTERVAL_SECONDS if watcher else POLL_INTERVAL_SECONDS
        next_rescan = time.monotonic() + rescan_every
        next_recovery = time.monotonic() + self.recovery_interval
        next_chunk = time.monotonic()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if watcher is not None:
            poller.register(watcher.fileno(), select.POLLIN)
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if self._scan is not None and (
                    now >= next_chunk or self.index.runnable() < RESCAN_CHUNK // 2
                ):
                    self._read_chunk()
                    next_chunk = now + RESCAN_PACE_SECONDS
                if self.on_drained is not None and self._drained():
                    self.on_drained()
                    return
                due = min(next_rescan, next_recovery)
                if self._scan is not None:
                    due = min(due, next_chunk)
                if self.on_tick is not None:
                    ticked = self.on_tick()
                    if ticked is not None:
                        due = min(due, ticked)
                wait_ms = max(0, int((due - time.monotonic()) * 1000 + 0.999))
                ready = {fd for fd, _ in poller.poll(wait_ms)}  # poll: fds may be >= 1024
                if self._wake_r in ready:
                    _drain(self._wake_r)
                if watcher is not None and watcher.fileno() in ready:
                    self._handle_events(watcher)
                now = time.monotonic()
                if now >= next_rescan:
                    self._start_scan()
                    self.check_cancel_requests()
                    self.check_stop_request()
                    next_rescan = now + rescan_every
                if now >= next_recovery:
                    self.recover()
                    next_recovery = time.monotonic() + self.recovery_interval
        finally:
            if watcher is not None:
                watcher.close()

    def _handle_events(self, watcher: DirWatcher) -> None:
        pending_dir = self.store.home.state_dir(JobState.PENDING)
        for event in watcher.read():
            if event.directory is None:
                # Events were lost: a scan under way listed the folders before them.
                self._start_scan(restart=True)
                self.check_cancel_requests()
            elif event.directory == self.store.home.cancel_requests:
                if self.on_cancel is not None:
                    self.on_cancel(event.name)
            elif event.directory == self.store.home.stop_requests:
                if event.name == self.own_id:
                    self.check_stop_request()
            elif is_job_name(event.name):
                state = JobState.PENDING if event.directory == pending_dir else JobState.FAILED
                path = event.directory / event.name
                self.index.add(state, event.name, *self._schedule(state, path, time.time()))

    def rescan(self) -> None:
        """Index every pending and failed job now (the loop reads a scan in paced chunks)."""
        for _ in self._scan_chunks():
            pass

    def _start_scan(self, restart: bool = False) -> None:
        """Begin a scan unless one is under way (or start over); its first chunk is read at
        once."""
        if self._scan is None or restart:
            self._scan = self._scan_chunks()
            self._read_chunk()

    def _read_chunk(self) -> None:
        if self._scan is not None and next(self._scan, None) is None:
            self._scan = None

    def _scan_chunks(self) -> Iterator[bool]:
        """Index pending and failed jobs, oldest first, one chunk per step.

        Each file is read for its priority and run_at. The loop reads one chunk at once and
        then one every ``RESCAN_PACE_SECONDS``, sooner when the workers are about to run out:
        with 100,000 jobs waiting, reading them all up front took seconds of interpreter time
        from the workers' first jobs; paced, the whole backlog is indexed within about 25
        seconds while jobs flow from the start.
        """
        home = self.store.home
        for state in (JobState.PENDING, JobState.FAILED):
            entries = self.store.folders.entries(state)
            directory = str(home.state_dir(state))
            for start in range(0, len(entries), RESCAN_CHUNK):
                if self.stopping.is_set():
                    return  # a deep queue takes seconds to read: do not hold up a stop
                now = time.time()
                chunk = []
                for mtime_ns, name in entries[start : start + RESCAN_CHUNK]:
                    path = f"{directory}/{name}"
                    due, priority = self._schedule(state, path, now, mtime_ns / 1e9)
                    chunk.append((state, name, due, priority))
                self.index.add_many(chunk)
                yield True

    def _schedule(
        self, state: JobState, path: str | Path, now: float, mtime: float | None = None
    ) -> tuple[float, int]:
        """(runnable from, priority) of a job file, read leniently.

        A file that cannot be read or parsed is offered at once: the claim then deals with it
        (gone, still being written, or rejected with a reason).
        """
        try:
            raw, st = read_regular(path, MAX_JOB_FILE_BYTES)
            if mtime is None and state is JobState.PENDING:
                mtime = st.st_mtime
            found = _scheduling_fields(raw, state)
        except (OSError, ValueError, RecursionError):
            return now, 0  # a symlink, FIFO or junk: the claim rejects it with a reason
        if found is None:
            return now, 0
        wanted, priority = found
        since = min(mtime, now) if mtime is not None else now
        if isinstance(wanted, str):
            try:
                since = max(since, parse_time(wanted).timestamp())
            except ValueError:
                pass
        return since, priority

    def check_stop_request(self) -> None:
        """Obey ``stop/<own id>`` (written by ``worker stop``, possibly from a container
        that cannot signal us): "now" stops at once, anything else is a warm stop."""
        if self.on_stop is None or not self.own_id:
            return
        from queuectl.storage.durable import read_regular

        try:
            content = read_regular(self.store.home.stop_requests / self.own_id, 64)[0]
        except OSError:
            return
        self.on_stop(content.strip() == b"now")

    def check_cancel_requests(self) -> None:
        """Look at every pending cancel request (after a missed notification, or without
        inotify): each one names a job id; the pool ignores ids it is not running."""
        if self.on_cancel is None:
            return
        for name in os.listdir(self.store.home.cancel_requests):
            self.on_cancel(name)

    def recover(self) -> None:
        """Return jobs whose worker and command are both gone to the queue (or the DLQ)."""
        directory = self.store.home.state_dir(JobState.PROCESSING)
        for name in os.listdir(directory):
            if not is_job_name(name):
                continue
            done = self.store.recovery.recover_orphan(name, self._lost)
            if done is not None:
                self.log(done)
                self.index.add(JobState.PENDING, name, time.time())

    def _lost(self, job: Job) -> Job:
        return worker_lost(job, backoff_policy(self.store.config.values()), utcnow())

    def _drained(self) -> bool:
        if self._scan is not None or len(self.index) or not self.is_idle():
            return False
        return all(
            self.store.folders.count(s) == 0
            for s in (JobState.PENDING, JobState.FAILED, JobState.PROCESSING)
        )

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)


_CANONICAL_START: Final = b'{\n  "id": '
_PRIORITY_LINE: Final = re.compile(rb'\n  "priority": (-?[0-9]{1,3}),\n')
_RUN_AT_LINE: Final = {
    JobState.PENDING: re.compile(rb'\n  "run_at": (null|"[^"\\\n]*"),\n'),
    JobState.FAILED: re.compile(rb'\n  "next_run_at": (null|"[^"\\\n]*"),\n'),
}


def _scheduling_fields(raw: bytes, state: JobState) -> tuple[object, int] | None:
    """(run_at or next_run_at, priority) of a job file; None when it is not a JSON object.

    Files written by queuectl have one top-level key per line, so two line matches find the
    fields at a fraction of the cost of parsing the whole file (a scan reads every file in
    pending/). Anything else, such as a file dropped by another tool, is parsed in full.
    """
    if raw.startswith(_CANONICAL_START) and raw.endswith(b"\n}\n"):
        priority_line = _PRIORITY_LINE.search(raw)
        wanted_line = _RUN_AT_LINE[state].search(raw)
        if priority_line is not None and wanted_line is not None:
            text = wanted_line.group(1)
            due = None if text == b"null" else text[1:-1].decode()
            return due, int(priority_line.group(1))
    data = json.loads(raw)
    if not isinstance(data, dict):
        return None
    wanted = data.get("next_run_at") if state is JobState.FAILED else data.get("run_at")
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        priority = 0
    return wanted, priority


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
