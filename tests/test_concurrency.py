"""Several worker processes on one home: every job runs exactly once."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from .conftest import (
    Procs,
    enqueue_job,
    job_events,
    jobs_in,
    live_worker_info,
    run_cli,
    wait_exit,
    wait_until,
)

ALL_STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")


def _entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _attempts(home: Path, job_id: str) -> int:
    return json.loads((home / "completed" / f"{job_id}.json").read_text())["attempts"]


def test_three_processes_of_four_threads_run_300_jobs_exactly_once(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    ids = [f"job-{n:03d}" for n in range(300)]
    lines = "".join(
        json.dumps({"id": job_id, "command": f"echo $QUEUECTL_JOB_ID >> {out}"}) + "\n"
        for job_id in ids
    )
    result = run_cli(qhome, "enqueue", "-", input=lines)
    assert result.returncode == 0, result.stderr

    workers = [procs.worker(qhome, "--count", "4", "--burst") for _ in range(3)]

    assert [wait_exit(worker, timeout=240) for worker in workers] == [0, 0, 0]
    runs = Counter(out.read_text().split())
    assert sorted(runs) == ids
    assert [job_id for job_id, n in runs.items() if n != 1] == []
    assert jobs_in(qhome, "completed") == ids
    for state in ALL_STATES:
        if state != "completed":
            assert _entries(qhome / state) == [], state
    # only the 300 job files in completed/, and no leftovers anywhere else
    assert len(_entries(qhome / "completed")) == 300
    for folder in ("rejected", "tmp", "workers", "cancel"):
        assert _entries(qhome / folder) == [], folder
    for job_id in ids[::37]:
        job = json.loads((qhome / "completed" / f"{job_id}.json").read_text())
        assert (job["attempts"], job["last_exit_code"]) == (1, 0)
        assert [event for event, _ in job_events(qhome, job_id)] == ["enqueued", "completed"]


@pytest.mark.parametrize(
    "rounds", [4, pytest.param(20, marks=pytest.mark.slow)], ids=["4-rounds", "20-rounds"]
)
def test_one_job_raced_by_eight_workers_runs_once_every_time(
    qhome: Path, procs: Procs, tmp_path: Path, rounds: int
) -> None:
    """Eight single-thread burst workers started together on one job, round after round
    (each round costs eight interpreter start-ups: the full 20 rounds are marked slow)."""
    out = tmp_path / "ran"
    for n in range(rounds):
        job_id = f"race-{n:02d}"
        enqueue_job(qhome, {"id": job_id, "command": f"echo $QUEUECTL_JOB_ID >> {out}"})
        workers = [procs.worker(qhome, "--burst") for _ in range(8)]
        assert [wait_exit(worker) for worker in workers] == [0] * 8
        runs = Counter(out.read_text().split())
        assert runs[job_id] == 1, f"round {n}: {job_id} ran {runs[job_id]} times"
        assert _attempts(qhome, job_id) == 1
    assert len(out.read_text().split()) == rounds
    for state in ("pending", "processing", "failed", "dead"):
        assert jobs_in(qhome, state) == []


def test_jobs_dropped_on_eight_idle_workers_run_once_each(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """The tightest race: eight idle workers are woken by the same notification."""
    out = tmp_path / "ran"
    workers = [procs.worker(qhome) for _ in range(8)]
    wait_until(lambda: len(live_worker_info(qhome)) == 8, message="8 registered workers")
    for n in range(20):
        enqueue_job(qhome, {"id": f"drop-{n:02d}", "command": f"echo $QUEUECTL_JOB_ID >> {out}"})
        wait_until(
            lambda n=n: f"drop-{n:02d}" in jobs_in(qhome, "completed"),
            message=f"drop-{n:02d} to complete",
        )
    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)
    assert [wait_exit(worker) for worker in workers] == [0] * 8
    runs = Counter(out.read_text().split())
    assert sorted(runs) == [f"drop-{n:02d}" for n in range(20)]
    assert set(runs.values()) == {1}


def test_status_lists_each_live_worker_once_and_not_a_killed_one(qhome: Path, procs: Procs) -> None:
    two = procs.worker(qhome, "--count", "2")
    three = procs.worker(qhome, "--count", "3")
    wait_until(lambda: len(live_worker_info(qhome)) == 2, message="two registered workers")

    workers = live_worker_info(qhome)
    assert sorted(w["pid"] for w in workers) == sorted([two.pid, three.pid])
    assert {w["pid"]: w["threads"] for w in workers} == {two.pid: 2, three.pid: 3}

    three.kill()
    wait_exit(three)
    workers = live_worker_info(qhome)
    assert [(w["pid"], w["threads"]) for w in workers] == [(two.pid, 2)]

    os.kill(two.pid, signal.SIGTERM)
    assert wait_exit(two) == 0
    assert live_worker_info(qhome) == []
