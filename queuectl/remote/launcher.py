"""The ``worker.runner.Executor`` that runs a worker pool's commands on a Dask cluster.

The pool claims, records and retries exactly as for local commands; only ``prepare`` differs:
the ``Run`` it returns submits the attempt to Dask (``executor.RemoteExecutor``), copies the
output that streams back into the attempt's ``logs/`` files (so ``logs --follow`` works
unchanged, with the follow period's lag), and turns the remote report into an ``Outcome``.

The job's run lock stays with the queuectl thread that waits: through the attempt, and for a
lost one through its fence (``RemoteAttempt.wait``), so the job cannot run again before its
remote command is surely dead. If this head dies instead, the home's record of it
(``storage.remote_heads``) makes every recovering worker wait out its lease first.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from queuectl.job import utcnow
from queuectl.remote.executor import RemoteAttempt, RemoteExecutor, RemoteResult
from queuectl.scheduler import Outcome, OutcomeKind
from queuectl.worker.runner import KILL_GRACE_SECONDS, failure_details

if TYPE_CHECKING:
    from queuectl.storage.claims import Claim
    from queuectl.storage.remote_heads import HeadRecord
    from queuectl.worker.outputs import OutputFiles

__all__ = ["DaskExecutor", "RemoteRun", "outcome_of"]

READY_POLL_SECONDS: Final = 0.2

_KINDS: Final = {
    "succeeded": OutcomeKind.SUCCEEDED,
    "failed": OutcomeKind.FAILED,
    "killed": OutcomeKind.KILLED,
    "timed_out": OutcomeKind.TIMED_OUT,
    "spawn_failed": OutcomeKind.SPAWN_FAILED,
    "worker_lost": OutcomeKind.WORKER_LOST,
}


class DaskExecutor:
    """One per worker process; ``remote`` is its connected ``RemoteExecutor``."""

    look_ahead = False

    def __init__(
        self, remote: RemoteExecutor, record: HeadRecord | None, base_env: dict[str, str]
    ) -> None:
        self.remote = remote
        self.record = record
        self.base_env = base_env
        """Only QUEUECTL_HOME of it reaches remote commands: they get the Dask worker's
        environment, plus the job's own variables."""

    def prepare(self, claim: Claim, attempt: int, output: OutputFiles, timeout: float) -> RemoteRun:
        return RemoteRun(self.remote, claim, attempt, output, timeout)

    def ready(self) -> bool:
        return self.remote.usable()

    def wait_ready(self, stopping: threading.Event) -> None:
        while not stopping.is_set() and not self.remote.usable():
            stopping.wait(READY_POLL_SECONDS)

    def close(self) -> None:
        """Every attempt has been waited for (the pool's threads are gone): stop renewing;
        then this head's record goes, since no lease of it is left to wait out."""
        clean = self.remote.live_count() == 0
        self.remote.close(cancel=True)
        if self.record is not None and clean:
            self.record.remove()


class RemoteRun:
    """One attempt's command on a Dask worker (a ``worker.runner.Run``)."""

    def __init__(
        self,
        remote: RemoteExecutor,
        claim: Claim,
        attempt: int,
        output: OutputFiles,
        timeout: float,
    ) -> None:
        self.remote = remote
        self.claim = claim
        self.attempt_number = attempt
        self.output = output
        self.timeout = timeout
        self.cancelled = False
        self.started_at: datetime = utcnow()
        self._attempt: RemoteAttempt | None = None
        self._result: RemoteResult | None = None
        self._aborted = False
        self._out_guard = threading.Lock()
        self._closed = False

    def _env(self) -> dict[str, str]:
        job, claim = self.claim.job, self.claim
        return {
            **job.env,
            "QUEUECTL_JOB_ID": job.id,
            "QUEUECTL_ATTEMPT": str(self.attempt_number),
            "QUEUECTL_RUN": str(job.runs + 1),
            "QUEUECTL_QUEUE": job.queue,
            "QUEUECTL_SLOT": str(claim.slot),
        }

    def start(self) -> Outcome | None:
        job = self.claim.job
        key = f"{job.id}-g{job.generation}-r{job.runs + 1}-a{self.attempt_number}"
        self.started_at = utcnow()
        self._attempt = self.remote.start(
            key,
            job.command,
            env=self._env(),
            cwd=job.cwd or None,
            timeout=self.timeout,
            gpus=job.gpus or 0,
            follow=self._follow,
        )
        if self._aborted or self.cancelled:
            self._attempt.cancel(grace=KILL_GRACE_SECONDS)
        return None

    def _follow(self, stream: str, data: bytes) -> None:
        fd = self.output.stdout_fd if stream == "stdout" else self.output.stderr_fd
        with self._out_guard:
            if self._closed or fd < 0:
                return
            view = memoryview(data)
            while view:
                try:
                    written = os.write(fd, view)
                except OSError:
                    return  # a full disk: the attempt still ends and is recorded
                view = view[written:]

    def finish(self) -> Outcome:
        assert self._attempt is not None
        result = self._attempt.wait()
        assert result is not None
        with self._out_guard:
            self._closed = True
        self._result = result
        return outcome_of(result, self.cancelled, self.output)

    def kill(self) -> None:
        """A forced stop: the job goes back unchanged once the command is gone."""
        self._aborted = True
        if self._attempt is not None:
            self._attempt.cancel(grace=1.0)

    def cancel(self) -> None:
        self.cancelled = True
        if self._attempt is not None:
            self._attempt.cancel(grace=KILL_GRACE_SECONDS)

    def exited_within(self, seconds: float) -> bool:
        attempt = self._attempt
        if attempt is None:
            return True
        end = time.monotonic() + seconds
        while not attempt.done():
            left = end - time.monotonic()
            if left <= 0:
                return False
            attempt.wait_settled(left)
        return True

    def group_gone(self) -> bool:
        """Once ``finish`` returned, nothing writes to the output files any more (the
        remote group is dead and the follow thread stopped writing)."""
        return self._closed


def outcome_of(result: RemoteResult, cancelled: bool, output: OutputFiles) -> Outcome:
    """A remote report as the ``Outcome`` the pool records. A ``cancelled`` report that
    queuectl did not ask for (Dask released the key, the head dropped it) is a lost attempt."""
    kind = _KINDS.get(result.kind)
    if kind is None:  # "cancelled"
        kind = OutcomeKind.FAILED if cancelled else OutcomeKind.WORKER_LOST
    where = f" on {result.host}" if result.host else ""
    error = result.error
    if kind is OutcomeKind.WORKER_LOST:
        error = f"worker lost{where}: {error or 'the Dask worker went away'}"
    elif kind is OutcomeKind.SPAWN_FAILED:
        error = error or "the command could not start"
    started = result.started_at
    finished = result.finished_at or utcnow()
    if kind is OutcomeKind.SUCCEEDED:
        return Outcome(kind, exit_code=0, started_at=started, finished_at=finished)
    tail, last_line = failure_details(output.stderr_path)
    if kind in (OutcomeKind.FAILED, OutcomeKind.KILLED) and last_line and error:
        error = f"{error}: {last_line}"
    exit_code: Any = result.exit_code if kind is not OutcomeKind.TIMED_OUT else None
    return Outcome(
        kind,
        exit_code=exit_code,
        error=error,
        started_at=started,
        finished_at=finished,
        stderr_tail=tail or None,
    )
