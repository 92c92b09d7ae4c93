"""Helpers shared by ``test_schedules.py``, ``test_hooks.py`` and ``test_gpus.py``.

Everything a user can see goes through the real command line (``python -m queuectl`` as a
process; workers are real ``worker start`` processes, killed with SIGKILL where a test says
so). Commands that must be observed record their own start and end times (``date +%s.%N``)
and what they were given (devices, environment) into files, written to a tmp name and
renamed, so a reader never sees half a record. Waiting is polling a condition up to a
generous deadline (the machine has two noisy cores), never a fixed sleep.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from queuectl.cli.main import cli

from .conftest import Procs, journal_records, wait_exit, wait_until

__all__ = [
    "FINAL",
    "STATES",
    "Interval",
    "all_jobs",
    "assert_clean_error",
    "enqueued_counts",
    "here_ok",
    "kill9",
    "max_overlap",
    "q",
    "q_ok",
    "read_intervals",
    "run_here",
    "spawn_worker",
    "stamp_command",
    "term",
    "wait_for",
    "worker_pids",
]

STATES = (
    "pending",
    "processing",
    "completed",
    "failed",
    "dead",
    "cancelled",
    "blocked",
    "held",
)
FINAL = ("completed", "dead", "cancelled")


# ------------------------------------------------------------------ the command line


def q(
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """``python -m queuectl --home HOME ARGS`` as a real process (``env`` is added to ours)."""
    full = dict(os.environ)
    full.pop("QUEUECTL_HOME", None)
    if env:
        full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
    )


def run_here(home: Path, *args: str, input: str | None = None) -> Result:
    """The command line in this process (fast; no worker may run in this process)."""
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def here_ok(home: Path, *args: str, input: str | None = None) -> str:
    result = run_here(home, *args, input=input)
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
    return result.stdout


def q_ok(home: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = q(home, *args, env=env)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def assert_clean_error(
    done: subprocess.CompletedProcess[str] | Result, code: int | tuple[int, ...], *fragments: str
) -> str:
    """Exit ``code`` (or one of them), one ``queuectl: error:`` line on stderr holding every
    fragment (case-insensitive), no traceback and no "internal error" (queuectl's name for
    an exception it did not expect: a bug)."""
    codes = (code,) if isinstance(code, int) else code
    got = done.exit_code if isinstance(done, Result) else done.returncode
    assert got in codes, (got, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("queuectl: error: "), lines[0]
    assert "internal error" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


# ------------------------------------------------------------------ workers


def spawn_worker(
    procs: Procs,
    home: Path,
    *args: str,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``worker start ARGS`` in the background (stderr, its log, appended to ``log``); it
    and whatever its commands leave behind are SIGKILLed at teardown (``Procs``)."""
    procs.watch_home(home)
    full = dict(os.environ)
    full.pop("QUEUECTL_HOME", None)
    if env:
        full.update(env)
    handle = open(log, "ab") if log is not None else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "--home", str(home), "worker", "start", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=handle if handle is not None else subprocess.DEVNULL,
            env=full,
        )
    finally:
        if handle is not None:
            handle.close()
    procs.procs.append(proc)
    return proc


def worker_pids(home: Path) -> set[int]:
    """Pids of the live workers ``status --json`` lists."""
    listed = json.loads(q_ok(home, "status", "--json"))["workers"]
    return {int(w["pid"]) for w in listed}


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker that must still be running and reap it."""
    assert proc.poll() is None, "the worker should still be running"
    os.kill(proc.pid, signal.SIGKILL)
    wait_exit(proc, timeout=30)


def term(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM a worker (it finishes its running jobs) and wait for it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    return wait_exit(proc, timeout=timeout)


def wait_for(
    condition: Callable[[], bool], message: str, timeout: float = 45, interval: float = 0.05
) -> None:
    wait_until(condition, timeout=timeout, interval=interval, message=message)


# ------------------------------------------------------------------ the on-disk layout


def all_jobs(home: Path, settled: bool = False) -> dict[str, tuple[str, dict]]:
    """Every job file of the home: id -> (folder, parsed file). While workers run a job
    may be seen in two folders for an instant (its new file is published before the old
    one goes): the later state wins. ``settled``: workers are stopped, so a job in two
    folders is a failure."""
    found: dict[str, tuple[str, dict]] = {}
    for state in STATES:
        folder = home / state
        if not folder.is_dir():
            continue
        for path in folder.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # renamed away (or being replaced) while we looked
            job_id = path.name[: -len(".json")]
            if settled:
                assert job_id not in found, (job_id, state, found[job_id][0])
            if job_id not in found or found[job_id][0] == "processing":
                found[job_id] = (state, data)
    return found


def enqueued_counts(home: Path) -> Counter[str]:
    """How many ``enqueued`` journal records each job id has."""
    counts: Counter[str] = Counter()
    for record in journal_records(home):
        job = record.get("job")
        if record.get("event") == "enqueued" and isinstance(job, dict):
            counts[str(job.get("id"))] += 1
    return counts


# ------------------------------------------------------------------ observed commands


def stamp_command(stamps: Path, *, gate: Path | None = None, work: float = 0.0) -> str:
    """A command that records ``<stamps>/<job>.<run>.start`` as
    ``time|CUDA_VISIBLE_DEVICES|QUEUECTL_GPUS`` (``-`` for a variable that is not set),
    waits until ``gate`` exists (if given), sleeps ``work`` seconds, then records
    ``<stamps>/<job>.<run>.end`` (its time). The lock descriptor 3 stays open throughout."""
    d = shlex.quote(str(stamps))
    me = f'{d}/"$QUEUECTL_JOB_ID.$QUEUECTL_RUN"'
    parts = [
        'printf \'%s|%s|%s\\n\' "$(date +%s.%N)" "${CUDA_VISIBLE_DEVICES--}" '
        f'"${{QUEUECTL_GPUS--}}" > {me}.start.tmp && mv {me}.start.tmp {me}.start'
    ]
    if gate is not None:
        parts.append(f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.02; done")
    if work:
        parts.append(f"sleep {work}")
    parts.append(f"date +%s.%N > {me}.end.tmp && mv {me}.end.tmp {me}.end")
    return "; ".join(parts)


@dataclass(frozen=True)
class Interval:
    """One run as its command recorded it (the real run encloses [start, end])."""

    name: str  # <job id>.<run>
    start: float
    end: float  # math.inf while it has not recorded its end
    cuda: str
    gpus: str

    @property
    def job(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def devices(self) -> list[str]:
        return [d for d in self.cuda.split(",") if d] if self.cuda != "-" else []


def read_intervals(stamps: Path) -> list[Interval]:
    out = []
    for path in sorted(stamps.glob("*.start")):
        name = path.name[: -len(".start")]
        when, cuda, gpus = path.read_text().rstrip("\n").split("|")
        end_path = stamps / f"{name}.end"
        end = float(end_path.read_text()) if end_path.exists() else math.inf
        out.append(Interval(name, float(when), end, cuda, gpus))
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals active at one instant (an end and a start at the same nanosecond
    do not overlap)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = active = 0
    for _, delta in events:
        active += delta
        most = max(most, active)
    return most


def now() -> float:
    return time.time()
