"""Schedules: recurring jobs, in ``schedules/<name>.json`` (``storage.named``).

A schedule holds its rule (a cron expression, or an interval counted from its creation),
the job it enqueues (the fields ``add`` takes), what to do about occurrences missed while no
worker ran (``catch_up``: ``one`` or ``none``), and the last occurrence it enqueued. That
last occurrence is journaled (``fired``) with the id of the job, so a leader that starts
after a crash, or a new one, never enqueues an occurrence again, whatever became of its job.
The worker that leads (``worker.leader``) does the enqueueing; this module only stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from queuectl.config import MAX_DURATION_SECONDS
from queuectl.errors import InvalidJob, QueueError, UsageError
from queuectl.job import ID_PATTERN, format_time, new_generation, parse_time, utcnow
from queuectl.storage.events import Event
from queuectl.storage.named import NamedRecord, NamedStore, record_name

__all__ = ["CATCH_UP", "MAX_NAME", "Schedule", "ScheduleStore"]

CATCH_UP: Final = ("one", "none")
MAX_NAME: Final = 100
"""Schedule names are short enough for ``<name>.<occurrence>`` to be a job id."""


@dataclass(frozen=True)
class Schedule(NamedRecord):
    name: str
    cron: str | None = None
    every: float | None = None
    utc: bool = False
    catch_up: str = "one"
    job: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    last_occurrence: str = ""
    """The newest occurrence already enqueued (or skipped), UTC; creation time at first."""
    last_job: str | None = None
    resumed_at: str = ""
    """When it was last resumed: occurrences up to then fell while it was paused, so they
    follow ``catch_up`` as if no worker had run (an hour's pause is not sixty jobs)."""
    created_at: str = ""
    updated_at: str = ""
    rev: int = 1
    generation: int = 0

    @property
    def rule(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron}" + (" (UTC)" if self.utc else "")
        return f"every {self.every:g}s"

    @classmethod
    def from_dict(cls, data: object) -> Schedule:
        if not isinstance(data, dict):
            raise InvalidJob("a schedule must be a JSON object")
        name = record_name(data, "schedule", MAX_NAME)
        cron, every = data.get("cron"), data.get("every")
        if (cron is None) == (every is None):
            raise InvalidJob("a schedule has either 'cron' or 'every'")
        if cron is not None:
            _check_rule(cron)
        if every is not None and (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not 1 <= every <= MAX_DURATION_SECONDS
        ):
            raise InvalidJob("'every' must be a number of seconds from 1 to 100 years")
        job = data.get("job")
        if not isinstance(job, dict) or not isinstance(job.get("command"), str):
            raise InvalidJob("'job' must be a job object with a command")
        _check_job(name, job)
        catch_up = data.get("catch_up", "one")
        if catch_up not in CATCH_UP:
            raise InvalidJob("'catch_up' must be one or none")
        last = data.get("last_occurrence")
        if not isinstance(last, str) or not _is_time(last):
            raise InvalidJob("'last_occurrence' must be an ISO 8601 time")
        resumed = data.get("resumed_at", "")
        if not isinstance(resumed, str) or (resumed and not _is_time(resumed)):
            raise InvalidJob("'resumed_at' must be an ISO 8601 time")
        created = data.get("created_at", last)
        if not isinstance(created, str) or not _is_time(created):
            raise InvalidJob("'created_at' must be an ISO 8601 time")
        return cls(
            name=name,
            cron=cron,
            every=float(every) if every is not None else None,
            utc=data.get("utc") is True,
            catch_up=str(catch_up),
            job=dict(job),
            paused=data.get("paused") is True,
            last_occurrence=last,
            last_job=data.get("last_job") if isinstance(data.get("last_job"), str) else None,
            resumed_at=resumed,
            created_at=created,
            updated_at=str(data.get("updated_at", "")),
            rev=_whole(data.get("rev", 1)),
            generation=_whole(data.get("generation", 0)),
        )


def _check_rule(cron: object) -> None:
    """A cron rule the CLI would accept (a hand-made file is read as strictly)."""
    from queuectl.recurrence import check_cron

    if not isinstance(cron, str):
        raise InvalidJob("'cron' must be a string")
    try:
        check_cron(cron)
    except ValueError as exc:
        raise InvalidJob(f"invalid cron rule: {exc}") from None


def _check_job(name: str, job: dict[str, Any]) -> None:
    """The fields of a schedule's job, as strictly as ``add`` reads them (the leader sets
    the id and the unique key of each occurrence)."""
    from queuectl.job import job_from_input

    job_from_input({**job, "id": name, "unique_key": None}, default_max_retries=0)


def _is_time(text: str) -> bool:
    try:
        parse_time(text)
    except ValueError:
        return False
    return True


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidJob("rev and generation must be whole numbers")
    return value


class ScheduleStore(NamedStore[Schedule]):
    kind = "schedule"
    folder = "schedules"
    model = Schedule

    def get(self, name: str) -> Schedule | None:
        return self.read_file(name)

    def all(self) -> list[Schedule]:
        return [s for s in (self.read_file(n) for n in self.file_names()) if s is not None]

    def add(self, schedule: Schedule, now: datetime | None = None) -> Schedule:
        if not ID_PATTERN.fullmatch(schedule.name) or len(schedule.name) > MAX_NAME:
            raise UsageError(
                f"invalid schedule name {schedule.name[:40]!r}: use 1-{MAX_NAME} characters "
                "from A-Z a-z 0-9 . _ -, starting with a letter or digit"
            )
        stamp = format_time(now or utcnow())
        with self.changing(schedule.name):
            if self.read_file(schedule.name) is not None:
                raise QueueError(f"schedule {schedule.name!r} already exists")
            made = Schedule(
                **{
                    **schedule.to_dict(),
                    "created_at": stamp,
                    "updated_at": stamp,
                    "last_occurrence": stamp,
                    "rev": 1,
                    "generation": new_generation(now),
                }
            )
            self.save(made, Event.SCHEDULE_ADDED)
        return made

    def remove(self, name: str) -> None:
        with self.changing(name):
            self.delete(self._existing(name), Event.SCHEDULE_REMOVED)

    def set_paused(
        self, name: str, paused: bool, now: datetime | None = None
    ) -> tuple[Schedule, bool]:
        """Pause or resume; a resume notes its time (``resumed_at``) for the leader."""
        with self.changing(name):
            schedule = self._existing(name)
            if schedule.paused == paused:
                return schedule, False
            if paused:
                changed = self.next_version(schedule, paused=True)
            else:
                stamp = format_time(now or utcnow())
                changed = self.next_version(schedule, paused=False, resumed_at=stamp)
            self.save(changed, Event.PAUSED if paused else Event.RESUMED)
        return changed, True

    def fired(self, name: str, occurrence: str, job_id: str | None) -> Schedule | None:
        """Record that ``occurrence`` was enqueued (as ``job_id``) or skipped (None);
        called by the leader under the schedule's change lock."""
        schedule = self.read_file(name)
        if schedule is None:
            return None
        if schedule.last_occurrence and occurrence <= schedule.last_occurrence:
            return schedule
        changed = self.next_version(
            schedule, last_occurrence=occurrence, last_job=job_id or schedule.last_job
        )
        self.save(changed, Event.FIRED)
        return changed

    def _existing(self, name: str) -> Schedule:
        schedule = self.read_file(name)
        if schedule is None:
            raise UsageError(f"no schedule named {name!r} (queuectl schedule list shows them)")
        return schedule
