"""``queuectl wait``: block until jobs finish.

It looks at the state folders every ``WAIT_POLL_SECONDS``: a CLI-side wait on other
processes, cheap (a few stats per job) and on no worker's path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from queuectl.errors import NotFound, QueueError
from queuectl.job import FINISHED_STATES, JobState
from queuectl.storage.store import Store

__all__ = ["WaitTimeout", "exit_code_of", "outcomes", "wait_for", "wait_for_queue"]

CANCELLED_CODE: Final = 125
DEAD_WITHOUT_CODE: Final = 126
SIGNAL_BASE: Final = 128

WAIT_POLL_SECONDS: Final = 0.1


class WaitTimeout(QueueError):
    """``wait --timeout`` expired (exit 124, as timeout(1))."""

    exit_code = 124


def wait_for(
    store: Store,
    job_ids: list[str],
    timeout: float | None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, JobState]:
    """Block until every job is completed, dead or cancelled; their final states."""
    for job_id in job_ids:
        if store.folders.locate(job_id) is None:
            raise NotFound(f"no job with id {job_id!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    done: dict[str, JobState] = {}
    while True:
        for job_id in job_ids:
            if job_id in done:
                continue
            found = store.folders.locate(job_id)
            if found is not None and found[0] in FINISHED_STATES:
                done[job_id] = found[0]
                if progress:
                    progress(1)
        if len(done) == len(job_ids):
            return done
        if deadline is not None and time.monotonic() > deadline:
            waiting = sorted(set(job_ids) - set(done))
            raise WaitTimeout(f"timed out waiting for: {' '.join(waiting)}")
        time.sleep(WAIT_POLL_SECONDS)


def outcomes(store: Store, job_ids: list[str], final: dict[str, JobState]) -> list[dict[str, Any]]:
    """``{"id", "state", "exit_code"}`` of each finished job (``wait --json``)."""
    out = []
    for job_id in job_ids:
        try:
            code = store.folders.load(job_id).last_exit_code
        except QueueError:
            code = None
        out.append({"id": job_id, "state": final[job_id].value, "exit_code": code})
    return out


def exit_code_of(result: dict[str, Any]) -> int:
    """What ``wait ID`` exits with: the job's own exit code when it has one (0 when it
    completed), 125 when cancelled, 126 when dead without one, 128+N when its command was
    killed by signal N."""
    state, code = result["state"], result["exit_code"]
    if state == JobState.COMPLETED.value:
        return 0
    if state == JobState.CANCELLED.value:
        return CANCELLED_CODE
    if isinstance(code, int) and code > 0:
        return min(code, 255)
    if isinstance(code, int) and code < 0:
        return SIGNAL_BASE - code
    return DEAD_WITHOUT_CODE


def wait_for_queue(store: Store, queue: str, timeout: float | None) -> None:
    """Block until ``queue`` has no job waiting (pending, failed-waiting, blocked, held) or
    running."""
    from queuectl.storage.folders import queue_of

    states = (
        JobState.PENDING,
        JobState.PROCESSING,
        JobState.FAILED,
        JobState.BLOCKED,
        JobState.HELD,
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        busy = any(
            queue_of(store.home.state_dir(state) / name) == queue
            for state in states
            for name in store.folders.names(state)
        )
        if not busy:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"timed out waiting for queue {queue!r} to drain")
        time.sleep(WAIT_POLL_SECONDS)
