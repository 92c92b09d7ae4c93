"""The job record and its validation. No I/O here.

A job file is the JSON of ``Job.to_dict()``. Reading is lenient (unknown keys are kept and
written back, so files from newer versions survive a round trip); accepting *new* jobs from
users is strict (unknown fields are an error, so a typo such as ``max_retry`` is not silently
ignored).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from queuectl.errors import InvalidJob

__all__ = [
    "ACCEPTED_FIELDS",
    "DEFAULT_QUEUE",
    "FINISHED_STATES",
    "ID_PATTERN",
    "MAX_COMMAND_BYTES",
    "WAITING_STATES",
    "Job",
    "JobState",
    "format_time",
    "job_from_input",
    "new_generation",
    "new_job_id",
    "parse_object",
    "parse_time",
    "utcnow",
    "validate_id",
]


class JobState(StrEnum):
    """A job's state is the name of the folder holding its file."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    """Waiting for its dependencies (``after``, ``after_any``)."""
    HELD = "held"
    """Kept back until ``queuectl release``."""


FINISHED_STATES: Final = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})
"""States a job reaches only when it will not run again by itself."""

WAITING_STATES: Final = frozenset(
    {JobState.PENDING, JobState.FAILED, JobState.BLOCKED, JobState.HELD}
)
"""Unfinished and not running: states a job can be held, edited or cancelled in."""

DEFAULT_QUEUE: Final = "default"
MAX_LABELS: Final = 32
MAX_GPUS: Final = 64
MAX_DEPENDENCIES: Final = 1000

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Safe ids: no slash, no leading dot, so ``<folder>/<id>.json`` never leaves its folder."""

MAX_COMMAND_BYTES: Final = 131_071
MAX_ARGUMENT_BYTES: Final = MAX_COMMAND_BYTES
"""Linux refuses any single exec argument over 128 KiB (MAX_ARG_STRLEN, counting the NUL),
and the command is passed as one argument to ``/bin/sh -c``: longer ones could never run."""

MAX_RETRIES_LIMIT: Final = 1000

PRIORITY_RANGE: Final = (-100, 100)
"""Higher runs first; 0 is the default."""

MAX_TIMEOUT_SECONDS: Final = 31_536_000

MAX_COUNT: Final = 1 << 31
"""Upper bound for ``attempts`` and ``runs`` in a stored file."""

MAX_REV: Final = 1 << 53
"""Readers accept revisions up to here (JSON's exact integers); a claim refuses files that
are implausibly close to it (``MAX_CLAIMABLE_REV``), so no change can push a job past it."""

MAX_CLAIMABLE_REV: Final = 1 << 40

MAX_TEXT_CHARS: Final = 1 << 16
"""Free-text fields of a stored job (last_error, worker, source) are at most this long."""

MAX_ENV_BYTES: Final = 1 << 20
"""All of a job's ``env`` names and values together: with the command (128 KiB) and a full
history this keeps every job file far below the 4 MiB a worker reads."""
ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HISTORY_LIMIT: Final = 50
"""Attempts kept in the job file (the journal has all of them)."""

ACCEPTED_FIELDS: Final = frozenset(
    {
        "id",
        "command",
        "max_retries",
        "priority",
        "run_at",
        "timeout",
        "cwd",
        "env",
        "queue",
        "labels",
        "after",
        "after_any",
        "unique_key",
        "unique_for",
        "held",
        "gpus",
        "on_finish",
    }
)
"""Fields a user may set when creating a job; every other field is managed by queuectl."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, e.g. ``2026-11-23T12:30:00.123Z``."""
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    # strftime goes through the time module and libc on every call; this is several times
    # cheaper, and timestamps are made several times per job.
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def new_generation(now: datetime | None = None) -> int:
    """A new life's generation: the wall clock in nanoseconds (see ``Job.generation``)."""
    moment = now or utcnow()
    seconds = int(moment.replace(microsecond=0).timestamp())
    return seconds * 1_000_000_000 + moment.microsecond * 1000 + _nano_tick()


_tick = 0


def _nano_tick() -> int:
    """0-999 ns added to a generation, so two lives made in one microsecond still differ."""
    global _tick
    _tick = (_tick + 1) % 1000
    return _tick


def new_job_id(now: datetime | None = None) -> str:
    """Generated ids sort by creation time, so ``ls pending/`` is roughly FIFO order."""
    moment = now or utcnow()
    m = moment
    return (
        f"{m.year:04d}{m.month:02d}{m.day:02d}-{m.hour:02d}{m.minute:02d}{m.second:02d}-"
        f"{m.microsecond:06d}-{os.urandom(3).hex()}"
    )


def validate_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidJob("'id' must be a string")
    if not ID_PATTERN.fullmatch(value):
        raise InvalidJob(
            f"invalid id {value!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


@dataclass
class Job:
    """One job. ``rev`` grows by one on every state change: the highest rev of an id wins
    whenever two copies disagree (a journal replay, or a duplicate left by a power cut)."""

    id: str
    command: str
    state: JobState
    attempts: int
    max_retries: int
    created_at: str
    updated_at: str
    rev: int = 1
    generation: int = 0
    """Which life of the id this is: its enqueue time in nanoseconds. An id freed by cleanup
    or purge can be enqueued again; replay prefers the newest life, so a later life is never
    hidden by the earlier life's ``deleted`` record (whose rev is higher)."""
    queued_at: str | None = None
    """When the job last became runnable (enqueue, run_at, a retry's due time, a DLQ retry,
    a recovery): the start of the queue wait that ``stats`` and the metrics report."""
    next_run_at: str | None = None
    last_exit_code: int | None = None
    last_error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None
    source: str = "cli"
    runs: int = 0
    priority: int = 0
    run_at: str | None = None
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    labels: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    """Ids that must have completed before this job may run."""
    after_any: list[str] = field(default_factory=list)
    """Ids that must have finished (completed, dead or cancelled) before this job may run."""
    unique_key: str | None = None
    unique_for: float | None = None
    """Seconds after completion during which the key still refuses a new job."""
    gpus: int = 0
    """GPU devices the job needs (the ``gpus`` setting lists them)."""
    on_finish: str | None = None
    """A shell command run when the job reaches a final state (instead of the on-finish
    setting; "" for none)."""
    schedule: str | None = None
    """The schedule that enqueued it, if one did."""
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "command": self.command,
            "state": self.state.value,
            "attempts": self.attempts,
            "runs": self.runs,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "run_at": self.run_at,
            "timeout": self.timeout,
            "cwd": self.cwd,
            "env": self.env,
            "queue": self.queue,
            "labels": self.labels,
            "after": self.after,
            "after_any": self.after_any,
            "unique_key": self.unique_key,
            "unique_for": self.unique_for,
            "gpus": self.gpus,
            "on_finish": self.on_finish,
            "schedule": self.schedule,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_run_at": self.next_run_at,
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
            "source": self.source,
            "queued_at": self.queued_at,
            "rev": self.rev,
            "generation": self.generation,
            "history": self.history,
        }
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    def encoded_fields(self) -> list[tuple[str, str]]:
        """Each (key, value) as JSON text, encoded once per state change and then laid out
        twice: as the job file (``file_text``) and inside the journal record
        (``object_text``)."""
        return [
            (_KEY_TEXT.get(key) or _dumps(key), _encode_value(value))
            for key, value in self.to_dict().items()
        ]

    def to_json(self) -> bytes:
        return file_text(self.encoded_fields())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Read a stored job, checking every known field's type and range the same strict way
        whatever folder the file sits in (every file in the home is untrusted input); unknown
        keys are kept. Raises ``InvalidJob`` naming the first bad field."""
        try:
            extra = {k: v for k, v in data.items() if k not in _KNOWN}
            attempts = _require_int(data["attempts"], "attempts", 0, MAX_COUNT)
            job = cls(
                id=validate_id(data["id"]),
                command=_require_command(data["command"]),
                state=_require_state(data["state"]),
                attempts=attempts,
                max_retries=_require_int(data["max_retries"], "max_retries", 0, MAX_RETRIES_LIMIT),
                created_at=_require_stamp(data["created_at"], "created_at"),
                updated_at=_require_stamp(data["updated_at"], "updated_at"),
                rev=_require_int(data.get("rev", 1), "rev", 0, MAX_REV),
                generation=_require_int(data.get("generation", 0), "generation", 0, 1 << 63),
                queued_at=_optional_stamp(data, "queued_at"),
                next_run_at=_optional_stamp(data, "next_run_at"),
                last_exit_code=_optional_int(data, "last_exit_code", -(1 << 31), 1 << 31),
                last_error=_optional_text(data, "last_error"),
                started_at=_optional_stamp(data, "started_at"),
                finished_at=_optional_stamp(data, "finished_at"),
                worker=_optional_text(data, "worker"),
                runs=_require_int(data.get("runs", attempts), "runs", 0, MAX_COUNT),
                source=_require_text(data.get("source", "cli"), "source"),
                priority=_require_int(data.get("priority", 0), "priority", *PRIORITY_RANGE),
                run_at=_optional_stamp(data, "run_at"),
                timeout=_optional(data, "timeout", _require_timeout),
                cwd=_optional(data, "cwd", _require_cwd),
                env=_require_env(data.get("env") or {}),
                queue=_require_queue(data.get("queue", DEFAULT_QUEUE)),
                labels=_require_labels(data.get("labels") or []),
                after=_require_ids(data.get("after") or [], "after"),
                after_any=_require_ids(data.get("after_any") or [], "after_any"),
                unique_key=_optional(data, "unique_key", _require_unique_key),
                unique_for=_optional(data, "unique_for", _require_unique_for),
                gpus=_require_int(data.get("gpus", 0), "gpus", 0, MAX_GPUS),
                on_finish=_optional(data, "on_finish", _require_hook),
                schedule=_optional(data, "schedule", _require_schedule_name),
                history=_require_history(data.get("history") or []),
                extra=extra,
            )
        except KeyError as exc:
            raise InvalidJob(f"missing field {exc.args[0]!r}") from None
        return job

    @classmethod
    def from_json(cls, raw: bytes) -> Job:
        return cls.from_dict(parse_object(raw))


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
_KEY_TEXT: Final = {name: _dumps(name) for name in Job.__dataclass_fields__}
_KNOWN: Final = frozenset(name for name in Job.__dataclass_fields__ if name != "extra")
_STATES: Final = {state.value: state for state in JobState}


def _encode_value(value: object) -> str:
    """JSON text of one value: the C encoder, skipped for the commonest trivial cases."""
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    return _dumps(value)


def file_text(fields: list[tuple[str, str]]) -> bytes:
    """The job file: one key per line, as ``json.dumps(indent=2)`` lays out a flat object
    (``indent`` itself would make the json module use its pure-Python encoder)."""
    text = "{\n" + ",\n".join(f"  {key}: {value}" for key, value in fields) + "\n}\n"
    return text.encode("utf-8", "backslashreplace")


def object_text(fields: list[tuple[str, str]]) -> str:
    """The same object on one line, for a journal record (encode it as ``file_text`` does).

    A lone surrogate (from a ``\\ud800`` escape in a stored file's free-text field) cannot be
    encoded as UTF-8; ``backslashreplace`` turns it back into that same JSON escape."""
    return "{" + ",".join(f"{key}:{value}" for key, value in fields) + "}"


def parse_object(raw: bytes | str) -> dict[str, Any]:
    """Parse user JSON that must be one object, with a short message when it is not."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidJob(f"invalid JSON: {_short_json_error(exc)}") from None
    if not isinstance(data, dict):
        raise InvalidJob("a job must be a JSON object")
    return data


def _short_json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _require_command(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidJob("'command' must be a string")
    if not value.strip():
        raise InvalidJob("'command' must not be empty")
    if "\x00" in value:
        raise InvalidJob("'command' must not contain NUL bytes")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidJob("'command' is not valid Unicode text") from None
    if size > MAX_COMMAND_BYTES:
        raise InvalidJob(f"'command' is longer than {MAX_COMMAND_BYTES} bytes")
    return value


def _require_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"'{name}' must be an integer")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise InvalidJob(f"'{name}' must be an integer")
    number = int(value)
    if not low <= number <= high:
        raise InvalidJob(f"'{name}' must be between {low} and {high}")
    return number


def _require_state(value: object) -> JobState:
    state = _STATES.get(value) if isinstance(value, str) else None
    if state is None:
        raise InvalidJob(f"'state' must be one of {', '.join(_STATES)}")
    return state


def _require_text(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
        raise InvalidJob(f"'{name}' must be a string of at most {MAX_TEXT_CHARS} characters")
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else _require_text(value, name)


def _optional_int(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    return None if value is None else _require_int(value, name, low, high)


def _require_stamp(value: object, name: str) -> str:
    """A stored ISO 8601 time (queuectl writes ``2026-11-23T12:30:00.123Z``)."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise InvalidJob(f"'{name}' must be an ISO 8601 time")


def _optional_stamp(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else _require_stamp(value, name)


def _require_queue(value: object) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidJob(
            f"invalid queue name {str(value)[:40]!r}: use 1-128 characters from "
            "A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return value


def _require_labels(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_LABELS:
        raise InvalidJob(f"'labels' must be a list of at most {MAX_LABELS} strings")
    for label in value:
        if not isinstance(label, str) or not 0 < len(label) <= 64 or not label.isprintable():
            raise InvalidJob("'labels' must hold strings of 1-64 printable characters")
    return list(dict.fromkeys(value))


def _require_ids(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_DEPENDENCIES:
        raise InvalidJob(f"'{name}' must be a list of at most {MAX_DEPENDENCIES} job ids")
    for item in value:
        if not isinstance(item, str) or not ID_PATTERN.fullmatch(item):
            raise InvalidJob(f"'{name}' holds an invalid job id {str(item)[:40]!r}")
    return list(dict.fromkeys(value))


def _require_unique_key(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or "\x00" in value:
        raise InvalidJob("'unique_key' must be a string of 1-256 characters")
    if not _is_unicode(value):
        raise InvalidJob("'unique_key' is not valid Unicode text")
    return value


def _require_unique_for(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidJob("'unique_for' must be a number of seconds")
    if not 0 <= value <= 100 * 365 * 86400:
        raise InvalidJob("'unique_for' must be between 0 seconds and 100 years")
    return float(value)


def _require_hook(value: object) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidJob("'on_finish' must be a shell command line")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_COMMAND_BYTES:
        raise InvalidJob(f"'on_finish' is longer than {MAX_COMMAND_BYTES} bytes")
    return value


def _require_schedule_name(value: object) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidJob("'schedule' must be a schedule name")
    return value


def _require_history(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > 4 * HISTORY_LIMIT:
        raise InvalidJob("'history' must be a list of attempts")
    if not all(isinstance(entry, dict) for entry in value):
        raise InvalidJob("'history' must be a list of objects")
    return value


def job_from_input(
    raw: bytes | str | dict[str, Any],
    *,
    default_max_retries: int,
    fallback_id: str | None = None,
    source: str = "cli",
    now: datetime | None = None,
) -> Job:
    """Build a new pending job from user input, strictly validated.

    ``fallback_id`` is the id taken from a dropped file's name when its JSON has none.
    """
    data = raw if isinstance(raw, dict) else parse_object(raw)
    unknown = sorted(set(data) - ACCEPTED_FIELDS)
    if unknown:
        raise InvalidJob(
            f"unknown field {unknown[0]!r} (accepted: {', '.join(sorted(ACCEPTED_FIELDS))})"
        )
    if "command" not in data:
        raise InvalidJob("missing field 'command'")
    command = _require_command(data["command"])
    if "id" in data:
        job_id = validate_id(data["id"])
    elif fallback_id is not None:
        job_id = validate_id(fallback_id)
    else:
        job_id = new_job_id(now)
    max_retries = default_max_retries
    if "max_retries" in data:
        max_retries = _require_int(data["max_retries"], "max_retries", 0, MAX_RETRIES_LIMIT)
    moment = now or utcnow()
    stamp = format_time(moment)
    run_at = _optional(data, "run_at", _require_time)
    held = data.get("held", False)
    if not isinstance(held, bool):
        raise InvalidJob("'held' must be true or false")
    if data.get("unique_for") is not None and data.get("unique_key") is None:
        raise InvalidJob("unique_for (--unique-for) needs a unique_key (--unique-key)")
    return Job(
        id=job_id,
        command=command,
        attempts=0,
        max_retries=max_retries,
        created_at=stamp,
        updated_at=stamp,
        source=source,
        generation=new_generation(moment),
        queued_at=run_at or stamp,
        priority=_require_int(data.get("priority", 0), "priority", *PRIORITY_RANGE),
        run_at=run_at,
        timeout=_optional(data, "timeout", _require_timeout),
        cwd=_optional(data, "cwd", _require_cwd),
        env=_require_env(data.get("env", {})),
        queue=_require_queue(data.get("queue", DEFAULT_QUEUE)),
        labels=_require_labels(data.get("labels", [])),
        after=_require_ids(data.get("after", []), "after"),
        after_any=_require_ids(data.get("after_any", []), "after_any"),
        unique_key=_optional(data, "unique_key", _require_unique_key),
        unique_for=_optional(data, "unique_for", _require_unique_for),
        gpus=_require_int(data.get("gpus", 0), "gpus", 0, MAX_GPUS),
        on_finish=_optional(data, "on_finish", _require_hook),
        state=JobState.HELD if held else JobState.PENDING,
    )


def _optional(data: dict[str, Any], name: str, check: Any) -> Any:
    value = data.get(name)
    return None if value is None else check(value)


def _require_time(value: object) -> str:
    """Any ISO 8601 moment; one without a zone is taken as UTC. Stored as UTC with a Z."""
    if not isinstance(value, str):
        raise InvalidJob("'run_at' must be an ISO 8601 string such as 2026-12-01T09:00:00Z")
    try:
        return format_time(parse_time(value))
    except (ValueError, OverflowError):
        raise InvalidJob(f"'run_at' is not an ISO 8601 time: {value[:40]!r}") from None


def _require_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidJob("'timeout' must be a number of seconds")
    if not 0 <= value <= MAX_TIMEOUT_SECONDS:
        raise InvalidJob(f"'timeout' must be between 0 and {MAX_TIMEOUT_SECONDS} seconds")
    return float(value)


def _require_cwd(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise InvalidJob("'cwd' must be an absolute path")
    if len(value) > 4096:
        raise InvalidJob("'cwd' is too long")
    if not _is_unicode(value):
        raise InvalidJob("'cwd' is not valid Unicode text")
    return value


def _is_unicode(text: str) -> bool:
    """False for text holding lone surrogates (JSON escapes like \\ud800): nothing can
    pass those to a program."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidJob("'env' must be an object of NAME: value strings")
    if len(value) > 256:
        raise InvalidJob("'env' may set at most 256 variables")
    total = 0
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidJob(f"'env' value of {str(key)[:40]} must be a string")
        total += len(key) + len(item) + 2
        if len(key) + len(item) + 1 > MAX_ARGUMENT_BYTES:
            raise InvalidJob(
                f"'env' value of {key} is longer than Linux passes to a program "
                f"({MAX_ARGUMENT_BYTES} bytes for NAME=value)"
            )
        if total > MAX_ENV_BYTES:
            raise InvalidJob(f"'env' is larger than {MAX_ENV_BYTES} bytes in all")
        if not ENV_NAME.fullmatch(key):
            raise InvalidJob(f"'env' has an invalid variable name {key[:40]!r}")
        if not isinstance(item, str) or "\x00" in item:
            raise InvalidJob(f"'env' value of {key} must be a string without NUL bytes")
        if not _is_unicode(item):
            raise InvalidJob(f"'env' value of {key} is not valid Unicode text")
    return dict(value)
