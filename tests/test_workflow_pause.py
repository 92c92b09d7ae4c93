"""Workflows: ``queuectl pause`` / ``resume``. A paused queue starts no new job, lets its
running jobs finish, and stays paused across worker restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import Procs, settled_in, wait_until
from .workflow_support import (
    add,
    assert_one_line_error,
    cli_ok,
    gate_command,
    invoke,
    job_file,
    ok,
    queues,
    started,
    stop,
    wait_started,
    where,
)


@pytest.fixture
def h(tmp_path: Path) -> Path:
    path = tmp_path / "qhome"
    path.mkdir(mode=0o700)  # an empty folder: a new home, set up by the first command
    ok(invoke(path, "status"))
    return path


def _paused(home: Path) -> dict[str, bool]:
    listed = json.loads(ok(invoke(home, "queue", "list", "--json")))
    return {entry["name"]: entry["paused"] for entry in listed}


# ------------------------------------------------------------------ the commands


def test_pause_and_resume_named_queues(h: Path) -> None:
    ok(invoke(h, "queue", "add", "alpha"))
    ok(invoke(h, "queue", "add", "beta"))
    ok(invoke(h, "add", "--queue", "alpha", "true"))
    ok(invoke(h, "add", "--queue", "beta", "true"))

    ok(invoke(h, "pause", "alpha", "beta"))
    assert _paused(h) == {"default": False, "alpha": True, "beta": True}
    status = ok(invoke(h, "status"))
    assert "paused" in status and "alpha" in status and "beta" in status

    ok(invoke(h, "resume", "beta"))
    assert _paused(h) == {"default": False, "alpha": True, "beta": False}
    status = ok(invoke(h, "status"))
    assert "paused" in status and "alpha" in status
    ok(invoke(h, "resume", "alpha"))
    assert _paused(h) == {"default": False, "alpha": False, "beta": False}


def test_pause_all_and_resume_all_include_the_default_queue(h: Path) -> None:
    ok(invoke(h, "queue", "add", "a"))
    ok(invoke(h, "pause", "--all"))
    assert _paused(h) == {"default": True, "a": True}
    ok(invoke(h, "resume", "--all"))
    assert _paused(h) == {"default": False, "a": False}


def test_pause_is_idempotent(h: Path) -> None:
    ok(invoke(h, "queue", "add", "a"))
    ok(invoke(h, "pause", "a"))
    ok(invoke(h, "pause", "a"))
    assert _paused(h)["a"] is True
    ok(invoke(h, "resume", "a"))
    ok(invoke(h, "resume", "a"))
    assert _paused(h)["a"] is False


def test_pausing_an_empty_queue_is_fine_and_says_so(h: Path) -> None:
    ok(invoke(h, "queue", "add", "empty"))
    result = invoke(h, "pause", "empty")
    assert result.exit_code == 0, result.stderr
    said = result.stdout + result.stderr
    assert "empty" in said, said  # a clear message naming the queue
    assert "error" not in said
    assert _paused(h)["empty"] is True


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_pausing_or_resuming_an_unknown_queue_exits_2(h: Path, command: str) -> None:
    ok(invoke(h, "queue", "add", "real"))
    ok(invoke(h, "pause", "real"))  # the command exists
    before = _paused(h)
    assert_one_line_error(invoke(h, command, "nope"), 2, "nope")
    assert_one_line_error(invoke(h, command, "real", "nope"), 2, "nope")
    assert _paused(h) == before  # nothing changed, not even the known queue


# ------------------------------------------------------------------ with workers


def test_a_paused_queue_lets_running_jobs_finish_and_starts_nothing_until_resumed(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "p")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "3", log=tmp_path / "worker.log")
    add(qhome, "--id", "running", "--queue", "p", gate_command(stamps))
    wait_started(stamps, 1)

    cli_ok(qhome, "pause", "p")
    for job_id in ("w1", "w2"):
        add(qhome, "--id", job_id, "--queue", "p", gate_command(stamps))
    add(qhome, "--id", "probe", "true")  # the worker keeps serving other queues
    wait_until(lambda: settled_in(qhome, "completed", "probe"), message="the probe job")
    (stamps / "running.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "running"), message="the running job")
    stored = job_file(qhome, "running")
    assert (stored["attempts"], stored["last_exit_code"]) == (1, 0)  # finished normally

    # Negative check: two threads are free and w1, w2 are due; give a wrong implementation
    # the time to start them.
    time.sleep(1.5)
    assert started(stamps) == {"running"}
    assert where(qhome, "w1") == where(qhome, "w2") == ["pending"]
    listed = queues(qhome)["p"]
    assert (listed["paused"], listed["pending"], listed["running"]) == (True, 2, 0)

    cli_ok(qhome, "resume", "p")
    wait_started(stamps, 3)
    for job_id in ("w1", "w2"):
        (stamps / f"{job_id}.release").touch()
    wait_until(
        lambda: settled_in(qhome, "completed", "w1") and settled_in(qhome, "completed", "w2"),
        message="w1 and w2 after resume",
    )


def test_a_pause_survives_a_worker_restart(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    cli_ok(qhome, "queue", "add", "p")
    marker = tmp_path / "ran"
    cli_ok(qhome, "pause", "p")
    add(qhome, "--id", "held-back", "--queue", "p", f"touch {marker}")
    first = procs.worker(qhome, "--count", "2", log=tmp_path / "first.log")
    add(qhome, "--id", "probe1", "true")
    wait_until(lambda: settled_in(qhome, "completed", "probe1"), message="probe1")
    stop(first)

    second = procs.worker(qhome, "--count", "2", log=tmp_path / "second.log")
    add(qhome, "--id", "probe2", "true")
    wait_until(lambda: settled_in(qhome, "completed", "probe2"), message="probe2")
    # Negative check: the restarted worker has scanned pending/ (probe2 ran); leave it a
    # moment to start the paused job wrongly.
    time.sleep(1)
    assert not marker.exists()
    assert where(qhome, "held-back") == ["pending"]
    assert queues(qhome)["p"]["paused"] is True

    cli_ok(qhome, "resume", "p")
    wait_until(lambda: settled_in(qhome, "completed", "held-back"), message="held-back")
    assert marker.exists()
    stop(second)


def test_pause_all_stops_new_starts_in_every_queue(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "a")
    marker = tmp_path / "ran"
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "warm-up", "true")
    wait_until(lambda: settled_in(qhome, "completed", "warm-up"), message="the warm-up job")

    cli_ok(qhome, "pause", "--all")
    add(qhome, "--id", "d", f"touch {marker}.d")
    add(qhome, "--id", "a", "--queue", "a", f"touch {marker}.a")
    # Negative check: a worker that ignored the pause would start these at once.
    time.sleep(1.5)
    assert where(qhome, "d") == where(qhome, "a") == ["pending"]
    assert not list(tmp_path.glob("ran.*"))

    cli_ok(qhome, "resume", "--all")
    wait_until(
        lambda: settled_in(qhome, "completed", "d") and settled_in(qhome, "completed", "a"),
        message="both jobs after resume --all",
    )
    stop(worker)
