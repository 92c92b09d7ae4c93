"""Issue 10, "every file in the home is untrusted input": files that look like the ones
queuectl writes get the same checks as new drops, wherever a worker (or fsck) picks them
up, and a bad one is moved to rejected/ with a reason instead of being run or crashing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import (
    Procs,
    enqueue_job,
    jobs_in,
    run_cli,
    settled_in,
    wait_exit,
    wait_until,
)

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")
OTHER_UID = 54321


def _config(home: Path, key: str, value: str) -> None:
    result = run_cli(home, "config", "set", key, value)
    assert result.returncode == 0, result.stderr


def _burst(home: Path) -> None:
    result = run_cli(home, "worker", "start", "--burst", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _everywhere(home: Path, job_id: str) -> list[str]:
    return [state for state in STATES if job_id in jobs_in(home, state)]


def _rejected_with_reason(home: Path, name: str) -> str | None:
    """The reason recorded for ``name`` in rejected/ (any suffix queuectl added), or None."""
    for path in sorted((home / "rejected").iterdir()):
        if path.name.startswith(name) and not path.name.endswith(".reason"):
            reason = path.with_name(path.name + ".reason")
            if reason.exists() and reason.read_text().strip():
                return reason.read_text().strip()
    return None


def _drop(home: Path, folder: str, name: str, data: bytes, staging: Path) -> Path:
    """Write a file elsewhere on the same filesystem (mode 0600, like queuectl's own), then
    rename it into ``home/folder``."""
    staging.mkdir(exist_ok=True)
    staged = staging / name
    staged.write_bytes(data)
    staged.chmod(0o600)
    target = home / folder / name
    os.rename(staged, target)
    return target


def _stored_looking(job_id: str, command: str, **fields: object) -> dict:
    """A pending job as queuectl writes one (state, attempts, rev, ...)."""
    job = {
        "id": job_id,
        "command": command,
        "state": "pending",
        "attempts": 0,
        "runs": 0,
        "max_retries": 0,
        "priority": 0,
        "run_at": None,
        "timeout": None,
        "cwd": None,
        "env": {},
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "next_run_at": None,
        "last_exit_code": None,
        "last_error": None,
        "started_at": None,
        "finished_at": None,
        "worker": None,
        "source": "cli",
        "rev": 1,
        "history": [],
    }
    job.update(fields)
    return job


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (0, 1), (result.returncode, result.stderr[-2000:])


# ------------------------------------------------------------------ 9: hostile files in processing/


def _make_hostile(path: Path, kind: str, tmp_path: Path) -> None:
    if kind == "world-writable":
        path.chmod(0o666)
    elif kind == "foreign-owner":
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        os.chown(path, OTHER_UID, OTHER_UID)
    else:
        os.link(path, tmp_path / "second-link.json")


@pytest.mark.parametrize("recoverer", ["worker", "fsck --repair"])
@pytest.mark.parametrize("kind", ["world-writable", "foreign-owner", "hard-link"])
def test_a_hostile_orphan_in_processing_is_rejected_not_recovered_and_run(
    qhome: Path, tmp_path: Path, kind: str, recoverer: str
) -> None:
    """A job file planted in processing/, as a worker that died would have left it (the text
    it had in pending/), made untrustworthy the way claims from pending/ already refuse. It
    is in no journal, so nothing but this file could make its command run."""
    marker = tmp_path / "ran"
    job = _stored_looking("orphan", f"touch {marker}", max_retries=3)
    _drop(qhome, "processing", "orphan.json", json.dumps(job, indent=2).encode(), tmp_path / "s")
    _make_hostile(qhome / "processing" / "orphan.json", kind, tmp_path)

    if recoverer == "fsck --repair":
        repaired = run_cli(qhome, "fsck", "--repair")
        _no_traceback(repaired)
    _burst(qhome)

    assert not marker.exists(), f"the {kind} file in processing/ was run"
    reason = _rejected_with_reason(qhome, "orphan.json")
    assert reason is not None, (
        f"not in rejected/ with a reason; it is in {_everywhere(qhome, 'orphan')}"
    )
    assert _everywhere(qhome, "orphan") == []


# ------------------------------------------------------------------ 10: stored-looking drops


def test_a_copy_of_a_completed_job_dropped_into_pending_is_rejected_not_run_again(
    qhome: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    enqueue_job(qhome, {"id": "done", "command": f"echo ran >> {runs}"})
    _burst(qhome)
    original = (qhome / "completed" / "done.json").read_bytes()
    copy = json.loads(original)
    copy["state"] = "pending"
    _drop(qhome, "pending", "done.json", json.dumps(copy, indent=2).encode(), tmp_path / "s")

    _burst(qhome)

    assert runs.read_text().splitlines() == ["ran"], "the copy of a completed job ran again"
    assert _rejected_with_reason(qhome, "done.json") is not None
    assert (qhome / "completed" / "done.json").read_bytes() == original
    assert _everywhere(qhome, "done") == ["completed"]


HUGE_REV = 4611686018427387900


def test_a_stored_looking_drop_with_a_huge_rev_is_rejected_or_stays_readable(
    qhome: Path, tmp_path: Path
) -> None:
    """Three runs and two DLQ retries add five revisions; the job must stay a job that
    ``show``, ``list``, ``dlq`` and ``fsck`` can read, or be refused at the door."""
    runs = tmp_path / "runs"
    job = _stored_looking("huge", f"echo ran >> {runs}; exit 1", rev=HUGE_REV)
    _drop(qhome, "pending", "huge.json", json.dumps(job, indent=2).encode(), tmp_path / "s")

    for cycle in range(3):
        _burst(qhome)
        if cycle == 0 and _rejected_with_reason(qhome, "huge.json") is not None:
            assert not runs.exists()
            return
        assert _everywhere(qhome, "huge") == ["dead"], f"cycle {cycle}"
        shown = run_cli(qhome, "show", "huge")
        assert shown.returncode == 0, f"cycle {cycle}: show: {shown.stderr.strip()}"
        listed = run_cli(qhome, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [j["id"] for j in json.loads(listed.stdout)] == ["huge"], f"cycle {cycle}: list"
        checked = run_cli(qhome, "fsck")
        _no_traceback(checked)
        retried = run_cli(qhome, "dlq", "retry", "huge")
        assert retried.returncode == 0, f"cycle {cycle}: dlq retry: {retried.stderr.strip()}"
    assert runs.read_text().splitlines() == ["ran"] * 3


def test_a_stored_looking_drop_with_a_text_timeout_is_rejected_and_the_worker_goes_on(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job = _stored_looking("soon", f"touch {marker}", timeout="soon")
    _drop(qhome, "pending", "soon.json", json.dumps(job, indent=2).encode(), tmp_path / "s")
    enqueue_job(qhome, {"id": "normal", "command": "true"})
    log = tmp_path / "worker.log"

    worker = procs.worker(qhome, "--count", "1", "--burst", log=log)

    wait_until(
        lambda: _rejected_with_reason(qhome, "soon.json") is not None,
        timeout=10,
        message="soon.json to be rejected with a reason",
    )
    assert wait_exit(worker, timeout=30) == 0, log.read_text()[-2000:]
    assert settled_in(qhome, "completed", "normal")
    assert jobs_in(qhome, "pending") == []
    assert not marker.exists()
    assert len(log.read_text().splitlines()) < 20, log.read_text()[-2000:]


def test_a_stored_looking_drop_with_a_numeric_cwd_is_rejected_without_a_hot_loop(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job = _stored_looking("cwd5", f"touch {marker}", cwd=5)
    _drop(qhome, "pending", "cwd5.json", json.dumps(job, indent=2).encode(), tmp_path / "s")
    log = tmp_path / "worker.log"

    worker = procs.worker(qhome, "--count", "1", "--burst", log=log)

    wait_until(
        lambda: _rejected_with_reason(qhome, "cwd5.json") is not None,
        timeout=10,
        message="cwd5.json to be rejected with a reason",
    )
    assert wait_exit(worker, timeout=30) == 0
    assert not marker.exists()
    lines = log.read_text().splitlines()
    assert len(lines) < 20, f"{len(lines)} log lines: {lines[:5]}"


@pytest.mark.parametrize("env", [5, {"A": 5}], ids=["env-5", "env-A-5"])
def test_a_stored_looking_drop_with_a_bad_env_is_readable_by_every_command_and_rejected(
    qhome: Path, procs: Procs, tmp_path: Path, env: object
) -> None:
    marker = tmp_path / "ran"
    job = _stored_looking("badenv", f"touch {marker}", env=env)
    dropped = _drop(
        qhome, "pending", "badenv.json", json.dumps(job, indent=2).encode(), tmp_path / "s"
    )
    data = dropped.read_bytes()

    for args in (("list",), ("list", "--json"), ("show", "badenv"), ("fsck",), ("status",)):
        _no_traceback(run_cli(qhome, *args))
        assert dropped.read_bytes() == data, f"{' '.join(args)} moved or changed the file"
    log = tmp_path / "worker.log"
    worker = procs.worker(qhome, "--count", "1", "--burst", log=log)

    wait_until(
        lambda: _rejected_with_reason(qhome, "badenv.json") is not None,
        timeout=10,
        message="badenv.json to be rejected with a reason",
    )
    assert wait_exit(worker, timeout=30) == 0
    assert not marker.exists()
    assert len(log.read_text().splitlines()) < 20, log.read_text()[-2000:]


@pytest.mark.parametrize("state", ["completed", "dead", "cancelled"])
def test_a_new_job_drop_whose_id_exists_in_another_folder_is_rejected_not_run(
    qhome: Path, tmp_path: Path, state: str
) -> None:
    if state == "completed":
        enqueue_job(qhome, {"id": "taken", "command": "true"})
        _burst(qhome)
    elif state == "dead":
        enqueue_job(qhome, {"id": "taken", "command": "exit 1", "max_retries": 0})
        _burst(qhome)
    else:
        enqueue_job(qhome, {"id": "taken", "command": "true", "run_at": "2099-01-01T00:00:00Z"})
        assert run_cli(qhome, "cancel", "taken").returncode == 0
    assert jobs_in(qhome, state) == ["taken"]
    original = (qhome / state / "taken.json").read_bytes()
    marker = tmp_path / "ran"
    plain = json.dumps({"command": f"touch {marker}"}).encode()
    _drop(qhome, "pending", "taken.json", plain, tmp_path / "s")

    _burst(qhome)

    assert not marker.exists(), f"a drop reusing the id of a {state} job ran"
    assert _rejected_with_reason(qhome, "taken.json") is not None
    assert (qhome / state / "taken.json").read_bytes() == original
    assert _everywhere(qhome, "taken") == [state]
