"""What the dashboard's buttons do: exactly the operations the CLI commands call.

``cancel`` is ``queuectl cancel`` (``admin.canceling.cancel_job``: a waiting job is moved
under its lock, a running one is stopped by its worker), ``retry`` is ``dlq retry``,
``purge`` is ``dlq purge --yes``, ``restart``, ``hold``, ``release`` and ``priority``
(``edit --priority``) are the ``Workflow`` operations, and the queue and schedule buttons
are ``pause``, ``resume`` and ``queue set --parallel``. Each takes the same change lock and
journals the same record as its command, so a click and a command cannot tell each other
apart. A refusal (a job that moved on, a full answer from the store) is a ``QueueError``
whose message is shown to the user as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from queuectl.admin.canceling import cancel_job
from queuectl.admin.maintenance import purge
from queuectl.errors import NotFound, QueueError
from queuectl.job import JobState, utcnow
from queuectl.storage.queues import MAX_PARALLEL
from queuectl.storage.store import Store
from queuectl.web.params import BadRequest

__all__ = [
    "CANCEL_WAIT_SECONDS",
    "JOB_ACTIONS",
    "QUEUE_ACTIONS",
    "SCHEDULE_ACTIONS",
    "applicable",
    "job_action",
    "queue_action",
    "schedule_action",
]

CANCEL_WAIT_SECONDS: Final = 30.0
"""How long a cancel of a running job waits for its worker to stop it (the CLI's default)."""

_APPLICABLE: Final = {
    JobState.PENDING: ("cancel", "hold", "priority"),
    JobState.FAILED: ("cancel", "hold", "priority"),
    JobState.BLOCKED: ("cancel", "hold", "priority"),
    JobState.HELD: ("release", "cancel", "priority"),
    JobState.PROCESSING: ("cancel",),
    JobState.DEAD: ("retry", "purge"),
    JobState.COMPLETED: ("restart",),
    JobState.CANCELLED: ("restart",),
}


def applicable(state: JobState) -> tuple[str, ...]:
    """The actions the job page offers for a job in ``state``."""
    return _APPLICABLE[state]


def _cancel(store: Store, job_id: str, _body: dict[str, Any]) -> str:
    return cancel_job(store, job_id, CANCEL_WAIT_SECONDS)


def _retry(store: Store, job_id: str, _body: dict[str, Any]) -> str:
    job = store.retry_dead(job_id, utcnow())
    return f"retried {job_id} ({job.state.value})"


def _purge(store: Store, job_id: str, _body: dict[str, Any]) -> str:
    removed, missing = purge(store, [job_id], utcnow())
    if missing:
        _id, why = missing[0]
        if why.startswith("not in"):
            raise NotFound(f"job {job_id!r} is not in the dead letter queue")
        raise QueueError(f"job {job_id!r} was not purged: {why}")
    return f"purged {job_id}" if removed else f"{job_id} was already gone"


def _restart(store: Store, job_id: str, _body: dict[str, Any]) -> str:
    job = store.workflow.restart(job_id, utcnow())
    return f"restarted {job_id} ({job.state.value})"


def _hold(store: Store, job_id: str, _body: dict[str, Any]) -> str:
    job = store.workflow.hold(job_id, utcnow())
    return f"held {job_id} ({job.state.value})"


def _release(store: Store, job_id: str, _body: dict[str, Any]) -> str:
    job = store.workflow.release(job_id, utcnow())
    return f"released {job_id} ({job.state.value})"


def _priority(store: Store, job_id: str, body: dict[str, Any]) -> str:
    value = body.get("priority")
    if isinstance(value, bool) or not isinstance(value, int) or not -100 <= value <= 100:
        raise BadRequest("priority must be a whole number from -100 to 100")
    store.workflow.edit(job_id, {"priority": value}, utcnow())
    return f"edited {job_id} (priority {value})"


JOB_ACTIONS: Final[dict[str, Callable[[Store, str, dict[str, Any]], str]]] = {
    "cancel": _cancel,
    "retry": _retry,
    "purge": _purge,
    "restart": _restart,
    "hold": _hold,
    "release": _release,
    "priority": _priority,
}


def job_action(store: Store, job_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    message = JOB_ACTIONS[action](store, job_id, body)
    found = store.folders.locate(job_id)
    return {
        "id": job_id,
        "action": action,
        "message": message,
        "state": found[0].value if found else None,
    }


def _pause(store: Store, name: str, _body: dict[str, Any]) -> str:
    _queue, changed = store.queues.set_paused(name, True)
    return f"paused {name}" if changed else f"{name} was already paused"


def _resume(store: Store, name: str, _body: dict[str, Any]) -> str:
    _queue, changed = store.queues.set_paused(name, False)
    return f"resumed {name}" if changed else f"{name} was already resumed"


def _limit(store: Store, name: str, body: dict[str, Any]) -> str:
    value = body.get("parallel")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PARALLEL:
        raise BadRequest(f"parallel must be a whole number from 0 (no limit) to {MAX_PARALLEL}")
    queue = store.queues.set_parallel(name, value)
    limit = f"at most {queue.parallel} at once" if queue.parallel else "no limit"
    return f"queue {name}: {limit}"


QUEUE_ACTIONS: Final[dict[str, Callable[[Store, str, dict[str, Any]], str]]] = {
    "pause": _pause,
    "resume": _resume,
    "limit": _limit,
}


def queue_action(store: Store, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    if store.queues.get(name) is None:
        raise NotFound(f"no queue named {name!r}")
    message = QUEUE_ACTIONS[action](store, name, body)
    return {"name": name, "action": action, "message": message}


def _schedule_pause(store: Store, name: str, _body: dict[str, Any]) -> str:
    _schedule, changed = store.schedules.set_paused(name, True)
    return f"paused schedule {name}" if changed else f"schedule {name} was already paused"


def _schedule_resume(store: Store, name: str, _body: dict[str, Any]) -> str:
    _schedule, changed = store.schedules.set_paused(name, False)
    return f"resumed schedule {name}" if changed else f"schedule {name} was not paused"


SCHEDULE_ACTIONS: Final[dict[str, Callable[[Store, str, dict[str, Any]], str]]] = {
    "pause": _schedule_pause,
    "resume": _schedule_resume,
}


def schedule_action(store: Store, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    if store.schedules.get(name) is None:
        raise NotFound(f"no schedule named {name!r}")
    message = SCHEDULE_ACTIONS[action](store, name, body)
    return {"name": name, "action": action, "message": message}
