"""The worker process: N threads doing claim -> run -> decide -> record, plus signals.

Signals only set flags (huey's habit): the first SIGTERM/SIGINT stops claiming and lets
running commands finish; a second one kills the running commands' process groups and puts
their jobs back, unchanged, where they were claimed from.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, Final

from queuectl.config import backoff_policy
from queuectl.errors import QueueError, describe
from queuectl.job import DEFAULT_QUEUE, Job, JobState, format_time, parse_time, utcnow
from queuectl.scheduler import Backoff, Outcome, OutcomeKind, after_attempt
from queuectl.storage.claims import Claim, ClaimMiss, Prepared
from queuectl.storage.commit import Change
from queuectl.storage.gpus import GPU_STALL
from queuectl.storage.registry import Registration, new_worker_id, register
from queuectl.storage.slots import free_slots, has_room
from queuectl.storage.store import Store
from queuectl.text import clip, one_line
from queuectl.worker.dispatch import RECOVERY_INTERVAL_SECONDS, Dispatcher
from queuectl.worker.hooks import HookRunner
from queuectl.worker.index import Entry, RunnableIndex
from queuectl.worker.leader import Leader
from queuectl.worker.outputs import OutputFiles, OutputPool
from queuectl.worker.pipeline import CommitQueue
from queuectl.worker.runner import Executor, LocalExecutor, Run

__all__ = ["MAX_THREADS", "WorkerPool"]

MAX_THREADS: Final = 256

LOOK_AHEAD_SECONDS: Final = 0.005
"""How long a thread holds the next job, prepared, waiting for its current command to end."""

CONFIG_RECHECK_SECONDS: Final = 0.5
"""A running worker notices ``config set`` within this long."""

STALL_LOOK_SECONDS: Final = 0.25
"""How often a worker looks whether a queue at its limit has room again (a job of it ended in
another process): "a new limit takes effect within a second"."""

STUCK_SECONDS: Final = 10.0
"""A burst worker whose claims have all failed for this long exits 1 instead of retrying
forever (a folder it may not write)."""

PUBLISH_SPACING_SECONDS: Final = 0.02
"""``workers/<id>.jobs`` (what runs now) is rewritten at most this often."""


def _stderr_log(message: str) -> None:
    """One write(2) per line: lines from several threads never interleave."""
    line = f"{format_time(utcnow())} [{os.getpid()}] {message}\n"
    try:
        os.write(2, line.encode("utf-8", "replace"))
    except OSError:
        pass  # a closed or full stderr must not stop the worker


class WorkerPool:
    def __init__(
        self,
        store: Store,
        threads: int,
        *,
        burst: bool = False,
        log: Callable[[str], None] = _stderr_log,
        recovery_interval: float = RECOVERY_INTERVAL_SECONDS,
        queues: frozenset[str] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.serves = queues
        """The queues this worker runs jobs of (None: every queue)."""
        self.store = store
        store.config.recheck = CONFIG_RECHECK_SECONDS
        store.config.on_error = log
        store.config.warn = log
        self.threads = threads
        self.burst = burst
        self.log = log
        self.id = new_worker_id()
        self.name = self.id
        self.registration: Registration | None = None
        self._locked_misses: dict[tuple[JobState, str], int] = {}
        self._claim_failures: dict[tuple[JobState, str], int] = {}
        self._failing_since: float | None = None
        self._reported_errors: set[str] = set()
        self.failed = False
        """Set when a burst worker gave up: the process exits 1."""
        self.index = RunnableIndex()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        """The job threads are gone (the dispatcher's loop ends)."""
        self.aborting = threading.Event()
        self._guard = threading.Lock()
        self._busy = 0
        self._handoffs = 0
        self._running: dict[str, Run] = {}
        self._running_info: dict[str, dict[str, object]] = {}
        self._jobs_dirty = False
        self._jobs_published = 0.0
        self._next_stall_look = 0.0
        self._signals = 0
        self._signal_thread: threading.Thread | None = None
        self._signal_pipe = (-1, -1)
        self._handlers_before: dict[int, _SignalHandler] = {}
        self._wakeup_before = -1
        base_env = dict(os.environ)
        base_env["QUEUECTL_HOME"] = str(store.home.root)
        inherited_names = (
            "QUEUECTL_JOB_ID",
            "QUEUECTL_ATTEMPT",
            "QUEUECTL_RUN",
            "QUEUECTL_CWD",
            "QUEUECTL_QUEUE",
            "QUEUECTL_SLOT",
            "QUEUECTL_GPUS",
        )
        for inherited in inherited_names:
            base_env.pop(inherited, None)  # a worker started from inside a job
        self.executor: Executor = executor or LocalExecutor(store, base_env)
        """Where commands run: this host, or a Dask cluster (``queuectl.remote``)."""
        self.commits: CommitQueue | None = None
        self.outputs = OutputPool(
            store.home.tmp, store.home.logs, spare=2 * threads + 4, owner=store.mark.name
        )
        self.hooks = HookRunner(store, log, self.stopping, self.aborting)
        self.leader = None if burst else Leader(store, log, self.stopping)
        self.dispatcher = Dispatcher(
            store,
            self.index,
            stopping=self.stopping,
            done=self.finished,
            on_drained=self._drained if burst else None,
            is_idle=self._is_idle,
            log=log,
            recovery_interval=recovery_interval,
            on_cancel=self._cancel_requested,
            on_stop=self._stop_requested,
            own_id=self.id,
            on_tick=self._tick,
            on_queue_change=self._queue_changed,
            serves=self.serves,
        )

    # ---------------------------------------------------------------- life cycle

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        _standard_descriptors_open()
        self.store.config.on_error = None
        self.store.config.values()  # a bad config.json stops a worker before it starts
        self.store.config.on_error = self.log
        served = {"queues": sorted(self.serves) if self.serves else None}
        registration = register(
            self.store.home.workers, self.threads, self.burst, self.id, extra=served
        )
        self.registration = registration
        try:
            return self._serve()
        finally:
            self._restore_signal_handling()
            # Unlisted last, on every way out (an error included); its lock goes only when the
            # process exits.
            registration.close()

    def _serve(self) -> int:
        self._install_signal_handlers()
        mode = "burst mode" if self.burst else "until stopped"
        self.log(
            f"worker started with {self.threads} thread(s), {mode}; home {self.store.home.root}"
        )
        pool = [
            threading.Thread(target=self._thread_main, name=f"queuectl-worker-{i}", daemon=True)
            for i in range(self.threads)
        ]
        try:
            self.outputs.refill()
            with _stop_signals_for_this_thread_only():
                self.commits = CommitQueue(
                    self.store, self.log, self.outputs, self._commands_running
                )
                self.dispatcher.start()
                self.hooks.start()
                if self.leader is not None:
                    self.leader.start()
                for thread in pool:
                    thread.start()
            for thread in pool:
                thread.join()
            self.commits.close()
            self.stopping.set()
            self.finished.set()
            self.dispatcher.wake()
            self.dispatcher.join()
            self.hooks.join()
            if self.leader is not None:
                self.leader.join()
        finally:
            self.executor.close()
            self.dispatcher.close()
            self.outputs.discard()
            self.store.commits.discard_blanks()
            _remove_quietly(self.store.home.stop_requests / self.id)
        if self.dispatcher.error is not None or self.failed:
            if self.dispatcher.error is not None:
                self.log(f"error: {describe(self.dispatcher.error)}")
            return 1
        self.log("worker stopped")
        return 0

    def request_stop(self, now: bool = False) -> None:
        self.stopping.set()
        self.index.close()
        if now:
            self.aborting.set()
            with self._guard:
                running = list(self._running.values())
            for execution in running:
                execution.kill()
        self.dispatcher.wake()

    def _install_signal_handlers(self) -> None:
        """Handle SIGTERM and SIGINT in a thread of their own. A Python handler runs in the
        main thread between any two bytecodes: a second ^C arriving while the first one's
        handler was inside ``Event.set`` took the event's lock again from the same thread
        and hung the worker for good. So the Python handler does nothing; the interpreter's
        C-level handler, whichever thread the kernel picked (a library's thread too), writes
        the signal's number to a wakeup pipe, and the signal thread reads it there and
        handles it as ordinary code that may take any lock."""
        if threading.current_thread() is not threading.main_thread():
            return
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signal_pipe = (read_end, write_end)
        self._handlers_before = {
            signum: signal.signal(signum, _handled_by_the_signal_thread) for signum in STOP_SIGNALS
        }
        self._wakeup_before = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._signal_thread = threading.Thread(
            target=self._take_signals, args=(read_end,), name="queuectl-signals", daemon=True
        )
        with _stop_signals_for_this_thread_only():
            self._signal_thread.start()

    def _take_signals(self, read_end: int) -> None:
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        while True:
            poller.poll()
            try:
                numbers = os.read(read_end, 64)
            except BlockingIOError:
                continue
            for signum in numbers:
                if signum == 0:
                    return  # _restore_signal_handling
                if signum in STOP_SIGNALS:
                    self._on_signal(signum, None)

    def _restore_signal_handling(self) -> None:
        """Stop the signal thread and put back what was there before (a worker run from a
        test or an embedding program must leave ^C as it found it)."""
        thread = self._signal_thread
        if thread is None:
            return
        signal.set_wakeup_fd(self._wakeup_before)
        for signum, handler in self._handlers_before.items():
            signal.signal(signum, handler)
        read_end, write_end = self._signal_pipe
        os.write(write_end, b"\0")
        thread.join()
        self._signal_thread = None
        os.close(read_end)
        os.close(write_end)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.log(f"{name}: finishing running jobs, then exiting (again to stop now)")
            self.request_stop(now=False)
        else:
            self.log(f"{name}: stopping now; running jobs go back to the queue")
            self.request_stop(now=True)

    def _stop_requested(self, now: bool) -> None:
        """A ``stop/<id>`` request (``worker stop`` from anywhere, containers included)."""
        if self.stopping.is_set() and not now:
            return
        self.log("stop requested: " + ("stopping now" if now else "finishing running jobs"))
        self.request_stop(now=now)

    def _jobs_changed(self) -> None:
        """The set of running jobs changed: have the dispatcher republish ``<id>.jobs``."""
        if not self._jobs_dirty:
            self._jobs_dirty = True
            self.dispatcher.wake()

    def _tick(self) -> float | None:
        """Called by the dispatcher on every wake-up: republish what runs, and look at the
        stalled queues; returns when to be called again."""
        due = [self._publish_jobs(), self._look_at_stalled()]
        return min((d for d in due if d is not None), default=None)

    def _look_at_stalled(self) -> float | None:
        """A stalled queue gets room when a job of it ends in another process (or a limit is
        raised): look every ``STALL_LOOK_SECONDS`` and bring back as many parked jobs as
        there are free slots. A job ending here unstalls at once (``recorded``)."""
        stalled = self.index.stalled()
        if not stalled:
            return None
        now = time.monotonic()
        if now < self._next_stall_look:
            return self._next_stall_look
        self._next_stall_look = now + STALL_LOOK_SECONDS
        for name in stalled:
            if name == GPU_STALL:
                free = self.store.devices.free()
                if free:
                    self.index.unstall(name, free)
                continue
            queue = self.store.queues.get(name)
            if queue is None:
                self._unusable_queue(name, stalled)
                continue
            if queue.paused:
                continue
            lowered = queue.parallel and queue.high_water > queue.parallel
            if lowered and self.store.queues.settle_high_water(name):
                queue = self.store.queues.get(name) or queue
            free = free_slots(self.store.locks, queue, limit=self.threads)
            if free:
                self.index.unstall(name, free)
        return self._next_stall_look

    def _unusable_queue(self, name: str, stalled: dict[str, int]) -> None:
        """Jobs wait for a queue that does not exist (removed while they were queued) or
        whose file cannot be trusted: say so once per reason; a burst worker with nothing
        else to do gives up (exit 1) instead of waiting forever."""
        reason = self.store.queues.why_unusable(name)
        if reason is None:
            return  # fixed meanwhile: the file watch unstalls it
        key = f"queue {name}: {reason}"
        with self._guard:
            repeated = key in self._reported_errors
            self._reported_errors.add(key)
        if not repeated:
            self.log(one_line(f"error: jobs of queue {name!r} cannot run: {reason}"))
        if not self.burst or self.stopping.is_set() or self._is_idle() is None:
            return
        unusable = {q for q in stalled if q != GPU_STALL and self.store.queues.get(q) is None}
        if sum(stalled[q] for q in unusable) >= len(self.index):
            names = ", ".join(sorted(unusable))
            self.log(f"burst: giving up: the jobs left are in queues that cannot run ({names})")
            self.failed = True
            self.request_stop(now=False)

    def _queue_changed(self, name: str) -> None:
        """A queue's file changed (pause, resume, a new limit): let its jobs be tried."""
        self.index.unstall(name)

    def _publish_jobs(self) -> float | None:
        """Called by the dispatcher on every wake-up: republish at most every 20 ms, off the
        threads' path (it is not written on the claim path); returns when to call again."""
        if not self._jobs_dirty or self.registration is None:
            return None
        now = time.monotonic()
        if now < self._jobs_published + PUBLISH_SPACING_SECONDS:
            return self._jobs_published + PUBLISH_SPACING_SECONDS
        self._jobs_dirty = False
        self._jobs_published = now
        with self._guard:
            jobs = list(self._running_info.values())
        self.registration.publish_jobs(jobs)
        return None

    def _cancel_requested(self, job_id: str) -> None:
        with self._guard:
            execution = self._running.get(job_id)
        if execution is not None and not execution.cancelled:
            self.log(f"cancelling {job_id}: stopping its command")
            execution.cancel()

    def _drained(self) -> None:
        self.log("burst: nothing pending, running or waiting for a retry")
        self.request_stop(now=False)

    def _commands_running(self) -> bool:
        return bool(self._running)  # a dict's truth is atomic under the GIL

    def _is_idle(self) -> int | None:
        """None while a job is in hand or a completion hook is still to run (burst mode
        waits for those: a job's hook belongs to its run); otherwise the number of times
        a job was taken or let go so far, so that two looks can tell nothing moved between
        them."""
        with self._guard:
            if self._busy:
                return None
            handoffs = self._handoffs
        return handoffs if self.hooks.idle() else None

    # ---------------------------------------------------------------- one thread

    def _thread_main(self) -> None:
        """Claim, start, wait, settle, in a pipeline: a finished attempt is settled (its
        outcome decided and handed to the committer) only once the thread's next command
        has started, so that bookkeeping overlaps a running command instead of delaying the
        next start. With nothing else to start, it is settled at once."""
        worker = f"{self.name}:{threading.current_thread().name.rsplit('-', 1)[-1]}"
        finished: _Attempt | None = None
        ahead: tuple[Prepared, Entry] | None = None
        try:
            while not self.stopping.is_set():
                if ahead is None and not self.executor.ready():
                    # A remote cluster is unreachable: settle what ended, claim nothing
                    # (jobs stay pending rather than burn their attempts) until it is back.
                    if finished is not None:
                        self._settle(finished)
                        finished = None
                    self.executor.wait_ready(self.stopping)
                    continue
                if ahead is not None:
                    running = self._begin_prepared(worker, *ahead)
                    ahead = None
                else:
                    item = self.index.take_entry(
                        block=finished is None, on_take=self._busy_with_one
                    )
                    if item is None:
                        if finished is None:
                            return  # the index was closed
                        self._settle(finished)
                        finished = None
                        continue
                    running = self._begin(worker, item)
                if finished is not None:
                    self._settle(finished)
                    finished = None
                if running is not None:
                    ahead = self._look_ahead(running)
                    finished = self._wait(running)
        finally:
            if ahead is not None:
                ahead[0].release()
                self._done_with_one()
            if finished is not None:
                self._settle(finished)

    def _look_ahead(self, running: _Attempt) -> tuple[Prepared, Entry] | None:
        """Prepare the next job (open, lock, read, check: ``Store.prepare_claim``) while the
        current command runs, so that only the rename is left between that command's exit and
        the next start. Held for at most ``LOOK_AHEAD_SECONDS``: for a longer command the
        next job is released to the other threads and workers, exactly as it was."""
        if running.outcome is not None or not self.executor.look_ahead:
            return None  # it did not start (or runs remotely): nothing to overlap with
        entry = self.index.take_entry(block=False, on_take=self._busy_with_one)
        if entry is None:
            return None
        if not self._has_room(entry):
            self._done_with_one()
            return None
        state, name, due, priority, queue = entry
        try:
            prepared = self.store.claims.prepare(name, state, utcnow())
        except Exception as exc:  # the running command must still be waited for
            self.log(f"error: {describe(exc)}")
            prepared = None
            self.index.add(state, name, time.time() + 1.0, priority, queue)
        if isinstance(prepared, ClaimMiss):
            self._missed(entry, prepared)
            prepared = None
        if prepared is not None and not self._ended_soon(running):
            prepared.release()
            self.index.add(state, name, due, priority, queue)
            prepared = None
        if prepared is None:
            self._done_with_one()
            return None
        return prepared, entry

    def _ended_soon(self, running: _Attempt) -> bool:
        try:
            return running.execution.exited_within(LOOK_AHEAD_SECONDS)
        except Exception as exc:  # never leave the prepared job locked over this
            self.log(f"error: {describe(exc)}")
            return False

    def _begin_prepared(self, worker: str, prepared: Prepared, entry: Entry) -> _Attempt | None:
        """``_begin`` for a job prepared by ``_look_ahead`` (already counted as busy)."""
        attempt = None
        try:
            if self.stopping.is_set():
                prepared.release()
            else:
                claim = self.store.claims.complete(prepared, worker, utcnow())
                if isinstance(claim, ClaimMiss):
                    self._missed(entry, claim)
                else:
                    self._made_progress(prepared.origin, f"{claim.job.id}.json")
                    attempt = self._start_or_put_back(claim)
        except Exception as exc:
            prepared.release()
            self._claim_failed(prepared.origin, f"{prepared.job.id}.json", exc, entry.queue)
        if attempt is None:
            self._done_with_one()
        return attempt

    def _begin(self, worker: str, entry: Entry) -> _Attempt | None:
        """Claim and start ``entry`` (counted as in hand by ``take_entry``)."""
        if not self._has_room(entry):
            self._done_with_one()
            return None
        try:
            attempt = self._claim_and_start(worker, entry)
        except Exception as exc:  # one job's trouble must not end the thread
            self._claim_failed(entry.state, entry.name, exc, entry.queue)
            attempt = None
        if attempt is None:
            self._done_with_one()
        return attempt

    def _busy_with_one(self) -> None:
        """A thread took a job in hand (claiming, running or settling it); ``_done_with_one``
        when it let go. Burst mode's "drained" needs no job in hand anywhere."""
        with self._guard:
            self._busy += 1
            self._handoffs += 1

    def _done_with_one(self) -> None:
        with self._guard:
            self._busy -= 1
            self._handoffs += 1
        if self.burst and not len(self.index):
            self.dispatcher.wake()  # maybe the home is drained now

    def _has_room(self, entry: Entry) -> bool:
        """Whether ``entry``'s queue might start a job now (a cheap look: the claim takes
        the slot); if not, the entry is parked with its queue, behind no other queue."""
        queue = self.store.queues.get(entry.queue)
        if queue is None:
            return True  # a drop naming no queue is rejected by its claim; a job parks there
        if not queue.paused and has_room(self.store.locks, queue):
            return True
        self.index.stall(entry)
        return False

    def _claim_and_start(self, worker: str, entry: Entry) -> _Attempt | None:
        state, name = entry.state, entry.name
        result = self.store.claims.claim(name, state, worker, utcnow())
        if isinstance(result, ClaimMiss):
            self._missed(entry, result)
            return None
        self._made_progress(state, name)
        if self.stopping.is_set():
            self.store.claims.put_back(result)
            return None
        return self._start_or_put_back(result)

    def _start_or_put_back(self, claim: Claim) -> _Attempt:
        try:
            return self._start(claim)
        except Exception:
            # Nothing ran (no output files to be had, say): the job goes back unchanged.
            with self._guard:
                self._running.pop(claim.job.id, None)
                self._running_info.pop(claim.job.id, None)
            self.store.claims.put_back(claim)
            raise

    def _missed(self, entry: Entry, miss: ClaimMiss) -> None:
        state, name = entry.state, entry.name
        if miss.parked is not None:
            self.index.stall(entry._replace(queue=miss.parked))
            return
        if miss.locked:
            miss.retry_at = time.time() + self._locked_backoff(state, name)
        if miss.retry_at is not None:
            self.index.add(state, name, miss.retry_at, entry.priority, entry.queue)
        if miss.rejected:
            self.log(f"rejected {miss.reason}")

    def _claim_failed(
        self, state: JobState, name: str, exc: Exception, queue: str = DEFAULT_QUEUE
    ) -> None:
        """A claim that raised (a folder we may not write, a full disk): try the job again
        later, ever more slowly, and say so once per error rather than once per try. A burst
        worker that has made no progress for ``STUCK_SECONDS`` gives up with exit 1."""
        message = f"error: cannot claim {name}: {describe(exc)}"
        now = time.monotonic()
        with self._guard:
            failures = self._claim_failures.get((state, name), 0)
            self._claim_failures[(state, name)] = failures + 1
            if self._failing_since is None:
                self._failing_since = now
            stuck = now - self._failing_since
            repeated = message in self._reported_errors
            self._reported_errors.add(message)
        if not repeated:
            self.log(message)
        self.index.add(state, name, time.time() + min(30.0, 0.5 * 2**failures), 0, queue)
        if self.burst and stuck >= STUCK_SECONDS and not self.stopping.is_set():
            self.log(f"burst: no progress for {stuck:.0f}s ({exc}); giving up")
            self.failed = True
            self.request_stop(now=False)

    def _made_progress(self, state: JobState, name: str) -> None:
        with self._guard:
            self._failing_since = None
            self._claim_failures.pop((state, name), None)
            self._locked_misses.pop((state, name), None)

    def _locked_backoff(self, state: JobState, name: str) -> float:
        """A job whose run lock is busy is claimed by another thread right now (free within
        microseconds), or still held by a command of an earlier run (which may take hours):
        look again after 5 ms, then ever more slowly, up to once a second."""
        with self._guard:
            misses = self._locked_misses.get((state, name), 0)
            self._locked_misses[(state, name)] = misses + 1
            if len(self._locked_misses) > 100_000:
                self._locked_misses.clear()
        return min(1.0, 0.005 * 2**misses)

    def _start(self, claim: Claim) -> _Attempt:
        job = claim.job
        attempt = job.attempts + 1
        output = self.outputs.take()
        timeout = job.timeout if job.timeout is not None else self.store.config.get("job-timeout")
        execution = self.executor.prepare(claim, attempt, output, float(timeout))
        with self._guard:
            self._running[job.id] = execution
            self._running_info[job.id] = {
                "id": job.id,
                "queue": job.queue,
                "command": clip(job.command, 200),
                "gpus": list(claim.gpus or ()),
                "run": job.runs + 1,
                "attempt": attempt,
                "started_at": format_time(execution.started_at),
                "thread": claim.job.worker,
                "stdout": str(output.stdout_path),
                "stderr": str(output.stderr_path),
            }
        self._jobs_changed()
        if self.aborting.is_set():
            execution.kill()  # a "stop now" that came after the claim: killed once started
        failed = execution.start()
        if failed is None:
            self.log(f"started {job.id} (attempt {attempt}): {clip(job.command, 60)}")
        return _Attempt(claim, execution, output, failed)

    def _wait(self, running: _Attempt) -> _Attempt:
        try:
            if running.outcome is None:
                running.outcome = running.execution.finish()
        finally:
            with self._guard:
                del self._running[running.claim.job.id]
                self._running_info.pop(running.claim.job.id, None)
            self._jobs_changed()
        return running

    def _settle(self, finished: _Attempt) -> None:
        try:
            self._record(finished)
        except QueueError as exc:
            self.log(f"error: {describe(exc)}")
        finally:
            self._done_with_one()

    def _record(self, finished: _Attempt) -> None:
        assert self.commits is not None and finished.outcome is not None
        claim, execution, output, outcome = (
            finished.claim,
            finished.execution,
            finished.output,
            finished.outcome,
        )
        job = claim.job
        kept: OutputFiles | None = output
        alone = execution.group_gone()  # no leftover process holds the job's files
        if alone and self.outputs.give_back(output):
            kept = None  # printed nothing: no log files for this attempt
        else:
            output.close_fds()
        if self.aborting.is_set():
            if kept is not None:
                self.outputs.place(kept, job.id, job.runs + 1)
            self.store.claims.put_back(claim)
            self.log(f"put back {job.id}: stopped before it finished")
            return
        policy = backoff_policy(self.store.config.values())
        now = utcnow()
        updated = after_attempt(job, outcome, backoff_base=policy, now=now)
        if outcome.kind is OutcomeKind.WORKER_LOST and updated.state is JobState.PENDING:
            updated = _backed_off(updated, policy, now)
        if execution.cancelled:
            updated = replace(
                updated,
                state=JobState.CANCELLED,
                next_run_at=None,
                last_error="cancelled while running",
            )

        def recorded() -> None:
            self.log(_describe(updated, outcome.error))
            self.index.unstall(job.queue, 1)  # its slot is free again
            if claim.gpus:
                self.index.unstall(GPU_STALL, len(claim.gpus))
            if updated.state is JobState.FAILED:
                due = _due(updated.next_run_at)
                self.index.add(
                    JobState.FAILED, f"{job.id}.json", due, updated.priority, updated.queue
                )
            elif self.burst and not len(self.index):
                self.dispatcher.wake()  # the last outcome may have drained the home

        change = Change(
            updated, updated.state.value, remove=claim.path, recycle=alone, attempt=True
        )
        self.commits.submit(change, claim, recorded, kept)


@dataclass
class _Attempt:
    """A claimed job whose command was started; ``outcome`` is set once it has ended (or
    at once, when it could not start)."""

    claim: Claim
    execution: Run
    output: OutputFiles
    outcome: Outcome | None = None


def _standard_descriptors_open() -> None:
    """Give closed stdin/stdout/stderr /dev/null, so no job lock or output file of ours is
    ever numbered 0-2: the spawn maps those onto the command's 0-3 in order, and a low source
    descriptor would be overwritten before it is copied."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: this one


STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def _stop_signals_for_this_thread_only() -> Iterator[None]:
    """Start threads with SIGTERM and SIGINT blocked, so that the kernel hands them to the
    main thread (or a library's thread): our threads never spend a moment in the
    interpreter's C handler. Commands get an empty mask: spawn.py."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _handled_by_the_signal_thread(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler of the stop signals: nothing to do here (see
    ``WorkerPool._install_signal_handlers``); installing it is what makes the interpreter
    write the signal's number to the wakeup pipe."""


def _remove_quietly(path: os.PathLike[str] | str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _backed_off(job: Job, policy: Backoff, now: datetime) -> Job:
    """A lost attempt its executor saw (a remote worker died under it) waits its backoff
    like a failure: the job itself may have killed the worker (memory), and retrying at once
    could take the next one down too. (Recovery, which finds a dead *local* worker's job,
    still retries at once: ``scheduler.worker_lost``.)"""
    due = format_time(now + timedelta(seconds=policy.seconds(job.attempts)))
    return replace(job, state=JobState.FAILED, next_run_at=due, queued_at=due)


def _due(next_run_at: str | None) -> float:
    return parse_time(next_run_at).timestamp() if next_run_at else 0.0


def _describe(job: Job, error: str | None) -> str:
    if job.state is JobState.COMPLETED:
        return f"completed {job.id} (attempt {job.attempts})"
    if job.state is JobState.FAILED:
        return (
            f"failed {job.id} (attempt {job.attempts}/{job.max_retries + 1}): {error}; "
            f"retry at {job.next_run_at}"
        )
    if job.state is JobState.CANCELLED:
        return f"cancelled {job.id} while running (attempt {job.attempts})"
    return f"dead {job.id} after {job.attempts} attempt(s): {error}"
