"""Workflows: dependencies. ``--after ID`` runs a job once every listed job completed;
``--after-any ID`` once they finished (completed, dead or cancelled). Waiting jobs live in
``blocked/``; a dead or cancelled ``--after`` dependency sends its dependents to ``dead/``,
down the chain, except while the dependent's queue is paused."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from .conftest import Procs, settled_in, wait_exit, wait_until
from .workflow_support import (
    add,
    assert_one_line_error,
    cli_ok,
    gate_command,
    invoke,
    job_file,
    ok,
    read_runs,
    run_in,
    started,
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


def _listing(home: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(home)): None if p.is_dir() else p.read_bytes()
        for p in sorted(home.rglob("*"))
    }


def _waiting_for(home: Path, job_id: str) -> list[str]:
    shown = json.loads(cli_ok(home, "show", job_id, "--json"))
    return sorted(shown["waiting_for"])


def _fails_first_time(marker: Path) -> str:
    """A command that exits 1 on its first run and 0 on every later one."""
    m = shlex.quote(str(marker))
    return f"[ -e {m} ] || {{ touch {m}; exit 1; }}"


# ------------------------------------------------------------------ enqueueing


def test_a_job_after_a_waiting_job_is_blocked_and_says_what_it_waits_for(h: Path) -> None:
    ok(invoke(h, "add", "--id", "build-step", "--run-at", NEVER, "make"))
    assert ok(invoke(h, "add", "--id", "deploy", "--after", "build-step", "make deploy")) == (
        "deploy\n"
    )
    ok(invoke(h, "enqueue", '{"id": "notify", "command": "true", "after_any": ["build-step"]}'))

    assert where(h, "deploy") == ["blocked"]
    assert where(h, "notify") == ["blocked"]
    stored = json.loads((h / "blocked" / "deploy.json").read_text())
    assert (stored["state"], stored["after"]) == ("blocked", ["build-step"])

    shown = json.loads(ok(invoke(h, "show", "deploy", "--json")))
    assert shown["state"] == "blocked"
    assert shown["waiting_for"] == ["build-step"]
    assert json.loads(ok(invoke(h, "show", "notify", "--json")))["waiting_for"] == ["build-step"]
    assert "build-step" in ok(invoke(h, "show", "deploy"))

    listed = json.loads(ok(invoke(h, "list", "--state", "blocked", "--json")))
    assert sorted(j["id"] for j in listed) == ["deploy", "notify"]
    assert {j["state"] for j in listed} == {"blocked"}
    assert [j["id"] for j in json.loads(ok(invoke(h, "list", "--state", "pending", "--json")))] == [
        "build-step"
    ]
    assert "deploy" in ok(invoke(h, "list", "--state", "blocked"))


@pytest.mark.parametrize(
    "args",
    [
        ["add", "--after", "ghost", "true"],
        ["add", "--after-any", "ghost", "true"],
        ["add", "--after", "real", "--after", "ghost", "true"],
        ["enqueue", '{"command": "true", "after": ["real", "ghost"]}'],
        ["enqueue", '{"command": "true", "after_any": ["ghost"]}'],
        ["enqueue", "--after", "ghost", '{"command": "true"}'],
    ],
    ids=["add-after", "add-after-any", "add-two", "json-after", "json-after-any", "enqueue-flag"],
)
def test_an_unknown_dependency_is_refused_with_exit_2_and_nothing_is_written(
    h: Path, args: list[str]
) -> None:
    ok(invoke(h, "add", "--id", "real", "--run-at", NEVER, "true"))
    before = _listing(h)
    assert_one_line_error(invoke(h, *args), 2, "ghost")
    assert _listing(h) == before


def test_a_batch_can_not_depend_on_an_unknown_id_either(h: Path) -> None:
    ok(invoke(h, "add", "--id", "real", "--run-at", NEVER, "true"))
    lines = '{"id": "one", "command": "true", "after": ["real"]}\n'
    lines += '{"id": "two", "command": "true", "after": ["ghost"]}\n'
    before = _listing(h)
    result = invoke(h, "enqueue", "-", input=lines)
    assert result.exit_code == 2, result.stderr
    assert "ghost" in result.stderr
    assert _listing(h) == before


# ------------------------------------------------------------------ running in order


def test_after_waits_until_the_dependency_completed(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "first", gate_command(stamps))
    add(qhome, "--id", "second", "--after", "first", gate_command(stamps))
    (stamps / "second.release").touch()
    wait_started(stamps, 1)
    # Negative check: a thread is free; a wrong implementation would start `second` now.
    time.sleep(1.5)
    assert started(stamps) == {"first"}
    assert where(qhome, "second") == ["blocked"]

    (stamps / "first.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "second"), message="second to run")
    runs = read_runs(stamps)
    assert runs["second"].start > runs["first"].end, runs


def test_several_dependencies_are_all_waited_for(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "quick", "true")
    add(qhome, "--id", "later", "--hold", "true")
    add(qhome, "--id", "both", "--after", "quick", "--after", "later", f"touch {out}")
    wait_until(lambda: settled_in(qhome, "completed", "quick"), message="quick to complete")
    wait_until(
        lambda: _waiting_for(qhome, "both") == ["later"],
        message="both to wait only for `later` once `quick` completed",
    )
    assert where(qhome, "both") == ["blocked"]
    assert not out.exists()

    cli_ok(qhome, "release", "later")
    wait_until(lambda: settled_in(qhome, "completed", "both"), message="both to run")
    assert out.exists()


def test_a_dependency_may_be_finished_already(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    add(qhome, "--id", "done", "true")
    add(qhome, "--id", "failed", "--max-retries", "0", "exit 4")
    add(qhome, "--id", "called-off", "--run-at", NEVER, "true")
    cli_ok(qhome, "cancel", "called-off")
    assert wait_exit(procs.worker(qhome, "--burst", log=tmp_path / "burst.log")) == 0
    assert where(qhome, "done") == ["completed"]
    assert where(qhome, "failed") == ["dead"]

    marks = tmp_path / "marks"
    marks.mkdir()
    add(qhome, "--id", "after-done", "--after", "done", f"touch {marks}/after-done")
    add(qhome, "--id", "after-dead", "--after", "failed", f"touch {marks}/after-dead")
    add(qhome, "--id", "after-cancel", "--after", "called-off", f"touch {marks}/after-cancel")
    add(
        qhome,
        "--id", "any",
        "--after-any", "failed",
        "--after-any", "called-off",
        "--after-any", "done",
        f"touch {marks}/any",
    )  # fmt: skip
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")

    wait_until(lambda: settled_in(qhome, "completed", "after-done"), message="after-done")
    wait_until(lambda: settled_in(qhome, "completed", "any"), message="any")
    wait_until(lambda: where(qhome, "after-dead") == ["dead"], message="after-dead to be dead")
    wait_until(lambda: where(qhome, "after-cancel") == ["dead"], message="after-cancel dead")
    assert job_file(qhome, "after-dead")["last_error"] == "dependency failed ended dead"
    assert job_file(qhome, "after-cancel")["last_error"] == "dependency called-off ended cancelled"
    assert sorted(p.name for p in marks.iterdir()) == ["after-done", "any"]
    stop(worker)


# ------------------------------------------------------------------ failure cascades


def test_a_dead_dependency_cascades_down_the_chain_and_after_any_still_runs(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    add(qhome, "--id", "root", "--max-retries", "0", "exit 3")
    add(qhome, "--id", "child", "--after", "root", f"touch {marks}/child")
    add(qhome, "--id", "grandchild", "--after", "child", f"touch {marks}/grandchild")
    add(qhome, "--id", "cleanup-step", "--after-any", "grandchild", f"touch {marks}/cleanup")
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")

    wait_until(
        lambda: settled_in(qhome, "completed", "cleanup-step"),
        message="the --after-any job at the end of the chain",
    )
    assert where(qhome, "root") == ["dead"]
    child, grandchild = job_file(qhome, "child"), job_file(qhome, "grandchild")
    assert (child["state"], child["last_error"]) == ("dead", "dependency root ended dead")
    assert (grandchild["state"], grandchild["last_error"]) == (
        "dead",
        "dependency child ended dead",
    )
    for stored in (child, grandchild):
        assert (stored["runs"], stored["last_exit_code"]) == (0, None)  # never ran
    assert sorted(p.name for p in marks.iterdir()) == ["cleanup"]
    dead = json.loads(cli_ok(qhome, "dlq", "list", "--json"))
    assert sorted(j["id"] for j in dead) == ["child", "grandchild", "root"]


def test_cancelling_a_dependency_cascades_to_after_but_not_after_any(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "upstream", "--run-at", NEVER, "true")
    add(qhome, "--id", "strict", "--after", "upstream", f"touch {marks}/strict")
    add(qhome, "--id", "lenient", "--after-any", "upstream", f"touch {marks}/lenient")
    assert where(qhome, "strict") == ["blocked"]

    cli_ok(qhome, "cancel", "upstream")

    wait_until(lambda: where(qhome, "strict") == ["dead"], message="strict to be dead")
    assert job_file(qhome, "strict")["last_error"] == "dependency upstream ended cancelled"
    wait_until(lambda: settled_in(qhome, "completed", "lenient"), message="lenient to run")
    assert sorted(p.name for p in marks.iterdir()) == ["lenient"]


def test_dlq_retry_of_a_dependent_waits_for_its_dependency_again(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    add(qhome, "--id", "flaky", "--max-retries", "0", _fails_first_time(tmp_path / "tried"))
    add(qhome, "--id", "uses-it", "--after", "flaky", f"echo ran >> {out}")
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    wait_until(lambda: where(qhome, "uses-it") == ["dead"], message="the cascade")
    stop(worker)
    assert where(qhome, "flaky") == ["dead"]

    cli_ok(qhome, "dlq", "retry", "flaky")
    cli_ok(qhome, "dlq", "retry", "uses-it")
    assert where(qhome, "flaky") == ["pending"]
    assert where(qhome, "uses-it") == ["blocked"]  # its dependency has not completed
    assert _waiting_for(qhome, "uses-it") == ["flaky"]
    assert job_file(qhome, "uses-it")["attempts"] == 0

    procs.worker(qhome, "--count", "2", log=tmp_path / "worker2.log")
    wait_until(lambda: settled_in(qhome, "completed", "uses-it"), message="uses-it to run")
    assert where(qhome, "flaky") == ["completed"]
    assert out.read_text() == "ran\n"


def test_nothing_cascades_while_the_dependents_queue_is_paused(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """pueue's rule: a user can fix and rerun the failed dependency and keep the chain."""
    out = tmp_path / "out"
    cli_ok(qhome, "queue", "add", "later")
    cli_ok(qhome, "pause", "later")
    add(qhome, "--id", "flaky", "--max-retries", "0", _fails_first_time(tmp_path / "tried"))
    add(qhome, "--id", "kept", "--queue", "later", "--after", "flaky", f"echo ran >> {out}")
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    wait_until(lambda: settled_in(qhome, "dead", "flaky"), message="flaky to die")
    # Negative check: a wrong implementation cascades right after the death is recorded.
    time.sleep(1.5)
    assert where(qhome, "kept") == ["blocked"]
    assert job_file(qhome, "kept")["last_error"] is None

    cli_ok(qhome, "dlq", "retry", "flaky")  # fixed in place: its second run succeeds
    wait_until(lambda: settled_in(qhome, "completed", "flaky"), message="flaky's second run")
    # Negative check: `kept` is satisfied now, but its queue is still paused.
    time.sleep(1)
    assert not out.exists()
    assert where(qhome, "kept") in (["blocked"], ["pending"])

    cli_ok(qhome, "resume", "later")
    wait_until(lambda: settled_in(qhome, "completed", "kept"), message="kept after resume")
    assert out.read_text() == "ran\n"


# ------------------------------------------------------------------ deleting dependencies


def test_cleanup_and_purge_keep_jobs_that_a_blocked_job_still_depends_on(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    add(qhome, "--id", "dep-done", "true")
    add(qhome, "--id", "other-done", "true")
    add(qhome, "--id", "dep-dead", "--max-retries", "0", "exit 1")
    add(qhome, "--id", "other-dead", "--max-retries", "0", "exit 1")
    assert wait_exit(procs.worker(qhome, "--burst", log=tmp_path / "burst.log")) == 0
    add(qhome, "--id", "gate", "--hold", "true")  # never released: keeps the next two blocked
    add(qhome, "--id", "needs-done", "--after", "dep-done", "--after", "gate", "true")
    add(qhome, "--id", "needs-dead", "--after-any", "dep-dead", "--after", "gate", "true")
    assert where(qhome, "needs-done") == where(qhome, "needs-dead") == ["blocked"]

    cleaned = run_in(qhome, "cleanup", "--older-than", "0s")
    assert "dep-done" in cleaned.stderr, (cleaned.stdout, cleaned.stderr)
    assert where(qhome, "dep-done") == ["completed"]
    assert where(qhome, "other-done") == []  # cleanup itself did run

    purged = run_in(qhome, "dlq", "purge", "dep-dead", "other-dead", "--yes")
    assert "dep-dead" in purged.stderr, (purged.stdout, purged.stderr)
    assert where(qhome, "dep-dead") == ["dead"]
    assert where(qhome, "other-dead") == []
    again = run_in(qhome, "dlq", "purge", "--all", "--yes")
    assert "dep-dead" in again.stderr, (again.stdout, again.stderr)
    assert where(qhome, "dep-dead") == ["dead"]

    for job_id in ("needs-done", "needs-dead"):  # nothing happened to the dependents
        assert where(qhome, job_id) == ["blocked"]
        assert _waiting_for(qhome, job_id) == ["gate"]
