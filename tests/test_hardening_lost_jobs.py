"""Issue 10, "an accepted job is never lost, a deleted one never comes back": what enqueue
accepts a worker runs; a rebuild from the journal keeps what exists and drops what was
deleted, whatever was killed or raced midway; running commands keep their output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import (
    Procs,
    enqueue_job,
    jobs_in,
    journal_records,
    run_cli,
    settled_in,
    wait_exit,
    wait_until,
)

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")


def _everywhere(home: Path) -> set[str]:
    return {job_id for state in STATES for job_id in jobs_in(home, state)}


def _burst(home: Path, *args: str) -> None:
    result = run_cli(home, "worker", "start", "--burst", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def _enqueue_lines(home: Path, jobs: list[dict]) -> list[str]:
    text = "".join(json.dumps(job) + "\n" for job in jobs)
    result = run_cli(home, "enqueue", "-", input=text, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("queuectl: error:"), lines[0]


def _reasons(home: Path) -> list[str]:
    return [p.read_text().strip() for p in sorted((home / "rejected").glob("*.reason"))]


# ------------------------------------------------------------------ 3: enqueue vs worker limits


@pytest.mark.parametrize("how", ["@file", "stdin"])
def test_a_job_enqueue_accepts_is_run_by_a_worker_even_with_five_mib_of_env(
    qhome: Path, procs: Procs, tmp_path: Path, how: str
) -> None:
    """Either enqueue refuses the job (exit 2, one line, nothing written) or a worker runs it:
    a job that enqueue reported as accepted must never end up in rejected/ instead."""
    marker = tmp_path / "ran"
    env = {f"BIG{i}": "x" * (1 << 20) for i in range(5)}  # the file is over 5 MiB
    job = {"id": "big", "command": f"touch {marker}", "env": env, "max_retries": 0}
    if how == "@file":
        source = tmp_path / "big.json"
        source.write_text(json.dumps(job))
        result = run_cli(qhome, "enqueue", f"@{source}")
    else:
        result = run_cli(qhome, "enqueue", "-", input=json.dumps(job) + "\n")

    if result.returncode != 0:
        _assert_one_error_line(result, 2)
        assert jobs_in(qhome, "pending") == []
        return
    assert result.stdout.split() == ["big"]
    worker = procs.worker(qhome, "--burst", log=tmp_path / "worker.log")
    assert wait_exit(worker) == 0
    rejected = sorted(os.listdir(qhome / "rejected"))
    assert rejected == [], f"enqueue said 'big' but a worker rejected it: {_reasons(qhome)}"
    assert settled_in(qhome, "completed", "big"), _everywhere(qhome)
    assert marker.exists()


# ------------------------------------------------------------------ 4: an id used again


def _free_the_id(home: Path, how: str) -> None:
    if how == "cleanup":
        enqueue_job(home, {"id": "reuse", "command": "echo old"})
        _burst(home)
        assert jobs_in(home, "completed") == ["reuse"]
        result = run_cli(home, "cleanup", "--older-than", "0s")
    else:
        enqueue_job(home, {"id": "reuse", "command": "echo old; exit 1", "max_retries": 0})
        _burst(home)
        assert jobs_in(home, "dead") == ["reuse"]
        result = run_cli(home, "dlq", "purge", "reuse", "--yes")
    assert result.returncode == 0, result.stderr
    assert "reuse" not in _everywhere(home)


def _rebuild(home: Path, from_scratch: bool) -> str:
    if from_scratch:  # the journal alone, as after losing the state folders
        for state in STATES:
            for path in (home / state).glob("*.json"):
                path.unlink()
    rebuilt = run_cli(home, "journal", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    return rebuilt.stdout


@pytest.mark.parametrize("from_scratch", [False, True], ids=["in-place", "from-scratch"])
@pytest.mark.parametrize("how", ["cleanup", "purge"])
def test_an_id_freed_by_cleanup_or_purge_and_enqueued_again_survives_a_rebuild(
    qhome: Path, how: str, from_scratch: bool
) -> None:
    _free_the_id(qhome, how)

    enqueue_job(qhome, {"id": "reuse", "command": "echo new"})
    assert jobs_in(qhome, "pending") == ["reuse"]
    checked_before = run_cli(qhome, "fsck")

    said = _rebuild(qhome, from_scratch)

    assert jobs_in(qhome, "pending") == ["reuse"], (
        f"the rebuild lost the new job ({said.strip()}); now {sorted(_everywhere(qhome))}"
    )
    stored = json.loads((qhome / "pending" / "reuse.json").read_text())
    assert (stored["command"], stored["state"]) == ("echo new", "pending")
    assert checked_before.returncode == 0, f"fsck after the reuse: {checked_before.stdout}"
    checked = run_cli(qhome, "fsck")
    assert checked.returncode == 0, f"fsck after the rebuild: {checked.stdout}"


# ------------------------------------------------------------------ 5: purge races retry

_GATED = """\
import importlib, os, pkgutil, sys, time
import queuectl
from queuectl.cli.main import main
# Import every module first, so that neither command spends its head start on imports.
for module in pkgutil.walk_packages(queuectl.__path__, "queuectl."):
    try:
        importlib.import_module(module.name)
    except Exception:
        pass
gate, ready = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(gate):
    time.sleep(0.0001)
sys.argv = ["queuectl", *sys.argv[3:]]
main()
"""


def _gated(home: Path, gate: Path, ready: Path, *args: str) -> subprocess.Popen[str]:
    """``queuectl ARGS`` (the console script's entry point), held until ``gate`` exists, so
    that a command starts within a fraction of a millisecond of the test's signal."""
    return subprocess.Popen(
        [sys.executable, "-c", _GATED, str(gate), str(ready), "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


ROUNDS = 20
STAGGER_STEP_SECONDS = 0.001
"""Round n starts purge (n % 10) ms after retry, sweeping the purge across the whole of the
retry's commit (a few fsyncs long) instead of hoping the two collide."""


def test_dlq_purge_and_dlq_retry_of_the_same_job_at_once_never_both_win(
    qhome: Path, tmp_path: Path
) -> None:
    ids = [f"d{i:02d}" for i in range(ROUNDS)]
    _enqueue_lines(qhome, [{"id": i, "command": "exit 1", "max_retries": 0} for i in ids])
    _burst(qhome, "--count", "4")
    assert jobs_in(qhome, "dead") == ids

    problems = []
    outcomes = {"purge": 0, "retry": 0}
    for number, job_id in enumerate(ids):
        gates = [tmp_path / f"gate{number}.{side}" for side in ("r", "p")]
        ready = [tmp_path / f"ready{number}.{side}" for side in ("r", "p")]
        retry = _gated(qhome, gates[0], ready[0], "dlq", "retry", job_id)
        purge = _gated(qhome, gates[1], ready[1], "dlq", "purge", job_id, "--yes")
        try:
            wait_until(lambda r=ready: all(p.exists() for p in r), message="both commands ready")
            gates[0].touch()
            time.sleep(STAGGER_STEP_SECONDS * (number % 10))  # a deliberate offset, not a wait
            gates[1].touch()
            purge_out, purge_err = purge.communicate(timeout=60)
            retry_out, retry_err = retry.communicate(timeout=60)
        finally:
            for proc in (purge, retry):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        purged = "purged 1" in purge_out
        retried = retry.returncode == 0 and f"retried {job_id}" in retry_out
        where = [state for state in STATES if job_id in jobs_in(qhome, state)]
        said = (
            f"purge: {purge_out.strip()!r} {purge_err.strip()!r}; retry: rc {retry.returncode} "
            f"{retry_out.strip()!r} {retry_err.strip()!r}; folders {where}"
        )
        if purged and not retried and where == []:
            outcomes["purge"] += 1
        elif retried and not purged and where == ["pending"]:
            outcomes["retry"] += 1
        else:
            problems.append(f"{job_id}: {said}")

    shared = []
    for job_id in ids:
        revs = [
            r["job"]["rev"]
            for r in journal_records(qhome)
            if isinstance(r.get("job"), dict) and r["job"].get("id") == job_id
        ]
        if len(revs) != len(set(revs)):
            shared.append(f"{job_id}: revs {revs}")
    assert not problems, (
        f"{len(problems)} of {ROUNDS} rounds had not exactly one winner (single wins: "
        f"{outcomes}):\n" + "\n".join(problems)
    )
    assert not shared, "journal records sharing a rev:\n" + "\n".join(shared)


# ------------------------------------------------------------------ 6: cleanup killed midway

MANY = 1000
DELETERS = {
    "cleanup": ("completed", "echo x", ("cleanup", "--older-than", "0s")),
    "dlq purge": ("dead", "echo x; exit 1", ("dlq", "purge", "--all", "--yes")),
}


def _killed_midway(home: Path, folder: str, args: tuple[str, ...]) -> bool:
    """Start the deleting command and SIGKILL it once a quarter of ``folder`` is gone;
    False if it finished first (nothing to learn from that round)."""
    deleter = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(home / folder)) > MANY * 3 // 4:  # a tight poll: unlinks are fast
            if deleter.poll() is not None:
                return False
            assert time.monotonic() < deadline, "it never started removing files"
        deleter.send_signal(signal.SIGKILL)
    finally:
        deleter.wait(timeout=30)
    return deleter.returncode == -signal.SIGKILL


@pytest.mark.parametrize("deleter", list(DELETERS))
def test_jobs_removed_by_a_deletion_killed_midway_stay_removed_after_repair_and_rebuild(
    qhome: Path, deleter: str
) -> None:
    folder, command, args = DELETERS[deleter]
    for _ in range(3):
        jobs = [{"command": command, "max_retries": 0} for _ in range(MANY)]  # a log dir each
        _enqueue_lines(qhome, jobs)
        _burst(qhome, "--count", "4")
        before = set(jobs_in(qhome, folder))
        assert len(before) == MANY
        if _killed_midway(qhome, folder, args):
            break
    else:
        raise AssertionError(f"{deleter} finished every time before it could be killed midway")
    removed = before - set(jobs_in(qhome, folder))
    assert 0 < len(removed) < MANY

    repaired = run_cli(qhome, "fsck", "--repair", timeout=300)
    assert repaired.returncode in (0, 1), repaired.stderr
    back = removed & _everywhere(qhome)
    assert not back, f"fsck --repair brought back {len(back)} of {len(removed)} removed jobs"

    rebuilt = run_cli(qhome, "journal", "rebuild", timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    back = removed & _everywhere(qhome)
    assert not back, f"journal rebuild brought back {len(back)} of {len(removed)} removed jobs"


# ------------------------------------------------------------------ 7: enqueue - killed midway

BATCH = 5000
GROUP = 256


def _kill_enqueue_when(home: Path, out: Path, batch: Path, ready: object) -> None:
    with open(batch, "rb") as stdin, open(out, "wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "--home", str(home), "enqueue", "-"],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while not ready():  # type: ignore[operator]
            assert proc.poll() is None, "enqueue finished before the kill"
            assert time.monotonic() < deadline, "the kill moment never came"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def _pending_count(home: Path) -> int:
    try:
        return sum(1 for name in os.listdir(home / "pending") if name.endswith(".json"))
    except FileNotFoundError:
        return 0


def _printed(out: Path) -> list[str]:
    text = out.read_text()
    complete = text[: text.rfind("\n") + 1]  # a torn last line was not printed
    return complete.split()


MOMENTS = [
    ("pending/ has a file", lambda home, out: _pending_count(home) >= 1),
    ("stdout has a line", lambda home, out: len(_printed(out)) >= 1),
    ("pending/ has 600 files", lambda home, out: _pending_count(home) >= 600),
    ("stdout has 600 lines", lambda home, out: len(_printed(out)) >= 600),
    ("pending/ has 2000 files", lambda home, out: _pending_count(home) >= 2000),
]


def test_a_sigkilled_batch_enqueue_leaves_no_unjournaled_or_unreported_jobs(
    tmp_path: Path,
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"command": "true"}) + "\n" for _ in range(BATCH)))
    problems = []
    for number, (moment, ready) in enumerate(MOMENTS):
        home, out = tmp_path / f"h{number}", tmp_path / f"out{number}"
        home.mkdir(mode=0o700)  # an empty folder: a new home
        assert run_cli(home, "status").returncode == 0  # the home exists before the race
        out.touch()
        _kill_enqueue_when(home, out, batch, lambda h=home, o=out, r=ready: r(h, o))

        printed = set(_printed(out))
        pending = set(jobs_in(home, "pending"))
        journaled = {
            r["job"]["id"]
            for r in journal_records(home)
            if r.get("event") == "enqueued" and isinstance(r.get("job"), dict)
        }
        unjournaled = pending - journaled
        lost = printed - pending
        unreported = pending - printed
        if unjournaled or lost or len(unreported) > GROUP:
            problems.append(
                f"killed when {moment}: {len(pending)} in pending/, {len(printed)} printed, "
                f"{len(unjournaled)} in pending/ without an enqueued record, "
                f"{len(lost)} printed but not in pending/, {len(unreported)} not printed"
            )
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ 8: fsck and live tmp files


def test_fsck_repair_keeps_the_output_files_of_a_running_command(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    command = (
        f"echo before the repair; touch {started}; while [ ! -e {release} ]; do sleep 0.05; done"
    )
    enqueue_job(qhome, {"id": "live", "command": command})
    worker = procs.worker(qhome, log=tmp_path / "worker.log")
    wait_until(started.exists, message="the command to start")
    two_hours_ago = time.time() - 7200
    for entry in os.scandir(qhome / "tmp"):
        os.utime(entry.path, (two_hours_ago, two_hours_ago), follow_symlinks=False)

    repaired = run_cli(qhome, "fsck", "--repair")
    assert repaired.returncode in (0, 1), repaired.stderr
    release.touch()

    wait_until(lambda: settled_in(qhome, "completed", "live"), message="the job to complete")
    logs = run_cli(qhome, "logs", "live")
    assert logs.returncode == 0, logs.stderr
    assert "before the repair" in logs.stdout, (
        f"the running command's output was lost: logs says {logs.stdout!r} {logs.stderr!r}; "
        f"fsck said: {repaired.stdout}"
    )
    # The worker's spare output files were in tmp/ too: the next job's output is kept as well.
    enqueue_job(qhome, {"id": "next", "command": "echo after the repair"})
    wait_until(lambda: settled_in(qhome, "completed", "next"), message="the next job")
    assert "after the repair" in run_cli(qhome, "logs", "next").stdout
    assert worker.poll() is None
