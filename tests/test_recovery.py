"""Workers that die: orphaned commands, poison jobs, restarts."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from .conftest import (
    Procs,
    enqueue_job,
    job_events,
    jobs_in,
    pid_gone,
    read_job,
    run_cli,
    settled_in,
    wait_exit,
    wait_until,
)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_orphaned_command_keeps_its_job_locked_until_it_exits(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    markers, release = tmp_path / "markers", tmp_path / "release"
    command = (
        f'echo "$QUEUECTL_ATTEMPT $$" >> {markers}; while [ ! -e {release} ]; do sleep 0.05; done'
    )
    enqueue_job(qhome, {"id": "long", "command": command})
    first = procs.worker(qhome)
    wait_until(lambda: len(_lines(markers)) == 1, message="the command to start")
    shell_pid = int(_lines(markers)[0].split()[1])

    first.kill()  # SIGKILL: no clean-up; the command is in a session of its own
    wait_exit(first)
    assert not pid_gone(shell_pid), "the command should outlive its worker"
    assert jobs_in(qhome, "processing") == ["long"]

    # A new worker must not start a second copy while the orphan holds the job's lock. It
    # checks processing/ at start and every second; the probe job keeps this window open for
    # 2.5 s of its run (there is no event for "did not happen").
    log = tmp_path / "second.log"
    second = procs.worker(qhome, "--count", "2", log=log)
    enqueue_job(qhome, {"id": "probe", "command": "sleep 2.5"})
    # A commit publishes completed/probe.json before it removes processing/probe.json (the old
    # copy goes only once the new one is journaled): wait for both.
    wait_until(lambda: settled_in(qhome, "completed", "probe"), message="the probe job")
    assert len(_lines(markers)) == 1
    assert jobs_in(qhome, "processing") == ["long"]
    assert [event for event, _ in job_events(qhome, "long")] == ["enqueued"]

    release.touch()  # the orphan exits; now the job is recoverable
    wait_until(lambda: pid_gone(shell_pid), message="the orphaned command to exit")
    wait_until(
        lambda: settled_in(qhome, "completed", "long"), message="the recovered job to complete"
    )

    assert [line.split()[0] for line in _lines(markers)] == ["1", "2"]
    job = read_job(qhome, "completed", "long")
    assert job["attempts"] == 2
    events = job_events(qhome, "long")
    assert [event for event, _ in events] == ["enqueued", "recovered", "completed"]
    recovered = events[1][1]
    assert recovered["state"] == "pending"
    assert recovered["attempts"] == 1
    assert "worker" in recovered["last_error"]
    assert jobs_in(qhome, "processing") == []
    assert second.poll() is None
    os.kill(second.pid, signal.SIGTERM)
    assert wait_exit(second) == 0
    assert "recovered long" in log.read_text()


def test_poison_job_that_kills_its_worker_ends_in_the_dlq(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    parents = tmp_path / "parents"
    command = f"echo $PPID >> {parents}; kill -9 $PPID"
    enqueue_job(qhome, {"id": "poison", "command": command, "max_retries": 2})

    killed: list[int] = []
    for _ in range(8):  # restart workers in a loop, as a supervisor would
        worker = procs.worker(qhome, "--burst")
        code = wait_exit(worker)
        if code == 0:
            break
        assert code == -signal.SIGKILL
        killed.append(worker.pid)

    # Each run killed the worker that started it (sh's parent is the worker process), and
    # after max_retries + 1 crashes the job went to the DLQ instead of running again.
    assert [int(pid) for pid in _lines(parents)] == killed
    assert len(killed) == 3
    assert jobs_in(qhome, "dead") == ["poison"]
    job = read_job(qhome, "dead", "poison")
    assert job["attempts"] == 3
    assert "worker lost" in job["last_error"]
    events = [event for event, _ in job_events(qhome, "poison")]
    assert events == ["enqueued", "recovered", "recovered", "recovered"]
    for state in ("pending", "processing", "failed", "completed"):
        assert jobs_in(qhome, state) == []


def test_jobs_survive_a_full_restart(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ids = [enqueue_job(qhome, {"command": f"echo $QUEUECTL_JOB_ID >> {out}"}) for _ in range(3)]

    # every process so far has exited: a new one sees the jobs from the disk alone
    status = run_cli(qhome, "status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["jobs"]["pending"] == 3
    listed = run_cli(qhome, "list", "--state", "pending", "--json")
    assert sorted(job["id"] for job in json.loads(listed.stdout)) == sorted(ids)

    assert wait_exit(procs.worker(qhome, "--burst")) == 0

    assert sorted(_lines(out)) == sorted(ids)
    assert jobs_in(qhome, "completed") == sorted(ids)
    assert jobs_in(qhome, "pending") == []
