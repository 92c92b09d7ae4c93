"""Workflows: labels and the ``list`` filters (which combine), and unique jobs: while a job
with a unique key is unfinished (or completed within ``--unique-for``), enqueueing the key
again creates nothing and prints the existing job's id."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Procs, journal_records, settled_in, wait_exit, wait_until
from .workflow_support import (
    ALL_STATES,
    add,
    cli_ok,
    gate_command,
    invoke,
    job_file,
    ok,
    wait_started,
    where,
)

NEVER = "2099-01-01T00:00:00Z"


@pytest.fixture
def h(tmp_path: Path) -> Path:
    path = tmp_path / "qhome"
    path.mkdir(mode=0o700)  # an empty folder: a new home, set up by the first command
    ok(invoke(path, "status"))
    return path


def _ids(home: Path, *filters: str) -> list[str]:
    return sorted(j["id"] for j in json.loads(ok(invoke(home, "list", *filters, "--json"))))


def _every_job_file(home: Path) -> list[str]:
    return sorted(p.stem for state in ALL_STATES for p in (home / state).glob("*.json"))


# ------------------------------------------------------------------ labels and filters


def _labelled(h: Path) -> Path:
    """Five jobs: labels red/big, queues q/default, commands echo/make, one held."""
    ok(invoke(h, "queue", "add", "q"))
    ok(invoke(h, "add", "--id", "apple", "--label", "red", "--queue", "q", "echo apple"))
    ok(invoke(h, "add", "--id", "banana", "--label", "red", "--label", "big", "echo banana"))
    ok(invoke(h, "add", "--id", "cherry", "--queue", "q", "make cherry"))
    ok(invoke(h, "add", "--id", "date", "--hold", "--label", "red", "echo date"))
    ok(invoke(h, "enqueue", '{"id": "elder", "command": "make elder", "labels": ["big"]}'))
    return h


def test_labels_are_stored(h: Path) -> None:
    labelled = _labelled(h)
    assert job_file(labelled, "apple")["labels"] == ["red"]
    assert sorted(job_file(labelled, "banana")["labels"]) == ["big", "red"]
    assert job_file(labelled, "cherry")["labels"] in ([], None)
    assert job_file(labelled, "elder")["labels"] == ["big"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--label", "red"], ["apple", "banana", "date"]),
        (["--label", "big"], ["banana", "elder"]),
        (["--label", "none-such"], []),
        (["--queue", "q"], ["apple", "cherry"]),
        (["--queue", "default"], ["banana", "date", "elder"]),
        (["--command", "echo"], ["apple", "banana", "date"]),
        (["--command", "cherr"], ["cherry"]),
        (["--state", "held"], ["date"]),
        (["--label", "red", "--queue", "q"], ["apple"]),
        (["--label", "red", "--state", "pending"], ["apple", "banana"]),
        (["--command", "make", "--queue", "default"], ["elder"]),
        (["--command", "make", "--label", "big", "--state", "pending"], ["elder"]),
        (["--queue", "q", "--state", "held"], []),
    ],
    ids=lambda v: "_".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None,
)
def test_list_filters_combine(h: Path, filters: list[str], expected: list[str]) -> None:
    labelled = _labelled(h)
    assert _ids(labelled, *filters) == expected


def test_list_filters_with_limit_and_in_the_table(h: Path) -> None:
    labelled = _labelled(h)
    limited = json.loads(ok(invoke(labelled, "list", "--label", "red", "--limit", "2", "--json")))
    assert len(limited) == 2
    assert all("red" in j["labels"] for j in limited)
    table = ok(invoke(labelled, "list", "--label", "big"))
    assert "banana" in table and "elder" in table
    assert "apple" not in table and "cherry" not in table


def test_list_since_keeps_jobs_changed_within_the_duration(h: Path) -> None:
    ok(invoke(h, "add", "--id", "old", "--label", "x", "true"))
    # Deliberate: `old` must be measurably older than `new` for --since to tell them apart.
    time.sleep(2)
    ok(invoke(h, "add", "--id", "new", "--label", "x", "true"))
    assert _ids(h, "--since", "1s") == ["new"]
    assert _ids(h, "--since", "1h") == ["new", "old"]
    assert _ids(h, "--since", "1h", "--label", "x", "--state", "pending") == ["new", "old"]
    ok(invoke(h, "hold", "old"))  # a change: `old` counts as changed just now
    assert _ids(h, "--since", "1s") == ["new", "old"]


@pytest.mark.parametrize("args", [["--since", "soon"], ["--limit", "-1"]])
def test_list_bad_filter_values_exit_2(h: Path, args: list[str]) -> None:
    ok(invoke(h, "list", "--label", "x"))  # the filters exist
    assert invoke(h, "list", *args).exit_code == 2


# ------------------------------------------------------------------ unique jobs: CLI


def test_a_unique_key_that_is_waiting_returns_the_existing_job(h: Path) -> None:
    first = ok(invoke(h, "add", "--unique-key", "nightly", "echo one")).strip()
    again = invoke(h, "add", "--unique-key", "nightly", "echo two")
    assert again.exit_code == 0, again.stderr
    assert again.stdout == f"{first}\n"
    assert again.stderr.strip() != ""  # a note that nothing new was created
    assert _every_job_file(h) == [first]
    assert job_file(h, first)["command"] == "echo one"

    via_json = invoke(h, "enqueue", '{"command": "echo three", "unique_key": "nightly"}')
    assert (via_json.exit_code, via_json.stdout) == (0, f"{first}\n")
    assert _every_job_file(h) == [first]
    enqueued = [r for r in journal_records(h) if r["event"] == "enqueued"]
    assert [r["job"]["id"] for r in enqueued] == [first]

    other = ok(invoke(h, "add", "--unique-key", "weekly", "echo one")).strip()
    assert other != first  # another key is another job
    assert ok(invoke(h, "add", "echo one")).strip() not in (first, other)  # no key, no check


@pytest.mark.parametrize("state", ["held", "blocked"])
def test_held_and_blocked_jobs_hold_their_unique_key(h: Path, state: str) -> None:
    ok(invoke(h, "add", "--id", "dep", "--run-at", NEVER, "true"))
    options = {"held": ["--hold"], "blocked": ["--after", "dep"]}[state]
    ok(invoke(h, "add", "--id", "keeper", "--unique-key", "k", *options, "true"))
    assert where(h, "keeper") == [state]
    again = invoke(h, "add", "--unique-key", "k", "true")
    assert (again.exit_code, again.stdout) == (0, "keeper\n"), again.stderr
    assert _every_job_file(h) == ["dep", "keeper"]


def test_a_cancelled_job_does_not_hold_its_key(h: Path) -> None:
    ok(invoke(h, "add", "--id", "gone", "--unique-key", "k", "--run-at", NEVER, "true"))
    ok(invoke(h, "cancel", "gone"))
    fresh = ok(invoke(h, "add", "--unique-key", "k", "true")).strip()
    assert fresh != "gone"
    assert where(h, fresh) == ["pending"]


def test_a_duplicate_with_an_explicit_new_id_creates_nothing_either(h: Path) -> None:
    ok(invoke(h, "add", "--id", "first", "--unique-key", "k", "true"))
    again = invoke(h, "add", "--id", "second", "--unique-key", "k", "true")
    assert (again.exit_code, again.stdout) == (0, "first\n"), again.stderr
    assert where(h, "second") == []


def test_unique_for_is_stored_in_seconds(h: Path) -> None:
    ok(invoke(h, "add", "--id", "u", "--unique-key", "k", "--unique-for", "2h", "true"))
    stored = job_file(h, "u")
    assert (stored["unique_key"], stored["unique_for"]) == ("k", 7200)


# ------------------------------------------------------------------ unique jobs: with workers


def test_running_and_retry_waiting_jobs_hold_their_key(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "config", "set", "backoff-base", "1000")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "runs", "--unique-key", "r", gate_command(stamps))
    add(qhome, "--id", "retries", "--unique-key", "f", "--max-retries", "1", "exit 1")
    wait_started(stamps, 1)
    wait_until(lambda: settled_in(qhome, "failed", "retries"), message="a failure to retry")

    assert add(qhome, "--unique-key", "r", "true") == "runs"
    assert add(qhome, "--unique-key", "f", "true") == "retries"
    assert _every_job_file(qhome) == ["retries", "runs"]
    (stamps / "runs.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "runs"), message="runs to complete")


def test_a_completed_job_holds_its_key_only_within_unique_for(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    add(qhome, "--id", "plain", "--unique-key", "p", "true")
    add(qhome, "--id", "hour", "--unique-key", "h", "--unique-for", "1h", "true")
    add(qhome, "--id", "short", "--unique-key", "s", "--unique-for", "1s", "true")
    assert wait_exit(procs.worker(qhome, "--burst", log=tmp_path / "w.log")) == 0
    assert sorted(_every_job_file(qhome)) == ["hour", "plain", "short"]
    # Deliberate: let `short`'s second of protection pass (it completed at least this long ago).
    time.sleep(1.5)

    new_plain = add(qhome, "--unique-key", "p", "true")  # completed, no --unique-for
    assert new_plain != "plain" and where(qhome, new_plain) == ["pending"]
    assert add(qhome, "--unique-key", "h", "--unique-for", "1h", "true") == "hour"
    new_short = add(qhome, "--unique-key", "s", "--unique-for", "1s", "true")
    assert new_short != "short" and where(qhome, new_short) == ["pending"]


def test_twenty_concurrent_enqueues_with_one_key_create_exactly_one_job(
    qhome: Path, tmp_path: Path
) -> None:
    """The required race: 20 processes started together, each `add`ing the same key."""
    base = [sys.executable, "-m", "queuectl", "--home", str(qhome)]
    assert add(qhome, "--id", "warm", "true") == "warm"  # the home exists before the race
    racers = []
    for n in range(20):
        if n % 2:
            args = ["add", "--unique-key", "race", "--", "echo", str(n)]
        else:
            args = ["enqueue", json.dumps({"command": f"echo {n}", "unique_key": "race"})]
        racers.append(
            subprocess.Popen(
                [*base, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        outputs.append(out.strip())

    assert len(set(outputs)) == 1, outputs
    winner = outputs[0]
    assert _every_job_file(qhome) == sorted(["warm", winner])
    enqueued = [
        r["job"]["id"]
        for r in journal_records(qhome)
        if r["event"] == "enqueued" and r["job"].get("unique_key") == "race"
    ]
    assert enqueued == [winner]
