"""Helpers shared by the ``test_workflow_*`` files (queues, pause, dependencies, hold,
restart, edit, labels, unique jobs, wait, drops).

Everything goes through the command line (CliRunner for pure CLI shape checks, real
processes where workers run) and the on-disk layout. Commands that need to be observed
while they run use :func:`gate_command`: each run records its own start (with its queue
and slot) and end times with ``date +%s.%N``, and waits for a release file in between,
so the tests compute concurrency from the intervals the commands wrote themselves.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from queuectl.cli.main import cli

from .conftest import wait_exit, wait_until

__all__ = [
    "ALL_STATES",
    "Run",
    "add",
    "assert_one_line_error",
    "assert_refused",
    "cli_ok",
    "drop",
    "gate_command",
    "invoke",
    "job_file",
    "max_overlap",
    "ok",
    "queues",
    "read_runs",
    "run_in",
    "started",
    "stop",
    "wait_started",
    "where",
]

ALL_STATES = (
    "pending",
    "processing",
    "completed",
    "failed",
    "dead",
    "cancelled",
    "blocked",
    "held",
)
"""Every state folder once workflows exist: the six of before, plus blocked/ and held/."""


# ------------------------------------------------------------------ the command line


def invoke(home: Path, *args: str, input: str | None = None) -> Result:
    """In-process CLI call (no worker may run in this process meanwhile)."""
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], input=input, catch_exceptions=False
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, nothing on stdout, one ``queuectl: error:`` line holding every
    fragment (compared case-insensitively); returns that line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("queuectl: error: "), lines[0]
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


def assert_refused(
    result: Result | subprocess.CompletedProcess[str], job_id: str, *why: str
) -> None:
    """An action refused because of the job's state: exit 1 and an error line that names the
    job and says why (one of ``why`` appears in it). Takes a CliRunner result or a process."""
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code == 1, (code, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("queuectl: error:")]
    assert len(errors) == 1, result.stderr
    assert job_id in errors[0], errors[0]
    assert any(word in errors[0] for word in why), (why, errors[0])


def run_in(
    home: Path,
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m queuectl --home HOME ARGS`` as a real process, optionally in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def cli_ok(home: Path, *args: str, cwd: Path | None = None, input: str | None = None) -> str:
    done = run_in(home, *args, cwd=cwd, input=input)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


def add(home: Path, *args: str, cwd: Path | None = None) -> str:
    """``queuectl add ARGS`` as a real process; the new (or existing) job's id."""
    out = cli_ok(home, "add", *args, cwd=cwd)
    assert len(out.splitlines()) == 1, out
    return out.strip()


def queues(home: Path) -> dict[str, dict]:
    """``queue list --json`` as a real process, by queue name."""
    listed = json.loads(cli_ok(home, "queue", "list", "--json"))
    assert isinstance(listed, list), listed
    return {entry["name"]: entry for entry in listed}


# ------------------------------------------------------------------ the on-disk layout


def where(home: Path, job_id: str) -> list[str]:
    """Every state folder that holds a file for ``job_id`` (exactly one when settled)."""
    return [state for state in ALL_STATES if (home / state / f"{job_id}.json").exists()]


def job_file(home: Path, job_id: str) -> dict:
    """The job's file, wherever it is; also checks there is exactly one and that the
    ``state`` field agrees with its folder (outside processing/)."""
    found = where(home, job_id)
    assert len(found) == 1, f"{job_id} is in {found}"
    data = json.loads((home / found[0] / f"{job_id}.json").read_text())
    if found[0] != "processing":
        assert data["state"] == found[0], (data["state"], found[0])
    return data


def drop(home: Path, name: str, data: dict | bytes, outside: Path) -> None:
    """Write a file completely elsewhere on the same filesystem, then rename it into
    ``pending/`` (the way other tools are told to submit work)."""
    outside.mkdir(exist_ok=True)
    staged = outside / name
    staged.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    staged.chmod(0o644)
    os.rename(staged, home / "pending" / name)


def stop(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM a worker that must still be running and wait for its clean exit."""
    assert worker.poll() is None, "the worker should still be running"
    os.kill(worker.pid, signal.SIGTERM)
    assert wait_exit(worker, timeout=30) == 0


# ------------------------------------------------------------------ observed commands


def gate_command(stamps: Path, release: Path | None = None, work: float = 0.0) -> str:
    """A command that records ``<stamps>/<job id>.start`` (``time|queue|slot``), waits until
    ``release`` exists (default: a per-job ``<stamps>/<job id>.release``), sleeps ``work``
    seconds, then records ``<stamps>/<job id>.end`` (``time``). Each record is written to a
    tmp file and renamed, so a reader never sees half a line."""
    d = shlex.quote(str(stamps))
    gate = shlex.quote(str(release)) if release is not None else f'{d}/"$QUEUECTL_JOB_ID".release'
    me = f'{d}/"$QUEUECTL_JOB_ID"'
    lines = [
        f'printf \'%s|%s|%s\\n\' "$(date +%s.%N)" "$QUEUECTL_QUEUE" "$QUEUECTL_SLOT"'
        f" > {me}.start.tmp && mv {me}.start.tmp {me}.start",
        f"while [ ! -e {gate} ]; do sleep 0.02; done",
    ]
    if work:
        lines.append(f"sleep {work}")
    lines.append(f"date +%s.%N > {me}.end.tmp && mv {me}.end.tmp {me}.end")
    return "; ".join(lines)


@dataclass(frozen=True)
class Run:
    """One run as its command recorded it: the real run encloses [start, end]."""

    job_id: str
    start: float
    end: float  # math.inf while it has not recorded its end
    queue: str
    slot: int | None


def read_runs(stamps: Path) -> dict[str, Run]:
    runs = {}
    for path in stamps.glob("*.start"):
        job_id = path.name[: -len(".start")]
        when, queue, slot = path.read_text().rstrip("\n").split("|")
        end_path = stamps / f"{job_id}.end"
        end = float(end_path.read_text()) if end_path.exists() else math.inf
        runs[job_id] = Run(job_id, float(when), end, queue, int(slot) if slot else None)
    return runs


def started(stamps: Path) -> set[str]:
    return {path.name[: -len(".start")] for path in stamps.glob("*.start")}


def max_overlap(runs: list[Run]) -> int:
    """The most runs that were active at one instant (an end and a start at the very same
    nanosecond count as not overlapping)."""
    events = sorted([(r.start, 1) for r in runs] + [(r.end, -1) for r in runs])
    most = active = 0
    for _, delta in events:
        active += delta
        most = max(most, active)
    return most


def wait_started(stamps: Path, count: int, timeout: float = 30) -> None:
    wait_until(
        lambda: len(started(stamps)) >= count,
        timeout=timeout,
        message=f"{count} observed command(s) to start (started: {sorted(started(stamps))})",
    )
