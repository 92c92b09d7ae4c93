"""``queuectl wait``: block until jobs finish.

It looks at the state folders every ``WAIT_POLL_SECONDS``: a CLI-side wait on other
processes, cheap (a few stats per job) and on no worker's path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from queuectl.errors import NotFound, QueueError
from queuectl.job import FINISHED_STATES, JobState
from queuectl.storage.store import Store

__all__ = ["WaitTimeout", "wait_for"]

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
