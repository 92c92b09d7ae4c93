"""Workflows: files dropped into ``pending/`` go through the checks of ``enqueue`` (unknown
queue or dependency, a unique key already held) and may use the new fields."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import Procs, jobs_in, settled_in, wait_until
from .workflow_support import add, cli_ok, drop, job_file, stop, where


def test_dropped_files_that_fail_the_enqueue_checks_are_rejected_with_a_reason(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "q")
    add(qhome, "--id", "holder", "--hold", "--unique-key", "nightly", "true")
    marks = tmp_path / "marks"
    marks.mkdir()
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "warm-up", "true")  # the worker's start-up scan is over
    wait_until(lambda: settled_in(qhome, "completed", "warm-up"), message="the warm-up job")

    bad: dict[str, tuple[dict, list[str]]] = {
        "bad-queue.json": ({"command": f"touch {marks}/1", "queue": "nope"}, ["nope"]),
        "bad-dep.json": ({"command": f"touch {marks}/2", "after": ["ghost"]}, ["ghost"]),
        "bad-any.json": ({"command": f"touch {marks}/3", "after_any": ["ghost2"]}, ["ghost2"]),
        "dup-key.json": (
            {"command": f"touch {marks}/4", "unique_key": "nightly"},
            ["nightly", "holder"],
        ),
    }
    for name, (job, _) in bad.items():
        drop(qhome, name, job, tmp_path / "staging")

    wait_until(
        lambda: set(bad) <= set(os.listdir(qhome / "rejected")),
        timeout=30,
        message="the four rejections",
    )
    for name, (_, words) in bad.items():
        reason = (qhome / "rejected" / f"{name}.reason").read_text()
        assert any(word in reason for word in words), (name, reason)
        assert where(qhome, name[: -len(".json")]) == []
    assert list(marks.iterdir()) == []
    listed = json.loads(cli_ok(qhome, "status", "--json"))["rejected"]
    assert {entry["file"] for entry in listed} == set(bad)
    assert where(qhome, "holder") == ["held"]  # the key's holder is untouched
    stop(worker)


def test_dropped_files_may_use_queues_dependencies_holds_and_labels(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "q")
    add(qhome, "--id", "gate", "--hold", "true")
    marks = tmp_path / "marks"
    marks.mkdir()
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")
    add(qhome, "--id", "warm-up", "true")
    wait_until(lambda: settled_in(qhome, "completed", "warm-up"), message="the warm-up job")

    staging = tmp_path / "staging"
    drop(qhome, "in-q.json", {"command": f"touch {marks}/q", "queue": "q"}, staging)
    drop(qhome, "kept.json", {"command": f"touch {marks}/held", "held": True}, staging)
    drop(qhome, "waits.json", {"command": f"touch {marks}/waits", "after": ["gate"]}, staging)
    drop(
        qhome,
        "after-done.json",
        {"command": f"touch {marks}/after", "after": ["warm-up"], "labels": ["from-drop"]},
        staging,
    )

    wait_until(lambda: settled_in(qhome, "completed", "in-q"), message="the job dropped into q")
    wait_until(lambda: settled_in(qhome, "completed", "after-done"), message="after-done")
    wait_until(lambda: where(qhome, "kept") == ["held"], message="the held drop in held/")
    wait_until(lambda: where(qhome, "waits") == ["blocked"], message="the blocked drop")
    assert job_file(qhome, "in-q")["queue"] == "q"
    assert job_file(qhome, "after-done")["labels"] == ["from-drop"]
    assert job_file(qhome, "after-done")["source"] == "drop"
    assert sorted(p.name for p in marks.iterdir()) == ["after", "q"]
    assert os.listdir(qhome / "rejected") == []

    cli_ok(qhome, "release", "gate")
    wait_until(lambda: settled_in(qhome, "completed", "waits"), message="waits after its gate")
    assert jobs_in(qhome, "held") == ["kept"]
    stop(worker)
