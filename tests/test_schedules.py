"""Schedules: ``queuectl schedule add|list|pause|resume|remove``, cron rules and intervals,
one leader per home, each occurrence enqueued exactly once, catch-up after a gap.

Two kinds of test. The rules (daylight saving time, cron's day-of-month/day-of-week OR,
catch-up, takeover) are driven with an injected clock: ``recurrence.next_occurrence`` and
``worker.leader.Leader(clock=, zone=)`` ticked (or ``fire_due``) at chosen instants against a
real home, so the jobs it enqueues are real job files and journal records. Exactly-once and
"burst workers never lead" are checked with real worker processes, SIGKILLed and restarted,
and the job files and journal they leave. The command line is checked for bad input and for
hostile ``schedules/<name>.json`` files: one error line or nothing, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from queuectl.cli.main import cli
from queuectl.recurrence import next_occurrence
from queuectl.storage.events import Event
from queuectl.storage.home import Home
from queuectl.storage.schedules import Schedule
from queuectl.storage.store import Store
from queuectl.worker.leader import Leader

from .conftest import Procs
from .ops_support import (
    all_jobs,
    assert_clean_error,
    enqueued_counts,
    here_ok,
    kill9,
    q_ok,
    run_here,
    spawn_worker,
    term,
    wait_for,
    worker_pids,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ID_RE = re.compile(r"^(?P<name>.+)\.(?P<stamp>\d{8}T\d{6}(?:\.\d{3})?)Z$")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def occurrence_of(job_id: str) -> datetime:
    """The occurrence a schedule's job id names (``<name>.<YYYYMMDDTHHMMSS[.mmm]>Z``)."""
    match = ID_RE.match(job_id)
    assert match, job_id
    stamp = match["stamp"]
    layout = "%Y%m%dT%H%M%S.%f" if "." in stamp else "%Y%m%dT%H%M%S"
    return datetime.strptime(stamp, layout).replace(tzinfo=UTC)


# ------------------------------------------------------------------ an injected clock


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(Home(tmp_path / "home").ensure())


def leader(store: Store, clock: Clock, zone: tzinfo = UTC) -> tuple[Leader, list[str]]:
    said: list[str] = []
    return Leader(store, said.append, threading.Event(), clock=clock, zone=zone), said


def add_schedule(store: Store, at: datetime, name: str = "s", **rule: object) -> Schedule:
    return store.schedules.add(Schedule(name, job={"command": "true"}, **rule), now=at)  # type: ignore[arg-type]


def schedule_jobs(store: Store, name: str = "s") -> dict[str, dict]:
    return {
        job_id: data
        for job_id, (_, data) in all_jobs(store.home.root).items()
        if job_id.startswith(f"{name}.")
    }


def occurrences_enqueued(store: Store, name: str = "s") -> list[datetime]:
    return sorted(occurrence_of(job_id) for job_id in schedule_jobs(store, name))


def tick_through(lead: Leader, clock: Clock, until: datetime, step: timedelta) -> None:
    """A leader alive all along, ticking every ``step`` up to ``until``."""
    while clock.now < until:
        clock.now = min(clock.now + step, until)
        lead.tick()


def chain(cron: str, start: datetime, end: datetime, zone: tzinfo) -> list[datetime]:
    """Every occurrence in (start, end], by asking next_occurrence again and again."""
    out = []
    moment = start
    while True:
        moment = next_occurrence(cron=cron, every=None, anchor=start, after=moment, zone=zone)
        if moment is None or moment > end:
            return out
        out.append(moment)


# ------------------------------------------------------------------ cron rules, DST


def test_interval_occurrences_count_from_creation_not_from_the_clock(store: Store) -> None:
    created = utc(2026, 5, 1, 10, 0, 0) + timedelta(milliseconds=250)
    add_schedule(store, created, every=30.0)
    clock = Clock(created)
    lead, _ = leader(store, clock)
    tick_through(lead, clock, created + timedelta(seconds=95), timedelta(seconds=0.5))
    want = [created + timedelta(seconds=30 * k) for k in (1, 2, 3)]
    assert occurrences_enqueued(store) == want
    jobs = schedule_jobs(store)
    assert sorted(jobs) == [
        "s.20260501T100030.250Z",
        "s.20260501T100100.250Z",
        "s.20260501T100130.250Z",
    ]
    for job_id, data in jobs.items():
        assert data["schedule"] == "s", data
        assert data["state"] == "pending"
        stamp = occurrence_of(job_id)
        assert data["unique_key"] and stamp.strftime("%Y-%m-%dT%H:%M:%S") in data["unique_key"]
    assert next_occurrence(
        cron=None, every=30.0, anchor=created, after=created + timedelta(seconds=95), zone=UTC
    ) == created + timedelta(seconds=120)


def test_berlin_spring_forward_runs_a_skipped_time_once_at_the_jump(store: Store) -> None:
    """2026-03-29 02:00 CET jumps to 03:00 CEST: a 02:30 job runs at 03:00 (cron's rule),
    once; the days around it run at 02:30 local."""
    start = utc(2026, 3, 27, 12)
    end = utc(2026, 3, 30, 12)
    want = [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert chain("30 2 * * *", start, end, BERLIN) == want
    add_schedule(store, start, cron="30 2 * * *")
    clock = Clock(start)
    lead, _ = leader(store, clock, BERLIN)
    tick_through(lead, clock, end, timedelta(minutes=10))
    assert occurrences_enqueued(store) == want


def test_berlin_fall_back_fixed_time_once_wildcard_hour_twice(store: Store) -> None:
    """2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice. A job at a fixed
    02:30 runs once (the first); ``*/30 * * * *`` runs in both copies of the hour."""
    start = utc(2026, 10, 24, 12)
    end = utc(2026, 10, 26, 12)
    fixed = [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert chain("30 2 * * *", start, end, BERLIN) == fixed
    every_half_hour = chain(
        "*/30 * * * *", utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 2, 15), BERLIN
    )
    assert every_half_hour == [
        utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 * k) for k in range(5)
    ]

    add_schedule(store, start, name="fixed", cron="30 2 * * *")
    add_schedule(store, utc(2026, 10, 24, 23, 45), name="half", cron="*/30 * * * *")
    clock = Clock(start)
    lead, _ = leader(store, clock, BERLIN)
    tick_through(lead, clock, end, timedelta(minutes=20))
    assert occurrences_enqueued(store, "fixed") == fixed
    half = [m for m in occurrences_enqueued(store, "half") if m <= utc(2026, 10, 25, 2, 15)]
    assert half == every_half_hour  # 02:00 and 02:30 local, twice each, no more


def test_new_york_dst_both_ways(store: Store) -> None:
    """2026-03-08 02:00 EST jumps to 03:00 EDT; 2026-11-01 02:00 EDT falls back to 01:00 EST."""
    spring = chain("0 2 * * *", utc(2026, 3, 6, 12), utc(2026, 3, 10, 12), NEW_YORK)
    assert spring == [
        utc(2026, 3, 7, 7),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 9, 6),
        utc(2026, 3, 10, 6),
    ]
    fall = chain("0 1 * * *", utc(2026, 10, 30, 12), utc(2026, 11, 3, 12), NEW_YORK)
    assert fall == [
        utc(2026, 10, 31, 5),
        utc(2026, 11, 1, 5),
        utc(2026, 11, 2, 6),
        utc(2026, 11, 3, 6),
    ]

    add_schedule(store, utc(2026, 10, 30, 12), cron="0 1 * * *")
    clock = Clock(utc(2026, 10, 30, 12))
    lead, _ = leader(store, clock, NEW_YORK)
    tick_through(lead, clock, utc(2026, 11, 3, 12), timedelta(minutes=20))
    assert occurrences_enqueued(store) == fall
    assert sorted(schedule_jobs(store)) == [
        "s.20261031T050000Z",
        "s.20261101T050000Z",
        "s.20261102T060000Z",
        "s.20261103T060000Z",
    ]


def test_utc_schedule_ignores_the_zone(store: Store) -> None:
    start = utc(2026, 3, 28, 12)
    add_schedule(store, start, cron="30 2 * * *", utc=True)
    clock = Clock(start)
    lead, _ = leader(store, clock, BERLIN)
    tick_through(lead, clock, utc(2026, 3, 30, 12), timedelta(minutes=15))
    assert occurrences_enqueued(store) == [utc(2026, 3, 29, 2, 30), utc(2026, 3, 30, 2, 30)]


def test_day_of_month_or_day_of_week(store: Store) -> None:
    """Both restricted: either matches (13th OR Friday). One of them ``*``: the other alone."""
    start = utc(2026, 1, 1)
    add_schedule(store, start, name="either", cron="0 12 13 * 5", utc=True)
    add_schedule(store, start, name="fridays", cron="0 12 * * 5", utc=True)
    add_schedule(store, start, name="the13th", cron="0 12 13 * *", utc=True)
    clock = Clock(start)
    lead, _ = leader(store, clock)
    tick_through(lead, clock, utc(2026, 2, 1), timedelta(hours=5))
    fridays = [utc(2026, 1, d, 12) for d in (2, 9, 16, 23, 30)]
    assert occurrences_enqueued(store, "either") == sorted([*fridays, utc(2026, 1, 13, 12)])
    assert occurrences_enqueued(store, "fridays") == fridays
    assert occurrences_enqueued(store, "the13th") == [utc(2026, 1, 13, 12)]


# ------------------------------------------------------------------ catch-up, takeover


@pytest.mark.parametrize(("catch_up", "after_gap"), [("one", 1), ("none", 0)])
def test_catch_up_after_a_gap_with_no_worker(store: Store, catch_up: str, after_gap: int) -> None:
    t0 = utc(2026, 6, 1, 12)
    add_schedule(store, t0, every=60.0, catch_up=catch_up)
    clock = Clock(t0)
    first, _ = leader(store, clock)
    tick_through(first, clock, t0 + timedelta(minutes=3, seconds=10), timedelta(seconds=5))
    assert len(occurrences_enqueued(store)) == 3
    # the leader's process is gone; an hour later a new worker leads
    clock.now = t0 + timedelta(hours=1, seconds=20)
    second, _ = leader(store, clock)
    assert second._lead()  # reads the last leader's heartbeat
    try:
        second.tick()
        got = occurrences_enqueued(store)
        missed = got[3:]
        assert len(missed) == after_gap, missed
        if after_gap:
            assert missed == [t0 + timedelta(hours=1)]  # the newest missed one
        # from then on, every occurrence as usual; the skipped ones never come back
        tick_through(
            second, clock, t0 + timedelta(hours=1, minutes=2, seconds=20), timedelta(seconds=1)
        )
        later = occurrences_enqueued(store)[3 + after_gap :]
        assert later == [t0 + timedelta(hours=1, minutes=1), t0 + timedelta(hours=1, minutes=2)]
        last = store.schedules.get("s")
        assert last is not None and last.last_job == "s.20260601T130200Z"
    finally:
        second._holder.close()  # type: ignore[union-attr]


def test_takeover_within_the_grace_enqueues_every_occurrence(store: Store) -> None:
    """A leader killed; another worker takes over 4.5 s after its last heartbeat: the
    occurrences in between fell while a worker was alive, so all of them are enqueued,
    even with catch-up none."""
    created = utc(2026, 6, 1, 12)
    add_schedule(store, created, every=1.0, catch_up="none")
    clock = Clock(created)
    first, _ = leader(store, clock)
    tick_through(first, clock, created + timedelta(seconds=10.5), timedelta(seconds=0.5))
    assert len(occurrences_enqueued(store)) == 10
    clock.now = created + timedelta(seconds=15)
    second, _ = leader(store, clock)
    assert second._lead()
    try:
        second.tick()
    finally:
        second._holder.close()  # type: ignore[union-attr]
    assert occurrences_enqueued(store) == [created + timedelta(seconds=k) for k in range(1, 16)]


def test_a_new_leader_never_enqueues_an_occurrence_again(store: Store) -> None:
    """Whatever became of the jobs (run, deleted), and even when the leader died between
    enqueueing a job and journaling that it did (the occurrence is in the id and the
    unique key)."""
    created = utc(2026, 6, 1, 12)
    add_schedule(store, created, every=1.0)
    clock = Clock(created)
    first, _ = leader(store, clock)
    tick_through(first, clock, created + timedelta(seconds=3.5), timedelta(seconds=0.5))
    made = sorted(schedule_jobs(store))
    assert len(made) == 3
    again, _ = leader(store, clock)
    assert again.fire_due("s", clock.now) == []
    # a crash between the enqueue and the 'fired' record: the schedule still says 1 s
    sched = store.schedules.get("s")
    assert sched is not None
    with store.schedules.changing("s"):
        store.schedules.save(
            store.schedules.next_version(sched, last_occurrence="2026-06-01T12:00:01.000Z"),
            Event.FIRED,
        )
    again.tick()
    assert sorted(schedule_jobs(store)) == made
    counts = enqueued_counts(store.home.root)
    assert all(counts[job_id] == 1 for job_id in made), counts


def test_a_leader_whose_tick_comes_late_still_enqueues_every_occurrence(store: Store) -> None:
    """The leader is alive and leading all along, but its ticks come 7 s apart (a loaded
    machine, a stalled thread): every occurrence in between fell while a worker was alive,
    so every one is enqueued, even with catch-up none."""
    created = utc(2026, 6, 1, 12)
    add_schedule(store, created, every=1.0, catch_up="none")
    clock = Clock(created)
    lead, _ = leader(store, clock)
    assert lead._lead()
    try:
        lead.tick()  # leading from the schedule's creation on
        tick_through(lead, clock, created + timedelta(seconds=21.5), timedelta(seconds=7))
    finally:
        lead._holder.close()  # type: ignore[union-attr]
    assert occurrences_enqueued(store) == [created + timedelta(seconds=k) for k in range(1, 22)]


def test_a_leader_on_a_machine_that_was_suspended_applies_the_catch_up_rule(store: Store) -> None:
    """The same late tick, but the machine slept in between (a laptop's lid): no worker ran
    then, so the gap follows catch-up (one: the newest occurrence only)."""
    created = utc(2026, 6, 1, 12)
    add_schedule(store, created, every=1.0)
    clock = Clock(created)
    slept = [0.0]
    lead = Leader(store, [].append, threading.Event(), clock=clock, suspended=lambda: slept[0])
    tick_through(lead, clock, created + timedelta(seconds=3), timedelta(seconds=1))
    slept[0] = 3600.0
    clock.now = created + timedelta(hours=1, seconds=3)
    lead.tick()
    want = [created + timedelta(seconds=k) for k in (1, 2, 3)]
    assert occurrences_enqueued(store) == [*want, clock.now]


@pytest.mark.parametrize(("catch_up", "for_the_pause"), [("one", 1), ("none", 0)])
def test_resume_applies_the_catch_up_rule_to_what_the_pause_missed(
    store: Store, catch_up: str, for_the_pause: int
) -> None:
    """``schedule resume``: "Enqueue a paused schedule's occurrences again (what it missed:
    its catch-up rule)". An hour's pause with a leader alive all along must not turn into
    sixty jobs at once."""
    t0 = utc(2026, 6, 1, 12)
    add_schedule(store, t0, every=60.0, catch_up=catch_up)
    clock = Clock(t0)
    lead, _ = leader(store, clock)
    tick_through(lead, clock, t0 + timedelta(minutes=3, seconds=10), timedelta(seconds=5))
    assert len(occurrences_enqueued(store)) == 3
    store.schedules.set_paused("s", True, now=clock.now)
    tick_through(lead, clock, t0 + timedelta(minutes=63, seconds=10), timedelta(seconds=30))
    assert len(occurrences_enqueued(store)) == 3  # nothing while paused
    store.schedules.set_paused("s", False, now=clock.now)
    lead.tick()
    after = occurrences_enqueued(store)[3:]
    assert len(after) == for_the_pause, f"{len(after)} jobs enqueued at resume: {after[:3]}..."
    if for_the_pause:
        assert after == [t0 + timedelta(minutes=63)]  # the newest the pause missed
    # and from then on every occurrence as usual
    tick_through(lead, clock, t0 + timedelta(minutes=65, seconds=10), timedelta(seconds=1))
    assert occurrences_enqueued(store)[3 + for_the_pause :] == [
        t0 + timedelta(minutes=64),
        t0 + timedelta(minutes=65),
    ]


def test_a_monthly_schedule_gets_its_catch_up_after_a_long_gap(store: Store) -> None:
    """Missed the 1st of the month while no worker ran for five weeks: one catch-up job
    (default), whatever the length of the gap."""
    created = utc(2026, 6, 1, 12)
    add_schedule(store, created, cron="0 3 1 * *", utc=True)
    clock = Clock(created)
    first, _ = leader(store, clock)
    tick_through(first, clock, created + timedelta(hours=1), timedelta(minutes=10))
    clock.now = utc(2026, 7, 10)
    second, _ = leader(store, clock)
    assert second._lead()
    try:
        second.tick()
    finally:
        second._holder.close()  # type: ignore[union-attr]
    assert occurrences_enqueued(store) == [utc(2026, 7, 1, 3)]


@pytest.mark.parametrize(
    "args",
    [
        ["--delay", "10m", "true"],
        ["--run-at", "2030-01-01T00:00:00Z", "true"],
        ["--job", '{"command": "true", "run_at": "2030-01-01T00:00:00Z"}'],
    ],
    ids=["--delay", "--run-at", "--job run_at"],
)
def test_a_fixed_start_time_for_a_schedules_jobs_is_refused(
    tmp_path: Path, args: list[str]
) -> None:
    """``--delay 10m`` was turned into one fixed ``run_at`` at ``schedule add``, so every
    later occurrence carried the same, past, start time: meaningless. A start time fixed
    once does not fit a recurring job, so it is refused (the offset belongs in the rule)."""
    home = tmp_path / "home"
    result = CliRunner().invoke(
        cli, ["--home", str(home), "schedule", "add", "d", "--every", "1h", *args]
    )
    assert_clean_error(result, 2)
    assert not (home / "schedules" / "d.json").exists()


# ------------------------------------------------------------------ the command line


@pytest.fixture
def h(tmp_path: Path) -> Path:
    """A new home, as a user makes one: an empty private folder (any command sets it up)."""
    home = tmp_path / "qhome"
    home.mkdir(mode=0o700)
    here_ok(home, "status")
    return home


def listed(home: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    if env is None:
        data = json.loads(here_ok(home, "schedule", "list", "--json"))
    else:
        data = json.loads(q_ok(home, "schedule", "list", "--json", env=env))
    assert isinstance(data, list), data
    return {entry["name"]: entry for entry in data}


def test_add_list_pause_resume_remove(h: Path) -> None:
    out = here_ok(
        h, "schedule", "add", "nightly", "--cron", "15 3 * * *", "--utc", "--", "echo", "a b"
    )
    assert "nightly" in out
    here_ok(
        h,
        "schedule",
        "add",
        "often",
        "--every",
        "30s",
        "--catch-up",
        "none",
        "-q",
        "default",
        "-p",
        "5",
        "true",
    )
    got = listed(h)
    assert sorted(got) == ["nightly", "often"]
    n, o = got["nightly"], got["often"]
    assert {"name", "rule", "next_due", "last_job", "paused"} <= set(n)
    assert "15 3 * * *" in n["rule"] and n["paused"] is False and n["last_job"] is None
    assert n["next_due"].endswith("03:15:00.000Z"), n["next_due"]
    assert "30" in o["rule"] and o["catch_up"] == "none" and o["job"]["priority"] == 5
    due = datetime.fromisoformat(o["next_due"])
    assert timedelta(0) < due - datetime.now(UTC) <= timedelta(seconds=31), o["next_due"]
    table = here_ok(h, "schedule", "list")
    assert "nightly" in table and "often" in table and "15 3 * * *" in table

    here_ok(h, "schedule", "pause", "nightly")
    assert listed(h)["nightly"]["paused"] is True
    here_ok(h, "schedule", "pause", "nightly")  # again: fine, still paused
    assert listed(h)["nightly"]["paused"] is True
    here_ok(h, "schedule", "resume", "nightly")
    assert listed(h)["nightly"]["paused"] is False

    here_ok(h, "schedule", "remove", "often")
    assert sorted(listed(h)) == ["nightly"]
    assert not (h / "schedules" / "often.json").exists()
    for verb in ("remove", "pause", "resume"):
        assert_clean_error(run_here(h, "schedule", verb, "often"), 2, "often")
    here_ok(h, "schedule", "add", "often", "--every", "1m", "true")  # the name is free again


def test_cron_is_read_in_local_time_unless_utc(h: Path) -> None:
    env = {"TZ": "Asia/Kolkata"}  # +05:30 all year
    q_ok(h, "schedule", "add", "local", "--cron", "0 9 * * *", "true", env=env)
    q_ok(h, "schedule", "add", "inutc", "--cron", "0 9 * * *", "--utc", "true", env=env)
    got = listed(h, env=env)
    assert got["local"]["next_due"].endswith("T03:30:00.000Z"), got["local"]
    assert got["inutc"]["next_due"].endswith("T09:00:00.000Z"), got["inutc"]
    ny = listed(h, env={"TZ": "America/New_York"})["local"]["next_due"]
    now = datetime.now(UTC)
    want = next_occurrence(cron="0 9 * * *", every=None, anchor=now, after=now, zone=NEW_YORK)
    assert want is not None and ny == want.strftime("%Y-%m-%dT%H:%M:%S.000Z")


BAD_ADDS = {
    "cron out of range": ["x", "--cron", "61 * * * *", "true"],
    "cron four fields": ["x", "--cron", "* * * *", "true"],
    "cron six fields": ["x", "--cron", "* * * * * *", "true"],
    "cron words": ["x", "--cron", "every day", "true"],
    "cron impossible date": ["x", "--cron", "0 0 31 2 *", "true"],
    "cron empty": ["x", "--cron", "", "true"],
    "every 0": ["x", "--every", "0", "true"],
    "every 0s": ["x", "--every", "0s", "true"],
    "every half second": ["x", "--every", "0.5s", "true"],
    "every negative": ["x", "--every", "-5s", "true"],
    "every words": ["x", "--every", "often", "true"],
    "every huge": ["x", "--every", "99999999999d", "true"],
    "both rules": ["x", "--cron", "* * * * *", "--every", "1m", "true"],
    "neither rule": ["x", "true"],
    "no command": ["x", "--every", "1m"],
    "command and --job": ["x", "--every", "1m", "--job", '{"command": "true"}', "true"],
    "--job not json": ["x", "--every", "1m", "--job", "{nope"],
    "--job unknown field": ["x", "--every", "1m", "--job", '{"command": "true", "max_retry": 1}'],
    "--job command not a string": ["x", "--every", "1m", "--job", '{"command": 5}'],
    "--job names an id": ["x", "--every", "1m", "--job", '{"command": "true", "id": "fixed"}'],
    "--id": ["x", "--every", "1m", "--id", "fixed", "true"],
    "--unique-key": ["x", "--every", "1m", "--unique-key", "k", "true"],
    "bad catch-up": ["x", "--every", "1m", "--catch-up", "all", "true"],
    "missing queue": ["x", "--every", "1m", "-q", "nope", "true"],
    "gpus without devices": ["x", "--every", "1m", "--gpus", "1", "true"],
    "no name": ["--every", "1m", "true"],
    "name with slash": ["a/b", "--every", "1m", "true"],
    "name ..": ["..", "--every", "1m", "true"],
    "name dot": [".hidden", "--every", "1m", "true"],
    "name space": ["a b", "--every", "1m", "true"],
    "name too long": ["n" * 101, "--every", "1m", "true"],
    "name empty": ["", "--every", "1m", "true"],
}


@pytest.mark.parametrize("args", list(BAD_ADDS.values()), ids=list(BAD_ADDS))
def test_bad_schedule_add_is_one_line_exit_2_and_creates_nothing(h: Path, args: list[str]) -> None:
    records = _journal_bytes(h)
    result = run_here(h, "schedule", "add", *args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("queuectl: error: "), result.stderr
    assert "internal error" not in lines[0] and "probe" not in lines[0], lines[0]
    assert result.stdout == ""
    assert listed(h) == {}
    assert not list((h / "schedules").glob("*.json")) if (h / "schedules").exists() else True
    assert _journal_bytes(h) == records


def _journal_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "journal").glob("*.log"))


def test_duplicate_names_are_refused_and_the_first_is_untouched(h: Path) -> None:
    here_ok(h, "schedule", "add", "dup", "--every", "1m", "echo", "first")
    first = (h / "schedules" / "dup.json").read_bytes()
    assert_clean_error(
        run_here(h, "schedule", "add", "dup", "--every", "5m", "echo", "second"), (1, 2), "dup"
    )
    assert_clean_error(
        run_here(h, "schedule", "add", "dup", "--cron", "* * * * *", "echo", "third"),
        (1, 2),
        "already",
    )
    assert (h / "schedules" / "dup.json").read_bytes() == first
    assert listed(h)["dup"]["job"]["command"] == "echo first"


# ------------------------------------------------------------------ hostile files


def _valid(name: str, **changes: object) -> dict:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    data: dict = {
        "name": name,
        "cron": None,
        "every": 1.0,
        "utc": False,
        "catch_up": "one",
        "job": {"command": "true"},
        "paused": False,
        "last_occurrence": stamp,
        "last_job": None,
        "created_at": stamp,
        "updated_at": stamp,
        "rev": 1,
        "generation": 1,
    }
    data.update(changes)
    return data


def _hostile(folder: Path, variant: str, name: str = "evil") -> None:
    """Write one hostile schedule file ``<name>.json`` into ``folder`` (a home's
    schedules/); where it is JSON, it names itself ``name``."""
    path = folder / f"{name}.json"
    writes = {
        "garbage": b"\x00\xffnot json{",
        "empty": b"",
        "array": b"[1, 2, 3]",
        "deep nesting": b"[" * 100000 + b"]" * 100000,
        "every is a string": json.dumps(_valid(name, every="1s")).encode(),
        "every is negative": json.dumps(_valid(name, every=-1)).encode(),
        "every is nan": json.dumps(_valid(name, every=float("nan"))).encode(),
        "cron is a number": json.dumps(_valid(name, every=None, cron=5)).encode(),
        "cron is garbage": json.dumps(_valid(name, every=None, cron="garbage")).encode(),
        "cron has six fields": json.dumps(_valid(name, every=None, cron="* * * * * *")).encode(),
        "job without command": json.dumps(_valid(name, job={"cmd": "true"})).encode(),
        "job is a string": json.dumps(_valid(name, job="true")).encode(),
        "job with bad field": json.dumps(
            _valid(name, job={"command": "true", "max_retries": "x"})
        ).encode(),
        "name mismatch": json.dumps(_valid("other")).encode(),
        "name hostile": json.dumps(_valid("../../etc")).encode(),
        "created_at garbage": json.dumps(_valid(name, created_at="x")).encode(),
        "no times at all": json.dumps(
            {"name": name, "every": 1, "job": {"command": "true"}}
        ).encode(),
        "last_occurrence far future": json.dumps(
            _valid(name, last_occurrence="9999-12-31T23:59:59.999Z")
        ).encode(),
        "huge": b'{"name": "' + name.encode() + b'", "pad": "' + b"x" * (2 << 20) + b'"}',
    }
    if variant in writes:
        path.write_bytes(writes[variant])
        path.chmod(0o600)
    elif variant == "symlink to another schedule":
        path.symlink_to(folder / "zz-good.json")
    elif variant == "symlink to /etc/passwd":
        path.symlink_to("/etc/passwd")
    elif variant == "dangling symlink":
        path.symlink_to(folder / "nowhere.json")
    elif variant == "a directory":
        path.mkdir()
    elif variant == "a fifo":
        os.mkfifo(path)
    elif variant == "world writable":
        path.write_text(json.dumps(_valid(name)))
        path.chmod(0o666)
    else:
        raise AssertionError(variant)


HOSTILE = [
    "garbage",
    "empty",
    "array",
    "deep nesting",
    "every is a string",
    "every is negative",
    "every is nan",
    "cron is a number",
    "cron is garbage",
    "cron has six fields",
    "job without command",
    "job is a string",
    "job with bad field",
    "name mismatch",
    "name hostile",
    "created_at garbage",
    "no times at all",
    "last_occurrence far future",
    "huge",
    "symlink to another schedule",
    "symlink to /etc/passwd",
    "dangling symlink",
    "a directory",
    "a fifo",
    "world writable",
]


@pytest.mark.parametrize("variant", HOSTILE)
def test_hostile_schedule_file_never_breaks_list_or_fsck(h: Path, variant: str) -> None:
    here_ok(h, "schedule", "add", "zz-good", "--every", "1h", "true")
    _hostile(h / "schedules", variant)
    for args in (["schedule", "list", "--json"], ["schedule", "list"], ["fsck"], ["status"]):
        done = run_here(h, *args)
        assert done.exception is None or isinstance(done.exception, SystemExit), (
            args,
            done.exception,
        )
        assert "internal error" not in done.stderr, (args, done.stderr)
        if args[0] == "fsck":
            assert done.exit_code in (0, 1), (done.exit_code, done.stderr)
        else:
            assert done.exit_code == 0, (args, done.exit_code, done.stderr)
    good = listed(h)["zz-good"]
    assert good["rule"] and good["next_due"]


def test_hostile_schedule_files_do_not_stop_a_workers_good_schedules(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """Every hostile file at once next to two good schedules (sorting before and after
    them): the leader keeps enqueueing both good ones, one occurrence a second."""
    here_ok(qhome, "schedule", "add", "aa-good", "--every", "1s", "true")
    here_ok(qhome, "schedule", "add", "zz-good", "--every", "1s", "true")
    folder = qhome / "schedules"
    for n, variant in enumerate(HOSTILE):
        _hostile(folder, variant, name=f"m{n:02d}-evil")
    log = tmp_path / "worker.log"
    spawn_worker(procs, qhome, "--count", "2", log=log)

    def fired(name: str) -> int:
        return sum(1 for job_id in all_jobs(qhome) if job_id.startswith(f"{name}."))

    try:
        wait_for(
            lambda: fired("aa-good") >= 3 and fired("zz-good") >= 3,
            "both good schedules to enqueue three occurrences",
            timeout=10,
        )
    except AssertionError:
        raise AssertionError(
            f"aa-good: {fired('aa-good')}, zz-good: {fired('zz-good')}; worker log:\n"
            + log.read_text(errors="replace")[-3000:]
        ) from None
    assert "Traceback" not in log.read_text(errors="replace")


# ------------------------------------------------------------------ journal rebuild, fsck


def _files(home: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((home / "schedules").glob("*.json"))}


def test_journal_rebuild_recreates_schedules(h: Path) -> None:
    here_ok(h, "schedule", "add", "a", "--every", "1h", "--label", "x", "true")
    here_ok(
        h,
        "schedule",
        "add",
        "b",
        "--cron",
        "*/5 * * * *",
        "--utc",
        "--catch-up",
        "none",
        "--",
        "echo",
        "b",
    )
    here_ok(h, "schedule", "add", "gone", "--every", "1h", "true")
    here_ok(h, "schedule", "pause", "b")
    here_ok(h, "schedule", "remove", "gone")
    # a leader fires 'a' once (its last occurrence and job are journaled)
    store = Store(Home(h).ensure())
    sched = store.schedules.get("a")
    assert sched is not None
    lead, _ = leader(
        store, Clock(datetime.fromisoformat(sched.created_at) + timedelta(hours=1, seconds=1))
    )
    lead.tick()
    assert store.schedules.get("a").last_job is not None  # type: ignore[union-attr]
    before = _files(h)
    assert sorted(before) == ["a.json", "b.json"]
    for path in (h / "schedules").glob("*.json"):
        path.unlink()
    here_ok(h, "journal", "rebuild")
    assert _files(h) == before
    assert listed(h)["b"]["paused"] is True
    # damaged files come back too
    (h / "schedules" / "a.json").write_text("garbage")
    here_ok(h, "journal", "rebuild")
    assert _files(h) == before


@pytest.mark.parametrize("edit", ["command", "paused", "rule", "removed file", "rev bumped"])
def test_fsck_flags_a_schedule_file_the_journal_disagrees_with(h: Path, edit: str) -> None:
    here_ok(h, "schedule", "add", "s", "--every", "1h", "echo", "safe")
    here_ok(h, "schedule", "pause", "s")
    assert run_here(h, "fsck").exit_code == 0
    path = h / "schedules" / "s.json"
    original = json.loads(path.read_text())
    data = json.loads(path.read_text())
    if edit == "command":
        data["job"]["command"] = "echo evil"
    elif edit == "paused":
        data["paused"] = False
    elif edit == "rule":
        data["every"] = 1.0
    elif edit == "rev bumped":
        data["job"]["command"] = "echo evil"
        data["rev"] += 1
    if edit == "removed file":
        path.unlink()
    else:
        path.write_text(json.dumps(data))
        path.chmod(0o600)
    done = run_here(h, "fsck")
    assert done.exit_code == 1, (done.stdout, done.stderr)
    assert "schedule s " in done.stdout + done.stderr, (done.stdout, done.stderr)
    if edit != "rev bumped":
        repaired = run_here(h, "fsck", "--repair")
        assert repaired.exit_code in (0, 1) and "Traceback" not in repaired.stderr, repaired
        assert json.loads(path.read_text()) == original
        assert run_here(h, "fsck").exit_code == 0


# ------------------------------------------------------------------ real workers


def _schedule_ids(home: Path, name: str) -> list[str]:
    return sorted(job_id for job_id in all_jobs(home) if job_id.startswith(f"{name}."))


def _leader_pid(logs: dict[int, Path], name: str) -> int | None:
    """The worker whose log says it enqueued the newest occurrence."""
    best: tuple[str, int] | None = None
    pattern = re.compile(rf"\[(\d+)\] schedule {re.escape(name)}: enqueued (\S+)")
    for pid, log in logs.items():
        for match in pattern.finditer(log.read_text(errors="replace")):
            if best is None or match[2] > best[0]:
                best = (match[2], pid)
    return best[1] if best else None


def test_exactly_once_with_three_workers_sigkilled_and_restarted(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """3 worker processes, ``--every 1s`` for 10 s, the leader SIGKILLed and a new worker
    started in its place again and again: every occurrence from the schedule's creation to
    the end is enqueued, each exactly once, 1 s apart."""
    logs: dict[int, Path] = {}
    live: dict[int, object] = {}

    def start(n: int) -> None:
        log = tmp_path / f"worker-{n}.log"
        proc = spawn_worker(procs, qhome, "--count", "2", log=log)
        logs[proc.pid] = log
        live[proc.pid] = proc

    for n in range(3):
        start(n)
    wait_for(lambda: len(worker_pids(qhome)) == 3, "three workers to register", timeout=60)
    here_ok(qhome, "schedule", "add", "tick", "--every", "1s", "true")
    created = datetime.fromisoformat(
        json.loads((qhome / "schedules" / "tick.json").read_text())["created_at"]
    )

    kills = 0
    n = 3
    end = created + timedelta(seconds=10)
    while datetime.now(UTC) < end:
        seen = len(_schedule_ids(qhome, "tick"))
        wait_for(
            lambda s=seen: len(_schedule_ids(qhome, "tick")) >= s + 2,
            "two more occurrences",
            timeout=30,
        )
        pid = _leader_pid(logs, "tick")
        assert pid is not None
        victim = live.pop(pid)
        kill9(victim)  # type: ignore[arg-type]
        kills += 1
        start(n)
        n += 1
    assert kills >= 3
    stop_after = datetime.now(UTC) + timedelta(seconds=1)
    wait_for(
        lambda: any(occurrence_of(i) >= stop_after for i in _schedule_ids(qhome, "tick")),
        "an occurrence after the kills",
        timeout=30,
    )
    for proc in list(live.values()):
        term(proc)  # type: ignore[arg-type]

    ids = sorted(i for i in all_jobs(qhome, settled=True) if i.startswith("tick."))
    moments = [occurrence_of(i) for i in ids]
    steps = [round((m - created).total_seconds(), 3) for m in moments]
    assert steps == [float(k) for k in range(1, len(steps) + 1)], steps
    counts = enqueued_counts(qhome)
    assert {i: counts[i] for i in ids if counts[i] != 1} == {}
    jobs = all_jobs(qhome)
    assert all(jobs[i][1]["schedule"] == "tick" for i in ids)
    assert listed(qhome)["tick"]["last_job"] == ids[-1]


def test_burst_workers_never_lead(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    """Only a burst worker alive (busy with a long job): nothing is enqueued. A normal
    worker then catches up with one job for the whole gap, and goes on every second."""
    gate = tmp_path / "release"
    job = here_ok(
        qhome, "add", "--", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"
    ).strip()
    burst = spawn_worker(procs, qhome, "--burst", log=tmp_path / "burst.log")
    wait_for(
        lambda: (qhome / "processing" / f"{job}.json").exists(), "the burst worker to run the job"
    )
    here_ok(qhome, "schedule", "add", "b", "--every", "1s", "true")
    created = datetime.fromisoformat(
        json.loads((qhome / "schedules" / "b.json").read_text())["created_at"]
    )
    deadline = time.monotonic() + 1.5  # three of the leader's polls
    while time.monotonic() < deadline:
        assert _schedule_ids(qhome, "b") == [], "a burst worker enqueued an occurrence"
        time.sleep(0.1)
    gate.touch()
    assert term(burst) == 0
    normal = spawn_worker(procs, qhome, log=tmp_path / "normal.log")
    wait_for(lambda: len(_schedule_ids(qhome, "b")) >= 3, "three occurrences from a normal worker")
    term(normal)
    steps = [
        round((occurrence_of(i) - created).total_seconds(), 3) for i in _schedule_ids(qhome, "b")
    ]
    assert steps[0] >= 2.0, steps  # the gap folded into one catch-up job
    assert steps == [steps[0] + k for k in range(len(steps))], steps
