"""Completion hooks: a command run after a job reaches a final state, only once that state is
durable, by whichever worker of the home holds the hook byte of ``locks/claims.lock``.

The runner reads the journal from ``hooks/cursor.json`` (``storage.hooks``): every record
that put a job in completed/, dead/ or cancelled/ (reached by a worker, by ``cancel`` of a
waiting job, or by a dependency cascade: all of them are in the journal) gets the job's own
``on_finish``, else the ``on-finish`` setting, run as ``/bin/sh -c`` in a process group of
its own with ``QUEUECTL_JOB_ID``, ``QUEUECTL_STATE``, ``QUEUECTL_EXIT_CODE``,
``QUEUECTL_QUEUE``, ``QUEUECTL_QUEUE_REMAINING`` and ``QUEUECTL_HOME`` set, and killed
(group and all) after ``on-finish-timeout``. A hook never changes the job and never holds
up a job: it runs in this thread, one at a time, next to the worker's job threads. Its exit
code and stderr tail are journaled (``show`` prints them) before the cursor moves on, so a
worker killed before or during a hook leaves it to be run (again) by the next runner: at
least once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from queuectl.errors import InvalidJob, describe
from queuectl.job import FINISHED_STATES, Job, JobState, format_time, utcnow
from queuectl.storage.events import Event
from queuectl.storage.hooks import Cursor
from queuectl.storage.journal_index import EVENT, GENERATION, ID, LENGTH, OFFSET, REV, STATE
from queuectl.storage.locks import HOOK_BYTE
from queuectl.storage.store import Store

__all__ = ["HookRunner"]

POLL_SECONDS: Final = 0.25
"""How often the runner looks for new final states (and another worker for the hook byte)."""

TAIL_BYTES: Final = 400
FINAL_VALUES: Final = frozenset(state.value for state in FINISHED_STATES)
ENDING_EVENTS: Final = frozenset({Event.COMPLETED, Event.DEAD, Event.CANCELLED, Event.RECOVERED})
"""Records that can put a job in a final state (``recovered``: its last run was lost)."""
UNFINISHED: Final = (
    JobState.PENDING,
    JobState.PROCESSING,
    JobState.FAILED,
    JobState.BLOCKED,
    JobState.HELD,
)


class HookRunner(threading.Thread):
    def __init__(self, store: Store, log: Callable[[str], None], stopping: threading.Event):
        super().__init__(name="queuectl-hooks", daemon=True)
        self.store = store
        self.log = log
        self.stopping = stopping
        self.leading = False
        self._holder: Any = None
        self._busy = False

    def run(self) -> None:
        try:
            while not self.stopping.wait(POLL_SECONDS):
                if not self.leading:
                    self.leading = self._lead()
                if self.leading:
                    self.catch_up()
        except Exception as exc:  # a hook must never take the worker down
            self.log(f"error: hooks: {describe(exc)}")
        finally:
            if self._holder is not None:
                self._holder.close()

    def _lead(self) -> bool:
        holder = self.store.locks.holder()
        if holder.take(HOOK_BYTE):
            self._holder = holder
            return True
        holder.close()
        return False

    def idle(self) -> bool:
        """Nothing the runner still has to look at (burst mode waits for this)."""
        if not self.leading or not self._wanted():
            return True
        cursor = self.store.hooks.cursor()
        return self._busy is False and (cursor is None or cursor == self.store.hooks.end())

    def _wanted(self) -> bool:
        return self.store.hooks.wanted(bool(self.store.config.get("on-finish")))

    def catch_up(self) -> None:
        """Run the hooks of every final state journaled since the cursor."""
        if not self._wanted():
            return
        ledger = self.store.hooks
        cursor = ledger.cursor()
        if cursor is None:
            ledger.enable(per_job=False)
            return
        self._busy = True
        try:
            with self.store.journal.reading():
                rows = list(self.store.journal.rows_after(cursor.segment, cursor.offset))
            reached = cursor
            for fields, segment, end in rows:
                if self.stopping.is_set():
                    break
                if _ends_a_job(fields) and self._maybe_run(fields, segment):
                    ledger.save(Cursor(segment, end))  # only after the record is durable
                reached = Cursor(segment, end)
            if reached != cursor:
                ledger.save(reached)
        finally:
            self._busy = False

    def _maybe_run(self, fields: list[str], segment: int) -> bool:
        """Run the hook of one final state, if it has one; whether one ran."""
        from queuectl.storage.journal import segment_path

        source = segment_path(self.store.journal.directory, segment)
        record = self.store.journal.read_at(source, int(fields[OFFSET]), int(fields[LENGTH]))
        data = record.get("job") if record else None
        if not isinstance(data, dict):
            return False
        try:
            job = Job.from_dict(data)
        except InvalidJob:
            return False
        configured = self.store.config.get("on-finish")
        command = job.on_finish if job.on_finish is not None else configured
        if not command:
            return False
        result = self._run(command, job)
        self.store.hooks.record(job.id, int(fields[GENERATION]), int(fields[REV]), result)
        if result["outcome"] != "succeeded":
            self.log(f"hook of {job.id} {result['outcome']}: {result.get('error')}")
        return True

    def _run(self, command: str, job: Job) -> dict[str, Any]:
        env = dict(os.environ)
        env.update(
            QUEUECTL_JOB_ID=job.id,
            QUEUECTL_STATE=job.state.value,
            QUEUECTL_EXIT_CODE="" if job.last_exit_code is None else str(job.last_exit_code),
            QUEUECTL_QUEUE=job.queue,
            QUEUECTL_QUEUE_REMAINING=str(self._remaining(job.queue)),
            QUEUECTL_HOME=str(self.store.home.root),
        )
        timeout = float(self.store.config.get("on-finish-timeout"))
        started = utcnow()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
            outcome = "succeeded" if code == 0 else "failed"
            error = None if code == 0 else f"exit code {code}"
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            _, err = proc.communicate()
            code, outcome, error = None, "timed_out", f"timeout: killed after {timeout:g}s"
        finished = utcnow()
        tail = err[-TAIL_BYTES:].decode("utf-8", "replace").strip() if err else ""
        return {
            "state": job.state.value,
            "command": command,
            "outcome": outcome,
            "exit_code": code,
            "error": error,
            "stderr_tail": tail or None,
            "started_at": format_time(started),
            "finished_at": format_time(finished),
            "duration": round((finished - started).total_seconds(), 3),
        }

    def _remaining(self, queue: str) -> int:
        """Jobs of the queue still waiting or running (0 means the queue has drained)."""
        folders = self.store.folders
        if self.store.queues.names() == ["default"]:
            return sum(folders.count(state) for state in UNFINISHED)
        counts = folders.queue_counts(UNFINISHED).get(queue, {})
        return sum(counts.values())


def _ends_a_job(fields: list[str]) -> bool:
    """A job's record that put it in a final state (not a queue's, schedule's or hook's)."""
    job_row = fields[ID] != "-" and ":" not in fields[ID]
    return job_row and fields[STATE] in FINAL_VALUES and fields[EVENT] in ENDING_EVENTS


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
