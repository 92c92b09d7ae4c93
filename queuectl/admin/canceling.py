"""Cancelling a job, wherever it is.

A waiting job (pending, failed) is moved to ``cancelled/`` under its lock, so it can never be
claimed afterwards. A running job belongs to the worker process holding its lock, and only
that process knows the command's process group; so ``cancel`` drops a request file
``cancel/<id>`` that every worker watches with inotify, and the owner stops the command
(SIGTERM to the group, SIGKILL after the grace period) and records the job as cancelled.
The requester waits for the job to leave ``processing/`` and then removes the request.
"""

from __future__ import annotations

import os
import time
from typing import Final

from queuectl.errors import QueueError
from queuectl.job import JobState, utcnow
from queuectl.storage.durable import FILE_MODE
from queuectl.storage.store import Store

__all__ = ["cancel_job"]

POLL_SECONDS: Final = 0.05
"""How often the requester looks whether the job has left processing/ (a CLI-side wait)."""


def cancel_job(store: Store, job_id: str, timeout: float) -> str:
    """Cancel one job; returns a line for the user or raises ``QueueError``."""
    deadline = time.monotonic() + timeout
    while True:
        cancelled = store.cancel_waiting(job_id, utcnow())
        if cancelled is not None:
            return f"cancelled {job_id}"
        if _state(store, job_id) is JobState.PROCESSING:
            return _cancel_running(store, job_id, deadline)
        if time.monotonic() > deadline:
            raise QueueError(f"job {job_id!r} stayed busy; not cancelled")
        time.sleep(POLL_SECONDS)  # it was being claimed this instant: look again


def _cancel_running(store: Store, job_id: str, deadline: float) -> str:
    request = store.home.cancel_requests / job_id
    fd = os.open(request, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)
    try:
        while _state(store, job_id) is JobState.PROCESSING:
            if time.monotonic() > deadline:
                raise QueueError(
                    f"job {job_id!r} is still running: no live worker stopped it in time "
                    "(is its worker gone while its command still runs?)"
                )
            time.sleep(POLL_SECONDS)
    finally:
        try:
            os.unlink(request)
        except FileNotFoundError:
            pass
    state = _state(store, job_id)
    if state is JobState.CANCELLED:
        return f"cancelled {job_id} (it was running)"
    raise QueueError(f"job {job_id!r} finished before it could be cancelled ({state})")


def _state(store: Store, job_id: str) -> JobState | None:
    found = store.folders.locate(job_id)
    return found[0] if found else None
