"""Which job to try next, without listing ``pending/`` per claim: a per-process index.

Jobs whose time has not come (a retry's ``next_run_at``, a ``run_at``, a claim to try again
shortly) wait in a heap ordered by that time; runnable ones sit in a heap ordered by
``queue_key(runnable since, priority)``: oldest first, with each priority step worth a
minute of waiting (aging), so high priorities go first and nothing starves. Entries can be
stale (another process claimed the job first); the claim then fails cheaply.

A queue at its parallel limit, or paused, is *stalled*: its entries are parked aside as they
come up, so they never hold back the jobs of other queues behind them and are not tried
again and again. ``unstall`` brings the best ones back when room may have appeared (a job of
the queue finished here, the queue's file changed, or a periodic look found free slots).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from queuectl.job import DEFAULT_QUEUE, JobState
from queuectl.scheduler import queue_key

__all__ = ["Entry", "RunnableIndex"]

Key = tuple[str, str]  # (state folder, file name)
_Item = tuple[float, int, str, str]  # (sort key, arrival order, state folder, file name)


class Entry(NamedTuple):
    state: JobState
    name: str
    due: float
    priority: int
    queue: str


class RunnableIndex:
    """Thread-safe index of jobs to try next (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Item] = []
        self._ready: list[_Item] = []
        self._queued: dict[Key, tuple[float, int, str]] = {}
        self._stalled: set[str] = set()
        self._parked: dict[str, list[_Item]] = {}
        self._order = itertools.count()
        self._closed = False
        self._clock = clock

    def add(
        self, state: JobState, name: str, due: float, priority: int = 0, queue: str = DEFAULT_QUEUE
    ) -> None:
        with self._cond:
            if self._put(state, name, due, priority, queue, self._clock()):
                self._cond.notify()

    def add_many(self, items: Iterable[tuple[JobState, str, float, int, str]]) -> None:
        """Add a chunk of a folder scan under one lock hold."""
        chunk = list(items)
        with self._cond:
            now = self._clock()
            # Into a big heap a chunk is pushed entry by entry; re-heapifying 100,000 entries
            # for every chunk of 1,000 would cost more.
            bulk = len(chunk) * 8 >= len(self._ready) + len(self._waiting)
            for state, name, due, priority, queue in chunk:
                self._put(state, name, due, priority, queue, now, heap_push=not bulk)
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
        queue: str,
        now: float,
        heap_push: bool = True,
    ) -> bool:
        key = (state.value, name)
        known = self._queued.get(key)
        if known is not None and known[0] <= due and known[1] >= priority:
            return False
        self._queued[key] = (due, priority, queue)
        if due <= now:
            item = (queue_key(due, priority), next(self._order), state.value, name)
            target = self._ready
        else:
            item = (due, next(self._order), state.value, name)
            target = self._waiting
        if heap_push:
            heapq.heappush(target, item)
        else:
            target.append(item)
        return True

    def take(self, block: bool = True) -> tuple[JobState, str] | None:
        """Block until a job is runnable (or the index is closed, then None); with
        ``block=False``, None at once when nothing is runnable now."""
        entry = self.take_entry(block)
        return None if entry is None else (entry.state, entry.name)

    def take_entry(
        self, block: bool = True, on_take: Callable[[], None] | None = None
    ) -> Entry | None:
        """``take``, with the entry's runnable-since time, priority and queue, so that an
        entry taken too early can be put back with ``add`` exactly where it was.
        ``on_take`` runs under the index's lock as the entry leaves it: a worker counts the
        job as in hand at that instant, so "nothing indexed and nothing in hand" (burst
        mode's drained) never misses a job between the two."""
        with self._cond:
            while not self._closed:
                now = self._clock()
                self._promote(now)
                if self._ready:
                    item = heapq.heappop(self._ready)
                    key = (item[2], item[3])
                    known = self._queued.get(key)
                    if known is None or known[0] > now:
                        continue  # superseded (claimed, or re-added for later)
                    if known[2] in self._stalled:
                        self._parked.setdefault(known[2], []).append(item)
                        continue  # its queue is full or paused: aside until unstalled
                    due, priority, queue = self._queued.pop(key)
                    if on_take is not None:
                        on_take()
                    return Entry(JobState(item[2]), item[3], due, priority, queue)
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

    # ---------------------------------------------------------------- stalled queues

    def stall(self, entry: Entry) -> None:
        """``entry``'s queue had no room: keep the entry (and the queue's next ones) aside."""
        with self._cond:
            key = (entry.state.value, entry.name)
            self._queued[key] = (entry.due, entry.priority, entry.queue)
            item = (queue_key(entry.due, entry.priority), next(self._order), *key)
            self._parked.setdefault(entry.queue, []).append(item)
            self._stalled.add(entry.queue)

    def unstall(self, queue: str, count: int | None = None) -> int:
        """Room may have appeared in ``queue``: bring back its ``count`` best parked entries
        (all with None) and let its new entries through again; returns how many."""
        with self._cond:
            self._stalled.discard(queue)
            parked = self._parked.get(queue)
            if not parked:
                return 0
            parked.sort()
            chosen = parked if count is None else parked[:count]
            rest = [] if count is None else parked[count:]
            for item in chosen:
                heapq.heappush(self._ready, item)
            if rest:
                self._parked[queue] = rest
            else:
                self._parked.pop(queue, None)
            self._cond.notify_all()
            return len(chosen)

    def stalled(self) -> dict[str, int]:
        """Stalled or parked queues and how many entries wait aside for each."""
        with self._cond:
            found = {queue: len(items) for queue, items in self._parked.items()}
            for queue in self._stalled:
                found.setdefault(queue, 0)
            return found

    def drop_queue(self, queue: str) -> None:
        """Forget a queue's parked entries (this worker does not serve it)."""
        with self._cond:
            for item in self._parked.pop(queue, []):
                self._queued.pop((item[2], item[3]), None)
            self._stalled.discard(queue)

    # ---------------------------------------------------------------- size

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
