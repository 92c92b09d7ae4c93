"""Priorities with aging, delayed jobs, per-job timeout/cwd/env, history, cancel, DLQ bulk."""

from __future__ import annotations

import json
import os
import random
import subprocess
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from queuectl.cli.main import cli
from queuectl.job import JobState, format_time, parse_time, utcnow
from queuectl.scheduler import AGING_SECONDS, Backoff, queue_key
from queuectl.storage.home import Home
from queuectl.storage.store import ClaimMiss, Store
from queuectl.worker.dispatch import RunnableIndex

from .conftest import run_cli, start_worker, wait_until


def invoke(home: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def burst(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, "worker", "start", "--burst", *args, timeout=120)


def job(home: Path, job_id: str) -> dict:
    # processing/ last: a commit publishes the new copy before it removes the old one
    for state in ("pending", "completed", "failed", "dead", "cancelled", "processing"):
        path = home / state / f"{job_id}.json"
        if path.exists():
            return {**json.loads(path.read_text()), "_folder": state}
    raise AssertionError(f"{job_id} not found")


# ------------------------------------------------------------------ ordering


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_higher_priority_first_fifo_within_a_priority() -> None:
    clock = Clock()
    index = RunnableIndex(clock)
    index.add(JobState.PENDING, "low-1", clock.now - 3, 0)
    index.add(JobState.PENDING, "high", clock.now - 1, 5)
    index.add(JobState.PENDING, "low-2", clock.now - 2, 0)
    taken = [index.take() for _ in range(3)]
    assert [name for _, name in taken] == ["high", "low-1", "low-2"]  # type: ignore[misc]


def test_aging_a_long_waiting_job_beats_a_new_higher_priority_one() -> None:
    clock = Clock()
    index = RunnableIndex(clock)
    waited = 10 * AGING_SECONDS + 1  # ten priority steps' worth of waiting, and a bit
    index.add(JobState.PENDING, "old-low", clock.now - waited, 0)
    index.add(JobState.PENDING, "new-high", clock.now, 9)
    assert index.take() == (JobState.PENDING, "old-low")
    assert queue_key(clock.now - waited, 0) < queue_key(clock.now, 9)


def test_a_job_is_not_offered_before_its_time() -> None:
    clock = Clock()
    index = RunnableIndex(clock)
    index.add(JobState.PENDING, "later", clock.now + 60, 100)
    index.add(JobState.PENDING, "now", clock.now, -100)
    assert index.take() == (JobState.PENDING, "now")
    clock.now += 61
    assert index.take() == (JobState.PENDING, "later")


def test_worker_runs_higher_priorities_first(tmp_path: Path) -> None:
    home = tmp_path / "h"
    out = tmp_path / "order"
    lines = [
        json.dumps({"id": f"p{p}", "priority": p, "command": f"echo p{p} >> {out}"})
        for p in (0, -5, 10, 3)
    ]
    assert invoke(home, "enqueue", "-", input="\n".join(lines) + "\n").exit_code == 0
    assert burst(home, "--count", "1").returncode == 0
    assert out.read_text().split() == ["p10", "p3", "p0", "p-5"]


# ------------------------------------------------------------------ delays


def test_enqueue_delay_and_run_at_set_the_time_and_are_exclusive(tmp_path: Path) -> None:
    home = tmp_path / "h"
    before = utcnow()
    result = invoke(home, "enqueue", "--delay", "90s", '{"id": "d", "command": "true"}')
    assert result.exit_code == 0, result.output
    due = parse_time(job(home, "d")["run_at"])
    assert timedelta(seconds=89) <= due - before <= timedelta(seconds=95)
    result = invoke(
        home,
        "enqueue",
        "--run-at",
        "2030-01-02T03:04:05+01:00",
        "-p",
        "7",
        '{"id": "r", "command": "true"}',
    )
    assert result.exit_code == 0, result.output
    assert job(home, "r")["run_at"] == "2030-01-02T02:04:05.000Z"
    assert job(home, "r")["priority"] == 7
    both = invoke(
        home, "enqueue", "--delay", "1s", "--run-at", "2030-01-01T00:00:00Z", '{"command": "true"}'
    )
    assert both.exit_code == 2
    bad = invoke(home, "enqueue", '{"command": "true", "run_at": "tomorrow"}')
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_a_delayed_job_is_not_claimed_early(tmp_path: Path) -> None:
    store = Store(Home(tmp_path / "h").ensure())
    when = utcnow() + timedelta(hours=1)
    assert (
        invoke(
            store.home.root,
            "enqueue",
            json.dumps({"id": "x", "command": "true", "run_at": format_time(when)}),
        ).exit_code
        == 0
    )
    miss = store.claims.claim("x.json", JobState.PENDING, "t", utcnow())
    assert isinstance(miss, ClaimMiss) and miss.reason == "not due"
    assert abs(miss.retry_at - when.timestamp()) < 0.01  # type: ignore[operator]


def test_a_delayed_job_starts_after_its_time(tmp_path: Path) -> None:
    home = tmp_path / "h"
    when = utcnow() + timedelta(seconds=1.5)
    assert (
        invoke(
            home,
            "enqueue",
            json.dumps({"id": "soon", "command": "true", "run_at": format_time(when)}),
        ).exit_code
        == 0
    )
    assert burst(home).returncode == 0
    started = parse_time(job(home, "soon")["started_at"])
    assert started >= when.replace(microsecond=when.microsecond // 1000 * 1000)


# ------------------------------------------------------------------ timeout, cwd, env


def test_per_job_timeout_overrides_the_setting(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert (
        invoke(
            home,
            "enqueue",
            json.dumps({"id": "t", "command": "sleep 30", "timeout": 0.5, "max_retries": 0}),
        ).exit_code
        == 0
    )
    assert burst(home).returncode == 0
    data = job(home, "t")
    assert data["_folder"] == "dead"
    assert data["last_error"].startswith("timeout")
    assert data["history"][-1]["outcome"] == "timed_out"


def test_cwd_and_env_reach_the_command(tmp_path: Path) -> None:
    home = tmp_path / "h"
    workdir = tmp_path / "work"
    workdir.mkdir()
    spec = {
        "id": "e",
        "cwd": str(workdir),
        "env": {"GREETING": "hi there"},
        "command": 'echo "$GREETING $QUEUECTL_JOB_ID" > here.txt',
    }
    assert invoke(home, "enqueue", json.dumps(spec)).exit_code == 0
    assert burst(home).returncode == 0
    assert (workdir / "here.txt").read_text() == "hi there e\n"


def test_a_missing_cwd_fails_the_attempt_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "h"
    spec = {"id": "c", "cwd": str(tmp_path / "nowhere"), "command": "true", "max_retries": 0}
    assert invoke(home, "enqueue", json.dumps(spec)).exit_code == 0
    assert burst(home).returncode == 0
    data = job(home, "c")
    assert data["_folder"] == "dead" and data["last_exit_code"] == 127
    assert "nowhere" in data["last_error"]


def test_invalid_env_and_cwd_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "h"
    for spec in (
        {"command": "true", "cwd": "relative"},
        {"command": "true", "env": {"1A": "x"}},
        {"command": "true", "env": {"A": 1}},
        {"command": "true", "timeout": -1},
    ):
        result = invoke(home, "enqueue", json.dumps(spec))
        assert result.exit_code == 2, (spec, result.output)


# ------------------------------------------------------------------ backoff and history


def test_backoff_cap_and_jitter() -> None:
    assert Backoff(base=2).seconds(10) == 1024
    assert Backoff(base=2, cap=60).seconds(10) == 60
    rng = random.Random(7)
    delays = [Backoff(base=2, cap=60, jitter=0.5).seconds(10, rng) for _ in range(50)]
    assert all(30 <= d <= 60 for d in delays) and len(set(delays)) > 40


def test_history_keeps_each_attempt_with_exit_code_and_stderr(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert invoke(home, "config", "set", "backoff-base", "1").exit_code == 0
    spec = {"id": "f", "max_retries": 1, "command": "echo oops $QUEUECTL_ATTEMPT >&2; exit 4"}
    assert invoke(home, "enqueue", json.dumps(spec)).exit_code == 0
    assert burst(home).returncode == 0
    history = job(home, "f")["history"]
    assert [h["attempt"] for h in history] == [1, 2]
    assert all(h["exit_code"] == 4 and h["outcome"] == "failed" for h in history)
    assert history[1]["stderr_tail"] == "oops 2"
    assert history[0]["duration"] is not None


# ------------------------------------------------------------------ cancel


def test_cancel_a_pending_job(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert invoke(home, "enqueue", '{"id": "c1", "command": "true"}').exit_code == 0
    result = invoke(home, "cancel", "c1")
    assert result.exit_code == 0, result.output
    assert job(home, "c1")["_folder"] == "cancelled"
    assert invoke(home, "cancel", "c1").exit_code == 1  # already finished
    assert invoke(home, "cancel", "nope").exit_code == 1
    status = json.loads(invoke(home, "status", "--json").output)
    assert status["jobs"]["cancelled"] == 1


def test_cancel_a_running_job_kills_its_process_group(tmp_path: Path) -> None:
    home = tmp_path / "h"
    pids = tmp_path / "pids"
    spec = {"id": "run", "command": f"sleep 300 & echo $! > {pids}; wait"}
    assert run_cli(home, "enqueue", json.dumps(spec)).returncode == 0
    worker = start_worker(home)
    try:
        wait_until(
            lambda: pids.exists() and pids.read_text().strip() != "",
            message="the job's child to start",
        )
        child = int(pids.read_text())
        result = run_cli(home, "cancel", "run")
        assert result.returncode == 0, result.stderr
        assert "it was running" in result.stdout
        assert job(home, "run")["_folder"] == "cancelled"
        wait_until(lambda: not _alive(child), message="the job's child to be gone")
        assert list((home / "cancel").iterdir()) == []
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ DLQ bulk


def test_dlq_retry_all_and_purge(tmp_path: Path) -> None:
    home = tmp_path / "h"
    lines = "".join(
        json.dumps({"id": f"x{i}", "command": "exit 1", "max_retries": 0}) + "\n" for i in range(3)
    )
    assert invoke(home, "enqueue", "-", input=lines).exit_code == 0
    assert burst(home).returncode == 0
    assert sorted(p.stem for p in (home / "dead").glob("*.json")) == ["x0", "x1", "x2"]
    retried = invoke(home, "dlq", "retry", "--all")
    assert retried.exit_code == 0 and retried.output.count("retried") == 3
    assert burst(home).returncode == 0
    refused = invoke(home, "dlq", "purge", "--all", input="y\n")  # no terminal: no question
    assert refused.exit_code == 2 and "add --yes" in refused.output
    assert len(list((home / "dead").glob("*.json"))) == 3
    purged = invoke(home, "dlq", "purge", "x0", "--yes")
    assert purged.exit_code == 0 and "purged 1" in purged.output
    assert invoke(home, "dlq", "purge", "--all", "--yes").exit_code == 0
    assert list((home / "dead").glob("*.json")) == []
    assert invoke(home, "dlq", "purge", "--yes").exit_code == 2  # neither ids nor --all


def test_output_is_capped_to_its_tail_when_recorded(tmp_path: Path) -> None:
    from queuectl.worker.outputs import _cap

    path = tmp_path / "big.out"
    path.write_bytes(b"a" * 1000 + b"THE END\n")
    _cap(path, limit=100)
    text = path.read_bytes()
    assert text.startswith(b"[queuectl: 908 earlier bytes dropped")
    assert text.endswith(b"a" * 92 + b"THE END\n")
