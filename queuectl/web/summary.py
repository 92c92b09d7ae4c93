"""What the jobs view knows about one job file: a few fields, read once, kept in memory.

A job file is untrusted input, so it goes through ``jobfile.read_open`` (no symlink, no
FIFO, size and owner checks) like every other reader. The fields the list needs are then
taken from the parsed JSON with their types checked, which costs half of a full
``Job.from_dict`` (measured: ~50 us against ~110 us per file), and that matters only when
the dashboard first reads 100,000 files. Whatever does not look right is handed to
``Job.from_dict`` for its exact reason, and the file is listed as not a valid job, never
dropped: the page must show what is in the folder, hostile files included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Final

from queuectl.errors import InvalidJob
from queuectl.job import DEFAULT_QUEUE, ID_PATTERN, Job
from queuectl.storage.jobfile import read_open
from queuectl.text import clip
from queuectl.web.natural import natural_key

__all__ = ["COMMAND_KEPT", "Summary", "invalid_summary", "read_summary"]

COMMAND_KEPT: Final = 2000
"""Characters of a command kept for search and display; longer commands are searched by
their beginning (the job page shows all of it)."""

ERROR_KEPT: Final = 300


@dataclass(slots=True, eq=False)
class Summary:
    """One row of the jobs view. Never changed once made: a change makes a new one, so
    holders of an old one (a sorted order) can tell with ``is``."""

    id: str
    state: str
    queue: str
    labels: tuple[str, ...]
    priority: int
    command: str
    attempts: int
    max_retries: int
    runs: int
    created_at: str
    updated_at: str
    next_run_at: str | None
    last_error: str | None
    after: tuple[str, ...]
    rev: int
    invalid: str | None
    by_id: str
    """Sort keys, all plain strings (fast to compare): natural id order ..."""
    by_updated: str
    by_created: str
    by_priority: str
    haystack: str
    """What search looks in: the id and the command, case-folded."""

    def row(self) -> dict[str, Any]:
        """The JSON of a list row (``running`` and the like are added by the caller)."""
        return {
            "id": self.id,
            "state": self.state,
            "queue": self.queue,
            "labels": list(self.labels),
            "priority": self.priority,
            "command": clip(self.command, 200),
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "runs": self.runs,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_run_at": self.next_run_at,
            "last_error": self.last_error,
            "invalid": self.invalid,
        }


def _make(
    job_id: str,
    state: str,
    data: dict[str, Any],
    invalid: str | None,
) -> Summary:
    command = data.get("command", "")
    command = command[:COMMAND_KEPT] if isinstance(command, str) else ""
    error = data.get("last_error")
    created = _text(data.get("created_at"))
    updated = _text(data.get("updated_at")) or created
    priority = _int(data.get("priority"), 0)
    natural = natural_key(job_id)
    return Summary(
        id=job_id,
        state=state,
        queue=_name(data.get("queue")) or DEFAULT_QUEUE,
        labels=tuple(x for x in _list(data.get("labels")) if isinstance(x, str)),
        priority=priority,
        command=command,
        attempts=_int(data.get("attempts"), 0),
        max_retries=_int(data.get("max_retries"), 0),
        runs=_int(data.get("runs"), _int(data.get("attempts"), 0)),
        created_at=created,
        updated_at=updated,
        next_run_at=_text(data.get("next_run_at")) or None,
        last_error=clip(error, ERROR_KEPT) if isinstance(error, str) and error else None,
        after=tuple(
            x
            for x in (*_list(data.get("after")), *_list(data.get("after_any")))
            if isinstance(x, str)
        ),
        rev=_int(data.get("rev"), 1),
        invalid=invalid,
        by_id=natural,
        by_updated=f"{updated}\x01{natural}",
        by_created=f"{created}\x01{natural}",
        by_priority=f"{max(-999, min(999, priority)) + 1000:04d}\x01{natural}",
        haystack=f"{job_id}\n{command}".casefold(),
    )


def invalid_summary(name: str, state: str, reason: str) -> Summary:
    """A file that is not a valid job, listed under its file name."""
    job_id = name[:-5] if name.endswith(".json") else name
    return _make(job_id, state, {}, reason)


def read_summary(directory: str, name: str, state: str) -> Summary | None:
    """The summary of ``directory/name``; None when the file is gone (it moved)."""
    path = os.path.join(directory, name)
    try:
        raw, _st = read_open(path)
        data = json.loads(raw)
    except FileNotFoundError:
        return None
    except InvalidJob as exc:
        return invalid_summary(name, state, str(exc))
    except OSError as exc:
        return invalid_summary(name, state, f"cannot be read: {exc.strerror or exc}")
    except (ValueError, RecursionError):
        return invalid_summary(name, state, _strict_reason(raw))
    if _plain(data, name):
        return _make(data["id"], state, data, None)
    try:
        job = Job.from_dict(data) if isinstance(data, dict) else None
    except InvalidJob as exc:
        return invalid_summary(name, state, str(exc))
    if job is None:
        return invalid_summary(name, state, "a job must be a JSON object")
    if name != f"{job.id}.json":
        return invalid_summary(name, state, f"its name does not match its id {job.id!r}")
    return _make(job.id, state, job.to_dict(), None)


def _plain(data: object, name: str) -> bool:
    """Whether the file looks the way queuectl writes it, so that its fields can be taken
    as they are (anything else goes through ``Job.from_dict``)."""
    if not isinstance(data, dict):
        return False
    job_id = data.get("id")
    return (
        isinstance(job_id, str)
        and ID_PATTERN.fullmatch(job_id) is not None
        and name == f"{job_id}.json"
        and isinstance(data.get("command"), str)
        and bool(data["command"].strip())
        and isinstance(data.get("state"), str)
        and all(
            isinstance(data.get(key), int) and not isinstance(data.get(key), bool)
            for key in ("attempts", "max_retries")
        )
        and isinstance(data.get("created_at"), str)
        and isinstance(data.get("updated_at"), str)
    )


def _strict_reason(raw: bytes) -> str:
    try:
        Job.from_json(raw)
    except InvalidJob as exc:
        return str(exc)
    return "invalid JSON"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _name(value: object) -> str | None:
    return value if isinstance(value, str) and ID_PATTERN.fullmatch(value) else None


def _int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
