"""When a schedule is due: five-field cron expressions and fixed intervals. No I/O.

Cron expressions are evaluated by ``cronsim`` (a small, well-kept parser and evaluator with
cron's own rules for day-of-month/day-of-week and daylight saving time; writing one is where
cron clones go wrong), in the machine's local time zone unless the schedule says UTC.
Intervals (``--every 30s``) count from the schedule's creation. Every function takes the
clock and the zone as arguments, so tests pin both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["MAX_CATCH_UP", "check_cron", "local_zone", "next_occurrence", "occurrences"]

MAX_CATCH_UP: Final = 1000
"""At most this many occurrences are looked at in one go (a schedule paused for years)."""

LOOK_BACK: Final = timedelta(days=7)
"""Occurrences older than this are not looked at one by one: only the newest of them is
kept (a catch-up job never needs more)."""


def local_zone() -> tzinfo:
    """The machine's zone, with its daylight saving rules: ``$TZ``, else /etc/localtime."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name:
            return ZoneInfo(name)
        with Path("/etc/localtime").open("rb") as handle:
            return ZoneInfo.from_file(handle)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return UTC


def check_cron(expression: str) -> str:
    """The expression, if cronsim accepts it; ValueError with its reason otherwise."""
    from cronsim import CronSim, CronSimError

    if len(expression.split()) != 5:
        raise ValueError("a cron expression has five fields: minute hour day month weekday")
    try:
        CronSim(expression, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(str(exc)) from None
    return expression


def occurrences(
    *,
    cron: str | None,
    every: float | None,
    anchor: datetime,
    after: datetime,
    until: datetime,
    zone: tzinfo,
    limit: int = MAX_CATCH_UP,
) -> list[datetime]:
    """Occurrences in (``after``, ``until``], oldest first, as UTC times; ``anchor`` is
    where an interval counts from. At most ``limit`` (the newest ones)."""
    found: list[datetime] = []
    try:
        found.extend(_series(cron, every, anchor, after, until, zone))
    except OverflowError:
        pass  # the series ran past year 9999 (a hand-made time): nothing after it
    return found[-limit:]


def next_occurrence(
    *, cron: str | None, every: float | None, anchor: datetime, after: datetime, zone: tzinfo
) -> datetime | None:
    """The first occurrence after ``after`` (UTC), or None if the rule never fires again
    (before year 9999)."""
    try:
        return _next(cron, every, anchor, after, zone)
    except OverflowError:
        return None


def _next(
    cron: str | None, every: float | None, anchor: datetime, after: datetime, zone: tzinfo
) -> datetime | None:
    if every is not None:
        return _first_after(every, anchor, after).astimezone(UTC)
    if cron is None:
        return None
    from cronsim import CronSim

    for moment in CronSim(cron, after.astimezone(zone)):
        if moment.astimezone(UTC) > after.astimezone(UTC):
            return moment.astimezone(UTC)
    return None


def _series(
    cron: str | None,
    every: float | None,
    anchor: datetime,
    after: datetime,
    until: datetime,
    zone: tzinfo,
) -> Iterator[datetime]:
    """Occurrences in (``after``, ``until``]; of those older than ``LOOK_BACK`` only the
    newest, which is what a catch-up needs (a monthly rule missed for five weeks)."""
    clip = until - LOOK_BACK
    if after < clip:
        older = _newest_at_or_before(cron, every, anchor, clip, zone)
        if older is not None and older > after:
            yield older
        after = clip
    if every is not None:
        moment = _first_after(every, anchor, after)
        while moment <= until:
            yield moment.astimezone(UTC)
            moment += timedelta(seconds=every)
        return
    if cron is None:
        return
    from cronsim import CronSim

    for moment in CronSim(cron, after.astimezone(zone)):  # cronsim walks forward only
        if moment.astimezone(UTC) > until.astimezone(UTC):
            return
        if moment.astimezone(UTC) > after.astimezone(UTC):
            yield moment.astimezone(UTC)


def _first_after(every: float, anchor: datetime, after: datetime) -> datetime:
    step = timedelta(seconds=every)
    moment = anchor + step * max(0, int((after - anchor) / step))
    while moment <= after:
        moment += step
    return moment


def _newest_at_or_before(
    cron: str | None, every: float | None, anchor: datetime, moment: datetime, zone: tzinfo
) -> datetime | None:
    """The last occurrence at or before ``moment`` (UTC), None if there is none."""
    if every is not None:
        if moment < anchor:
            return None
        step = timedelta(seconds=every)
        return (anchor + step * int((moment - anchor) / step)).astimezone(UTC)
    if cron is None:
        return None
    from cronsim import CronSim

    start = moment.astimezone(zone) + timedelta(seconds=1)  # reverse walks strictly before
    for found in CronSim(cron, start.replace(microsecond=0), reverse=True):
        if found.astimezone(UTC) <= moment.astimezone(UTC):
            return found.astimezone(UTC)
    return None
