"""Schedules: one worker of the home leads, and enqueues each due occurrence exactly once.

Leading is holding the leader byte of ``locks/claims.lock``; every non-burst worker tries to
take it every ``POLL_SECONDS`` (burst workers never lead), so when the leader dies (SIGKILL
included: the kernel drops the byte) another takes over within that time. Each tick the
leader, under each schedule's change lock, looks at the occurrences after the schedule's
``last_occurrence`` up to now and enqueues them:

- each as a job with the id ``<schedule>.<occurrence>`` (and the unique key
  ``schedule:<schedule>:<occurrence>``): enqueueing an occurrence twice is impossible, since
  an id exists once; then ``last_occurrence`` is journaled (``fired``), so a later leader
  does not even try again, whatever became of the job;
- occurrences that fell while no leader ran (after the last leader's heartbeat,
  ``schedules/.leader``, plus ``TAKEOVER_GRACE``) follow ``catch_up``: ``one`` enqueues just
  the newest of them, ``none`` skips them all; ones that fell while a leader was alive (a
  takeover) are all enqueued. Occurrences that fell while the schedule was paused (up to
  its ``resumed_at``) follow ``catch_up`` too. A leader that has been leading since its
  previous tick was alive all along, however late this tick comes (a loaded machine, a
  stalled thread): every occurrence in between is enqueued. Only when the machine was
  suspended in between (its boot-time clock ran ahead of its monotonic clock) does the gap
  count as one without a worker.

The clock and the zone are injected (tests pin them); cron rules are ``recurrence``'s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

from queuectl.errors import AlreadyExists, describe
from queuectl.job import format_time, job_from_input, parse_time, utcnow
from queuectl.recurrence import local_zone, occurrences
from queuectl.storage.locks import LEADER_BYTE, Holder
from queuectl.storage.schedules import Schedule
from queuectl.storage.store import Store

__all__ = ["POLL_SECONDS", "TAKEOVER_GRACE", "Leader", "occurrence_id"]

POLL_SECONDS: Final = 0.5
TAKEOVER_GRACE: Final = timedelta(seconds=5)
"""Occurrences up to this long after the last leader's heartbeat fell during a takeover (a
worker was alive): all of them are enqueued, whatever ``catch_up`` says."""

UNIQUE_FOR_SECONDS: Final = 10 * 365 * 86400.0

SUSPEND_SLACK: Final = 1.0
"""Seconds of suspend between two ticks below which the machine counts as awake."""


def suspended_seconds() -> float:
    """How long the machine has been suspended since boot: Linux's boot-time clock counts
    suspend, its monotonic clock does not (0 where the boot-time clock is missing)."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
    except (AttributeError, OSError):
        return 0.0


def occurrence_id(name: str, moment: datetime) -> str:
    """``nightly.20261202T031500Z`` (milliseconds too when the rule has them)."""
    m = moment.astimezone(UTC)
    stamp = m.strftime("%Y%m%dT%H%M%S")
    if m.microsecond:
        stamp += f".{m.microsecond // 1000:03d}"
    return f"{name}.{stamp}Z"


class Leader(threading.Thread):
    def __init__(
        self,
        store: Store,
        log: Callable[[str], None],
        stopping: threading.Event,
        clock: Callable[[], datetime] = utcnow,
        zone: tzinfo | None = None,
        suspended: Callable[[], float] = suspended_seconds,
    ) -> None:
        super().__init__(name="queuectl-leader", daemon=True)
        self.store = store
        self.log = log
        self.stopping = stopping
        self.clock = clock
        self.zone = zone or local_zone()
        self.suspended = suspended
        self.leading = False
        self._holder: Holder | None = None
        self._seen: datetime | None = None
        """Until when a leader is known to have been alive (heartbeats, our own ticks)."""
        self._slept: float | None = None
        """``suspended()`` at our previous tick (None: we have not ticked as leader yet)."""
        self._reported: set[str] = set()

    def run(self) -> None:
        try:
            while not self.stopping.wait(POLL_SECONDS):
                try:
                    if not self.leading:
                        self.leading = self._lead()
                    if self.leading:
                        self.tick()
                except Exception as exc:  # schedules never take the worker down, nor stop
                    self._report("schedules", f"schedules: {describe(exc)}")
        finally:
            if self._holder is not None:
                self._holder.close()

    def _lead(self) -> bool:
        holder = self.store.locks.holder()
        if not holder.take(LEADER_BYTE):
            holder.close()
            return False
        self._holder = holder
        self._seen = self._heartbeat()
        self._slept = None
        if self.store.schedules.file_names():
            self.log("leading: this worker enqueues the schedules' occurrences")
        return True

    def tick(self) -> None:
        """Enqueue what is due now (the leader calls this twice a second)."""
        now = self.clock()
        slept = self.suspended()
        if self._slept is not None and slept - self._slept < SUSPEND_SLACK:
            self._seen = now  # leading since our last tick, and the machine never slept
        self._slept = slept
        for schedule in self.store.schedules.all():
            if not schedule.paused:
                try:
                    self.fire_due(schedule.name, now)
                except Exception as exc:  # one bad schedule never stops the others
                    self._report(schedule.name, f"schedule {schedule.name}: {describe(exc)}")
        self._seen = now
        self._beat(now)

    def fire_due(self, name: str, now: datetime) -> list[str]:
        """Enqueue the due occurrences of one schedule; the ids it enqueued."""
        schedules = self.store.schedules
        made: list[str] = []
        with schedules.changing(name):
            schedule = schedules.get(name)
            if schedule is None or schedule.paused:
                return made
            due = occurrences(
                cron=schedule.cron,
                every=schedule.every,
                anchor=parse_time(schedule.created_at or schedule.last_occurrence),
                after=parse_time(schedule.last_occurrence),
                until=now,
                zone=UTC if schedule.utc else self.zone,
            )
            if not due:
                return made
            for moment in self._chosen(schedule, due):
                job_id = self._enqueue(schedule, moment)
                if job_id is not None:
                    made.append(job_id)
                schedules.fired(name, format_time(moment), job_id)
            schedules.fired(name, format_time(due[-1]), None)  # the skipped ones too
        for job_id in made:
            self.log(f"schedule {name}: enqueued {job_id}")
        return made

    def _chosen(self, schedule: Schedule, due: list[datetime]) -> list[datetime]:
        """The occurrences to enqueue: all that fell while a leader was alive and the
        schedule active; of the others (no leader, or paused), what ``catch_up`` says."""
        alive_until = (self._seen + TAKEOVER_GRACE) if self._seen is not None else None
        paused_until = parse_time(schedule.resumed_at) if schedule.resumed_at else None

        def missed_one(m: datetime) -> bool:
            no_leader = alive_until is None or m > alive_until
            return no_leader or (paused_until is not None and m <= paused_until)

        during = [m for m in due if not missed_one(m)]
        missed = [m for m in due if missed_one(m)]
        if missed and schedule.catch_up == "one":
            return [*during, missed[-1]]
        return during

    def _enqueue(self, schedule: Schedule, moment: datetime) -> str | None:
        stamp = format_time(moment)
        spec: dict[str, Any] = {
            **schedule.job,
            "id": occurrence_id(schedule.name, moment),
            "unique_key": f"schedule:{schedule.name}:{stamp}",
            "unique_for": UNIQUE_FOR_SECONDS,
        }
        job = job_from_input(spec, default_max_retries=self.store.config.get("max-retries"))
        job.schedule = schedule.name
        try:
            duplicates = self.store.enqueue([job])
        except AlreadyExists:
            return job.id  # enqueued before a crash, by us or an earlier leader
        return duplicates.get(job.id, job.id)

    def _heartbeat(self) -> datetime | None:
        try:
            st = os.stat(self.store.schedules.directory / ".leader")
        except FileNotFoundError:
            return None
        return datetime.fromtimestamp(st.st_mtime, UTC)

    def _beat(self, now: datetime) -> None:
        """Say a leader is alive (the file's time; not fsynced: a takeover reads it)."""
        path = self.store.schedules.directory / ".leader"
        try:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            stamp = now.timestamp()
            os.utime(path, (stamp, stamp))
        except OSError:
            pass

    def _report(self, key: str, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            self.log(f"error: {message}")
