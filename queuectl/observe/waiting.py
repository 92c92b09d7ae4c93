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

__all__ = [
    "WaitTimeout",
    "exit_code_of",
    "outcomes",
    "problem_of",
    "wait_for",
    "wait_for_queue",
]

CANCELLED_CODE: Final = 125
DEAD_WITHOUT_CODE: Final = 126
SIGNAL_BASE: Final = 128

WAIT_POLL_SECONDS: Final = 0.1


class WaitTimeout(QueueError):
    """``wait --timeout`` expired (exit 124, as timeout(1))."""

    exit_code = 124


UNKNOWN: Final = "unknown"
"""``wait --json``'s state for an id no job has."""
TIMED_OUT: Final = "timeout"
"""``wait --json``'s state for a job still unfinished when ``--timeout`` expired."""


def wait_for(
    store: Store,
    job_ids: list[str],
    timeout: float | None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Block until every job is completed, dead or cancelled, or ``timeout`` expires; the
    state of each: its final state, ``timeout`` if it was not finished by then, ``unknown``
    if no job has the id (then nothing is waited for)."""
    unknown = [job_id for job_id in job_ids if store.folders.locate(job_id) is None]
    if unknown:
        return {job_id: _current(store, job_id) for job_id in job_ids}
    deadline = None if timeout is None else time.monotonic() + timeout
    done: dict[str, str] = {}
    while True:
        for job_id in job_ids:
            if job_id in done:
                continue
            found = store.folders.locate(job_id)
            if found is not None and found[0] in FINISHED_STATES:
                done[job_id] = found[0].value
                if progress:
                    progress(1)
        if len(done) == len(job_ids):
            return done
        if deadline is not None and time.monotonic() > deadline:
            return {job_id: done.get(job_id, TIMED_OUT) for job_id in job_ids}
        time.sleep(WAIT_POLL_SECONDS)


def _current(store: Store, job_id: str) -> str:
    found = store.folders.locate(job_id)
    return found[0].value if found is not None else UNKNOWN


def outcomes(store: Store, job_ids: list[str], final: dict[str, str]) -> list[dict[str, Any]]:
    """``{"id", "state", "exit_code", "signal"}`` of each job (``wait --json``): the exit
    code as the CLI gives it (128+N for a command killed by signal N, which ``signal``
    names; null without one)."""
    out = []
    for job_id in job_ids:
        code: int | None = None
        if final[job_id] != UNKNOWN:
            try:
                code = store.folders.load(job_id).last_exit_code
            except QueueError:
                code = None
        signal = -code if isinstance(code, int) and code < 0 else None
        if signal is not None:
            code = SIGNAL_BASE + signal
        out.append({"id": job_id, "state": final[job_id], "exit_code": code, "signal": signal})
    return out


def problem_of(results: list[dict[str, Any]]) -> QueueError | None:
    """The error a wait ends with (after ``--json`` printed every job): an unknown id
    (exit 1) or the timeout (exit 124)."""
    unknown = [r["id"] for r in results if r["state"] == UNKNOWN]
    if unknown:
        return NotFound(f"no job with id {unknown[0]!r}")
    waiting = [r["id"] for r in results if r["state"] == TIMED_OUT]
    if waiting:
        return WaitTimeout(f"timed out waiting for: {' '.join(waiting)}")
    return None


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
    return DEAD_WITHOUT_CODE


def wait_for_queue(store: Store, queue: str, timeout: float | None) -> dict[str, Any]:
    """Block until ``queue`` has no job waiting (pending, failed-waiting, blocked, held) or
    running, or ``timeout`` expires: ``{"queue", "state" ("drained" or "timeout"),
    "waiting", "running"}`` (``wait --queue --json``)."""
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
            return {"queue": queue, "state": "drained", "waiting": 0, "running": 0}
        if deadline is not None and time.monotonic() > deadline:
            running = sum(
                1
                for name in store.folders.names(JobState.PROCESSING)
                if queue_of(store.home.state_dir(JobState.PROCESSING) / name) == queue
            )
            waiting = sum(
                1
                for state in states
                if state is not JobState.PROCESSING
                for name in store.folders.names(state)
                if queue_of(store.home.state_dir(state) / name) == queue
            )
            return {"queue": queue, "state": TIMED_OUT, "waiting": waiting, "running": running}
        time.sleep(WAIT_POLL_SECONDS)
