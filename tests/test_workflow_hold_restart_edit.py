"""Workflows: holding jobs back (``--hold``, ``hold``, ``release``), running a finished job
again (``restart``), and changing a waiting job (``edit``)."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest

from queuectl.job import parse_time

from .conftest import Procs, settled_in, wait_exit, wait_until
from .workflow_support import (
    add,
    assert_one_line_error,
    assert_refused,
    cli_ok,
    gate_command,
    invoke,
    job_file,
    ok,
    run_in,
    stop,
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


def _refused(home: Path, job_id: str, *args: str, why: tuple[str, ...]) -> None:
    assert_refused(run_in(home, *args), job_id, *why)


# ------------------------------------------------------------------ hold and release


def test_hold_flag_and_field_enqueue_into_held(h: Path) -> None:
    assert ok(invoke(h, "add", "--id", "h1", "--hold", "true")) == "h1\n"
    ok(invoke(h, "enqueue", '{"id": "h2", "command": "true", "held": true}'))
    ok(invoke(h, "enqueue", '{"id": "not-held", "command": "true", "held": false}'))
    assert where(h, "h1") == where(h, "h2") == ["held"]
    assert where(h, "not-held") == ["pending"]
    assert json.loads((h / "held" / "h1.json").read_text())["state"] == "held"

    listed = json.loads(ok(invoke(h, "list", "--state", "held", "--json")))
    assert sorted(j["id"] for j in listed) == ["h1", "h2"]
    status = ok(invoke(h, "status"))
    assert re.search(r"\bheld\b\W*2\b", status), status


def test_hold_and_release_move_waiting_jobs(h: Path) -> None:
    ok(invoke(h, "add", "--id", "p", "true"))
    ok(invoke(h, "add", "--id", "dep", "--run-at", NEVER, "true"))
    ok(invoke(h, "add", "--id", "b", "--after", "dep", "true"))

    ok(invoke(h, "hold", "p", "b"))
    assert where(h, "p") == where(h, "b") == ["held"]
    listed = json.loads(ok(invoke(h, "list", "--state", "held", "--json")))
    assert sorted(j["id"] for j in listed) == ["b", "p"]

    ok(invoke(h, "release", "p", "b"))
    assert where(h, "p") == ["pending"]
    assert where(h, "b") == ["blocked"]  # released, it waits for its dependency again


def test_a_held_job_with_an_unsatisfied_dependency_is_blocked_once_released(h: Path) -> None:
    ok(invoke(h, "add", "--id", "dep", "--run-at", NEVER, "true"))
    ok(invoke(h, "add", "--id", "j", "--hold", "--after", "dep", "true"))
    assert where(h, "j") == ["held"]
    ok(invoke(h, "release", "j"))
    assert where(h, "j") == ["blocked"]


@pytest.mark.parametrize("command", ["hold", "release"])
def test_hold_and_release_of_an_unknown_id_exit_1(h: Path, command: str) -> None:
    ok(invoke(h, "add", "--id", "real", "--hold", "true"))
    assert_one_line_error(invoke(h, command, "ghost"), 1, "ghost")


def test_hold_reports_each_id_and_fails_if_any_failed(h: Path) -> None:
    ok(invoke(h, "add", "--id", "real", "true"))
    result = invoke(h, "hold", "ghost", "real")
    assert result.exit_code == 1
    assert result.stderr.count("queuectl: error:") == 1 and "ghost" in result.stderr
    assert where(h, "real") == ["held"]


def test_release_of_a_job_that_is_not_held_is_refused(h: Path) -> None:
    ok(invoke(h, "add", "--id", "p", "true"))
    result = invoke(h, "release", "p")
    assert_refused(result, "p", "pending", "not held")
    assert where(h, "p") == ["pending"]


def test_a_held_job_runs_only_once_released(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    add(qhome, "--id", "held-job", "--hold", f"touch {marker}")
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "probe", "true")
    wait_until(lambda: settled_in(qhome, "completed", "probe"), message="the probe job")
    # Negative check: the worker is serving (probe ran); give it a moment to run the held job.
    time.sleep(1)
    assert not marker.exists()
    assert where(qhome, "held-job") == ["held"]

    cli_ok(qhome, "release", "held-job")
    wait_until(lambda: settled_in(qhome, "completed", "held-job"), message="the released job")
    assert marker.exists()


def test_holding_a_blocked_job_keeps_it_back_after_its_dependency_completed(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "dep", gate_command(stamps))
    add(qhome, "--id", "next", "--after", "dep", f"touch {marker}")
    wait_started(stamps, 1)
    cli_ok(qhome, "hold", "next")
    assert where(qhome, "next") == ["held"]

    (stamps / "dep.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "dep"), message="dep to complete")
    # Negative check: `next` is satisfied now; held, it must not run.
    time.sleep(1)
    assert not marker.exists()
    assert where(qhome, "next") == ["held"]

    cli_ok(qhome, "release", "next")
    wait_until(lambda: settled_in(qhome, "completed", "next"), message="next after release")


def test_hold_takes_a_failed_job_waiting_for_its_retry_and_refuses_running_or_finished_ones(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "config", "set", "backoff-base", "1000")  # `retrying` waits in failed/
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "retrying", "--max-retries", "2", "exit 1")
    add(qhome, "--id", "busy-7", gate_command(stamps))
    add(qhome, "--id", "finished-7", "true")
    wait_started(stamps, 1)
    wait_until(lambda: settled_in(qhome, "completed", "finished-7"), message="done to complete")
    wait_until(lambda: settled_in(qhome, "failed", "retrying"), message="the first failure")

    cli_ok(qhome, "hold", "retrying")
    assert where(qhome, "retrying") == ["held"]
    assert job_file(qhome, "retrying")["attempts"] == 1  # holding is not an attempt

    _refused(qhome, "busy-7", "hold", "busy-7", why=("running", "processing"))
    _refused(qhome, "finished-7", "hold", "finished-7", why=("completed",))
    assert where(qhome, "finished-7") == ["completed"]
    assert where(qhome, "busy-7") == ["processing"]

    cli_ok(qhome, "release", "retrying")
    assert "held" not in where(qhome, "retrying")  # back to waiting for its retry
    (stamps / "busy-7.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "busy-7"), message="busy-7 to complete")


# ------------------------------------------------------------------ restart


def test_restart_runs_a_completed_job_again_with_runs_and_history_continuing(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    add(qhome, "--id", "again", 'echo "run $QUEUECTL_RUN attempt $QUEUECTL_ATTEMPT"')
    assert wait_exit(procs.worker(qhome, "--burst", log=tmp_path / "w1.log")) == 0
    assert job_file(qhome, "again")["runs"] == 1

    assert run_in(qhome, "restart", "again").returncode == 0
    stored = job_file(qhome, "again")
    assert (stored["state"], stored["attempts"], stored["runs"]) == ("pending", 0, 1)

    assert wait_exit(procs.worker(qhome, "--burst", log=tmp_path / "w2.log")) == 0
    stored = job_file(qhome, "again")
    assert (stored["state"], stored["attempts"], stored["runs"]) == ("completed", 1, 2)
    logs = qhome / "logs" / "again"
    assert (logs / "1.out").read_text() == "run 1 attempt 1\n"
    assert (logs / "2.out").read_text() == "run 2 attempt 1\n"
    assert cli_ok(qhome, "logs", "again") == "run 2 attempt 1\n"
    history = json.loads(cli_ok(qhome, "history", "again", "--json"))
    assert len(history) == 2
    assert all(entry["exit_code"] == 0 for entry in history)


def test_restart_takes_dead_and_cancelled_jobs(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    add(qhome, "--id", "dead-one", "--max-retries", "0", "exit 5")
    add(qhome, "--id", "cancelled-one", "--run-at", NEVER, "true")
    cli_ok(qhome, "cancel", "cancelled-one")
    assert wait_exit(procs.worker(qhome, "--burst", log=tmp_path / "w.log")) == 0
    assert where(qhome, "dead-one") == ["dead"]

    cli_ok(qhome, "restart", "dead-one", "cancelled-one")
    for job_id in ("dead-one", "cancelled-one"):
        stored = job_file(qhome, job_id)
        assert (stored["state"], stored["attempts"]) == ("pending", 0), job_id
    assert job_file(qhome, "dead-one")["runs"] == 1


@pytest.mark.parametrize("state", ["pending", "held", "blocked"])
def test_restart_of_an_unfinished_job_is_refused_with_the_reason(h: Path, state: str) -> None:
    ok(invoke(h, "add", "--id", "dep", "--run-at", NEVER, "true"))
    options = {"pending": [], "held": ["--hold"], "blocked": ["--after", "dep"]}[state]
    ok(invoke(h, "add", "--id", "unfinished-7", *options, "true"))
    before = (h / state / "unfinished-7.json").read_bytes()

    assert_refused(invoke(h, "restart", "unfinished-7"), "unfinished-7", state)

    assert (h / state / "unfinished-7.json").read_bytes() == before


def test_restart_of_an_unknown_id_exits_1(h: Path) -> None:
    ok(invoke(h, "add", "--id", "real", "--hold", "true"))
    assert_one_line_error(invoke(h, "restart", "ghost"), 1, "ghost")


# ------------------------------------------------------------------ edit


def test_edit_changes_a_pending_job(h: Path) -> None:
    ok(invoke(h, "queue", "add", "other"))
    ok(invoke(h, "add", "--id", "e", "echo old"))
    changes = [
        "--command", "echo new",
        "--priority", "9",
        "--queue", "other",
        "--run-at", "2030-06-01T12:00:00Z",
        "--max-retries", "7",
        "--label", "edited",
    ]  # fmt: skip
    ok(invoke(h, "edit", "e", *changes))
    stored = job_file(h, "e")
    assert stored["state"] == "pending"
    assert (stored["command"], stored["priority"], stored["queue"]) == ("echo new", 9, "other")
    assert parse_time(stored["run_at"]) == parse_time("2030-06-01T12:00:00Z")
    assert stored["max_retries"] == 7
    assert "edited" in stored["labels"]
    shown = json.loads(ok(invoke(h, "show", "e", "--json")))
    assert shown["command"] == "echo new"


def test_edit_changes_only_what_it_is_told(h: Path) -> None:
    ok(invoke(h, "add", "--id", "e", "--priority", "3", "--max-retries", "2", "echo old"))
    before = job_file(h, "e")
    ok(invoke(h, "edit", "e", "--command", "echo new"))
    after = job_file(h, "e")
    assert after["command"] == "echo new"
    for name in ("priority", "max_retries", "queue", "run_at", "labels", "id", "created_at"):
        assert after[name] == before[name], name


@pytest.mark.parametrize("state", ["held", "blocked"])
def test_edit_changes_held_and_blocked_jobs_where_they_are(h: Path, state: str) -> None:
    ok(invoke(h, "add", "--id", "dep", "--run-at", NEVER, "true"))
    options = {"held": ["--hold"], "blocked": ["--after", "dep"]}[state]
    ok(invoke(h, "add", "--id", "j", *options, "echo old"))
    ok(invoke(h, "edit", "j", "--command", "echo new", "--priority", "-5"))
    assert where(h, "j") == [state]
    stored = job_file(h, "j")
    assert (stored["command"], stored["priority"]) == ("echo new", -5)


def test_edit_to_a_missing_queue_exits_2_and_an_unknown_id_exits_1(h: Path) -> None:
    ok(invoke(h, "add", "--id", "e", "echo old"))
    ok(invoke(h, "edit", "e", "--priority", "1"))  # the command exists
    before = (h / "pending" / "e.json").read_bytes()
    assert_one_line_error(invoke(h, "edit", "e", "--queue", "nope"), 2, "nope")
    assert_one_line_error(invoke(h, "edit", "ghost", "--priority", "1"), 1, "ghost")
    assert (h / "pending" / "e.json").read_bytes() == before


def test_edit_refuses_running_and_finished_jobs_and_the_edit_is_what_runs(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "config", "set", "backoff-base", "1000")  # `failing` waits in failed/
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    out = tmp_path / "out"
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "busy-7", gate_command(stamps))
    add(qhome, "--id", "finished-7", "true")
    add(qhome, "--id", "failing", "--max-retries", "1", "exit 1")
    wait_started(stamps, 1)
    wait_until(lambda: settled_in(qhome, "completed", "finished-7"), message="finished-7")
    wait_until(lambda: settled_in(qhome, "failed", "failing"), message="failing to fail once")

    _refused(qhome, "busy-7", "edit", "busy-7", "--priority", "1", why=("running", "processing"))
    _refused(qhome, "finished-7", "edit", "finished-7", "--priority", "1", why=("completed",))
    assert job_file(qhome, "finished-7")["priority"] == 0

    cli_ok(qhome, "edit", "failing", "--command", f"echo fixed > {out}")
    stored = job_file(qhome, "failing")
    assert (stored["state"], stored["command"]) == ("failed", f"echo fixed > {out}")

    # the edited command is the one that runs, at the edited time
    add(qhome, "--id", "pending-edit", "--run-at", NEVER, "echo old")
    edited = f"echo edited >> {out}.2"
    cli_ok(qhome, "edit", "pending-edit", "--command", edited, "--run-at", "2000-01-01T00:00:00Z")
    wait_until(lambda: settled_in(qhome, "completed", "pending-edit"), message="pending-edit")
    assert (tmp_path / "out.2").read_text() == "edited\n"
    (stamps / "busy-7.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "busy-7"), message="busy-7 to complete")
    stop(worker)


def test_edit_run_at_sets_the_time(h: Path) -> None:
    ok(invoke(h, "add", "--id", "e", "true"))
    ok(invoke(h, "edit", "e", "--run-at", "2031-02-03T04:05:06Z"))
    run_at = parse_time(job_file(h, "e")["run_at"])
    assert abs(run_at - parse_time("2031-02-03T04:05:06Z")) < timedelta(seconds=1)
