"""logs, wait, stats and the attempt list of show: from the journal and logs/ folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from queuectl.cli.main import cli
from queuectl.job import utcnow
from queuectl.observe.attempts import job_attempts
from queuectl.observe.stats import compute_stats
from queuectl.storage.home import Home
from queuectl.storage.store import Store

from .conftest import run_cli

NOW = datetime(2026, 11, 23, 12, 0, 0).astimezone()


def invoke(home: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def burst(home: Path) -> None:
    assert run_cli(home, "worker", "start", "--burst", timeout=120).returncode == 0


def test_compute_stats_from_a_real_drain(tmp_path: Path) -> None:
    home = tmp_path / "h"
    for spec in (
        {"id": "a", "command": "true"},
        {"id": "b", "command": "other", "max_retries": 1},
        {"id": "c", "command": "true", "run_at": "2099-01-01T00:00:00Z"},
    ):
        assert invoke(home, "enqueue", json.dumps(spec)).exit_code == 0
    assert invoke(home, "config", "set", "backoff-base", "1").exit_code == 0
    assert invoke(home, "cancel", "c").exit_code == 0  # cancelled while waiting: no attempt
    burst(home)
    store = Store(Home(home))
    figures = compute_stats(store, None, utcnow())
    assert figures["attempts"] == 3
    assert figures["outcomes"] == {"completed": 1, "dead": 1, "failed": 1}
    assert figures["busiest_commands"][0] == {"command": "other", "attempts": 2}
    assert figures["run_seconds"]["p50"] is not None
    assert figures["queue_wait_seconds"]["p50"] is not None


def test_attempts_come_from_the_journal_across_dlq_retries(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert (
        invoke(home, "enqueue", '{"id": "x", "command": "exit 3", "max_retries": 0}').exit_code == 0
    )
    burst(home)
    assert invoke(home, "dlq", "retry", "x").exit_code == 0
    burst(home)
    runs = job_attempts(Store(Home(home)), "x")
    assert [(r["run"], r["outcome"], r["exit_code"]) for r in runs] == [
        (1, "failed", 3),
        (2, "failed", 3),
    ]
    shown = invoke(home, "show", "x")
    assert shown.exit_code == 0
    assert shown.output.count("exit code 3") == 3  # last_error plus one row per run


def test_logs_prints_each_stream_and_says_when_there_is_none(tmp_path: Path) -> None:
    home = tmp_path / "h"
    spec = {"id": "o", "command": "echo out-$QUEUECTL_ATTEMPT; echo err >&2"}
    assert invoke(home, "enqueue", json.dumps(spec)).exit_code == 0
    assert invoke(home, "enqueue", '{"id": "quiet", "command": "true"}').exit_code == 0
    burst(home)
    result = invoke(home, "logs", "o")
    assert result.exit_code == 0
    assert "out-1\n" in result.output and "err\n" in result.output
    assert "--- run 1 stderr" in result.output
    quiet = invoke(home, "logs", "quiet")
    assert quiet.exit_code == 0 and "no output recorded" in quiet.output
    assert invoke(home, "logs", "missing").exit_code == 1
    assert "no output recorded for run 7" in invoke(home, "logs", "o", "--attempt", "7").output


def test_wait_returns_when_another_process_finishes_the_job(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert (
        invoke(home, "enqueue", '{"id": "w", "command": "exit 4", "max_retries": 0}').exit_code == 0
    )
    actor = threading.Thread(target=burst, args=(home,))
    actor.start()
    try:
        result = invoke(home, "wait", "w", "--timeout", "60")
    finally:
        actor.join()
    assert result.exit_code == 4  # the job's own exit code


def test_wait_for_several_and_timeouts(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert invoke(home, "enqueue", '{"id": "ok", "command": "true"}').exit_code == 0
    assert (
        invoke(home, "enqueue", '{"id": "no", "command": "false", "max_retries": 0}').exit_code == 0
    )
    assert (
        invoke(
            home, "enqueue", '{"id": "far", "command": "true", "run_at": "2030-01-01T00:00:00Z"}'
        ).exit_code
        == 0
    )
    assert invoke(home, "cancel", "far").exit_code == 0
    burst(home)
    assert invoke(home, "wait", "ok").exit_code == 0
    mixed = invoke(home, "wait", "ok", "no")
    assert mixed.exit_code == 1 and "not completed: no" in mixed.output
    assert (
        invoke(
            home, "enqueue", '{"id": "later", "command": "true", "run_at": "2030-01-01T00:00:00Z"}'
        ).exit_code
        == 0
    )
    timed = invoke(home, "wait", "later", "--timeout", "0.2")
    assert timed.exit_code == 124 and "timed out waiting for: later" in timed.output
    assert invoke(home, "wait", "ghost").exit_code == 1


def test_stats_command_table_and_json(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert invoke(home, "enqueue", '{"command": "true"}').exit_code == 0
    burst(home)
    table = invoke(home, "stats")
    assert table.exit_code == 0 and "attempts finished" in table.output
    data = json.loads(invoke(home, "stats", "--since", "1h", "--json").output)
    assert data["attempts"] == 1 and data["outcomes"] == {"completed": 1}
    assert invoke(home, "stats", "--since", "soon").exit_code == 2


def test_logs_follow_shows_output_while_the_attempt_runs(tmp_path: Path) -> None:
    home = tmp_path / "h"
    gate = tmp_path / "gate"
    spec = {
        "id": "f",
        "command": f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second",
    }
    assert invoke(home, "enqueue", json.dumps(spec)).exit_code == 0
    worker = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), "worker", "start"],
        stderr=subprocess.DEVNULL,
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), "logs", "f", "--follow"],
        stdout=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"first\n"  # seen while the job still runs
        assert (home / "processing" / "f.json").exists()
        gate.touch()
        rest = follower.communicate(timeout=60)[0]
        assert rest == b"second\n"
        assert follower.returncode == 0
    finally:
        follower.kill()
        worker.terminate()
        worker.wait(timeout=60)
