"""Worker processes for real: exactly once under concurrency, signals, orphaned commands."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import jobs_in, run_cli, start_worker, wait_until


def test_three_processes_of_four_threads_run_every_job_exactly_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "runs"
    lines = "".join(
        json.dumps({"id": f"j{i:03d}", "command": f"echo j{i:03d} >> {out}"}) + "\n"
        for i in range(300)
    )
    assert run_cli(home, "enqueue", "-", input=lines).returncode == 0
    workers = [start_worker(home, "--count", "4", "--burst") for _ in range(3)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0
    runs = Counter(out.read_text().split())
    assert set(runs) == {f"j{i:03d}" for i in range(300)}
    assert max(runs.values()) == 1, [job for job, n in runs.items() if n > 1]
    assert len(jobs_in(home, "completed")) == 300
    for state in ("pending", "processing", "failed", "dead"):
        assert jobs_in(home, state) == []


def test_second_signal_kills_the_command_and_puts_the_job_back_unchanged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    started = tmp_path / "started"
    spec = {"id": "long", "command": f"touch {started}; sleep 300"}
    assert run_cli(home, "enqueue", json.dumps(spec)).returncode == 0
    before = (home / "pending" / "long.json").read_bytes()
    log = tmp_path / "worker.log"
    worker = start_worker(home, log=log)
    try:
        wait_until(started.exists, message="the command to start")
        worker.send_signal(signal.SIGTERM)
        # Two signals sent back to back are merged by the kernel into one pending signal:
        # send the second once the first has been handled, as a person pressing ^C twice does.
        wait_until(lambda: "again to stop now" in log.read_text(), message="the first signal")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert (home / "pending" / "long.json").read_bytes() == before  # attempts not counted
    assert jobs_in(home, "processing") == []


def test_orphaned_command_keeps_its_job_until_it_ends_then_it_runs_again(tmp_path: Path) -> None:
    """SIGKILL the worker mid-job: its command survives (own session) and holds the job's lock,
    so a new worker must not start the job again until that command has exited."""
    home = tmp_path / "home"
    marks = tmp_path / "marks"
    gate = tmp_path / "gate"
    pid_file = tmp_path / "pid"
    command = (
        f"echo start >> {marks}; echo $$ > {pid_file}; "
        f"if [ $QUEUECTL_ATTEMPT = 1 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi"
    )
    assert run_cli(home, "enqueue", json.dumps({"id": "o", "command": command})).returncode == 0
    first = start_worker(home)
    wait_until(
        lambda: pid_file.exists() and pid_file.read_text().strip() != "",
        message="the first attempt to start",
    )
    orphan = int(pid_file.read_text())
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    second = start_worker(home)
    try:
        # Recovery scans every second; while the orphan lives the lock is held, so even
        # after several scans the job must still be the same single run.
        wait_until(
            lambda: any(f"-{second.pid}-" in p.name for p in (home / "workers").glob("*.json")),
            message="the second worker to register",
        )
        # Proving a negative: no event marks "a recovery scan passed and did nothing", so
        # let two and a half scan intervals go by and check that the job did not run again.
        time.sleep(2.5)
        assert marks.read_text().split() == ["start"]
        assert (home / "processing" / "o.json").exists()
        gate.touch()  # the orphan ends; the lock goes with it
        wait_until(
            lambda: (home / "completed" / "o.json").exists(),
            timeout=30,
            message="the job to run again and complete",
        )
        job = json.loads((home / "completed" / "o.json").read_text())
        assert job["attempts"] == 2
        assert "worker lost" in job["history"][0]["error"]
        assert marks.read_text().split() == ["start", "start"]
    finally:
        second.terminate()
        second.wait(timeout=60)
        try:
            os.kill(orphan, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_registration_survives_a_stale_file_sweep_between_its_open_and_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'worker stop' removes unlocked registration files as stale; a worker that has just
    created its file but not locked it yet must not end up locking a removed file."""
    import fcntl

    from queuectl.storage import registry

    real_flock = fcntl.flock
    swept = []

    def flock_after_a_sweep(fd: int, operation: int) -> None:
        if not swept and operation == fcntl.LOCK_EX:
            swept.append(True)
            registry.live_workers(tmp_path, clean_stale=True)  # finds it unlocked: stale
        real_flock(fd, operation)

    monkeypatch.setattr(registry.fcntl, "flock", flock_after_a_sweep)
    registration = registry.register(tmp_path, threads=1, burst=False)
    monkeypatch.setattr(registry.fcntl, "flock", real_flock)
    try:
        assert swept
        assert [w["pid"] for w in registry.live_workers(tmp_path)] == [os.getpid()]
    finally:
        registration.close()
        os.close(registration.fd)
