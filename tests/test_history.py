"""``queuectl history`` and the attempt list behind it, from a journal written in-process.

The attempts are made the way a worker thread makes them (claim, ``after_attempt``, commit),
with no worker process, so each test controls every outcome and exit code exactly.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from queuectl.admin.maintenance import cleanup
from queuectl.cli.main import cli
from queuectl.job import Job, JobState, job_from_input, utcnow
from queuectl.observe.attempts import job_attempts
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.home import Home
from queuectl.storage.store import Change, Claim, Store


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def new_store(tmp_path: Path) -> Store:
    return Store(Home(tmp_path / "home").ensure())


def add(store: Store, job_id: str, max_retries: int = 0) -> None:
    spec = {"id": job_id, "command": f"run {job_id}", "max_retries": max_retries}
    store.enqueue([job_from_input(spec, default_max_retries=0)])


def claim(store: Store, job_id: str, origin: JobState) -> Claim:
    taken = store.claims.claim(f"{job_id}.json", origin, "test:1:0", utcnow())
    assert isinstance(taken, Claim), taken
    return taken


def run_once(store: Store, job_id: str, exit_code: int, origin: JobState) -> Job:
    """One attempt ending with ``exit_code``; backoff 0 so a failed job is due at once."""
    taken = claim(store, job_id, origin)
    now = utcnow()
    kind = OutcomeKind.SUCCEEDED if exit_code == 0 else OutcomeKind.FAILED
    error = None if exit_code == 0 else f"exit code {exit_code}"
    outcome = Outcome(kind, exit_code=exit_code, error=error, started_at=now, finished_at=now)
    updated = after_attempt(taken.job, outcome, backoff_base=0.0, now=now)
    store.commits.commit([Change(updated, updated.state.value, remove=taken.path, attempt=True)])
    taken.release()
    return updated


def lose_worker(store: Store, job_id: str) -> str | None:
    """A claimed job whose worker died: recovery journals ``recovered``."""
    claim(store, job_id, JobState.PENDING).release()  # the "worker" is gone, lock released

    def lost(job: Job) -> Job:
        outcome = Outcome(OutcomeKind.WORKER_LOST, error="worker lost while running it")
        return after_attempt(replace(job, worker=None), outcome, backoff_base=0.0, now=utcnow())

    return store.recovery.recover_orphan(f"{job_id}.json", lost)


def eventful(store: Store) -> None:
    """x: fails, dies, is retried from the DLQ, loses its worker, then completes."""
    add(store, "x", max_retries=1)
    assert run_once(store, "x", 2, JobState.PENDING).state is JobState.FAILED
    assert run_once(store, "x", 5, JobState.FAILED).state is JobState.DEAD
    store.retry_dead("x", utcnow())
    assert lose_worker(store, "x") is not None
    assert run_once(store, "x", 0, JobState.PENDING).state is JobState.COMPLETED


def test_attempts_are_numbered_by_position_across_dlq_retries(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    eventful(store)
    runs = job_attempts(store, "x")
    assert [(r["run"], r["attempt"], r["outcome"], r["exit_code"]) for r in runs] == [
        (1, 1, "failed", 2),
        (2, 2, "failed", 5),
        (3, 1, "worker_lost", None),  # attempts restarted at 0 after the DLQ retry
        (4, 2, "succeeded", 0),
    ]
    assert [r["event"] for r in runs] == ["failed", "dead", "recovered", "completed"]
    assert runs[2]["error"] == "worker lost while running it"


def test_other_jobs_and_non_attempt_records_are_left_out(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "a")
    add(store, "ab")  # a prefix of another id must not match
    add(store, "waiting")
    run_once(store, "ab", 0, JobState.PENDING)
    assert store.cancel_waiting("waiting", utcnow()) is not None
    assert job_attempts(store, "a") == []  # enqueued only
    assert job_attempts(store, "waiting") == []  # cancelled before it ever ran
    assert [r["outcome"] for r in job_attempts(store, "ab")] == ["succeeded"]


def test_history_command_table_and_json(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    eventful(store)
    table = invoke(store.home.root, "history", "x")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["run", "outcome", "exit", "started", "seconds", "worker", "error"]
    body = [line.split()[:2] for line in lines[2:]]
    assert body == [["1", "failed"], ["2", "failed"], ["3", "worker_lost"], ["4", "succeeded"]]
    data = json.loads(invoke(store.home.root, "history", "x", "--json").output)
    assert [r["run"] for r in data] == [1, 2, 3, 4]
    assert data[1]["exit_code"] == 5 and data[1]["error"] == "exit code 5"


def test_history_of_a_job_that_never_ran_and_of_an_unknown_id(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "fresh")
    fresh = invoke(store.home.root, "history", "fresh")
    assert fresh.exit_code == 0 and "no attempts of fresh yet" in fresh.output
    assert invoke(store.home.root, "history", "fresh", "--json").output.strip() == "[]"
    unknown = invoke(store.home.root, "history", "ghost")
    assert unknown.exit_code == 1
    assert "no job with id 'ghost'" in unknown.output


def test_history_of_a_job_dropped_in_pending_before_any_worker_saw_it(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    (store.home.root / "pending" / "dropped.json").write_text('{"command": "true"}')
    result = invoke(store.home.root, "history", "dropped")
    assert result.exit_code == 0 and "no attempts of dropped yet" in result.output


def test_history_outlives_cleanup_while_the_journal_keeps_the_job(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "old")
    run_once(store, "old", 0, JobState.PENDING)
    assert cleanup(store, 0, (JobState.COMPLETED,), utcnow() + timedelta(seconds=1))[0] == ["old"]
    assert store.folders.locate("old") is None
    result = invoke(store.home.root, "history", "old", "--json")
    assert result.exit_code == 0, result.output
    assert [r["outcome"] for r in json.loads(result.output)] == ["succeeded"]
