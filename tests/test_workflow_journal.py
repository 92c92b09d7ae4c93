"""Workflows are journaled: after the state folders are deleted, ``journal rebuild`` brings
back the queues (limits, paused state, removals) and the held, blocked and cascaded jobs as
they were, and ``fsck`` is clean before and after."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Procs, settled_in, wait_until
from .workflow_support import ALL_STATES, add, cli_ok, queues, run_in, stop, where


def _job_files(home: Path) -> dict[str, dict]:
    return {
        f"{state}/{path.name}": json.loads(path.read_text())
        for state in ALL_STATES
        for path in sorted((home / state).glob("*.json"))
    }


def test_rebuild_from_the_journal_alone_restores_queues_and_workflow_jobs(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "limited", "--parallel", "2")
    cli_ok(qhome, "queue", "add", "stopped")
    cli_ok(qhome, "queue", "add", "gone")
    cli_ok(qhome, "queue", "set", "limited", "--parallel", "3")
    cli_ok(qhome, "pause", "stopped")
    cli_ok(qhome, "queue", "remove", "gone")

    add(qhome, "--id", "done", "--label", "ok", "true")
    add(qhome, "--id", "broken", "--max-retries", "0", "exit 2")
    add(qhome, "--id", "cascaded", "--after", "broken", "true")
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    wait_until(lambda: settled_in(qhome, "completed", "done"), message="done")
    wait_until(lambda: where(qhome, "cascaded") == ["dead"], message="the cascade")
    stop(worker)

    add(qhome, "--id", "kept", "--hold", "--queue", "limited", "--unique-key", "k", "true")
    add(qhome, "--id", "waits", "--after", "kept", "--label", "x", "true")
    add(qhome, "--id", "parked", "--queue", "stopped", "true")
    add(qhome, "--id", "was-pending", "true")
    cli_ok(qhome, "hold", "was-pending")
    cli_ok(qhome, "edit", "parked", "--priority", "5")
    cli_ok(qhome, "restart", "done")

    checked = run_in(qhome, "fsck")
    assert checked.returncode == 0, checked.stdout
    queues_before = queues(qhome)
    files_before = _job_files(qhome)
    assert {k.split("/")[0] for k in files_before} >= {"held", "blocked", "pending", "dead"}
    assert (qhome / "queues" / "limited.json").exists()
    assert not (qhome / "queues" / "gone.json").exists()

    # lose every state folder's contents, queues included: only the journal is left
    for state in (*ALL_STATES, "queues"):
        for path in (qhome / state).glob("*.json"):
            path.unlink()
    rebuilt = run_in(qhome, "journal", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr

    assert queues(qhome) == queues_before
    assert queues_before["limited"]["parallel"] == 3
    assert queues_before["stopped"]["paused"] is True
    assert "gone" not in queues_before
    assert _job_files(qhome) == files_before
    assert where(qhome, "kept") == ["held"]
    assert where(qhome, "waits") == ["blocked"]
    assert where(qhome, "was-pending") == ["held"]
    assert where(qhome, "cascaded") == ["dead"]
    assert where(qhome, "done") == ["pending"]
    checked = run_in(qhome, "fsck")
    assert checked.returncode == 0, checked.stdout
