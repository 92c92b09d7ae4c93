"""Regressions for what a hostile tester found in the workflow features (queues, GPU places,
unique keys, rebuild, hostile queue files, the CLI's shapes). Each test failed before its fix.
"""

from __future__ import annotations

from queuectl.storage.locks import Holder, slot_offset
from queuectl.storage.slots import free_slots, has_room, running_slots, take_slot
from queuectl.storage.store import Store

# ------------------------------------------------------------------ A1: lowering a limit drains


def _run(store: Store, name: str) -> Holder:
    """A stand-in for a running job of queue ``name``: a description holding its slot."""
    queue = store.queues.get(name)
    assert queue is not None
    holder = store.locks.holder()
    assert take_slot(holder, store.locks, queue) is not None
    return holder


def _can_start(store: Store, name: str) -> bool:
    queue = store.queues.get(name)
    assert queue is not None
    probe = store.locks.holder()
    try:
        slot = take_slot(probe, store.locks, queue)
    finally:
        probe.close()
    assert (slot is not None) == has_room(store.locks, queue)
    assert (slot is not None) == bool(free_slots(store.locks, queue, limit=8))
    return slot is not None


def test_lowering_an_unlimited_queue_drains_every_slot_above_the_new_limit(store: Store) -> None:
    store.queues.add("q", 0)
    running = [_run(store, "q") for _ in range(4)]  # slots 0..3
    store.queues.set_parallel("q", 1)
    running[0].close()  # slot 0 frees, 3 still run above the new limit of 1
    assert not _can_start(store, "q")
    assert not store.queues.settle_high_water("q")
    queue = store.queues.get("q")
    assert queue is not None and running_slots(store.locks, queue) == 3
    for holder in running[1:]:
        holder.close()
    assert store.queues.settle_high_water("q")
    assert _can_start(store, "q")


def test_a_limit_raised_to_unlimited_and_lowered_again_drains(store: Store) -> None:
    store.queues.add("q", 2)
    running = [_run(store, "q") for _ in range(2)]  # slots 0, 1
    store.queues.set_parallel("q", 0)
    running += [_run(store, "q") for _ in range(2)]  # slots 2, 3
    store.queues.set_parallel("q", 2)
    running[0].close()
    assert not _can_start(store, "q")
    for holder in running[1:]:
        holder.close()
    assert store.queues.settle_high_water("q")
    assert _can_start(store, "q")


def test_settling_looks_at_the_slots_itself_under_the_change_lock(store: Store) -> None:
    """A worker's earlier look ("drained") must not settle a queue whose slots above the
    limit were taken since (the limit went up and down again in between)."""
    store.queues.add("q", 4)
    store.queues.set_parallel("q", 1)  # nothing runs: no draining at all
    queue = store.queues.get("q")
    assert queue is not None and queue.high_water == 1
    store.queues.set_parallel("q", 4)
    running = [_run(store, "q") for _ in range(4)]
    store.queues.set_parallel("q", 1)
    assert not store.queues.settle_high_water("q")
    queue = store.queues.get("q")
    assert queue is not None and queue.high_water == 4
    running[0].close()
    assert not _can_start(store, "q")
    assert store.locks.is_held(slot_offset("q", 3))
    for holder in running[1:]:
        holder.close()
