"""Named queues: a parallel limit and a paused flag per queue, in ``queues/<name>.json``.

A queue file is written the way job files are (tmp, fsync, rename, fsync the folder) and
every change is journaled as a record about ``queue:<name>`` (events ``queue_added``,
``queue_changed``, ``paused``, ``resumed``, ``queue_removed``), with a generation and a rev
like a job, so ``journal rebuild`` recreates the folder and ``fsck`` checks it. The
``default`` queue exists without a file (unlimited, not paused) until someone changes it.

Workers read a queue's file when they claim a job of it, through a cache that looks at the
file's stat (a ``queue set`` is seen by the next claim). ``pause`` takes the queue's gate
(a byte in ``locks/claims.lock``) exclusively while it writes, and a claim holds it shared
from its check of the flag to its rename into processing/: so once ``pause`` returns, no
claim that saw the queue unpaused is still in flight, and none starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from queuectl.errors import InvalidJob, QueueError, UsageError
from queuectl.job import DEFAULT_QUEUE, ID_PATTERN, format_time, new_generation, utcnow
from queuectl.storage.events import Event
from queuectl.storage.locks import gate_offset, slot_offset
from queuectl.storage.named import NamedRecord, NamedStore, record_name

__all__ = ["MAX_PARALLEL", "Queue", "QueueStore"]

MAX_PARALLEL: Final = 4096


@dataclass(frozen=True)
class Queue(NamedRecord):
    name: str
    parallel: int = 0
    """At most this many of its jobs run at once across every worker of the home; 0: no
    limit beyond the worker threads."""
    paused: bool = False
    high_water: int = 0
    """The largest limit it had since its slots were last all free (``MAX_PARALLEL`` after
    it was unlimited, whatever slot numbers its jobs got): after a limit is lowered, a new
    job starts only once the slots above the new limit are free. Unused while unlimited."""
    created_at: str = ""
    updated_at: str = ""
    rev: int = 1
    generation: int = 0

    @property
    def top(self) -> int:
        """How many of its slots (0..top-1) a running job may hold: every slot an unlimited
        queue hands out, else the old higher limit that may still be draining."""
        if self.parallel == 0:
            return MAX_PARALLEL
        return max(self.parallel, self.high_water)

    @classmethod
    def from_dict(cls, data: object) -> Queue:
        if not isinstance(data, dict):
            raise InvalidJob("a queue must be a JSON object")
        try:
            if "name" not in data:
                raise KeyError("name")
            name = record_name(data, "queue")
            return cls(
                name=name,
                parallel=_count(data.get("parallel", 0), "parallel"),
                paused=_flag(data.get("paused", False)),
                high_water=_count(data.get("high_water", 0), "high_water"),
                created_at=str(data.get("created_at", "")),
                updated_at=str(data.get("updated_at", "")),
                rev=_count(data.get("rev", 1), "rev", 1 << 53),
                generation=_count(data.get("generation", 0), "generation", 1 << 63),
            )
        except KeyError as exc:
            raise InvalidJob(f"missing field {exc.args[0]!r}") from None


def _count(value: object, name: str, high: int = MAX_PARALLEL) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidJob(f"'{name}' must be a whole number between 0 and {high}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidJob("'paused' must be true or false")
    return value


class QueueStore(NamedStore[Queue]):
    kind = "queue"
    folder = "queues"
    model = Queue

    def get(self, name: str) -> Queue | None:
        """The queue as its file says now (None: no such queue; the default queue exists
        without a file). Cheap to call per claim (``NamedStore.read_file``)."""
        found = self.read_file(name)
        if found is None and name == DEFAULT_QUEUE and not self.has_file(name):
            return Queue(DEFAULT_QUEUE)
        return found

    def why_unusable(self, name: str) -> str | None:
        """Why no job of queue ``name`` can start (None: it can): no such queue, or a file
        that cannot be trusted (``queues/<name>.json: <reason>``)."""
        if self.get(name) is not None:
            return None
        reason = self.problem(name)
        if reason is not None:
            return f"{self.folder}/{name}.json: {reason}"
        return f"no queue named {name!r} (create it with: queuectl queue add {name})"

    def require(self, name: str) -> Queue:
        """The queue, or a usage error (exit 2) that says how to create it."""
        queue = self.get(name)
        if queue is None:
            raise UsageError(f"no queue named {name!r}; create it with: queuectl queue add {name}")
        return queue

    def names(self) -> list[str]:
        return sorted({DEFAULT_QUEUE, *self.file_names()})

    def all(self) -> list[Queue]:
        return [q for q in (self.get(name) for name in self.names()) if q is not None]

    # ---------------------------------------------------------------- changes

    def add(self, name: str, parallel: int, now: datetime | None = None) -> Queue:
        _check_name(name)
        moment = format_time(now or utcnow())
        if name == DEFAULT_QUEUE:
            raise QueueError(
                "queue 'default' already exists (it always does); change its limit with: "
                "queuectl queue set default --parallel N"
            )
        with self.changing(name):
            if self.read_file(name) is not None or os.path.lexists(self.path(name)):
                raise QueueError(f"queue {name!r} already exists")
            queue = Queue(
                name,
                parallel=_limit(parallel),
                high_water=_limit(parallel),
                created_at=moment,
                updated_at=moment,
                generation=new_generation(now),
            )
            self.save(queue, Event.QUEUE_ADDED)
        return queue

    def set_parallel(self, name: str, parallel: int) -> Queue:
        """A new limit. Lowered (from any limit, unlimited included), the slots from the new
        limit up to the old top must drain before the queue starts a job again: under the
        queue's gate held exclusively (so no claim that read the old limit is in flight),
        the high water is the old top, or the new limit when nothing runs above it."""
        limit = _limit(parallel)
        with self.changing(name):
            queue = self._existing(name)
            with self.gate(name, exclusive=True):
                high = self._high_water(queue, limit) if limit else 0
                changed = self.next_version(queue, parallel=limit, high_water=high)
                self.save(changed, Event.QUEUE_CHANGED)
        return changed

    def settle_high_water(self, name: str) -> bool:
        """Forget an old higher limit once the slots above the current one are free (a
        worker calls this after a limit was lowered). The slots are looked at under the
        queue's change lock and its gate held exclusively, on the queue as its file says
        then, so neither a concurrent ``queue set`` nor a claim in flight can slip between
        the look and the write. True if it settled."""
        with self.changing(name):
            queue = self.get(name)
            if queue is None or queue.parallel == 0 or queue.high_water <= queue.parallel:
                return False
            with self.gate(name, exclusive=True):
                if self._held_above(queue, queue.parallel, queue.top):
                    return False
                self.save(self.next_version(queue, high_water=queue.parallel), Event.QUEUE_CHANGED)
        return True

    def _high_water(self, queue: Queue, limit: int) -> int:
        top = queue.top
        if limit >= top or not self._held_above(queue, limit, top):
            return limit
        return top

    def _held_above(self, queue: Queue, low: int, high: int) -> bool:
        base = slot_offset(queue.name, low)
        return self.locks.first_held(base, high - low) is not None

    def set_paused(self, name: str, paused: bool) -> tuple[Queue, bool]:
        """(the queue, whether it changed)."""
        with self.changing(name):
            queue = self._existing(name)
            if queue.paused == paused:
                return queue, False
            changed = self.next_version(queue, paused=paused)
            with self.gate(name, exclusive=True):
                self.save(changed, Event.PAUSED if paused else Event.RESUMED)
        return changed, True

    def remove(self, name: str, unfinished: Callable[[str], int]) -> None:
        """Remove a queue that has no unfinished job. ``unfinished`` counts them under the
        queue's change lock, which every enqueue and edit naming the queue holds (shared)
        while it checks that the queue exists and publishes: no job can join the queue
        between the count and the removal."""
        with self.changing(name):
            queue = self._existing(name)
            if name == DEFAULT_QUEUE:
                raise QueueError("the default queue cannot be removed")
            busy = unfinished(name)
            if busy:
                raise QueueError(
                    f"queue {name!r} still has {busy} unfinished job(s); "
                    "cancel or finish them first"
                )
            self.delete(queue, Event.QUEUE_REMOVED)

    def _existing(self, name: str) -> Queue:
        queue = self.get(name)
        if queue is None:
            raise UsageError(f"no queue named {name!r} (queuectl queue list shows them)")
        return queue

    @contextlib.contextmanager
    def gate(self, name: str, exclusive: bool = False) -> Iterator[None]:
        """The queue's gate: claims hold it shared from their look at the flags to their
        rename; pause holds it exclusively while it writes."""
        holder = self.locks.holder()
        try:
            holder.wait(gate_offset(name), shared=not exclusive)
            yield
        finally:
            holder.close()


def _check_name(name: str) -> None:
    if not ID_PATTERN.fullmatch(name):
        raise UsageError(
            f"invalid queue name {name[:40]!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )


def _limit(parallel: int) -> int:
    if not 0 <= parallel <= MAX_PARALLEL:
        raise UsageError(f"--parallel must be between 0 (no limit) and {MAX_PARALLEL}")
    return parallel
