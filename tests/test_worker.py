"""One real worker process at a time: running, retrying, timeouts, the command's environment."""

from __future__ import annotations

import itertools
import os
import signal
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from queuectl.job import parse_time

from .conftest import (
    Procs,
    enqueue_job,
    job_events,
    jobs_in,
    pid_gone,
    read_job,
    read_pid,
    run_cli,
    settled_in,
    wait_exit,
    wait_until,
)


def _config(home: Path, key: str, value: str) -> None:
    result = run_cli(home, "config", "set", key, value)
    assert result.returncode == 0, result.stderr


def test_burst_worker_runs_a_job_and_exits_zero(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    enqueue_job(qhome, {"id": "hello", "command": f"echo hello > {out}"})

    worker = procs.worker(qhome, "--burst")

    assert wait_exit(worker) == 0
    assert out.read_text() == "hello\n"
    job = read_job(qhome, "completed", "hello")
    assert (job["state"], job["attempts"], job["last_exit_code"]) == ("completed", 1, 0)
    assert job["last_error"] is None
    for state in ("pending", "processing", "failed", "dead"):
        assert jobs_in(qhome, state) == []


def test_failing_job_backs_off_between_retries_then_goes_dead(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    _config(qhome, "backoff-base", "1")  # every retry waits 1 ** n = 1 s
    runs = tmp_path / "runs"
    command = (
        f'echo "run $QUEUECTL_ATTEMPT" >> {runs}; echo "out $QUEUECTL_ATTEMPT"; '
        "echo oops >&2; exit 3"
    )
    enqueue_job(qhome, {"id": "flaky", "command": command, "max_retries": 2})

    worker = procs.worker(qhome, "--burst")

    assert wait_exit(worker) == 0  # burst mode waits out the backoffs
    assert runs.read_text().splitlines() == ["run 1", "run 2", "run 3"]  # max_retries + 1 runs
    job = read_job(qhome, "dead", "flaky")
    assert job["attempts"] == 3
    assert job["last_exit_code"] == 3
    assert job["last_error"] == "exit code 3: oops"
    assert job["next_run_at"] is None
    for attempt in (1, 2, 3):
        assert (qhome / "logs" / "flaky" / f"{attempt}.out").read_text() == f"out {attempt}\n"
        assert (qhome / "logs" / "flaky" / f"{attempt}.err").read_text() == "oops\n"

    # The journal has the job after each attempt: each retry started no earlier than the
    # next_run_at its failure set, and next_run_at was one backoff after the failure.
    events = job_events(qhome, "flaky")
    assert [event for event, _ in events] == ["enqueued", "failed", "failed", "dead"]
    attempts = [job for _, job in events[1:]]
    assert [a["attempts"] for a in attempts] == [1, 2, 3]
    for failed, retry in itertools.pairwise(attempts):
        due = parse_time(failed["next_run_at"])
        assert due >= parse_time(failed["finished_at"]) + timedelta(seconds=1)
        assert parse_time(retry["started_at"]) >= due
        assert parse_time(retry["started_at"]) > parse_time(failed["finished_at"])


def test_timeout_kills_the_whole_process_group(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    _config(qhome, "job-timeout", "1")
    shell_pid, child_pid = tmp_path / "sh.pid", tmp_path / "child.pid"
    command = f"echo $$ > {shell_pid}; sleep 1000 & echo $! > {child_pid}; wait"
    enqueue_job(qhome, {"id": "stuck", "command": command, "max_retries": 0})

    worker = procs.worker(qhome, "--burst")

    assert wait_exit(worker) == 0
    job = read_job(qhome, "dead", "stuck")
    assert job["attempts"] == 1
    assert job["last_error"].startswith("timeout")
    assert job["last_exit_code"] is None
    for pid_file in (shell_pid, child_pid):
        pid = read_pid(pid_file)
        wait_until(lambda pid=pid: pid_gone(pid), timeout=10, message=f"pid {pid} to be gone")


def test_timeout_kills_group_members_that_ignore_sigterm(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    _config(qhome, "job-timeout", "1")
    child_pid = tmp_path / "child.pid"
    command = f"(trap '' TERM; exec sleep 1000) & echo $! > {child_pid}; wait"
    enqueue_job(qhome, {"id": "stubborn", "command": command, "max_retries": 0})

    worker = procs.worker(qhome, "--burst")

    assert wait_exit(worker) == 0
    assert read_job(qhome, "dead", "stubborn")["last_error"].startswith("timeout")
    # The attempt is recorded only after the runner has finished signalling the group, so
    # nothing will kill a survivor later: it must already be gone (allowing for delivery).
    pid = read_pid(child_pid)
    wait_until(lambda: pid_gone(pid), timeout=5, message=f"TERM-ignoring child {pid} to be gone")


def test_command_sees_its_job_id_and_attempt(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    out = tmp_path / "env"
    variables = '"$QUEUECTL_JOB_ID" "$QUEUECTL_ATTEMPT" "$QUEUECTL_HOME"'
    command = f'printf "%s|%s|%s\\n" {variables} > {out}'
    job_id = enqueue_job(qhome, {"command": command})

    assert wait_exit(procs.worker(qhome, "--burst")) == 0

    assert out.read_text() == f"{job_id}|1|{qhome}\n"


def test_output_is_captured_per_attempt(qhome: Path, procs: Procs) -> None:
    command = "echo first line; echo to stderr >&2; printf 'no newline'"
    enqueue_job(qhome, {"id": "talk", "command": command})

    assert wait_exit(procs.worker(qhome, "--burst")) == 0

    logs = qhome / "logs" / "talk"
    assert (logs / "1.out").read_text() == "first line\nno newline"
    assert (logs / "1.err").read_text() == "to stderr\n"
    assert stat.S_IMODE((logs / "1.out").stat().st_mode) == 0o600  # queue files stay private


def test_command_runs_with_bin_sh_dash_c(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = (
        f"""printf '%s\\n' "a b" 'c "d"' "it's" | tr a-z A-Z > {out}\n"""
        f'echo "$0 $#" >> {out}\n'
        f"for word in one two; do echo $word; done | wc -l | tr -d ' ' >> {out}"
    )
    enqueue_job(qhome, {"id": "shell", "command": command})

    assert wait_exit(procs.worker(qhome, "--burst")) == 0

    assert read_job(qhome, "completed", "shell")["last_exit_code"] == 0
    assert out.read_text().splitlines() == ["A B", 'C "D"', "IT'S", "/bin/sh 0", "2"]


@pytest.mark.parametrize(
    ("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"]
)
def test_command_gets_the_umask_of_the_shell_not_the_workers_077(
    qhome: Path, procs: Procs, tmp_path: Path, umask: int, mode: int
) -> None:
    made = tmp_path / "made"
    enqueue_job(qhome, {"id": "mkfile", "command": f"echo x > {made}"})

    assert wait_exit(procs.worker(qhome, "--burst", umask=umask)) == 0

    assert stat.S_IMODE(made.stat().st_mode) == mode
    # ...while the queue's own files keep their private modes
    assert stat.S_IMODE((qhome / "completed" / "mkfile.json").stat().st_mode) == 0o600


def test_idle_worker_wakes_up_for_a_job_enqueued_later(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    worker = procs.worker(qhome)  # not burst: it waits for work
    enqueue_job(qhome, {"id": "first", "command": "true"})
    # Once the first job ran, the worker's start-up scan is over: the next job can only be
    # found through its change notification (the periodic rescan is 60 s away).
    wait_until(lambda: jobs_in(qhome, "completed") == ["first"], message="first job to run")
    out = tmp_path / "out"

    enqueue_job(qhome, {"id": "second", "command": f"echo woke > {out}"})

    wait_until(
        lambda: "second" in jobs_in(qhome, "completed"), timeout=30, message="second job to run"
    )
    assert out.read_text() == "woke\n"
    assert worker.poll() is None
    os.kill(worker.pid, signal.SIGTERM)
    assert wait_exit(worker) == 0


def test_commands_get_default_sigpipe_and_an_empty_signal_mask(qhome: Path, procs: Procs) -> None:
    """CPython ignores SIGPIPE; a job's pipeline must not inherit that (``yes`` would then
    report 'Broken pipe' instead of being stopped quietly by the signal)."""
    command = "yes | head -1 > /dev/null; grep -E '^Sig(Blk|Ign)' /proc/self/status"
    enqueue_job(qhome, {"id": "pipe", "command": command})
    assert wait_exit(procs.worker(qhome, "--burst")) == 0
    job = read_job(qhome, "completed", "pipe")
    assert job["last_exit_code"] == 0
    assert (qhome / "logs" / "pipe" / "1.err").read_text() == ""  # no "yes: Broken pipe"
    fields = dict(
        line.split(":\t") for line in (qhome / "logs" / "pipe" / "1.out").read_text().splitlines()
    )
    assert int(fields["SigBlk"], 16) == 0
    sigpipe_bit = 1 << (signal.SIGPIPE - 1)
    assert int(fields["SigIgn"], 16) & sigpipe_bit == 0


def test_a_busy_thread_lets_go_of_the_next_job_it_looked_ahead_at(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """A worker thread prepares its next job (locked, unclaimed) while its command runs, but
    only for a few milliseconds: behind a long command, that job stays free for others."""
    started, release = tmp_path / "a-started", tmp_path / "release"
    long_job = f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done"
    enqueue_job(qhome, {"id": "A", "command": long_job})
    enqueue_job(qhome, {"id": "B", "command": "echo B"})
    first = procs.worker(qhome, "--count", "1", log=tmp_path / "first.log")
    wait_until(started.exists, message="job A to start")
    second = procs.worker(qhome, "--count", "1", log=tmp_path / "second.log")
    # B can only complete while A still runs if the first worker let it go.
    wait_until(lambda: settled_in(qhome, "completed", "B"), message="B to complete")
    # a worker's name is <host>-<pid>-<random>:<thread>
    assert f"-{second.pid}-" in read_job(qhome, "completed", "B")["worker"]
    assert jobs_in(qhome, "processing") == ["A"]
    release.touch()
    for worker in (first, second):
        os.kill(worker.pid, signal.SIGTERM)
        assert wait_exit(worker) == 0
    assert sorted(jobs_in(qhome, "completed")) == ["A", "B"]
