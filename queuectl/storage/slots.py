"""A queue's parallel limit, held in the kernel: slot ``s`` of queue ``q`` is one byte of
``locks/claims.lock`` (``locks.slot_offset``).

A claim takes the lowest free slot below the queue's limit on the same open file description
as the job's run lock, so the command inherits it with fd 3: the slot stays taken while the
job's command (or a leftover of it) lives, whatever happens to the worker, and is free again
the moment they are all gone, SIGKILL included. At most K descriptors can hold one of K
bytes, so never more than K jobs of the queue run at once, across every process of the home.

After the limit is lowered to K (from any limit, or from unlimited, whose jobs may hold any
slot number up to ``MAX_PARALLEL``), jobs may still run in slots K and above, up to
``Queue.top``; a new job then starts only once all of those are free (one range probe;
stricter than counting, and no two claimers can talk each other out of a start).
"""

from __future__ import annotations

from typing import Final

from queuectl.storage.locks import Holder, LockFile, slot_offset
from queuectl.storage.queues import MAX_PARALLEL, Queue

__all__ = ["drained_above", "free_slots", "has_room", "running_slots", "take_slot"]

UNLIMITED_SCAN: Final = MAX_PARALLEL
"""An unlimited queue hands out the lowest index no other running job of it holds."""


def take_slot(holder: Holder, locks: LockFile, queue: Queue) -> int | None:
    """The slot taken on ``holder`` for a new job of ``queue``; None when it is full."""
    if queue.parallel == 0:
        for slot in range(UNLIMITED_SCAN):
            if holder.take(slot_offset(queue.name, slot)):
                return slot
        return None
    if not drained_above(locks, queue):
        return None  # draining after a lower limit was set
    for slot in range(queue.parallel):
        if holder.take(slot_offset(queue.name, slot)):
            return slot
    return None


def has_room(locks: LockFile, queue: Queue) -> bool:
    """Whether a new job of the queue could start now (a probe; the claim decides)."""
    if queue.parallel == 0:
        return True
    if not drained_above(locks, queue):
        return False
    return locks.held_in(slot_offset(queue.name, 0), queue.parallel) < queue.parallel


def free_slots(locks: LockFile, queue: Queue, limit: int) -> int:
    """How many more jobs of the queue could start now, at most ``limit`` (a probe)."""
    if queue.parallel == 0:
        return limit
    if not drained_above(locks, queue):
        return 0
    free = queue.parallel - locks.held_in(slot_offset(queue.name, 0), queue.parallel)
    return min(free, limit)


def drained_above(locks: LockFile, queue: Queue) -> bool:
    """Whether no job runs in a slot at or above the queue's (lowered) limit any more: every
    slot a queue can hand out is probed (one call), so a start never depends on the high
    water being right (a hand-edited file, an old limit it did not record)."""
    if queue.parallel == 0:
        return True
    above = max(queue.top, UNLIMITED_SCAN) - queue.parallel
    return locks.first_held(slot_offset(queue.name, queue.parallel), above) is None


def running_slots(locks: LockFile, queue: Queue) -> int:
    """How many of the queue's slots are held now (``queue list``'s running column)."""
    return locks.held_in(slot_offset(queue.name, 0), max(queue.top, UNLIMITED_SCAN))
