"""Issue 10, "never concurrently twice": no run of a job starts while a process left by an
earlier run still holds the job's lock (fd 3), and a job recorded as stopped has no process
left running.

Every ordering assertion compares timestamps that the commands write themselves
(``date +%s.%N``), not durations measured by the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from .conftest import (
    Procs,
    enqueue_job,
    jobs_in,
    pid_gone,
    read_job,
    read_pid,
    run_cli,
    settled_in,
    wait_exit,
    wait_until,
)

HOLD_SECONDS = 4.0
"""If an implementation keeps a job in processing/ until its leftovers are gone (so there
is no failed/ or dead/ record to wait for), this is how long after the first run's shell
exited the test gives a wrong second run the chance to show up before releasing the child."""

DUE_MARGIN_SECONDS = 1.5
"""How long past a retry's next_run_at the test waits before releasing the child."""


def _config(home: Path, key: str, value: str) -> None:
    result = run_cli(home, "config", "set", key, value)
    assert result.returncode == 0, result.stderr


def _background_child_job(tmp_path: Path, max_retries: int) -> tuple[dict, Path, Path, Path]:
    """The job of issue 10 #1: each run starts a background child (same process group, fd 3
    inherited) that logs its start and end; the first run's shell then exits 1 at once, a
    later run logs ``run2``. Every line carries the run number and a timestamp."""
    log, release, second = tmp_path / "LOG", tmp_path / "RELEASE", tmp_path / "SECOND"
    command = (
        f"(echo start $QUEUECTL_RUN $(date +%s.%N) >> {log}; "
        f"while [ ! -e {release} ]; do sleep 0.05; done; "
        f"echo end $QUEUECTL_RUN $(date +%s.%N) >> {log}) & "
        f"[ -e {second} ] || {{ touch {second}; exit 1; }}; "
        f"echo run2 $QUEUECTL_RUN $(date +%s.%N) >> {log}"
    )
    return {"id": "bg", "command": command, "max_retries": max_retries}, log, release, second


def _log_lines(log: Path) -> list[tuple[str, int, float]]:
    """(what, run, unix time) for every complete line of the command's log."""
    out = []
    for line in log.read_text().splitlines():
        what, run, stamp = line.split()
        out.append((what, int(run), float(stamp)))
    return out


def _first_run_settled(home: Path, state: str, second: Path) -> bool:
    """Wait until the first run's outcome is recorded in ``state``. True if it was; False if
    the implementation still holds it (in processing/) HOLD_SECONDS after its shell exited."""

    def done() -> bool:
        if settled_in(home, state, "bg"):
            return True
        return second.exists() and time.time() > second.stat().st_mtime + HOLD_SECONDS

    wait_until(done, timeout=30, message=f"the first run to be recorded in {state}/")
    return settled_in(home, state, "bg")


def _assert_later_runs_started_after_the_child(log: Path) -> None:
    wait_until(  # the child notices RELEASE within 50 ms; the job may complete before that
        lambda: ("end", 1) in {(what, run) for what, run, _ in _log_lines(log)},
        message="the first run's child to log its end",
    )
    lines = _log_lines(log)
    ends = [stamp for what, run, stamp in lines if what == "end" and run == 1]
    assert ends, f"the first run's child never logged its end: {lines}"
    child_end = ends[0]
    later = [(what, run, stamp) for what, run, stamp in lines if run >= 2]
    assert any(what == "run2" for what, _, _ in later), f"no second run completed: {lines}"
    early = [entry for entry in later if entry[2] <= child_end]
    assert not early, (
        f"a later run was active while the first run's child (fd 3) still ran: child ended at "
        f"{child_end:.3f}, but {early} happened before; log: {lines}"
    )


@pytest.mark.parametrize("restart", [False, True], ids=["same-worker", "restarted-worker"])
def test_retry_does_not_start_while_the_failed_runs_background_child_holds_the_lock(
    qhome: Path, procs: Procs, tmp_path: Path, restart: bool
) -> None:
    _config(qhome, "backoff-base", "1")  # the retry is due about 1 s after the failure
    job, log, release, second = _background_child_job(tmp_path, max_retries=2)
    enqueue_job(qhome, job)
    worker = procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")

    if _first_run_settled(qhome, "failed", second):
        due = read_job(qhome, "failed", "bg")["next_run_at"]
        if restart:  # a later worker must respect the leftover child just as well
            os.kill(worker.pid, signal.SIGTERM)
            assert wait_exit(worker, timeout=30) == 0
            procs.worker(qhome, "--count", "2", log=tmp_path / "worker2.log")
        due_at = _unix(due)
        wait_until(
            lambda: time.time() > due_at + DUE_MARGIN_SECONDS,
            timeout=30,
            message="the retry's next_run_at to pass by a margin",
        )
    release.touch()

    wait_until(lambda: settled_in(qhome, "completed", "bg"), timeout=30, message="completion")
    _assert_later_runs_started_after_the_child(log)


def test_dlq_retry_does_not_start_a_run_while_the_dead_runs_child_holds_the_lock(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    job, log, release, second = _background_child_job(tmp_path, max_retries=0)
    enqueue_job(qhome, job)
    procs.worker(qhome, "--count", "2", log=tmp_path / "worker.log")

    retried_while_child_ran = _first_run_settled(qhome, "dead", second)
    retry = None
    if retried_while_child_ran:
        retry = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "--home", str(qhome), "dlq", "retry", "bg"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.procs.append(retry)  # type: ignore[arg-type]
        started = time.monotonic()
        # A retry may refuse, succeed, or wait for the lock; give a succeeded one the chance
        # to be (wrongly) run: a probe enqueued after it runs after the worker looked at bg.
        wait_until(
            lambda: retry.poll() is not None or time.monotonic() > started + HOLD_SECONDS,
            timeout=30,
            message="dlq retry to return or to be seen waiting",
        )
        if retry.poll() == 0:
            enqueue_job(qhome, {"id": "probe", "command": "true", "priority": -100})
            wait_until(lambda: settled_in(qhome, "completed", "probe"), message="the probe job")
    release.touch()

    if retry is not None:
        _, err = retry.communicate(timeout=60)
        if retry.returncode != 0:  # refused while the child ran: fine, but say why, once
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("queuectl: error:"), err
            retry = None
    if retry is None:  # refused, or never dead while the child ran: retry after it ended
        wait_until(
            lambda: any(w == "end" for w, _, _ in _log_lines(log)), message="the child's end"
        )
        wait_until(lambda: settled_in(qhome, "dead", "bg"), message="the job to be dead")
        result = run_cli(qhome, "dlq", "retry", "bg")
        assert result.returncode == 0, result.stderr

    wait_until(lambda: settled_in(qhome, "completed", "bg"), timeout=30, message="completion")
    _assert_later_runs_started_after_the_child(log)


def _sigterm_ignoring_child(tmp_path: Path) -> tuple[str, Path]:
    child_pid = tmp_path / "CHILDPID"
    command = f"sh -c 'trap \"\" TERM; echo $$ > {child_pid}; while :; do sleep 0.1; done' & wait"
    return command, child_pid


def _wait_for_pid(path: Path) -> int:
    wait_until(
        lambda: path.exists() and path.read_text().strip() != "",
        message="the command to start its SIGTERM-ignoring child",
    )
    return read_pid(path)


def _assert_gone_once_recorded(pid: int, what: str) -> None:
    # The outcome is recorded; nothing is going to stop a survivor later. Allow only for the
    # delivery of a signal that was already sent.
    try:
        wait_until(lambda: pid_gone(pid), timeout=2, message="the child to be gone")
    except AssertionError:
        raise AssertionError(
            f"the job was recorded as {what} while its SIGTERM-ignoring child {pid} still runs"
        ) from None


def test_cancel_records_a_running_job_cancelled_only_once_its_sigterm_ignoring_child_is_gone(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    command, child_pid = _sigterm_ignoring_child(tmp_path)
    enqueue_job(qhome, {"id": "stubborn", "command": command})
    procs.worker(qhome, log=tmp_path / "worker.log")
    pid = _wait_for_pid(child_pid)

    result = run_cli(qhome, "cancel", "stubborn", timeout=60)

    assert result.returncode == 0, result.stderr
    assert settled_in(qhome, "cancelled", "stubborn"), jobs_in(qhome, "processing")
    _assert_gone_once_recorded(pid, "cancelled")


@pytest.mark.parametrize(
    ("max_retries", "state"), [(0, "dead"), (1, "failed")], ids=["dead", "failed"]
)
def test_per_job_timeout_records_the_attempt_only_once_its_sigterm_ignoring_child_is_gone(
    qhome: Path, procs: Procs, tmp_path: Path, max_retries: int, state: str
) -> None:
    _config(qhome, "backoff-base", "1000")  # a failed/ job stays there during the test
    command, child_pid = _sigterm_ignoring_child(tmp_path)
    enqueue_job(
        qhome, {"id": "stubborn", "command": command, "timeout": 1, "max_retries": max_retries}
    )
    procs.worker(qhome, log=tmp_path / "worker.log")
    pid = _wait_for_pid(child_pid)

    wait_until(
        lambda: settled_in(qhome, state, "stubborn"), timeout=30, message=f"the timeout ({state})"
    )

    assert read_job(qhome, state, "stubborn")["last_error"].startswith("timeout")
    _assert_gone_once_recorded(pid, state)


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
