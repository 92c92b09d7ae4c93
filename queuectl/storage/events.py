"""What the journal records: the event names, and the one place that builds a record.

A record is one line, ``<crc32> <json>``, where the JSON is
``{"ts": ..., "event": ..., "pid": ..., "job": {...the job after the change...}}`` (plus a
few event-specific keys, such as ``file`` and ``reason`` of a rejected drop). Every record
also gets one line in the segment's index (``journal_index``), built here from the same job,
so that readers never have to parse the JSON to know what a record is about.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from queuectl.job import Job, object_text, parse_time
from queuectl.storage.records import frame_payload
from queuectl.text import flat

__all__ = [
    "ATTEMPT_EVENTS",
    "Entry",
    "Event",
    "hook_entry",
    "job_entry",
    "job_index_parts",
    "named_entry",
    "outcome_name",
    "plain_entry",
]


class Event(StrEnum):
    """Journal event names; ``observe``, ``rebuild`` and the index depend on their spelling."""

    ENQUEUED = "enqueued"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RECOVERED = "recovered"
    """Its worker died mid-run; found by recovery (the attempt counts as ``worker_lost``)."""
    RETRIED = "retried"
    """Moved back to pending from the DLQ by ``dlq retry``."""
    REJECTED = "rejected"
    """A dropped file that is not a valid job was moved to rejected/ (no job)."""
    DELETED = "deleted"
    """Removed by ``cleanup`` or ``dlq purge``: replay must not bring it back."""
    WITHDRAWN = "withdrawn"
    """An enqueue that was journaled but could not be published (replay drops it)."""
    FSCK = "fsck"
    """``fsck --repair`` journaled a job file that was newer than the journal."""
    TOTALS = "totals"
    """In a snapshot: the attempt counters of every record the snapshot folded away."""
    HELD = "held"
    RELEASED = "released"
    RESTARTED = "restarted"
    """A finished job sent back to run again (``queuectl restart``)."""
    EDITED = "edited"
    UNBLOCKED = "unblocked"
    """Its dependencies are satisfied: from blocked/ to pending/."""
    HOOK = "hook"
    """A completion hook ran for a job's final state (``hook:<id>`` in the index)."""
    SCHEDULE_ADDED = "schedule_added"
    SCHEDULE_REMOVED = "schedule_removed"
    FIRED = "fired"
    """A schedule enqueued an occurrence (its record says which and the job's id)."""
    QUEUE_ADDED = "queue_added"
    QUEUE_CHANGED = "queue_changed"
    QUEUE_REMOVED = "queue_removed"
    PAUSED = "paused"
    RESUMED = "resumed"


ATTEMPT_EVENTS: Final = frozenset(
    {Event.COMPLETED, Event.FAILED, Event.DEAD, Event.RECOVERED, Event.CANCELLED}
)
"""Events that can end an attempt (``cancelled`` only when the job was running)."""

GONE_EVENTS: Final = frozenset(
    {Event.DELETED, Event.WITHDRAWN, Event.QUEUE_REMOVED, Event.SCHEDULE_REMOVED}
)
"""A winning record with one of these means: the job does not exist."""

_dumps = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True)
class Entry:
    """A framed journal line and its index line in two parts, ``head`` (id and event) and
    ``tail`` (the rest): the appender puts the offset and length, which only it knows,
    between them (``journal_index.index_line``)."""

    line: bytes
    head: str
    tail: str


def job_entry(
    event: Event | str,
    job: Job,
    stamp: str,
    *,
    fields: list[tuple[str, str]] | None = None,
    attempt: bool = False,
    extra: dict[str, Any] | None = None,
) -> Entry:
    """The record of a change to ``job``; ``fields`` are its already encoded fields (one
    encoding serves the job file and the record), ``attempt`` says it ended an attempt."""
    encoded = fields if fields is not None else job.encoded_fields()
    text = f'{{"ts":{_dumps(stamp)},"event":{_dumps(str(event))},"pid":{os.getpid()}'
    if attempt:
        text += ',"attempt":true'
    elif event in ATTEMPT_EVENTS:
        text += ',"attempt":false'  # said, so an index derived from the record agrees
    for key, value in (extra or {}).items():
        text += f",{_dumps(key)}:{_dumps(value)}"
    payload = f'{text},"job":{object_text(encoded)}}}'.encode("utf-8", "backslashreplace")
    return Entry(frame_payload(payload), *job_index_parts(str(event), job, stamp, attempt))


def named_entry(kind: str, event: Event | str, item: Any, stamp: str) -> Entry:
    """The record of a change to a queue or a schedule (``storage.named``): about
    ``<kind>:<name>`` in the index, so replay treats it like a job (highest generation and
    rev wins)."""
    record = {"ts": stamp, "event": str(event), "pid": os.getpid(), kind: item.to_dict()}
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    head = f"{kind}:{item.name}\t{event}"
    tail = f"{item.generation}\t{item.rev}\t{item.state}\t{epoch(stamp)}"
    return Entry(frame_payload(text.encode("utf-8", "backslashreplace")), head, tail)


def hook_entry(job_id: str, generation: int, rev: int, result: dict[str, Any], stamp: str) -> Entry:
    """The record of a completion hook's run for one job's final state (``hook:<id>`` in the
    index: ``show`` finds it without a scan; replay ignores it)."""
    record = {
        "ts": stamp,
        "event": str(Event.HOOK),
        "pid": os.getpid(),
        "hook": {"job": job_id, "generation": generation, "rev": rev, **result},
    }
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    head = f"hook:{job_id}\t{Event.HOOK}"
    tail = f"{generation}\t{rev}\t{result.get('outcome', '')}\t{epoch(stamp)}"
    return Entry(frame_payload(text.encode("utf-8", "backslashreplace")), head, tail)


def plain_entry(event: Event | str, stamp: str, **fields: Any) -> Entry:
    """A record that is about no job (a rejected drop, a snapshot's totals)."""
    record = {"ts": stamp, "event": str(event), "pid": os.getpid(), **fields}
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    payload = text.encode("utf-8", "backslashreplace")
    return Entry(frame_payload(payload), f"-\t{event}", f"0\t0\t\t{epoch(stamp)}")


def job_index_parts(event: str, job: Job, stamp: str, attempt: bool) -> tuple[str, str]:
    """The index line of a record, as (``id event``, ``gen rev state ts`` and, for an
    attempt, ``run outcome started finished waited queue command``)."""
    head = f"{job.id}\t{event}"
    tail = f"{job.generation}\t{job.rev}\t{job.state.value}\t{epoch(stamp)}"
    if not attempt:
        return head, tail
    last = job.history[-1] if job.history else {}
    waited = last.get("waited")
    return head, "\t".join(
        [
            tail,
            str(job.runs),
            outcome_name(event, job.last_error),
            epoch(job.started_at),
            epoch(job.finished_at or stamp),
            f"{waited:.3f}"
            if isinstance(waited, int | float) and not isinstance(waited, bool)
            else "",
            _queue_of(job),
            flat(job.command)[:60],
        ]
    )


def _queue_of(job: Job) -> str:
    queue = getattr(job, "queue", None) or job.extra.get("queue")
    return queue if isinstance(queue, str) and queue and "\t" not in queue else "default"


def outcome_name(event: str, last_error: str | None) -> str:
    """How ``stats`` and the metrics name an attempt's end."""
    if event == Event.RECOVERED:
        return "worker_lost"
    if event == Event.COMPLETED:
        return "completed"
    if str(last_error or "").startswith("timeout"):
        return "timeout" if event == Event.FAILED else "dead_timeout"
    return event


def epoch(stamp: object) -> str:
    """Seconds since the epoch, as the index writes them ("" for no time)."""
    if not stamp or not isinstance(stamp, str):
        return ""
    try:
        return f"{parse_time(stamp).timestamp():.3f}"
    except ValueError:
        return ""
