"""``dlq stats``: dead jobs grouped by last error and by command, with counts and the oldest
and newest time each group died."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from queuectl.cli.main import cli
from queuectl.job import JobState, job_from_input
from queuectl.observe.dlq import dlq_stats
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.commit import Change
from queuectl.storage.home import Home
from queuectl.storage.store import Claim, Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LONG = "python3 /opt/jobs/nightly_report.py --region eu-west-1 --format csv"


def kill(store: Store, job_id: str, command: str, error: str, minutes: int) -> None:
    """Enqueue a job with no retries and record one failed run ``minutes`` after T0."""
    store.enqueue(
        [
            job_from_input(
                {"id": job_id, "command": command, "max_retries": 0}, default_max_retries=0
            )
        ],
        explicit_ids=None,
    )
    moment = T0 + timedelta(minutes=minutes)
    claim = store.claims.claim(f"{job_id}.json", JobState.PENDING, "test", moment)
    assert isinstance(claim, Claim), claim
    outcome = Outcome(OutcomeKind.FAILED, 1, error, moment, moment)
    dead = after_attempt(claim.job, outcome, backoff_base=2, now=moment)
    store.commits.commit([Change(dead, dead.state.value, remove=claim.path, attempt=True)])
    claim.release()


def stamp(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def populated(tmp_path: Path) -> Store:
    store = Store(Home(tmp_path / "home").ensure())
    kill(store, "a", "curl -f https://example.com/a", "exit code 22", 5)
    kill(store, "b", "curl -f https://example.com/b", "exit code 22", 1)
    kill(store, "c", LONG, "timeout: killed after 60s", 3)
    kill(store, "d", LONG + " --day 2", "timeout: killed after 60s", 9)
    kill(store, "e", LONG, "exit code 22", 7)
    return store


def invoke(store: Store, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--home", str(store.home.root), "dlq", "stats", *args])


def test_json_groups_by_error_and_by_clipped_command(tmp_path: Path) -> None:
    store = populated(tmp_path)
    result = invoke(store, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["total"] == 5
    assert (stats["oldest"], stats["newest"]) == (stamp(1), stamp(9))
    assert stats["by_error"] == [
        {"error": "exit code 22", "jobs": 3, "oldest": stamp(1), "newest": stamp(7)},
        {"error": "timeout: killed after 60s", "jobs": 2, "oldest": stamp(3), "newest": stamp(9)},
    ]
    clipped = LONG[:39] + "…"  # the two long commands differ only after 40 characters
    assert stats["by_command"] == [
        {"command": clipped, "jobs": 3, "oldest": stamp(3), "newest": stamp(9)},
        {
            "command": "curl -f https://example.com/a",
            "jobs": 1,
            "oldest": stamp(5),
            "newest": stamp(5),
        },
        {
            "command": "curl -f https://example.com/b",
            "jobs": 1,
            "oldest": stamp(1),
            "newest": stamp(1),
        },
    ]


def test_the_table_shows_the_same_groups(tmp_path: Path) -> None:
    store = populated(tmp_path)
    result = invoke(store)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"5 dead job(s), died between {stamp(1)} and {stamp(9)}"
    error_rows = [line for line in lines if line.startswith(("exit code 22", "timeout:"))]
    assert [row.split()[3 if row.startswith("exit") else 4] for row in error_rows] == ["3", "2"]
    assert any(line.startswith(LONG[:39] + "…") for line in lines)


def test_an_empty_dlq(tmp_path: Path) -> None:
    store = Store(Home(tmp_path / "home").ensure())
    assert invoke(store).output.strip() == "no dead jobs"
    stats = json.loads(invoke(store, "--json").output)
    assert stats == {"total": 0, "oldest": None, "newest": None, "by_error": [], "by_command": []}


def test_a_bad_file_in_dead_is_named_on_stderr_and_the_json_stays_clean(tmp_path: Path) -> None:
    store = populated(tmp_path)
    bad = store.home.root / "dead" / "junk.json"
    bad.write_text("not json")
    os.chmod(bad, 0o600)
    result = CliRunner().invoke(cli, ["--home", str(store.home.root), "dlq", "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 5
    assert "skipped dead/junk.json" in result.stderr


def test_a_dead_job_without_an_error_is_grouped_under_none() -> None:
    job = job_from_input({"id": "x", "command": "true"}, default_max_retries=0)
    job.state = JobState.DEAD
    stats = dlq_stats([job])
    assert stats["by_error"] == [
        {"error": None, "jobs": 1, "oldest": job.updated_at, "newest": job.updated_at}
    ]
