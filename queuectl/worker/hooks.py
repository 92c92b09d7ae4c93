"""Completion hooks: a command run after a job reaches a final state, only once that state is
durable, by whichever worker of the home holds the hook byte of ``locks/claims.lock``.

The runner reads the journal from ``hooks/cursor.json`` (``storage.hooks``): every record
that put a job in completed/, dead/ or cancelled/ (reached by a worker, by ``cancel`` of a
waiting job, or by a dependency cascade: all of them are in the journal) gets the job's own
``on_finish``, else the ``on-finish`` setting, run as ``/bin/sh -c`` in a process group of
its own with ``QUEUECTL_JOB_ID``, ``QUEUECTL_STATE``, ``QUEUECTL_EXIT_CODE``,
``QUEUECTL_QUEUE``, ``QUEUECTL_QUEUE_REMAINING`` and ``QUEUECTL_HOME`` set, and killed
(group and all) after ``on-finish-timeout``. A hook never changes the job and never holds
up a job: it runs in this thread, one at a time, next to the worker's job threads. A hook
is over when its shell exits: what it left running in its process group is killed then
(something meant to outlive it must detach, with ``setsid``), and a process holding its
stderr open never holds up the next hook; only the last ``TAIL_BYTES`` of stderr are kept.
Its exit code and stderr tail are journaled (``show`` prints them) before the cursor moves
on, so a worker killed before or during a hook, or told to stop now (the hook is killed),
leaves it to be run (again) by the next runner: at least once. ``journal compact`` keeps
the segments the cursor has not passed.
"""

from __future__ import annotations

import os
import select
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
ABORT_CHECK_SECONDS: Final = 0.25
"""How often a running hook looks for a stop-now."""
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
    def __init__(
        self,
        store: Store,
        log: Callable[[str], None],
        stopping: threading.Event,
        aborting: threading.Event | None = None,
    ) -> None:
        super().__init__(name="queuectl-hooks", daemon=True)
        self.store = store
        self.log = log
        self.stopping = stopping
        self.aborting = aborting or threading.Event()
        """Set by a stop-now: a running hook is killed, not waited for."""
        self.leading = False
        self._holder: Any = None
        self._lead_guard = threading.Lock()
        self._busy = False

    def run(self) -> None:
        reported = ""
        try:
            while not self.stopping.wait(POLL_SECONDS):
                try:
                    if not self.leading:
                        self.leading = self._lead()
                    if self.leading:
                        self.catch_up()
                except Exception as exc:  # a hook never takes the worker down, nor stops
                    message = f"error: hooks: {describe(exc)}"
                    if message != reported:
                        self.log(message)
                        reported = message
        finally:
            if self._holder is not None:
                self._holder.close()

    def _lead(self) -> bool:
        """Take the hook byte (from the runner's thread, or ``idle`` in the dispatcher's)."""
        with self._lead_guard:
            if self._holder is not None:
                return True
            holder = self.store.locks.holder()
            if holder.take(HOOK_BYTE):
                self._holder = holder
                return True
            holder.close()
            return False

    def idle(self) -> bool:
        """Nothing the runner still has to look at (burst mode waits for this). A worker
        that does not run hooks yet takes the hook byte if it is free, so a burst worker
        alone runs the hooks that are due before it exits; if another worker holds it,
        the hooks are that worker's."""
        if not self._wanted():
            return True
        if not self.leading and not self._lead():
            return True
        self.leading = True
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
            try:
                for fields, segment, end in rows:
                    if self.stopping.is_set():
                        break
                    if _ends_a_job(fields) and self._maybe_run(fields, segment):
                        ledger.save(Cursor(segment, end))  # only after the record is durable
                    reached = Cursor(segment, end)
            except _Abandoned:
                pass  # the cursor stays before it: the next runner runs it again
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
        assert proc.stderr is not None
        tail = _Tail(TAIL_BYTES)
        try:
            exited = self._watch(proc, proc.stderr.fileno(), tail, time.monotonic() + timeout)
            tail.drain(proc.stderr.fileno())
        finally:
            proc.stderr.close()
        if exited:
            code: int | None = proc.wait()
            _kill_group(proc.pid)  # what it left in its group does not outlive it
            outcome = "succeeded" if code == 0 else "failed"
            error = None if code == 0 else f"exit code {code}"
        else:
            _kill_group(proc.pid, proc)
            proc.wait()
            code, outcome, error = None, "timed_out", f"timeout: killed after {timeout:g}s"
        finished = utcnow()
        text = tail.text()
        return {
            "state": job.state.value,
            "command": command,
            "outcome": outcome,
            "exit_code": code,
            "error": error,
            "stderr_tail": text or None,
            "started_at": format_time(started),
            "finished_at": format_time(finished),
            "duration": round((finished - started).total_seconds(), 3),
        }

    def _watch(self, proc: subprocess.Popen[bytes], err: int, tail: _Tail, deadline: float) -> bool:
        """Read the hook's stderr (keeping its tail) until its shell exits (True) or the
        time limit passes (False). The shell's exit ends the wait, not the pipe's end: a
        process it left behind may hold the pipe open for ever. A stop-now kills the hook
        and raises ``_Abandoned`` (its final state is handled again by the next runner)."""
        pidfd = _pidfd(proc.pid)
        watched = [err] + ([pidfd] if pidfd is not None else [])
        try:
            while True:
                if self.aborting.is_set():
                    _kill_group(proc.pid, proc, grace=0)
                    proc.wait()
                    raise _Abandoned
                if _exited(proc.pid):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(left, ABORT_CHECK_SECONDS if pidfd is not None else 0.05)
                ready, _, _ = select.select(watched, [], [], wait)
                if err in ready and not tail.read(err):
                    watched.remove(err)  # the end of the pipe: only the exit is left
        finally:
            if pidfd is not None:
                os.close(pidfd)

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


class _Abandoned(Exception):
    """A stop-now came while a hook ran: it was killed and is not recorded."""


class _Tail:
    """The last ``size`` bytes of a stream, in bounded memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()

    def read(self, fd: int) -> bool:
        """Read what is there now; False at the end of the stream (or nothing there)."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            return False
        self.data += chunk
        del self.data[: -self.size]
        return True

    def drain(self, fd: int) -> None:
        """What is left in the pipe once the shell is gone, without waiting for more
        (bounded: a process it left behind could keep the pipe full for ever)."""
        os.set_blocking(fd, False)
        for _ in range(64):
            if not self.read(fd) or not select.select([fd], [], [], 0)[0]:
                return

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace").strip()


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    """Whether the process has exited (left unreaped, so its group id stays its own)."""
    try:
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return found is not None


def _kill_group(
    pgid: int, leader: subprocess.Popen[bytes] | None = None, grace: float = 5.0
) -> None:
    """SIGTERM the group, SIGKILL what is left after ``grace`` seconds. The leader (when
    still ours) is reaped as it dies, so a zombie does not count as a member."""
    try:
        os.killpg(pgid, signal.SIGTERM if grace else signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
