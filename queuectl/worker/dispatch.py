"""The dispatcher thread: keeps a worker's index current and its home tidy.

It feeds the ``RunnableIndex`` (one folder scan of ``pending/`` and ``failed/`` at start-up,
then inotify), hands blocked jobs to the ``DependencyTracker`` (``blocked/``, and the final
folders while anything is blocked), passes on cancel and stop requests (``cancel/``,
``stop/``) and changes of queue settings (``queues/``), recovers orphaned jobs in
``processing/``, and in burst mode notices when the home has been drained.
"""

from __future__ import annotations

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
from queuectl.job import DEFAULT_QUEUE, ID_PATTERN, Job, JobState, parse_time, utcnow
from queuectl.scheduler import worker_lost
from queuectl.storage.durable import read_regular
from queuectl.storage.jobfile import MAX_JOB_FILE_BYTES, is_job_name
from queuectl.storage.remote_heads import RemoteHeads
from queuectl.storage.store import Store
from queuectl.worker.dependencies import FINAL_FOLDERS, DependencyTracker
from queuectl.worker.index import RunnableIndex
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

Schedule = tuple[float, int, str]  # (runnable from, priority, queue)


class Dispatcher(threading.Thread):
    """Feeds the index from inotify, recovers orphans, detects a drained home in burst mode."""

    def __init__(
        self,
        store: Store,
        index: RunnableIndex,
        *,
        stopping: threading.Event,
        done: threading.Event | None = None,
        on_drained: Callable[[], None] | None,
        is_idle: Callable[[], int | None],
        log: Callable[[str], None],
        recovery_interval: float = RECOVERY_INTERVAL_SECONDS,
        on_cancel: Callable[[str], None] | None = None,
        on_stop: Callable[[bool], None] | None = None,
        own_id: str = "",
        on_tick: Callable[[], float | None] | None = None,
        on_queue_change: Callable[[str], None] | None = None,
        serves: frozenset[str] | None = None,
    ) -> None:
        super().__init__(name="queuectl-dispatcher", daemon=True)
        self.store = store
        self.index = index
        self.stopping = stopping
        """No new work: set by a stop; the scans and recovery end."""
        self.done = done or stopping
        """The loop ends: set once the worker's threads are gone. Between the two, a worker
        finishing its running jobs still sees cancel and stop-now requests for them."""
        self.on_drained = on_drained
        self.is_idle = is_idle
        self.log = log
        self.recovery_interval = recovery_interval
        self.remote_heads = RemoteHeads(store.home.root)
        self.on_cancel = on_cancel
        self.on_stop = on_stop
        self.own_id = own_id
        self.on_tick = on_tick
        self.on_queue_change = on_queue_change
        self.serves = serves
        """Queues this worker runs jobs of (None: all)."""
        self.dependencies = DependencyTracker(store, log, self._released)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.error: BaseException | None = None
        self._scan: Iterator[bool] | None = None
        self._watcher: DirWatcher | None = None
        self._watching_final = False

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
            self.done.set()
            self.index.close()

    def _loop(self) -> None:
        home = self.store.home
        watched = [
            home.state_dir(JobState.PENDING),
            home.state_dir(JobState.FAILED),
            home.state_dir(JobState.BLOCKED),
            home.cancel_requests,
            home.stop_requests,
        ]
        os.makedirs(self.store.queues.directory, mode=0o700, exist_ok=True)
        watched.append(self.store.queues.directory)
        self._watcher = watcher = open_watcher(watched)
        self._start_scan()
        self.recover()
        self._scan_blocked()
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
            while not self.done.is_set():
                now = time.monotonic()
                if self.stopping.is_set():
                    self._scan = None  # no new work: only cancel and stop requests matter
                    next_recovery = now + 3600.0
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
                if now >= next_rescan and self.stopping.is_set():
                    self.check_cancel_requests()
                    self.check_stop_request()
                    next_rescan = now + rescan_every
                elif now >= next_rescan:
                    self._start_scan()
                    self._scan_blocked()
                    self.check_cancel_requests()
                    self.check_stop_request()
                    next_rescan = now + rescan_every
                if now >= next_recovery:
                    self.recover()
                    next_recovery = time.monotonic() + self.recovery_interval
        finally:
            if watcher is not None:
                watcher.close()
                self._watcher = None

    def _handle_events(self, watcher: DirWatcher) -> None:
        home = self.store.home
        pending_dir = home.state_dir(JobState.PENDING)
        failed_dir = home.state_dir(JobState.FAILED)
        blocked_dir = home.state_dir(JobState.BLOCKED)
        final_dirs = {home.state_dir(s) for s in FINAL_FOLDERS}
        for event in watcher.read():
            directory = event.directory
            if directory is None:
                # Events were lost: a scan under way listed the folders before them.
                self._start_scan(restart=True)
                self._scan_blocked()
                self.check_cancel_requests()
            elif directory in (pending_dir, failed_dir):
                if is_job_name(event.name):
                    state = JobState.PENDING if directory == pending_dir else JobState.FAILED
                    self._offer(state, event.name, directory / event.name, time.time())
            elif directory == blocked_dir:
                if is_job_name(event.name):
                    self.dependencies.arrived(event.name)
                    self._watch_final()
            elif directory in final_dirs:
                self.dependencies.finished(event.name)
                self._watch_final()
            elif directory == home.cancel_requests:
                if self.on_cancel is not None:
                    self.on_cancel(event.name)
            elif directory == home.stop_requests:
                if event.name == self.own_id:
                    self.check_stop_request()
            elif directory == self.store.queues.directory:
                self._queue_changed(event.name)

    def _queue_changed(self, name: str) -> None:
        if not name.endswith(".json") or name.startswith("."):
            return
        queue = name[:-5]
        if self.on_queue_change is not None:
            self.on_queue_change(queue)
        found = self.store.queues.get(queue)
        if found is not None and not found.paused:
            self.dependencies.settle_queue(queue)

    def _released(self, job_id: str, queue: str) -> None:
        """A blocked job moved to pending/: index it at once (inotify will say so too)."""
        if self._serves(queue):
            self.index.add(JobState.PENDING, f"{job_id}.json", time.time(), 0, queue)

    def _scan_blocked(self) -> None:
        self.dependencies.scan()
        self._watch_final()

    def _watch_final(self) -> None:
        """Watch the final-state folders only while some job is blocked: every worker
        would otherwise wake for every job that completes anywhere in the home."""
        watcher = self._watcher
        wanted = self.dependencies.active
        if watcher is None or wanted == self._watching_final:
            return
        for state in FINAL_FOLDERS:
            directory = self.store.home.state_dir(state)
            if wanted:
                watcher.add(directory)
            else:
                watcher.remove(directory)
        self._watching_final = wanted
        if wanted:  # a job may have finished before the watch existed
            for job_id in self.dependencies.blocked_ids():
                self.dependencies.settle(job_id)

    # ---------------------------------------------------------------- scans

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

        Each file is read for its priority, run_at and queue. The loop reads one chunk at
        once and then one every ``RESCAN_PACE_SECONDS``, sooner when the workers are about
        to run out: with 100,000 jobs waiting, reading them all up front took seconds of
        interpreter time from the workers' first jobs; paced, the whole backlog is indexed
        within about 25 seconds while jobs flow from the start.
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
                    due, priority, queue = self._schedule(state, path, now, mtime_ns / 1e9)
                    if self._serves(queue):
                        chunk.append((state, name, due, priority, queue))
                self.index.add_many(chunk)
                yield True

    def _offer(self, state: JobState, name: str, path: str | Path, now: float) -> None:
        due, priority, queue = self._schedule(state, path, now)
        if self._serves(queue):
            self.index.add(state, name, due, priority, queue)

    def _serves(self, queue: str) -> bool:
        return self.serves is None or queue in self.serves

    def _schedule(
        self, state: JobState, path: str | Path, now: float, mtime: float | None = None
    ) -> Schedule:
        """(runnable from, priority, queue) of a job file, read leniently.

        A file that cannot be read or parsed is offered at once: the claim then deals with it
        (gone, still being written, or rejected with a reason).
        """
        try:
            raw, st = read_regular(path, MAX_JOB_FILE_BYTES)
            if mtime is None and state is JobState.PENDING:
                mtime = st.st_mtime
            found = _scheduling_fields(raw, state)
        except (OSError, ValueError, RecursionError):
            return now, 0, DEFAULT_QUEUE  # a symlink, FIFO or junk: the claim rejects it
        if found is None:
            return now, 0, DEFAULT_QUEUE
        wanted, priority, queue = found
        since = min(mtime, now) if mtime is not None else now
        if isinstance(wanted, str):
            try:
                since = max(since, parse_time(wanted).timestamp())
            except ValueError:
                pass
        return since, priority, queue

    # ---------------------------------------------------------------- requests, recovery

    def check_stop_request(self) -> None:
        """Obey ``stop/<own id>`` (written by ``worker stop``, possibly from a container
        that cannot signal us): "now" stops at once, anything else is a warm stop."""
        if self.on_stop is None or not self.own_id:
            return
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
        """Return jobs whose worker and command are both gone to the queue (or the DLQ).

        Not while a dead remote head's leases may still run (``storage.remote_heads``): its
        commands on other hosts hold no lock here, so an unlocked job may still be running."""
        directory = self.store.home.state_dir(JobState.PROCESSING)
        held = self.remote_heads.hold_until()
        if held is not None:
            safe, head = held
            if self.remote_heads.first_notice(head):
                self.log(
                    f"remote head {head} died: recovering its jobs only once its lease has "
                    f"ended, in {max(0.0, safe - time.monotonic()):.1f}s"
                )
            return
        for name in os.listdir(directory):
            if not is_job_name(name):
                continue
            done = self.store.recovery.recover_orphan(name, self._lost)
            if done is not None:
                self.log(done)
                self._offer(
                    JobState.PENDING, name, directory.parent / "pending" / name, time.time()
                )

    def _lost(self, job: Job) -> Job:
        return worker_lost(job, backoff_policy(self.store.config.values()), utcnow())

    def _drained(self) -> bool:
        """Burst mode: nothing left this worker could run. Jobs parked for a paused queue
        do not count (they will not run until it is resumed); nothing may be running, and
        no job may still sit in processing/ (an orphan to recover, or a commit under way)."""
        if self._scan is not None:
            return False
        idle = self.is_idle()
        if idle is None:
            return False
        if self._watcher is not None:
            self._handle_events(self._watcher)  # a job that just finished may free another
        if self.dependencies.active:
            for job_id in self.dependencies.blocked_ids():
                self.dependencies.settle(job_id)
        parked_paused = 0
        for queue, count in self.index.stalled().items():
            found = self.store.queues.get(queue)
            if found is not None and found.paused:
                parked_paused += count
        if len(self.index) > parked_paused:
            return False
        if self.store.folders.count(JobState.PROCESSING) != 0:
            return False
        # Idle at both ends of the look with no job taken or let go in between: a thread
        # that let a job go after putting it back into the index (a failed claim) would
        # otherwise pass both checks, each at the wrong moment.
        return self.is_idle() == idle

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)


_CANONICAL_START: Final = b'{\n  "id": '
_PRIORITY_LINE: Final = re.compile(rb'\n  "priority": (-?[0-9]{1,3}),\n')
_QUEUE_LINE: Final = re.compile(rb'\n  "queue": "([A-Za-z0-9][A-Za-z0-9._-]{0,127})",\n')
_RUN_AT_LINE: Final = {
    JobState.PENDING: re.compile(rb'\n  "run_at": (null|"[^"\\\n]*"),\n'),
    JobState.FAILED: re.compile(rb'\n  "next_run_at": (null|"[^"\\\n]*"),\n'),
}


def _scheduling_fields(raw: bytes, state: JobState) -> tuple[object, int, str] | None:
    """(run_at or next_run_at, priority, queue) of a job file; None when it is not a JSON
    object.

    Files written by queuectl have one top-level key per line, so three line matches find the
    fields at a fraction of the cost of parsing the whole file (a scan reads every file in
    pending/). Anything else, such as a file dropped by another tool, is parsed in full.
    """
    if raw.startswith(_CANONICAL_START) and raw.endswith(b"\n}\n"):
        priority_line = _PRIORITY_LINE.search(raw)
        wanted_line = _RUN_AT_LINE[state].search(raw)
        queue_line = _QUEUE_LINE.search(raw)
        if priority_line is not None and wanted_line is not None:
            text = wanted_line.group(1)
            due = None if text == b"null" else text[1:-1].decode()
            queue = queue_line.group(1).decode() if queue_line else DEFAULT_QUEUE
            return due, int(priority_line.group(1)), queue
    data = json.loads(raw)
    if not isinstance(data, dict):
        return None
    wanted = data.get("next_run_at") if state is JobState.FAILED else data.get("run_at")
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        priority = 0
    queue = data.get("queue", DEFAULT_QUEUE)
    if not isinstance(queue, str) or not ID_PATTERN.fullmatch(queue):
        queue = DEFAULT_QUEUE
    return wanted, priority, queue


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
