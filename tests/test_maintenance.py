"""Rebuild, fsck, cleanup and journal compaction through the CLI (in-process, no workers)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from queuectl.admin.maintenance import cleanup, compact
from queuectl.admin.rebuild import winners
from queuectl.cli.main import cli
from queuectl.job import JobState, utcnow
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.home import Home
from queuectl.storage.journal import Journal, segment_numbers, snapshot_numbers
from queuectl.storage.store import Change, Claim, Store

STATES = ("pending", "processing", "completed", "failed", "dead")


def invoke(home: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def latest(home: Path) -> dict[str, tuple[str, int]]:
    """(event, rev) of each job's winning journal record."""
    return {k: (w.event, w.rev) for k, w in winners(Store(Home(home))).items()}


def tree(home: Path) -> dict[str, bytes]:
    return {f"{s}/{p.name}": p.read_bytes() for s in STATES for p in (home / s).glob("*.json")}


def finish(store: Store, job_id: str, ok: bool = True, when_days_ago: float = 0) -> None:
    """Claim and finish one job in-process, as a worker thread would."""
    claim = store.claims.claim(f"{job_id}.json", JobState.PENDING, "test", utcnow())
    assert isinstance(claim, Claim), claim
    moment = utcnow() - timedelta(days=when_days_ago)
    kind = OutcomeKind.SUCCEEDED if ok else OutcomeKind.FAILED
    outcome = Outcome(kind, exit_code=0 if ok else 1, started_at=moment, finished_at=moment)
    updated = after_attempt(claim.job, outcome, backoff_base=2, now=moment)
    store.commits.commit([Change(updated, updated.state.value, remove=claim.path, attempt=True)])
    claim.release()


def populated(tmp_path: Path) -> Store:
    store = Store(Home(tmp_path / "home").ensure())
    lines = "".join(
        json.dumps({"id": f"j{i}", "command": "true", "max_retries": 0}) + "\n" for i in range(6)
    )
    assert invoke(store.home.root, "enqueue", "-", input=lines).exit_code == 0
    finish(store, "j0", when_days_ago=10)
    finish(store, "j1", when_days_ago=10)
    finish(store, "j2")
    finish(store, "j3", ok=False, when_days_ago=10)  # dead (max_retries 0)
    return store


def test_rebuild_from_the_journal_alone_reproduces_the_tree(tmp_path: Path) -> None:
    store = populated(tmp_path)
    before = tree(store.home.root)
    for name in STATES:
        shutil.rmtree(store.home.root / name)
    result = invoke(store.home.root, "journal", "rebuild")
    assert result.exit_code == 0, result.output
    assert "6 written" in result.output
    assert tree(store.home.root) == before
    again = invoke(store.home.root, "journal", "rebuild")
    assert "0 written, 6 already right" in again.output


def test_rebuild_puts_a_mid_run_job_back_where_it_was_claimed_from(tmp_path: Path) -> None:
    store = populated(tmp_path)
    claim = store.claims.claim("j4.json", JobState.PENDING, "test", utcnow())
    assert isinstance(claim, Claim)
    claim.release()  # its worker "died": the file sits in processing/
    result = invoke(store.home.root, "journal", "rebuild")
    assert result.exit_code == 0, result.output
    assert (store.home.root / "pending" / "j4.json").exists()
    assert not (store.home.root / "processing" / "j4.json").exists()


def test_rebuild_refuses_while_a_worker_is_registered(tmp_path: Path) -> None:
    from queuectl.storage.registry import register

    store = populated(tmp_path)
    registration = register(store.home.workers, 1, False)
    try:
        result = invoke(store.home.root, "journal", "rebuild")
        assert result.exit_code == 1 and "stop them first" in result.output
    finally:
        registration.close()


def test_fsck_clean_then_finds_and_repairs_each_kind_of_damage(tmp_path: Path) -> None:
    store = populated(tmp_path)
    home = store.home.root
    assert invoke(home, "fsck").exit_code == 0
    shutil.copy(home / "completed" / "j0.json", home / "pending" / "j0.json")  # in two folders
    os.chmod(home / "dead" / "j3.json", 0o644)  # bad permissions
    (home / "tmp" / "j9.999999.deadbeef.tmp").write_text("{}")  # stale tmp of a dead pid
    claim = store.claims.claim("j5.json", JobState.PENDING, "test", utcnow())
    assert isinstance(claim, Claim)
    claim.release()  # orphaned in processing/
    with open(home / "journal" / "00000001.log", "ab") as handle:
        handle.write(b'0badc0de {"torn')  # torn tail
    found = invoke(home, "fsck")
    assert found.exit_code == 1
    for kind in ("duplicate", "permissions", "stale-tmp", "orphan", "journal-torn-tail"):
        assert f"{kind}:" in found.output, (kind, found.output)
    repaired = invoke(home, "fsck", "--repair")
    assert repaired.exit_code == 1 and "not repaired" not in repaired.output, repaired.output
    clean = invoke(home, "fsck")
    assert clean.exit_code == 0, clean.output
    assert (home / "completed" / "j0.json").exists() and not (home / "pending" / "j0.json").exists()
    # Recovered: the lost run counts, and with max_retries 0 that was its only run.
    assert json.loads((home / "dead" / "j5.json").read_text())["attempts"] == 1


def test_fsck_finds_a_file_the_journal_does_not_know_and_journals_it(tmp_path: Path) -> None:
    store = populated(tmp_path)
    home = store.home.root
    text = json.loads((home / "pending" / "j4.json").read_text())
    text.update(id="stray")
    (home / "pending" / "stray.json").write_text(json.dumps(text))
    os.chmod(home / "pending" / "stray.json", 0o600)
    found = invoke(home, "fsck")
    assert found.exit_code == 1 and "not-journaled" in found.output
    assert invoke(home, "fsck", "--repair").exit_code == 1
    assert invoke(home, "fsck").exit_code == 0
    assert "stray" in latest(home)


def test_cleanup_removes_old_finished_jobs_and_logs_and_rebuild_does_not_resurrect(
    tmp_path: Path,
) -> None:
    store = populated(tmp_path)
    home = store.home.root
    (home / "logs" / "j0").mkdir()
    (home / "logs" / "j0" / "1.out").write_text("old output")
    result = invoke(home, "cleanup", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert "removed 2 job(s)" in result.output
    assert sorted(p.stem for p in (home / "completed").glob("*.json")) == ["j2"]
    assert not (home / "logs" / "j0").exists()
    assert (home / "dead" / "j3.json").exists()  # dead jobs only with --state dead
    assert invoke(home, "cleanup", "--older-than", "7d", "--state", "dead").exit_code == 0
    assert not (home / "dead" / "j3.json").exists()
    before = tree(home)
    for name in STATES:
        shutil.rmtree(home / name)
    assert invoke(home, "journal", "rebuild").exit_code == 0
    assert tree(home) == before


def test_cleanup_rejects_a_bad_duration(tmp_path: Path) -> None:
    result = invoke(tmp_path / "h", "cleanup", "--older-than", "soon")
    assert result.exit_code == 2 and "invalid duration" in result.output


def test_compaction_folds_old_segments_and_still_rebuilds_everything_kept(
    tmp_path: Path,
) -> None:
    store = populated(tmp_path)
    home = store.home.root
    store.journal = Journal(home / "journal", home / "locks" / "journal.lock", segment_bytes=600)
    for i in range(6, 16):  # several small segments
        assert (
            invoke(home, "enqueue", json.dumps({"id": f"k{i}", "command": "true"})).exit_code == 0
        )
        store.journal.append([{"ts": "2026-01-01T00:00:00.000Z", "event": "note"}])
    assert invoke(home, "cleanup", "--older-than", "7d").exit_code == 0
    expected = {k: rev for k, (event, rev) in latest(home).items() if event != "deleted"}
    before = tree(home)
    report = compact(store, retention=0, now=utcnow())
    assert report.segments_folded >= 1 and report.jobs_dropped == 2
    assert snapshot_numbers(home / "journal")
    assert min(segment_numbers(home / "journal")) >= snapshot_numbers(home / "journal")[-1]
    after_compaction = {k: rev for k, (_event, rev) in latest(home).items()}
    assert after_compaction == expected
    for name in STATES:
        shutil.rmtree(home / name)
    assert invoke(home, "journal", "rebuild").exit_code == 0
    assert tree(home) == before
    # New records after compaction land in a segment the snapshot does not cover.
    assert invoke(home, "enqueue", '{"id": "late", "command": "true"}').exit_code == 0
    assert "late" in latest(home)


def test_compaction_keeps_segments_newer_than_the_retention(tmp_path: Path) -> None:
    store = populated(tmp_path)
    report = compact(store, retention=7 * 86400, now=utcnow())
    assert report.snapshot is None and report.segments_folded == 0
    result = invoke(store.home.root, "journal", "compact")
    assert result.exit_code == 0 and "nothing to compact" in result.output


def test_cleanup_function_is_clock_injected(tmp_path: Path) -> None:
    store = populated(tmp_path)
    future = utcnow() + timedelta(days=30)
    removed, kept = cleanup(store, 86400, (JobState.COMPLETED,), future)
    assert sorted(removed) == ["j0", "j1", "j2"] and kept == []
