"""Run one job's command and report how the attempt ended.

The command runs as ``/bin/sh -c COMMAND`` in a session (and so a process group) of its own, so
a timeout or a forced stop can kill everything it started. It inherits the job file's lock
descriptor: if the worker dies, the command keeps the job locked until it, too, has exited,
so recovery never starts a second copy next to a survivor.

``Executor`` is the seam between the worker pool and where commands run: ``LocalExecutor``
(here: this host, fd 3 as the fence) or ``queuectl.remote``'s Dask executor (a lease as the
fence). The pool claims, records and retries the same way for both; an executor only turns a
claim into a ``Run`` (start, finish, kill, cancel) and says whether it can take work now.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from queuectl.job import utcnow
from queuectl.scheduler import Outcome, OutcomeKind
from queuectl.worker.spawn import Environment, spawn_shell

if TYPE_CHECKING:
    from queuectl.storage.claims import Claim
    from queuectl.storage.store import Store
    from queuectl.worker.outputs import OutputFiles

__all__ = [
    "KILL_GRACE_SECONDS",
    "Execution",
    "Executor",
    "LocalExecutor",
    "Run",
    "failure_details",
    "finish_command",
    "run_command",
    "start_command",
    "unstartable",
]

KILL_GRACE_SECONDS: Final = 5.0
"""After a timeout the group gets SIGTERM, then SIGKILL if it is still there this much later."""

STDERR_TAIL_BYTES: Final = 400


LOCK_FD_IN_CHILD: Final = 3
"""The job's lock descriptor as the command sees it (documented; do not close it)."""


@dataclass
class Execution:
    """A command in flight; ``kill()`` may be called from any thread (forced stop)."""

    command: str
    env: list[bytes]
    """``KEY=VALUE`` entries (see ``spawn.Environment``)."""
    lock_fd: int
    stdout_fd: int
    stderr_fd: int
    stderr_path: Path
    timeout: float = 0.0
    _pid: int = field(default=0, repr=False)
    _reaped: bool = field(default=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _killed: bool = False

    cancelled: bool = False
    started_at: datetime = field(default_factory=utcnow, repr=False)
    _stop_at: float = field(default=0.0, repr=False)
    """When the command was told to stop (SIGTERM): its group's grace runs from here."""
    _finished: bool = field(default=False, repr=False)
    """Set once the attempt is over: a late timer or stop must not signal a group whose
    number may by then belong to someone else."""
    unusable: str | None = None
    """Why the command cannot even be started (an environment that cannot be encoded)."""

    def start(self) -> Outcome | None:
        """``start_command``, or the failed outcome of a command that cannot start."""
        if self.unusable is not None:
            return unstartable(self.unusable)
        return start_command(self)

    def finish(self) -> Outcome:
        return finish_command(self)

    def kill(self) -> None:
        with self._guard:
            self._killed = True
            self._signal_group(signal.SIGKILL)

    def cancel(self) -> None:
        """Stop the command for good: its group gets SIGTERM now and SIGKILL after a grace."""
        with self._guard:
            self.cancelled = True
            self._stop_at = time.monotonic()
            self._signal_group(signal.SIGTERM)
        timer = threading.Timer(KILL_GRACE_SECONDS, self.kill_if_running)
        timer.daemon = True
        timer.start()

    def kill_if_running(self) -> None:
        with self._guard:
            self._signal_group(signal.SIGKILL)

    def exited_within(self, seconds: float) -> bool:
        """True once the started command has exited (not reaped yet), waiting up to
        ``seconds`` for it. False when that cannot be known (no pidfd support)."""
        try:
            return _exited_within(self._pid, seconds)
        except (OSError, ValueError):
            return False

    def group_gone(self) -> bool:
        """True when no process of the command's process group is left (after the run)."""
        if not self._pid:
            return True
        try:
            os.killpg(self._pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _signal_group(self, signum: int) -> None:
        """Signal the whole group, also after the shell itself was reaped: the kernel does
        not hand out a pid while a process group of that number still has members, so the
        group's id stays theirs for as long as any of them lives."""
        if self._pid and not self._finished:
            try:
                os.killpg(self._pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


class Run(Protocol):
    """One attempt's command in flight, wherever it runs (``Execution`` here)."""

    cancelled: bool
    started_at: datetime

    def start(self) -> Outcome | None:
        """Start it: None once it runs, or the outcome of an attempt that could not start."""

    def finish(self) -> Outcome:
        """Wait until it has ended (and may safely run again) and say how it ended."""

    def kill(self) -> None:
        """Stop now (a forced worker stop): the job goes back unchanged."""

    def cancel(self) -> None:
        """Stop for good (``queuectl cancel``): TERM, then KILL after a grace."""

    def exited_within(self, seconds: float) -> bool:
        """True once it has ended, waiting up to ``seconds``."""

    def group_gone(self) -> bool:
        """No process of it is left that could still write to its output files."""


class Executor(Protocol):
    """Where a worker's commands run; one per worker process."""

    look_ahead: bool
    """Whether a thread prepares its next claim while a command runs (worth it when the
    next start may follow within microseconds: locally, not through a remote scheduler)."""

    def prepare(self, claim: Claim, attempt: int, output: OutputFiles, timeout: float) -> Run:
        """The run of a claimed job's attempt, not started yet."""

    def ready(self) -> bool:
        """Whether a thread may claim a job now (a remote cluster may be unreachable)."""

    def wait_ready(self, stopping: threading.Event) -> None:
        """Block until ``ready()`` or ``stopping`` is set."""

    def close(self) -> None:
        """The worker is exiting (its threads are gone)."""


class LocalExecutor:
    """Commands on this host: ``/bin/sh -c`` with the job's lock as fd 3 (see the module
    docstring), the worker's environment plus the job's, and its cwd entered by the shell."""

    look_ahead = True

    def __init__(self, store: Store, base_env: dict[str, str]) -> None:
        self.store = store
        self._environment = Environment(base_env)

    def prepare(self, claim: Claim, attempt: int, output: OutputFiles, timeout: float) -> Execution:
        job = claim.job
        own = {
            **job.env,
            "QUEUECTL_JOB_ID": job.id,
            "QUEUECTL_ATTEMPT": str(attempt),
            "QUEUECTL_RUN": str(job.runs + 1),
            "QUEUECTL_QUEUE": job.queue,
            "QUEUECTL_SLOT": str(claim.slot),
        }
        if claim.gpus is not None:
            own["CUDA_VISIBLE_DEVICES"] = own["QUEUECTL_GPUS"] = ",".join(claim.gpus)
        elif self.store.devices.configured:
            own["CUDA_VISIBLE_DEVICES"] = ""  # it asked for none: it must not grab one
        command = job.command
        if job.cwd:
            own["QUEUECTL_CWD"] = job.cwd
            command = f'cd -- "$QUEUECTL_CWD" || exit 127\n{command}'
        unusable = None
        try:
            env = self._environment.block(own)
        except OSError as exc:  # a hand-edited file: validation keeps these out otherwise
            env, unusable = [], exc.strerror
        return Execution(
            command=command,
            env=env,
            lock_fd=claim.fd,
            stdout_fd=output.stdout_fd,
            stderr_fd=output.stderr_fd,
            stderr_path=output.stderr_path,
            timeout=timeout,
            unusable=unusable,
        )

    def ready(self) -> bool:
        return True

    def wait_ready(self, stopping: threading.Event) -> None:
        return None

    def close(self) -> None:
        return None


def run_command(execution: Execution) -> Outcome:
    """Start the command and wait for it: ``start_command`` then ``finish_command``."""
    failed = start_command(execution)
    return failed if failed is not None else finish_command(execution)


def start_command(execution: Execution) -> Outcome | None:
    """Start the command; None once it runs, or the outcome of an attempt that could not
    start. Split from ``finish_command`` so a worker thread can do other work in between."""
    execution.started_at = utcnow()
    try:
        pid = _spawn(execution)
    except OSError as exc:
        return unstartable(exc.strerror, execution.started_at)
    with execution._guard:
        execution._pid = pid
        if execution._killed:
            execution._signal_group(signal.SIGKILL)
    return None


def unstartable(reason: str | None, started: datetime | None = None) -> Outcome:
    """The outcome of an attempt whose command could not be started."""
    now = utcnow()
    return Outcome(
        OutcomeKind.SPAWN_FAILED,
        error=f"cannot start /bin/sh: {reason}",
        started_at=started or now,
        finished_at=now,
    )


def finish_command(execution: Execution) -> Outcome:
    """Wait for a started command to exit (enforcing its timeout) and say how it ended."""
    code, timed_out = _wait(execution._pid, execution)
    if timed_out or execution.cancelled:
        end_group(execution)
    with execution._guard:
        execution._finished = True
    finished = utcnow()
    return _outcome(code, timed_out, execution, execution.started_at, finished)


def end_group(execution: Execution, poll: float = 0.02) -> bool:
    """After a timeout or a cancel, return only once every process of the command's group is
    gone: a member that ignores SIGTERM gets SIGKILL when the grace is over, even if the
    shell exited at once, so the attempt is never recorded while part of it still runs.
    (There is no event for "a process group became empty": this polls, only on this path.)
    False if something survived even SIGKILL for long (a process stuck in the kernel)."""
    stop_at = execution._stop_at or time.monotonic()
    if _group_gone_by(execution._pid, stop_at + KILL_GRACE_SECONDS, poll):
        return True
    with execution._guard:
        execution._signal_group(signal.SIGKILL)
    return _group_gone_by(execution._pid, time.monotonic() + 10 * KILL_GRACE_SECONDS, poll)


def _group_gone_by(pgid: int, deadline: float, poll: float) -> bool:
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def _spawn(execution: Execution) -> int:
    """Only stdin, the two output files and the lock (as fd 3) reach the command: every
    other descriptor of ours is close-on-exec."""
    return spawn_shell(
        execution.command,
        execution.env,
        stdout=execution.stdout_fd,
        stderr=execution.stderr_fd,
        lock=execution.lock_fd,
    )


def _reap(pid: int, execution: Execution) -> int:
    _, status = os.waitpid(pid, 0)
    with execution._guard:
        execution._reaped = True
    return os.waitstatus_to_exitcode(status)


def _wait(pid: int, execution: Execution) -> tuple[int, bool]:
    """Wait for exit without polling; on timeout, TERM then KILL the group.

    Returns (exit code, negative for a signal; timed out).
    """
    if execution.timeout <= 0 or _exited_within(pid, execution.timeout):
        return _reap(pid, execution), False
    with execution._guard:
        execution._stop_at = time.monotonic()
        execution._signal_group(signal.SIGTERM)
    _exited_within(pid, KILL_GRACE_SECONDS)
    code = _reap(pid, execution) if _exited_within(pid, 0) else None
    # Members that ignore SIGTERM may outlive the shell: the grace is over for all of them.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return (code if code is not None else _reap(pid, execution)), True


def _exited_within(pid: int, seconds: float) -> bool:
    """Block on a pidfd (an event, not a poll loop) until the process exits or time is up."""
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()  # not select(): a worker with many threads has fds >= 1024
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(seconds * 1000 + 0.999))))
    finally:
        os.close(pidfd)


def _outcome(
    code: int, timed_out: bool, execution: Execution, started: datetime, finished: datetime
) -> Outcome:
    if code == 0 and not timed_out:
        return Outcome(OutcomeKind.SUCCEEDED, exit_code=0, started_at=started, finished_at=finished)
    tail = _stderr_tail(execution.stderr_path)
    last_line = _last_line(tail)
    if timed_out:
        kind, exit_code, error = (
            OutcomeKind.TIMED_OUT,
            None,
            f"timeout: killed after {execution.timeout:g}s",
        )
    elif code < 0:
        kind, exit_code = OutcomeKind.KILLED, code
        error = _join(f"killed by {_signal_name(-code)}", last_line)
    else:
        kind, exit_code, error = OutcomeKind.FAILED, code, _join(f"exit code {code}", last_line)
    return Outcome(
        kind,
        exit_code=exit_code,
        error=error,
        started_at=started,
        finished_at=finished,
        stderr_tail=tail or None,
    )


def _join(head: str, tail: str) -> str:
    return f"{head}: {tail}" if tail else head


def failure_details(stderr_path: Path) -> tuple[str, str]:
    """(the tail of stderr kept in the history, its last line for ``last_error``)."""
    tail = _stderr_tail(stderr_path)
    return tail, _last_line(tail)


def _stderr_tail(path: Path) -> str:
    """The last ``STDERR_TAIL_BYTES`` of stderr, kept in the job's history for the DLQ."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - STDERR_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip()


def _last_line(text: str) -> str:
    """The last non-empty line, so ``last_error`` says *why* (e.g. not found)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
