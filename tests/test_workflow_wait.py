"""Workflows: ``queuectl wait`` exit codes (a job's own code; 124 timeout; 125 cancelled;
126 dead without an exit code; 128+N killed by signal N; 1 unknown), ``wait --json`` and
``wait --queue``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Procs, settled_in, wait_exit, wait_until
from .workflow_support import (
    add,
    cli_ok,
    gate_command,
    job_file,
    run_in,
    wait_started,
    where,
)

NEVER = "2099-01-01T00:00:00Z"
SAFETY = "60"
"""A ``--timeout`` that keeps a broken wait from hanging the suite (it would exit 124)."""


def _wait_process(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), "wait", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"wait still running after {timeout}s") from None
    return proc.returncode, out, err


def _enqueue(home: Path, job: dict) -> None:
    cli_ok(home, "enqueue", json.dumps(job))


def test_wait_exits_with_a_code_that_says_how_one_job_ended(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    jobs: dict[str, tuple[dict[str, object], int]] = {
        "ok": ({"command": "true"}, 0),
        "own-code": ({"command": "exit 3"}, 3),
        "sigkill": ({"command": "kill -KILL $$"}, 128 + signal.SIGKILL),
        "sigterm": ({"command": "kill -TERM $$"}, 128 + signal.SIGTERM),
        "timed-out": ({"command": "sleep 30", "timeout": 1}, 126),
        "cancelled": ({"command": "true", "run_at": NEVER}, 125),
    }
    for job_id, (fields, _) in jobs.items():
        _enqueue(qhome, {"id": job_id, "max_retries": 0, **fields})
    cli_ok(qhome, "cancel", "cancelled")
    waits = {job_id: _wait_process(qhome, job_id, "--timeout", SAFETY) for job_id in jobs}

    procs.worker(qhome, "--count", "4", log=tmp_path / "worker.log")

    codes = {job_id: _finish(proc)[0] for job_id, proc in waits.items()}
    assert codes == {job_id: code for job_id, (_, code) in jobs.items()}
    # once finished, a new wait says the same at once
    for job_id in ("sigkill", "cancelled", "timed-out"):
        assert run_in(qhome, "wait", job_id).returncode == jobs[job_id][1], job_id


def test_wait_for_a_job_whose_dependency_failed_exits_126(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    _enqueue(qhome, {"id": "upstream", "command": "exit 3", "max_retries": 0})
    _enqueue(qhome, {"id": "downstream", "command": "true", "after": ["upstream"]})
    waiter = _wait_process(qhome, "downstream", "--timeout", SAFETY)  # waits while blocked
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    code, out, err = _finish(waiter)
    assert code == 126, (out, err)
    assert job_file(qhome, "downstream")["last_error"] == "dependency upstream ended dead"
    assert run_in(qhome, "wait", "upstream").returncode == 3


def test_wait_for_a_job_whose_worker_was_lost_exits_126(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    add(qhome, "--id", "orphan", "--max-retries", "0", gate_command(stamps))
    first = procs.worker(qhome, "--count", "1", log=tmp_path / "first.log")
    wait_started(stamps, 1)
    first.kill()  # the command lives on, holding the job's lock, until released
    wait_exit(first)
    procs.worker(qhome, "--count", "1", log=tmp_path / "second.log")
    (stamps / "orphan.release").touch()

    wait_until(lambda: settled_in(qhome, "dead", "orphan"), message="the lost run recorded")
    stored = job_file(qhome, "orphan")
    assert stored["last_exit_code"] is None
    assert run_in(qhome, "wait", "orphan").returncode == 126


def test_wait_timeout_is_124_and_an_unknown_id_is_1(qhome: Path) -> None:
    add(qhome, "--id", "held-back", "--hold", "true")
    timed_out = run_in(qhome, "wait", "held-back", "--timeout", "0.5")
    assert timed_out.returncode == 124, timed_out.stderr
    assert "held-back" in timed_out.stderr
    assert run_in(qhome, "wait", "ghost").returncode == 1
    assert run_in(qhome, "wait", "--json", "ghost").returncode == 1


def test_wait_for_several_and_wait_json(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    for job in (
        {"id": "good", "command": "true"},
        {"id": "bad", "command": "exit 3", "max_retries": 0},
        {"id": "never", "command": "true", "run_at": NEVER},
        {"id": "slow", "command": "sleep 30", "timeout": 1, "max_retries": 0},
    ):
        _enqueue(qhome, job)
    cli_ok(qhome, "cancel", "never")
    assert wait_exit(procs.worker(qhome, "--burst", "--count", "2", log=tmp_path / "w.log")) == 0

    assert run_in(qhome, "wait", "good").returncode == 0
    assert run_in(qhome, "wait", "good", "bad").returncode == 1

    done = run_in(qhome, "wait", "--json", "good", "bad", "never", "slow")
    assert done.returncode == 1, done.stderr
    reported = json.loads(done.stdout)
    assert sorted(reported, key=lambda r: r["id"]) == [
        {"id": "bad", "state": "dead", "exit_code": 3, "signal": None},
        {"id": "good", "state": "completed", "exit_code": 0, "signal": None},
        {"id": "never", "state": "cancelled", "exit_code": None, "signal": None},
        {"id": "slow", "state": "dead", "exit_code": None, "signal": None},
    ]

    one = run_in(qhome, "wait", "--json", "bad")
    assert one.returncode == 3  # the same exit codes as without --json
    assert json.loads(one.stdout) == [
        {"id": "bad", "state": "dead", "exit_code": 3, "signal": None}
    ]
    alone = run_in(qhome, "wait", "--json", "good")
    assert alone.returncode == 0
    assert json.loads(alone.stdout) == [
        {"id": "good", "state": "completed", "exit_code": 0, "signal": None}
    ]
    cancelled = run_in(qhome, "wait", "--json", "never")
    assert cancelled.returncode == 125
    timed = run_in(qhome, "wait", "--json", "slow")
    assert timed.returncode == 126


def test_wait_queue_returns_once_nothing_in_the_queue_waits_or_runs(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "config", "set", "backoff-base", "1")  # a retry 1 s after the failure
    cli_ok(qhome, "queue", "add", "q")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    marker = tmp_path / "tried"
    add(qhome, "--id", "other-queue", "--hold", "true")  # not in q: never waited for
    add(qhome, "--id", "running", "--queue", "q", gate_command(stamps))
    add(qhome, "--id", "held-one", "--queue", "q", "--hold", "true")
    flaky = f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}"
    add(qhome, "--id", "retried", "--queue", "q", "--max-retries", "1", flaky)
    add(qhome, "--id", "blocked-one", "--queue", "q", "--after", "retried", "true")
    waiter = _wait_process(qhome, "--queue", "q", "--timeout", SAFETY)
    procs.worker(qhome, "--count", "3", log=tmp_path / "worker.log")

    wait_started(stamps, 1)
    (stamps / "running.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "blocked-one"), message="retried, then B")
    assert settled_in(qhome, "completed", "running")
    # Negative check: `held-one` still waits (held counts); wait polls well within this.
    time.sleep(1)
    assert waiter.poll() is None, _finish(waiter)

    cli_ok(qhome, "release", "held-one")
    code, out, err = _finish(waiter)
    assert code == 0, (out, err)
    for job_id in ("running", "held-one", "retried", "blocked-one"):
        assert where(qhome, job_id) == ["completed"], job_id
    assert where(qhome, "other-queue") == ["held"]


def test_wait_queue_on_a_held_job_times_out_and_on_an_empty_queue_returns_at_once(
    qhome: Path,
) -> None:
    cli_ok(qhome, "queue", "add", "idle")
    cli_ok(qhome, "queue", "add", "q")
    assert run_in(qhome, "wait", "--queue", "idle", "--timeout", SAFETY).returncode == 0
    add(qhome, "--id", "held-one", "--queue", "q", "--hold", "true")
    assert run_in(qhome, "wait", "--queue", "q", "--timeout", "0.5").returncode == 124
    unknown = run_in(qhome, "wait", "--queue", "nope", "--timeout", SAFETY)
    assert unknown.returncode == 2, unknown.stderr
    assert "nope" in unknown.stderr
