"""Group commit of attempt outcomes, off the worker threads' critical path.

A worker thread that has finished running a command hands the outcome to the ``CommitQueue``
and goes straight on to claim its next job. One committer thread per process makes every
queued outcome durable together with ``Store.commit`` (one tmp-file sync, one fsync per
folder, one journal fsync for the whole batch) and only then releases the jobs' locks.

Nothing is weakened by this: until its outcome is durable a job stays in ``processing/``,
locked by this process, so no one else can recover it; if the process dies first, recovery
finds the job exactly as if the worker had died during the run (at-least-once).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from queuectl.errors import QueueError, describe
from queuectl.storage.claims import Claim
from queuectl.storage.commit import Change
from queuectl.storage.store import Store
from queuectl.worker.outputs import OutputFiles, OutputPool

__all__ = ["COMMIT_WINDOW_SECONDS", "CommitQueue"]

COMMIT_WINDOW_SECONDS: Final = 0.002
"""How long a finished attempt may wait for others to share its commit (only while other
commands of this worker are still running)."""

MAX_BATCH: Final = 64
"""Outcomes per commit: beyond this a batch saves nothing more, and a commit whose files
must be created (no recycled blanks yet) should not grow without bound."""

MAX_QUEUED: Final = 256
"""Outcomes waiting for the committer before worker threads stop and wait for it. Each holds
the job's lock and maybe its two output files open: unbounded, a slow disk would let the
threads run ahead until the process ran out of file descriptors."""


@dataclass
class _Item:
    change: Change
    claim: Claim
    on_done: Callable[[], None] | None
    output: OutputFiles | None


class CommitQueue:
    def __init__(
        self,
        store: Store,
        log: Callable[[str], None],
        outputs: OutputPool,
        more_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.more_coming = more_coming
        self.log = log
        self.outputs = outputs
        self._cond = threading.Condition()
        self._items: list[_Item] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="queuectl-committer", daemon=True)
        self._thread.start()

    def submit(
        self,
        change: Change,
        claim: Claim,
        on_done: Callable[[], None] | None = None,
        output: OutputFiles | None = None,
    ) -> None:
        with self._cond:
            while len(self._items) >= MAX_QUEUED and not self._closed:
                self._cond.wait()  # backpressure: see MAX_QUEUED
            self._items.append(_Item(change, claim, on_done, output))
            self._cond.notify_all()

    def close(self) -> None:
        """Commit everything still queued, then stop the committer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                self._linger()
                batch, self._items = self._items[:MAX_BATCH], self._items[MAX_BATCH:]
                self._cond.notify_all()  # room for submitters held back by MAX_QUEUED
                if not batch and self._closed:
                    return
            try:
                self._commit(batch)
                self.outputs.refill()
            except Exception as exc:
                # This thread must outlive any one batch: a dead committer would leave every
                # outcome uncommitted and, once MAX_QUEUED are waiting, every worker thread
                # blocked in submit(), a worker no signal could stop. Locks still held are
                # let go, so recovery settles those jobs.
                self.log(f"error: committer: {describe(exc)}")
                for item in batch:
                    item.claim.release()

    def _linger(self) -> None:
        """Wait up to ``COMMIT_WINDOW_SECONDS`` for more outcomes while commands are still
        running (PostgreSQL's commit_delay): a commit's fsyncs and Python work cost about the
        same for one outcome as for ten, and each commit competes with the worker threads
        for the interpreter. With nothing running, the outcome is committed at once."""
        deadline = time.monotonic() + COMMIT_WINDOW_SECONDS
        while len(self._items) < MAX_BATCH and not self._closed and self.more_coming():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _commit(self, batch: list[_Item]) -> None:
        for item in batch:  # logs first, so a finished job's output is where it says
            if item.output is not None:
                try:
                    self.outputs.place(item.output, item.change.job.id, item.change.job.runs)
                except OSError as exc:
                    self.log(f"error: cannot move the output of {item.change.job.id}: {exc}")
        try:
            with contextlib.ExitStack() as locks:
                for item in batch:
                    locks.enter_context(self.store.changing(item.change.job.id))
                self.store.commits.commit([item.change for item in batch])
        except (QueueError, OSError, ValueError) as exc:
            # The jobs stay in processing/; once their locks are released, recovery settles
            # them (finishing the commit if part of it became durable).
            self.log(f"error: could not record {len(batch)} outcome(s): {describe(exc)}")
            for item in batch:
                item.claim.release()
            return
        for item in batch:
            item.claim.release()
            if item.on_done is not None:
                item.on_done()
