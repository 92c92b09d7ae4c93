#!/usr/bin/env python3
"""End-to-end verification of the installed ``queuectl`` CLI.

Every scenario runs the real command (``queuectl`` from PATH, else ``python -m queuectl``)
against a fresh temporary home, checks the on-disk layout (``<home>/<state>/<id>.json``,
``journal/``, ``logs/``, ``workers/``, ``rejected/``) and prints one line::

    PASS <name>
    FAIL <name>: <reason>

followed by ``N passed, N failed``. The exit status is 1 if any scenario failed.

Synchronisation is by polling a condition every few tens of milliseconds up to a deadline,
never by sleeping for a guessed time; every subprocess wait has a timeout, and background
workers are killed (by process group) when a scenario ends, whatever happened.
Set ``VERIFY_KEEP=1`` to keep the temporary folders for inspection.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.025
CLI_TIMEOUT = 30.0
"""Ceiling for one short CLI call (enqueue, status, config, ...)."""
WORKER_TIMEOUT = 60.0
"""Ceiling for a worker run or a background worker to exit."""
STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")
ROOT = Path(__file__).resolve().parent


def cli_command() -> list[str]:
    """The installed CLI: ``queuectl`` on PATH, or the module run by this interpreter."""
    found = shutil.which("queuectl")
    return [found] if found else [sys.executable, "-m", "queuectl"]


CLI = cli_command()


class Failure(Exception):
    """A scenario check did not hold; the message is the reason printed after FAIL."""


def check(condition: object, reason: str) -> None:
    """Fail the current scenario with ``reason`` unless ``condition`` is truthy."""
    if not condition:
        raise Failure(reason)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` every POLL_SECONDS until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_SECONDS)


# ------------------------------------------------------------------ environment


@dataclass
class Env:
    """One scenario's world: a fresh queue home, a scratch folder and its background workers."""

    home: Path
    scratch: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    # ---- running the CLI

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``queuectl --home HOME ARGS`` to completion and capture its output."""
        try:
            return subprocess.run(
                [*CLI, "--home", str(self.home), *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Failure(f"'queuectl {' '.join(args)}' did not finish in {timeout:g}s") from None

    def ok(self, *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> str:
        """Run the CLI, require exit 0 and return its stdout."""
        result = self.run(*args, stdin=stdin, timeout=timeout)
        check(
            result.returncode == 0,
            f"'queuectl {' '.join(args)}' exited {result.returncode}: {last_line(result.stderr)}",
        )
        return result.stdout

    def enqueue(self, job: dict[str, Any]) -> str:
        """Enqueue one job and return the id the CLI printed."""
        return self.ok("enqueue", json.dumps(job)).strip()

    def start_worker(self, *args: str, log_name: str = "worker") -> subprocess.Popen[bytes]:
        """Start ``worker start ARGS`` in the background, in a session of its own, with its
        stderr (the worker's log) in the scratch folder."""
        log_path = self.scratch / f"{log_name}-{len(self.procs)}.log"
        log = log_path.open("wb")
        try:
            proc = subprocess.Popen(
                [*CLI, "--home", str(self.home), "worker", "start", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def kill_all(self) -> None:
        """Kill every background worker's process group and reap it."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # ---- looking at the home

    def ids(self, state: str) -> set[str]:
        """Ids of the job files in one state folder."""
        return {p.stem for p in (self.home / state).glob("*.json") if not p.name.startswith(".")}

    def job(self, state: str, job_id: str) -> dict[str, Any]:
        """The stored JSON of one job file."""
        return json.loads((self.home / state / f"{job_id}.json").read_text())

    def journal(self) -> list[dict[str, Any]]:
        """Every journal record (lines of ``<crc32> <json>``), in file order."""
        records = []
        for segment in sorted((self.home / "journal").glob("*.log")):
            for line in segment.read_text().splitlines():
                _, _, payload = line.partition(" ")
                records.append(json.loads(payload))
        return records

    def listing(self) -> dict[str, tuple[int, int] | None]:
        """Every path under the home with (size, mtime_ns) for files: a change detector."""
        found: dict[str, tuple[int, int] | None] = {}
        for path in sorted(self.home.rglob("*")):
            st = path.lstat()
            is_file = path.is_file() and not path.is_symlink()
            found[str(path.relative_to(self.home))] = (
                (st.st_size, st.st_mtime_ns) if is_file else None
            )
        return found

    def worker_log(self, proc: subprocess.Popen[bytes]) -> str:
        """The stderr log of a background worker (for failure messages)."""
        path = self.logs.get(proc.pid)
        return path.read_text(errors="replace") if path else ""


@contextmanager
def fresh_env() -> Iterator[Env]:
    """A new empty home and scratch folder; workers are killed and folders removed after."""
    home = Path(tempfile.mkdtemp(prefix="queuectl-home-"))
    scratch = Path(tempfile.mkdtemp(prefix="queuectl-scratch-"))
    env = Env(home=home, scratch=scratch)
    try:
        yield env
    finally:
        env.kill_all()
        if not os.environ.get("VERIFY_KEEP"):
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)


def wait_exit(proc: subprocess.Popen[bytes], what: str, timeout: float = WORKER_TIMEOUT) -> int:
    """Wait for a background process to exit and return its exit code."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"{what} (pid {proc.pid}) still running after {timeout:g}s") from None


def last_line(text: str) -> str:
    """The last non-empty line of some output, for short failure messages."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def parse_time(text: str) -> datetime:
    """queuectl timestamps: ISO 8601 UTC with a trailing Z."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_processing(env: Env, proc: subprocess.Popen[bytes], job_id: str | None = None) -> None:
    """Wait until a job (``job_id``, or any) sits in processing/, failing early if the worker
    died instead."""

    def running() -> bool:
        if proc.poll() is not None:
            raise Failure(f"worker exited {proc.returncode}: {last_line(env.worker_log(proc))}")
        busy = env.ids("processing")
        return job_id in busy if job_id else bool(busy)

    wait_until(running, f"{job_id or 'a job'} in processing/")


def run_burst(env: Env, *args: str) -> None:
    """Run ``worker start --burst ARGS`` in the foreground; require exit 0."""
    env.ok("worker", "start", "--burst", *args, timeout=WORKER_TIMEOUT)


# ------------------------------------------------------------------ scenarios


def scenario_job_completes(env: Env) -> None:
    """A simple job runs once, ends in completed/ with exit code 0 and captured stdout."""
    job_id = env.enqueue({"command": "echo hello"})
    check(job_id in env.ids("pending"), f"{job_id} not in pending/ after enqueue")
    run_burst(env)
    check(env.ids("completed") == {job_id}, f"completed/ holds {sorted(env.ids('completed'))}")
    job = env.job("completed", job_id)
    check(job["last_exit_code"] == 0, f"last_exit_code is {job['last_exit_code']!r}")
    check(job["attempts"] == 1, f"attempts is {job['attempts']!r}")
    out = env.home / "logs" / job_id / "1.out"
    check(out.exists(), f"{out} missing")
    check(out.read_text() == "hello\n", f"stdout captured as {out.read_text()!r}")


def scenario_retry_backoff_dlq(env: Env) -> None:
    """A failing job is retried after base**1 seconds, then lands in the DLQ."""
    base, max_retries = 2, 1
    env.ok("config", "set", "backoff-base", str(base))
    job_id = env.enqueue({"command": "echo boom >&2; exit 3", "max_retries": max_retries})
    run_burst(env)
    check(env.ids("dead") == {job_id}, f"dead/ holds {sorted(env.ids('dead'))}")
    job = env.job("dead", job_id)
    check(
        job["attempts"] == max_retries + 1,
        f"attempts is {job['attempts']}, expected {max_retries + 1}",
    )
    check(job["last_exit_code"] == 3, f"last_exit_code is {job['last_exit_code']!r}")
    check("boom" in (job["last_error"] or ""), f"last_error is {job['last_error']!r}")
    dlq = json.loads(env.ok("dlq", "list", "--json"))
    check([j["id"] for j in dlq] == [job_id], f"dlq list --json shows {dlq!r}")

    events = [r for r in env.journal() if r.get("job", {}).get("id") == job_id]
    names = [r["event"] for r in events]
    check(names == ["enqueued", "failed", "dead"], f"journal events are {names}")
    first_end = parse_time(events[1]["job"]["finished_at"])
    second_start = parse_time(events[2]["job"]["started_at"])
    gap = (second_start - first_end).total_seconds()
    check(gap >= base**1 - 0.01, f"retry started {gap:.3f}s after the failure (< {base}s)")
    check(gap < base**1 + 5, f"retry started {gap:.3f}s after the failure (far too late)")


def scenario_many_jobs_exactly_once(env: Env) -> None:
    """200 jobs over 3 processes x 4 threads: every job runs exactly once."""
    total = 200
    shared = env.scratch / "ran.txt"
    ids = [f"job{n:03d}" for n in range(total)]
    lines = [json.dumps({"id": i, "command": f"echo {i} >> {shared}"}) for i in ids]
    printed = env.ok("enqueue", "-", stdin="\n".join(lines) + "\n").split()
    check(printed == ids, f"enqueue printed {len(printed)} ids, expected {total}")
    workers = [env.start_worker("--burst", "--count", "4") for _ in range(3)]
    codes = [wait_exit(w, "burst worker") for w in workers]
    check(codes == [0, 0, 0], f"worker exit codes {codes}")
    ran = shared.read_text().split() if shared.exists() else []
    twice = sorted({i for i in ran if ran.count(i) > 1})
    missing = sorted(set(ids) - set(ran))
    check(not twice, f"{len(twice)} job(s) ran more than once, e.g. {twice[:3]}")
    check(not missing, f"{len(missing)} job(s) never ran, e.g. {missing[:3]}")
    check(len(ran) == total, f"{len(ran)} lines in the shared file, expected {total}")
    completed = env.ids("completed")
    check(completed == set(ids), f"{len(completed)} of {total} jobs in completed/")


def scenario_sigkill_recovery(env: Env) -> None:
    """A worker SIGKILLed mid-job: a new worker recovers and completes everything."""
    out = env.scratch / "f"
    ids = [f"k{n}" for n in range(6)]
    for job_id in ids:
        env.enqueue({"id": job_id, "command": f'sleep 0.3; echo "$QUEUECTL_JOB_ID" >> {out}'})
    victim = env.start_worker("--count", "2")
    wait_processing(env, victim)
    os.killpg(victim.pid, signal.SIGKILL)
    code = wait_exit(victim, "SIGKILLed worker", timeout=10)
    check(code == -signal.SIGKILL, f"killed worker exit status {code}")
    orphaned = env.ids("processing")
    check(orphaned, "processing/ empty right after the SIGKILL (nothing to recover)")
    run_burst(env)
    check(not env.ids("processing"), f"still in processing/: {sorted(env.ids('processing'))}")
    check(env.ids("completed") == set(ids), f"completed/ holds {sorted(env.ids('completed'))}")
    ran = set(out.read_text().split())
    check(ran == set(ids), f"jobs that wrote output: {sorted(ran)}")


def scenario_restart_keeps_jobs(env: Env) -> None:
    """Pending jobs survive a SIGTERMed worker on disk and complete after a restart."""
    out = env.scratch / "f"
    long_id = env.enqueue({"id": "long", "command": f"sleep 1; echo long >> {out}"})
    rest = [env.enqueue({"id": f"r{n}", "command": f"echo r{n} >> {out}"}) for n in range(3)]
    worker = env.start_worker("--count", "1")
    wait_processing(env, worker, long_id)
    worker.send_signal(signal.SIGTERM)
    code = wait_exit(worker, "SIGTERMed worker")
    check(code == 0, f"worker exited {code} after SIGTERM")
    check(env.ids("completed") == {long_id}, f"completed/ holds {sorted(env.ids('completed'))}")
    check(env.ids("pending") == set(rest), f"pending/ holds {sorted(env.ids('pending'))}")
    for job_id in rest:
        job = env.job("pending", job_id)
        check(job["state"] == "pending", f"{job_id} file says state {job['state']!r}")
        check(job["attempts"] == 0, f"{job_id} has attempts {job['attempts']}")
    run_burst(env)
    check(
        env.ids("completed") == {long_id, *rest},
        f"completed/ holds {sorted(env.ids('completed'))}",
    )
    check(sorted(out.read_text().split()) == sorted(["long", *rest]), "unexpected job output")


def scenario_invalid_command(env: Env) -> None:
    """An unknown command exits 127, goes to the DLQ, and other jobs still run."""
    bad = env.enqueue({"command": "nonexistent_command_xyz", "max_retries": 0})
    good = env.enqueue({"command": f"touch {env.scratch / 'good'}"})
    run_burst(env, "--count", "1")
    check(env.ids("dead") == {bad}, f"dead/ holds {sorted(env.ids('dead'))}")
    job = env.job("dead", bad)
    check(job["last_exit_code"] == 127, f"last_exit_code is {job['last_exit_code']!r}")
    error = job["last_error"] or ""
    check("not found" in error.lower(), f"last_error does not say 'not found': {error!r}")
    check(env.ids("completed") == {good}, f"completed/ holds {sorted(env.ids('completed'))}")
    check((env.scratch / "good").exists(), "the good job's command did not run")


def scenario_sigterm_finishes_running(env: Env) -> None:
    """SIGTERM lets the running job finish and leaves the next one pending."""
    done_a, done_b = env.scratch / "doneA", env.scratch / "doneB"
    a = env.enqueue({"id": "A", "command": f"sleep 1; touch {done_a}"})
    b = env.enqueue({"id": "B", "command": f"touch {done_b}"})
    worker = env.start_worker("--count", "1")
    wait_processing(env, worker, a)
    worker.send_signal(signal.SIGTERM)
    code = wait_exit(worker, "SIGTERMed worker")
    check(code == 0, f"worker exited {code}: {last_line(env.worker_log(worker))}")
    check(env.ids("completed") == {a}, f"completed/ holds {sorted(env.ids('completed'))}")
    check(done_a.exists(), "job A's command did not finish")
    check(env.ids("pending") == {b}, f"pending/ holds {sorted(env.ids('pending'))}")
    check(not done_b.exists(), "job B ran although the worker was stopping")
    check(not env.ids("processing"), f"processing/ holds {sorted(env.ids('processing'))}")


def scenario_worker_stop(env: Env) -> None:
    """``worker stop`` stops every worker process of the home; a second call exits 1."""
    workers = [env.start_worker("--count", "2") for _ in range(2)]
    expected = {w.pid for w in workers}

    def listed() -> bool:
        for w in workers:
            if w.poll() is not None:
                raise Failure(f"worker exited {w.returncode}: {last_line(env.worker_log(w))}")
        status = json.loads(env.ok("status", "--json"))
        return {w.get("pid") for w in status["workers"]} == expected

    wait_until(listed, "both workers in status --json")
    result = env.run("worker", "stop", "--timeout", "30", timeout=45)
    check(result.returncode == 0, f"worker stop exited {result.returncode}: {result.stderr!r}")
    codes = [wait_exit(w, "worker after 'worker stop'", timeout=5) for w in workers]
    check(codes == [0, 0], f"worker exit codes {codes}")
    again = env.run("worker", "stop")
    check(again.returncode == 1, f"second worker stop exited {again.returncode}")
    check(again.stderr.strip(), "second worker stop printed no message on stderr")
    check("Traceback" not in again.stderr, "second worker stop printed a traceback")


def scenario_dropped_files(env: Env) -> None:
    """Files written into pending/ by other tools run; an invalid one is rejected."""
    worker = env.start_worker("--count", "2")
    wait_until(lambda: any((env.home / "workers").glob("*.json")), "the worker to register")
    pending = env.home / "pending"
    tmp = pending / "drop1.json.tmp"
    tmp.write_text(json.dumps({"command": "echo dropped"}))
    tmp.rename(pending / "drop1.json")
    (pending / "drop2.json").write_text(json.dumps({"id": "custom2", "command": "echo direct"}))
    (pending / "bad.json").write_text("not json")

    def settled() -> bool:
        if worker.poll() is not None:
            raise Failure(f"worker exited {worker.returncode}")
        return (
            env.ids("completed") >= {"drop1", "custom2"}
            and (env.home / "rejected" / "bad.json.reason").exists()
        )

    wait_until(settled, "dropped jobs to complete and bad.json to be rejected")
    check(
        env.ids("completed") == {"drop1", "custom2"},
        f"completed/ holds {sorted(env.ids('completed'))}",
    )
    for job_id, text in (("drop1", "dropped\n"), ("custom2", "direct\n")):
        out = env.home / "logs" / job_id / "1.out"
        check(out.exists() and out.read_text() == text, f"{out} does not hold {text!r}")
    check(not (pending / "bad.json").exists(), "bad.json is still in pending/")
    check((env.home / "rejected" / "bad.json").exists(), "rejected/bad.json missing")
    reason = (env.home / "rejected" / "bad.json.reason").read_text()
    check("json" in reason.lower(), f"reason does not explain the problem: {reason!r}")
    status = env.ok("status")
    check("rejected" in status and "bad.json" in status, "status does not mention bad.json")
    rejected = json.loads(env.ok("status", "--json"))["rejected"]
    check([r["file"] for r in rejected] == ["bad.json"], f"status --json rejected: {rejected}")
    worker.send_signal(signal.SIGTERM)
    check(wait_exit(worker, "worker") == 0, "worker did not exit 0 after SIGTERM")


def scenario_bad_input(env: Env) -> None:
    """Bad input: exit 2 (1 for a duplicate), one clear stderr line, no change on disk."""
    env.enqueue({"id": "dup", "command": "true"})
    cases: list[tuple[str, list[str], int, str]] = [
        ("invalid JSON", ["enqueue", "{not json"], 2, "json"),
        ("missing command", ["enqueue", '{"id": "x1"}'], 2, "command"),
        ("unsafe id", ["enqueue", '{"id": "../x", "command": "true"}'], 2, "id"),
        ("duplicate id", ["enqueue", '{"id": "dup", "command": "true"}'], 1, "exists"),
        ("bad config value", ["config", "set", "max-retries", "-1"], 2, "max-retries"),
        ("out-of-range config value", ["config", "set", "max-retries", "1001"], 2, "max-retries"),
        ("unknown config key", ["config", "set", "no-such-key", "1"], 2, "unknown"),
    ]
    problems = []
    for label, args, code, word in cases:
        before = env.listing()
        result = env.run(*args)
        after = env.listing()
        lines = result.stderr.splitlines()
        if result.returncode != code:
            problems.append(f"{label}: exit {result.returncode}, expected {code}")
        if "Traceback" in result.stderr:
            problems.append(f"{label}: traceback on stderr")
        elif len(lines) != 1:
            problems.append(f"{label}: {len(lines)} stderr lines, expected 1: {lines}")
        elif word not in lines[0].lower():
            problems.append(f"{label}: message {lines[0]!r} does not mention {word!r}")
        if before != after:
            changed = sorted(set(before.items()) ^ set(after.items()))
            problems.append(f"{label}: home changed on disk: {changed[:3]}")
    check(not problems, "; ".join(problems))


# ------------------------------------------------------------------ reliability (issue 3)


def tree(env: Env) -> dict[str, bytes]:
    """Every job file's bytes, by <state>/<file>."""
    return {
        f"{state}/{p.name}": p.read_bytes()
        for state in STATES
        for p in sorted((env.home / state).glob("*.json"))
    }


def scenario_journal_rebuild(env: Env) -> None:
    """Delete every state folder; `journal rebuild` recreates the same tree from the journal."""
    env.ok("config", "set", "backoff-base", "1")
    env.enqueue({"id": "ok", "command": "true"})
    env.enqueue({"id": "bad", "command": "exit 2", "max_retries": 0})
    env.enqueue({"id": "waiting", "command": "true", "run_at": "2030-01-01T00:00:00Z"})
    env.ok("cancel", "waiting")
    run_burst(env)
    env.enqueue({"id": "queued", "command": "true"})
    before = tree(env)
    for state in STATES:
        shutil.rmtree(env.home / state)
    out = env.ok("journal", "rebuild")
    check("4 written" in out or "5 written" in out, f"rebuild said {out.strip()!r}")
    check(tree(env) == before, "the rebuilt tree differs from the original")


def scenario_fsck_repair(env: Env) -> None:
    """fsck finds a torn journal tail, a job in two folders and a stale tmp file; --repair
    fixes them and a second fsck is clean."""
    env.enqueue({"id": "a", "command": "true"})
    run_burst(env)
    check(env.run("fsck").returncode == 0, "fsck of a fresh home is not clean")
    shutil.copy(env.home / "completed" / "a.json", env.home / "pending" / "a.json")
    (env.home / "tmp" / "x.999999.dead.tmp").write_text("{}")
    segment = sorted((env.home / "journal").glob("*.log"))[-1]
    with segment.open("ab") as handle:
        handle.write(b'deadbeef {"torn')
    found = env.run("fsck")
    check(found.returncode == 1, f"fsck exited {found.returncode} on a damaged home")
    for kind in ("journal-torn-tail", "duplicate", "stale-tmp"):
        check(f"{kind}:" in found.stdout, f"fsck did not report {kind}: {found.stdout!r}")
    env.run("fsck", "--repair")
    again = env.run("fsck")
    check(again.returncode == 0, f"fsck after --repair: {again.stdout.strip()!r}")
    check(env.ids("completed") == {"a"} and not env.ids("pending"), "the duplicate remained")


def scenario_kill_loop(env: Env) -> None:
    """200 jobs, 2 worker processes x 4 threads, 20 SIGKILLs: nothing lost, duplicates only
    near kills, and a byte-exact rebuild (tools/kill_loop.py)."""
    tool = ROOT / "tools" / "kill_loop.py"
    check(tool.exists(), f"{tool} missing")
    proc = subprocess.run(
        [
            sys.executable,
            str(tool),
            "--jobs",
            "200",
            "--kills",
            "20",
            "--seed",
            "3",
            "--home",
            str(env.scratch),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    check(proc.stdout.strip(), f"kill loop printed nothing: {last_line(proc.stderr)}")
    result = json.loads(proc.stdout)
    check(not result["problems"], "; ".join(result["problems"]))
    check(result["kills"] == 20, f"only {result['kills']} kills")


# ------------------------------------------------------------------ scheduling (issue 5)


def scenario_priority(env: Env) -> None:
    """Higher priority first, FIFO within one priority (one worker thread)."""
    out = env.scratch / "order"
    for job_id, priority in (("low-a", 0), ("high", 50), ("low-b", 0), ("mid", 10)):
        env.enqueue({"id": job_id, "priority": priority, "command": f"echo {job_id} >> {out}"})
    run_burst(env, "--count", "1")
    order = out.read_text().split()
    check(order == ["high", "mid", "low-a", "low-b"], f"ran in order {order}")


def scenario_delayed(env: Env) -> None:
    """A job with --delay never starts before its run_at, and starts soon after it."""
    job_id = env.ok("enqueue", "--delay", "2s", json.dumps({"command": "true"})).strip()
    run_at = parse_time(env.job("pending", job_id)["run_at"])
    run_burst(env)
    started = parse_time(env.job("completed", job_id)["started_at"])
    check(started >= run_at, f"started at {started} before its run_at {run_at}")
    check((started - run_at).total_seconds() < 1.5, f"started {started - run_at} late")


def scenario_timeout(env: Env) -> None:
    """A per-job timeout kills the command's process group; the attempt fails as 'timeout'."""
    pid_file = env.scratch / "child"
    job_id = env.enqueue(
        {"command": f"sleep 300 & echo $! > {pid_file}; wait", "timeout": 1, "max_retries": 0}
    )
    run_burst(env)
    job = env.job("dead", job_id)
    check(job["last_error"].startswith("timeout"), f"last_error {job['last_error']!r}")
    child = int(pid_file.read_text())
    check(
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
        f"the job's child {child} survived the timeout",
    )


def scenario_backoff_controls(env: Env) -> None:
    """backoff-max caps the delay: with base 10 the second retry would wait 100 s, capped to 1."""
    env.ok("config", "set", "backoff-base", "10")
    env.ok("config", "set", "backoff-max", "1")
    env.ok("config", "set", "backoff-jitter", "0.5")
    job_id = env.enqueue({"command": "exit 1", "max_retries": 2})
    run_burst(env)
    history = env.job("dead", job_id)["history"]
    check(len(history) == 3, f"{len(history)} attempts, expected 3")
    for before, after in itertools.pairwise(history):
        gap = (parse_time(after["started_at"]) - parse_time(before["finished_at"])).total_seconds()
        check(gap <= 1.5, f"waited {gap:.2f}s between attempts despite backoff-max 1")


def scenario_env_and_cwd(env: Env) -> None:
    """cwd and env reach the command, with QUEUECTL_JOB_ID and QUEUECTL_ATTEMPT."""
    work = env.scratch / "work"
    work.mkdir()
    job_id = env.enqueue(
        {
            "cwd": str(work),
            "env": {"WHO": "verify"},
            "command": 'echo "$WHO $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" > out',
        }
    )
    run_burst(env)
    text = (work / "out").read_text().strip()
    check(text == f"verify {job_id} 1", f"the command wrote {text!r}")


def scenario_cancel(env: Env) -> None:
    """cancel: a pending job never runs; a running job is stopped; both end in cancelled/."""
    marker = env.scratch / "ran"
    env.enqueue({"id": "later", "command": f"touch {marker}", "run_at": "2030-01-01T00:00:00Z"})
    env.ok("cancel", "later")
    env.enqueue({"id": "busy", "command": "sleep 300"})
    worker = env.start_worker()
    wait_processing(env, worker, "busy")
    out = env.ok("cancel", "busy")
    check("it was running" in out, f"cancel said {out.strip()!r}")
    check(env.ids("cancelled") == {"later", "busy"}, f"cancelled/ holds {env.ids('cancelled')}")
    check(not marker.exists(), "the cancelled pending job ran")
    worker.send_signal(signal.SIGTERM)
    check(wait_exit(worker, "worker") == 0, "worker did not exit 0")


def scenario_dlq_bulk(env: Env) -> None:
    """dlq retry --all and dlq purge --all --yes; purge without --yes and no terminal refuses."""
    for i in range(3):
        env.enqueue({"id": f"d{i}", "command": "exit 1", "max_retries": 0})
    run_burst(env)
    check(len(env.ids("dead")) == 3, f"dead/ holds {env.ids('dead')}")
    env.ok("dlq", "retry", "--all")
    check(len(env.ids("pending")) == 3, "dlq retry --all did not move every job")
    run_burst(env)
    refused = env.run("dlq", "purge", "--all", stdin="")
    check(
        refused.returncode == 2 and "--yes" in refused.stderr and len(env.ids("dead")) == 3,
        f"purge without a terminal: exit {refused.returncode}, {refused.stderr.strip()!r}",
    )
    env.ok("dlq", "purge", "--all", "--yes")
    check(not env.ids("dead"), "dlq purge --all --yes left jobs")


def scenario_history_in_dlq(env: Env) -> None:
    """A dead job keeps each attempt's exit code, duration and stderr tail in its file."""
    env.ok("config", "set", "backoff-base", "1")
    job_id = env.enqueue({"command": "echo why-$QUEUECTL_ATTEMPT >&2; exit 5", "max_retries": 1})
    run_burst(env)
    history = env.job("dead", job_id)["history"]
    check([h["exit_code"] for h in history] == [5, 5], f"history {history}")
    check(history[-1]["stderr_tail"] == "why-2", f"stderr tail {history[-1]['stderr_tail']!r}")
    check(all(h["duration"] is not None for h in history), "a duration is missing")


def scenario_logs_show_wait_stats(env: Env) -> None:
    """logs prints an attempt's output; show lists every attempt from the journal; wait exits
    with the job's own exit code; stats counts the outcomes."""
    env.ok("config", "set", "backoff-base", "1")
    ok_id = env.enqueue({"command": "echo visible-output"})
    bad_id = env.enqueue({"command": "echo nope >&2; exit 7", "max_retries": 1})
    worker = env.start_worker("--count", "2")
    waited = env.run("wait", bad_id, "--timeout", "60")
    check(waited.returncode == 7, f"wait exited {waited.returncode}, expected the job's 7")
    check(env.run("wait", ok_id).returncode == 0, "wait on a completed job did not exit 0")
    check("visible-output" in env.ok("logs", ok_id), "logs did not print the job's stdout")
    check("nope" in env.ok("logs", bad_id, "--attempt", "2"), "logs --attempt 2 lacks stderr")
    shown = env.ok("show", bad_id)
    check(shown.count("exit code 7") >= 3, f"show does not list both attempts: {shown!r}")
    figures = json.loads(env.ok("stats", "--json"))
    check(
        figures["outcomes"] == {"completed": 1, "dead": 1, "failed": 1},
        f"stats outcomes {figures['outcomes']}",
    )
    worker.send_signal(signal.SIGTERM)
    check(wait_exit(worker, "worker") == 0, "worker did not exit 0")


def scenario_dashboard_and_metrics(env: Env) -> None:
    """metrics prints Prometheus text; the dashboard serves the same counts over HTTP and
    refuses a POST without its CSRF token."""
    import urllib.error
    import urllib.request

    env.enqueue({"command": "true"})
    run_burst(env)
    text = env.ok("metrics")
    check('queuectl_jobs{state="completed"} 1' in text, "metrics lacks the completed count")
    check("queuectl_run_seconds_count 1" in text, "metrics lacks the run time histogram")
    proc = subprocess.Popen(
        [*CLI, "--home", str(env.home), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    env.procs.append(proc)  # type: ignore[arg-type]
    assert proc.stdout is not None
    url = proc.stdout.readline().split()[3]
    with urllib.request.urlopen(url + "api/status", timeout=10) as response:
        status = json.loads(response.read())
    check(status["jobs"]["completed"] == 1, f"dashboard status {status}")
    request = urllib.request.Request(url + "api/jobs/x/retry", method="POST", data=b"")
    try:
        urllib.request.urlopen(request, timeout=10)
        check(False, "a POST without the CSRF token was accepted")
    except urllib.error.HTTPError as exc:
        check(exc.code == 403, f"POST without CSRF got {exc.code}")
    with urllib.request.urlopen(url + "metrics", timeout=10) as response:
        check(response.read().decode() == env.ok("metrics"), "/metrics differs from metrics")


def _dashboard(env: Env, *args: str) -> str:
    """Start ``queuectl dashboard --port 0 ARGS`` (killed with the env); its base URL."""
    proc = subprocess.Popen(
        [*CLI, "--home", str(env.home), "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    env.procs.append(proc)  # type: ignore[arg-type]
    assert proc.stdout is not None
    return proc.stdout.readline().split()[3].rstrip("/")


def scenario_dashboard_views_and_actions(env: Env) -> None:
    """The dashboard's views have addresses, its jobs view sorts ids naturally and searches
    commands, its actions (with the page's CSRF token) change the files as the CLI does, a
    foreign Origin is refused, markup in a command never reaches the page as markup, and
    --read-only refuses every change."""
    import re
    import urllib.error
    import urllib.request

    def get(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(url: str, headers: dict[str, str]) -> int:
        request = urllib.request.Request(url, method="POST", data=b"{}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    hostile = "echo '<script>alert(1)</script>' \x1b[2J"
    lines = [{"id": f"build-{i}", "command": f"echo {i}"} for i in (10, 2, 1)]
    lines += [{"id": "evil", "command": hostile, "run_at": "2099-01-01T00:00:00Z"}]
    env.ok("enqueue", "-", stdin="".join(json.dumps(j) + "\n" for j in lines[:3]))
    run_burst(env)
    env.enqueue(lines[3])
    env.ok("queue", "add", "gpu")
    base = _dashboard(env)
    for path in ("/", "/jobs", "/jobs/build-2", "/queues", "/workers", "/schedules"):
        status, html = get(base + path)
        check(status == 200 and 'type="module"' in html, f"GET {path}: {status}")
    status, html = get(base + "/jobs/evil")
    check("<script>alert" not in html, "a command's markup reached the page")
    csrf = re.search(r'name="csrf" content="([^"]+)"', html)
    check(csrf is not None, "the page has no CSRF token")
    assert csrf is not None
    status, body = get(base + "/api/jobs?sort=id&order=asc&state=completed")
    order = [j["id"] for j in json.loads(body)["jobs"]]
    check(order == ["build-1", "build-2", "build-10"], f"natural order: {order}")
    status, body = get(base + "/api/jobs?q=SCRIPT")
    check([j["id"] for j in json.loads(body)["jobs"]] == ["evil"], f"search: {body[:200]}")
    check(json.loads(get(base + "/api/jobs/evil")[1])["job"]["command"] == hostile, "evil text")
    headers = {"X-Queuectl-CSRF": csrf.group(1), "Content-Type": "application/json"}
    foreign = post(base + "/api/jobs/evil/cancel", {**headers, "Origin": "http://evil.test"})
    check(foreign == 403 and env.ids("pending") == {"evil"}, f"foreign Origin got {foreign}")
    check(post(base + "/api/jobs/evil/hold", headers) == 200, "hold refused")
    check(env.ids("held") == {"evil"}, f"held/ holds {env.ids('held')}")
    check(post(base + "/api/jobs/build-2/restart", headers) == 200, "restart refused")
    check("build-2" in env.ids("pending"), "build-2 not restarted")
    check(post(base + "/api/queues/gpu/pause", headers) == 200, "pause refused")
    check("paused" in env.ok("queue", "list"), "gpu not paused")
    check(post(base + "/api/jobs/evil/cancel", headers) == 200, "cancel refused")
    check(env.ids("cancelled") == {"evil"}, f"cancelled/ holds {env.ids('cancelled')}")
    watcher = _dashboard(env, "--read-only")
    before = env.listing()
    html = get(watcher + "/jobs")[1]
    token = re.search(r'name="csrf" content="([^"]+)"', html)
    assert token is not None
    code = post(watcher + "/api/jobs/build-1/restart", {**headers, "X-Queuectl-CSRF": token[1]})
    check(code == 403 and env.listing() == before, f"--read-only answered {code}")


def scenario_background_child_never_doubles_a_run(env: Env) -> None:
    """A failed run's background child (same process group, fd 3 kept) still works: the
    retry waits for it, because the job's lock follows the job, not its file."""
    log, release, second = env.scratch / "log", env.scratch / "release", env.scratch / "second"
    child = (
        f"(echo start $(date +%s.%N) >> {log}; while [ ! -e {release} ]; do sleep 0.05; done;"
        f" echo end $(date +%s.%N) >> {log}) &"
    )
    first_run = f"[ -e {second} ] || {{ touch {second}; exit 1; }}"
    command = f"{child} {first_run}; echo run2 $(date +%s.%N) >> {log}"
    env.ok("config", "set", "backoff-base", "1")
    env.enqueue({"id": "bg", "command": command, "max_retries": 2})
    proc = env.start_worker("--count", "2")
    wait_until(lambda: "bg" in env.ids("failed"), "the first run to fail")
    due = parse_time(env.job("failed", "bg")["next_run_at"]).timestamp()
    # Proving a negative needs time: let the retry's due time pass by a second and a half.
    time.sleep(max(0.0, due - time.time()) + 1.5)
    check("run2" not in log.read_text(), "the retry started while the first run's child ran")
    release.touch()
    wait_until(lambda: "bg" in env.ids("completed"), "the retry to complete")
    stamps: dict[str, float] = {}
    for line in log.read_text().splitlines():  # the first of each: run 1's child, run 2
        stamps.setdefault(line.split()[0], float(line.split()[1]))
    check(stamps["run2"] > stamps["end"], f"run 2 began before run 1's child ended: {stamps}")
    os.kill(proc.pid, signal.SIGTERM)
    check(wait_exit(proc, "the worker") == 0, "the worker did not exit 0 on SIGTERM")


def scenario_purged_id_can_be_reused(env: Env) -> None:
    """An id freed by ``dlq purge`` starts a new life: a rebuild from the journal alone keeps
    the new job (a new generation outranks the old life's deletion)."""
    env.enqueue({"id": "again", "command": "exit 5", "max_retries": 0})
    run_burst(env)
    check(env.ids("dead") == {"again"}, "the first life did not die")
    env.ok("dlq", "purge", "again", "--yes")
    env.enqueue({"id": "again", "command": "echo second life"})
    run_burst(env)
    for state in STATES:
        shutil.rmtree(env.home / state)
    env.ok("journal", "rebuild")
    check(env.ids("completed") == {"again"}, f"rebuild gave completed/ {env.ids('completed')}")
    check(env.job("completed", "again")["command"] == "echo second life", "the old life came back")
    lives = {run.get("life") for run in json.loads(env.ok("history", "again", "--json"))}
    check(lives == {1, 2}, f"history should list both lives, found {lives}")
    check(env.run("fsck").returncode == 0, "fsck is not clean after the rebuild")


def scenario_bad_config_is_reported(env: Env) -> None:
    """A damaged config.json is one error line naming it (exit 2), and nothing overwrites it."""
    env.ok("config", "set", "max-retries", "2")
    config = env.home / "config.json"
    config.write_text('{"max-retries": "lots"}')
    before = config.read_bytes()
    for args in (("enqueue", '{"command": "true"}'), ("config", "set", "job-timeout", "5")):
        result = env.run(*args)
        check(result.returncode == 2, f"{args[0]} exited {result.returncode}")
        lines = result.stderr.strip().splitlines()
        check(len(lines) == 1 and str(config) in lines[0], f"{args[0]} said {result.stderr!r}")
    check(config.read_bytes() == before, "config.json was overwritten")
    check(env.ids("pending") == set(), "a job was enqueued despite the bad settings")


def _stamps_command(stamps: Path, work: str = "0.2") -> str:
    """A command that records its own start and end (``date +%s.%N``) under ``stamps``."""
    me = f'{stamps}/"$QUEUECTL_JOB_ID"'
    return (
        f"echo $(date +%s.%N) $QUEUECTL_SLOT > {me}.start; sleep {work}; "
        f"echo $(date +%s.%N) > {me}.end"
    )


def _most_at_once(stamps: Path) -> int:
    events = []
    for start in stamps.glob("*.start"):
        end = start.with_suffix(".end")
        events += [(float(start.read_text().split()[0]), 1), (float(end.read_text()), -1)]
    most = active = 0
    for _, delta in sorted(events):
        active += delta
        most = max(most, active)
    return most


def scenario_add_a_plain_command(env: Env) -> None:
    """``add`` takes a command line without JSON, runs it in the caller's directory, and
    joins several arguments as the shell needs them."""
    here = env.scratch / "here"
    here.mkdir()
    job_id = subprocess.run(
        [*CLI, "--home", str(env.home), "add", "--", "printf", "%s|", "a b", "$HOME"],
        capture_output=True,
        text=True,
        cwd=here,
        timeout=CLI_TIMEOUT,
        check=True,
    ).stdout.strip()
    pwd_id = subprocess.run(
        [*CLI, "--home", str(env.home), "add", "pwd -P && echo ok"],
        capture_output=True,
        text=True,
        cwd=here,
        timeout=CLI_TIMEOUT,
        check=True,
    ).stdout.strip()
    run_burst(env)
    check(env.ok("logs", job_id) == "a b|$HOME|", "the arguments were not passed as given")
    check(
        env.ok("logs", pwd_id) == f"{here.resolve()}\nok\n",
        "it did not run in the caller's directory",
    )
    bad = env.run("add", "--bogus", "true")
    check(
        bad.returncode == 2 and "no such option: --bogus" in bad.stderr, "unknown option not named"
    )


def scenario_queue_limit_is_global(env: Env) -> None:
    """A queue limited to 2 never runs 3 jobs at once across 3 worker processes of 2 threads;
    a job of another queue is not held back meanwhile; each job gets its slot (0 or 1)."""
    stamps = env.scratch / "stamps"
    stamps.mkdir()
    env.ok("queue", "add", "two", "--parallel", "2")
    lines = "".join(
        json.dumps({"id": f"t{n:02d}", "command": _stamps_command(stamps), "queue": "two"}) + "\n"
        for n in range(12)
    )
    env.ok("enqueue", "-", stdin=lines)
    free = env.enqueue({"id": "free", "command": "true"})
    procs = [env.start_worker("--count", "2") for _ in range(3)]
    wait_until(lambda: free in env.ids("completed"), "the other queue's job")
    wait_until(lambda: len(env.ids("completed")) == 13, "the limited queue to drain", timeout=60)
    check(_most_at_once(stamps) == 2, f"{_most_at_once(stamps)} ran at once, the limit is 2")
    slots = {p.read_text().split()[1] for p in stamps.glob("*.start")}
    check(slots == {"0", "1"}, f"slots handed out: {sorted(slots)}")
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
        wait_exit(proc, "a worker")


def scenario_pause_and_resume(env: Env) -> None:
    """A paused queue starts nothing, across a worker restart; resume lets it run."""
    env.ok("queue", "add", "night")
    env.ok("pause", "night")
    job_id = env.enqueue({"command": "true", "queue": "night"})
    check(json.loads(env.ok("queue", "list", "--json"))[1]["paused"] is True, "not shown paused")
    run_burst(env)  # nothing runnable: exits at once, the job untouched
    check(env.ids("pending") == {job_id}, "a job of a paused queue ran")
    proc = env.start_worker()
    env.ok("resume", "night")
    wait_until(lambda: job_id in env.ids("completed"), "the resumed queue's job")
    os.kill(proc.pid, signal.SIGTERM)
    wait_exit(proc, "the worker")


def scenario_dependencies(env: Env) -> None:
    """``--after`` waits in blocked/ until its dependency completed; a dead dependency sends
    the chain after it to dead/ with the reason; ``--after-any`` runs either way."""
    first = env.ok("add", "--id", "first", "true").strip()
    second = env.ok("add", "--id", "second", "--after", first, "true").strip()
    check(env.ids("blocked") == {second}, "the dependent is not in blocked/")
    shown = json.loads(env.ok("show", "--json", second))
    check(shown["waiting_for"] == [first], f"show says it waits for {shown.get('waiting_for')}")
    env.ok("add", "--id", "bad", "--max-retries", "0", "exit 4")
    env.ok("add", "--id", "c1", "--after", "bad", "true")
    env.ok("add", "--id", "c2", "--after", "c1", "true")
    env.ok("add", "--id", "any", "--after-any", "bad", "true")
    run_burst(env, "--count", "2")
    check(env.ids("completed") == {"first", "second", "any"}, f"completed: {env.ids('completed')}")
    check(env.ids("dead") == {"bad", "c1", "c2"}, f"dead: {env.ids('dead')}")
    check(env.job("dead", "c2")["last_error"] == "dependency c1 ended dead", "no cascade reason")
    ghost = env.run("add", "--after", "ghost", "true")
    check(ghost.returncode == 2, "an unknown dependency was accepted")


def scenario_hold_release_restart_edit(env: Env) -> None:
    """Held jobs wait for ``release``; ``edit`` changes a waiting job; ``restart`` runs a
    finished one again with its run numbers going on."""
    job_id = env.ok("add", "--hold", "--id", "h", "echo run $QUEUECTL_RUN").strip()
    check(env.ids("held") == {job_id}, "not in held/")
    run_burst(env)
    check(env.ids("held") == {job_id}, "a held job ran")
    env.ok("edit", job_id, "--command", "echo edited run $QUEUECTL_RUN")
    env.ok("release", job_id)
    run_burst(env)
    check(env.ok("logs", job_id) == "edited run 1\n", "the edit did not run")
    env.ok("restart", job_id)
    run_burst(env)
    check(env.ok("logs", job_id) == "edited run 2\n", "the restart did not continue the runs")
    refused = env.run("edit", job_id, "--priority", "3")
    check(refused.returncode == 1 and "completed" in refused.stderr, "a finished job was edited")


def scenario_unique_jobs(env: Env) -> None:
    """Ten concurrent ``add --unique-key`` processes create exactly one job."""
    procs = [
        subprocess.Popen(
            [*CLI, "--home", str(env.home), "add", "--unique-key", "nightly", "true"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(10)
    ]
    printed = {proc.communicate(timeout=CLI_TIMEOUT)[0].strip() for proc in procs}
    check(len(printed) == 1, f"{len(printed)} different ids printed")
    check(len(env.ids("pending")) == 1, f"{len(env.ids('pending'))} jobs created")


def scenario_wait_exit_codes(env: Env) -> None:
    """``wait`` exits with a job's own code, 124 on timeout, 125 for a cancelled job, 126
    for a dead one without an exit code; ``--json`` tells them apart."""
    own = env.enqueue({"command": "exit 7", "max_retries": 0})
    lost = env.enqueue({"command": "sleep 5", "timeout": 0.2, "max_retries": 0})
    far = env.enqueue({"command": "true", "run_at": "2099-01-01T00:00:00Z"})
    env.ok("cancel", far)
    run_burst(env, "--count", "2")
    codes = {j: env.run("wait", j).returncode for j in (own, lost, far)}
    check(codes == {own: 7, lost: 126, far: 125}, f"wait exit codes: {codes}")
    later = env.enqueue({"command": "true", "run_at": "2099-01-01T00:00:00Z"})
    check(env.run("wait", later, "--timeout", "0.2").returncode == 124, "no 124 on timeout")
    shown = json.loads(env.run("wait", "--json", own, far).stdout)
    check([s["state"] for s in shown] == ["dead", "cancelled"], f"wait --json said {shown}")


def scenario_schedules(env: Env) -> None:
    """``schedule add --every 1s``: two workers, one leader; each occurrence enqueued once,
    consecutive, carrying the schedule's name; a restart of the leader neither repeats nor
    (with a worker alive) misses one."""
    env.ok("schedule", "add", "tick", "--every", "1s", "--", "true")
    first = env.start_worker()
    second = env.start_worker()
    wait_until(lambda: len(env.ids("completed")) >= 3, "three occurrences", timeout=30)
    leader = first if "leading" in env.worker_log(first) else second
    os.kill(leader.pid, signal.SIGKILL)
    wait_exit(leader, "the leading worker")
    seen = len(env.ids("completed"))
    wait_until(lambda: len(env.ids("completed")) >= seen + 3, "occurrences after a takeover")
    env.ok("schedule", "pause", "tick")
    for proc in (first, second):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            wait_exit(proc, "a worker")
    ids = sorted(env.ids("completed") | env.ids("pending") | env.ids("processing"))
    stamps = [parse_time(i.split(".", 1)[1].replace("Z", "")[:15] + "Z") for i in ids]
    steps = {round((b - a).total_seconds()) for a, b in itertools.pairwise(stamps)}
    check(steps == {1}, f"occurrences not one second apart (missed or doubled): {ids}")
    job = env.job("completed", ids[0])
    check(job["schedule"] == "tick" and job["unique_key"].startswith("schedule:tick:"), "fields")
    listed = json.loads(env.ok("schedule", "list", "--json"))
    check(listed[0]["paused"] is True and listed[0]["last_job"] in ids, f"list said {listed}")


def scenario_completion_hooks(env: Env) -> None:
    """``on-finish`` runs once a job's final state is durable, with the job's details, for
    a worker's completion and for a cancel of a waiting job; its result is in ``show``."""
    seen = env.scratch / "hooks"
    env.ok(
        "config",
        "set",
        "on-finish",
        f'echo "$QUEUECTL_JOB_ID $QUEUECTL_STATE $QUEUECTL_EXIT_CODE '
        f'$QUEUECTL_QUEUE_REMAINING" >> {seen}',
    )
    env.ok("add", "--id", "ok", "true")
    env.ok("add", "--id", "later", "--run-at", "2099-01-01T00:00:00Z", "true")
    env.ok("cancel", "later")
    env.ok("add", "--id", "own", "--on-finish", f"echo own-hook >> {seen}; exit 3", "true")
    proc = env.start_worker()
    wait_until(lambda: seen.exists() and len(seen.read_text().splitlines()) >= 3, "three hooks")
    lines = sorted(seen.read_text().splitlines())
    check(lines == ["later cancelled  0", "ok completed 0 0", "own-hook"], f"hooks: {lines}")
    hook = json.loads(env.ok("show", "--json", "own"))["hook"]
    check(hook["exit_code"] == 3 and hook["outcome"] == "failed", f"show said {hook}")
    check("own" in env.ids("completed"), "a failing hook changed the job")
    os.kill(proc.pid, signal.SIGTERM)
    wait_exit(proc, "the worker")


def scenario_gpu_slots(env: Env) -> None:
    """``gpus 0,1``: jobs asking for one device never share one, across two worker
    processes; a job asking for none sees CUDA_VISIBLE_DEVICES empty; asking for more
    devices than exist is refused."""
    env.ok("config", "set", "gpus", "0,1")
    stamps = env.scratch / "stamps"
    stamps.mkdir()
    me = f'{stamps}/"$QUEUECTL_JOB_ID"'
    command = (
        f"echo $(date +%s.%N) $CUDA_VISIBLE_DEVICES > {me}.start; sleep 0.2; "
        f"echo $(date +%s.%N) > {me}.end"
    )
    for n in range(8):
        env.ok("add", "--id", f"g{n}", "--gpus", "1", command)
    env.ok("add", "--id", "cpu", 'echo "[$CUDA_VISIBLE_DEVICES]"')
    refused = env.run("add", "--gpus", "3", "true")
    check(refused.returncode == 2, "a job asking for 3 of 2 devices was accepted")
    procs = [env.start_worker("--count", "3") for _ in range(2)]
    wait_until(lambda: len(env.ids("completed")) == 9, "the gpu jobs", timeout=60)
    for device in ("0", "1"):
        events = []
        for start in stamps.glob("*.start"):
            begun, used = start.read_text().split()
            if used == device:
                events += [(float(begun), 1), (float(start.with_suffix(".end").read_text()), -1)]
        active = most = 0
        for _, delta in sorted(events):
            active += delta
            most = max(most, active)
        check(most == 1, f"{most} jobs at once on device {device}")
    check(env.ok("logs", "cpu") == "[]\n", "a CPU job could see the GPUs")
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
        wait_exit(proc, "a worker")


def _dask_process(env: Env, *args: str, name: str) -> subprocess.Popen[bytes]:
    """A ``dask`` process of the scenario's loopback cluster, killed with the workers."""
    dask = shutil.which("dask") or str(Path(sys.executable).parent / "dask")
    folder = env.scratch / name
    folder.mkdir()
    run_env = dict(os.environ)
    run_env.update(
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0",
        DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="False",
        HOME=str(folder),
    )
    with (env.scratch / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [dask, *args, "--no-dashboard", "--preload", "queuectl.remote.preload"],
            cwd=folder,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    env.procs.append(proc)
    return proc


def scenario_dask_executor(env: Env) -> None:
    """``worker start --executor dask`` against a ``dask scheduler`` and two ``dask
    worker`` processes on loopback: jobs run remotely with their output in ``logs``, a failure
    is retried, a plain tcp:// address off loopback is refused, and after a SIGKILL of the
    head a new head reruns its job only once the lease is over (the runs never overlap)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise Failure("the dask extra is not installed: pip install 'queuectl[dask]'") from None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    _dask_process(env, "scheduler", "--host", "127.0.0.1", "--port", str(port), name="sched")
    for n in range(2):
        _dask_process(
            env, "worker", address, "--nthreads", "2", "--host", "127.0.0.1", name=f"w{n}"
        )
    refused = env.run("worker", "start", "--executor", "dask", "--scheduler", "tcp://10.9.9.9:1")
    check(refused.returncode == 2 and "loopback only" in refused.stderr, "off-loopback tcp:// ran")
    env.ok("config", "set", "backoff-base", "1")
    ok = env.enqueue({"command": "echo remote $QUEUECTL_JOB_ID"})
    flaky = env.enqueue({"command": f"mkdir {env.scratch}/once 2>/dev/null && exit 4; true"})
    record = env.scratch / "record"
    long_once = (
        f'echo "start $(date +%s.%N)" >> {record}; '
        f"trap 'echo \"end $(date +%s.%N)\" >> {record}; exit 143' TERM; "
        f"if mkdir {env.scratch}/first 2>/dev/null; then sleep 60 & wait; else sleep 0.1; fi; "
        f'echo "end $(date +%s.%N)" >> {record}'
    )
    orphan = env.enqueue({"command": long_once})
    remote = ("--executor", "dask", "--scheduler", address, "--lease", "5", "--count", "3")
    first = env.start_worker(*remote, log_name="head")
    wait_until(lambda: record.exists() and "start" in record.read_text(), "the remote run", 90)
    wait_until(lambda: {ok, flaky} <= env.ids("completed"), "the quick remote jobs", 60)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    env.start_worker(*remote, log_name="head")
    wait_until(lambda: orphan in env.ids("completed"), "the orphan's rerun", 90)
    check("remote " + ok in env.ok("logs", ok), "the remote output is not in the log")
    check(env.job("completed", flaky)["attempts"] == 2, "the failure was not retried")
    times = [line.split() for line in record.read_text().splitlines()]
    kinds = [kind for kind, _ in times]
    check(kinds == ["start", "end", "start", "end"], f"runs of the orphan: {kinds}")
    check(float(times[1][1]) <= float(times[2][1]), "the rerun overlapped the first run")


def scenario_cli_conventions(env: Env) -> None:
    """Reading a home that does not exist is an error that creates nothing; scripts get
    JSON from the commands that report; a confirmation without a terminal refuses."""
    missing = env.scratch / "typo-home"
    for args in (["status"], ["list"], ["fsck"], ["show", "x"]):
        done = subprocess.run(
            [*CLI, "--home", str(missing), *args], capture_output=True, text=True, check=False
        )
        check(done.returncode == 2 and "no such folder" in done.stderr, f"{args}: {done.stderr}")
    check(not missing.exists(), "a read created the home")
    env.ok("add", "--id", "a", "--run-at", "2099-01-01T00:00:00Z", "true")
    cancelled = json.loads(env.ok("cancel", "--json", "a"))
    check(
        cancelled == [{"id": "a", "ok": True, "state": "cancelled", "message": "cancelled a"}],
        f"cancel --json said {cancelled}",
    )
    check(json.loads(env.ok("fsck", "--json"))["clean"] is True, "fsck --json")
    check(json.loads(env.ok("config", "get", "--json", "max-retries"))["value"] == 3, "config")
    env.ok("add", "--id", "d", "--max-retries", "0", "false")
    run_burst(env)
    purge = subprocess.run(
        [*CLI, "--home", str(env.home), "dlq", "purge", "--all"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    check(purge.returncode == 2 and "--yes" in purge.stderr, "purge asked without a terminal")
    check(env.ids("dead") == {"d"}, "purge without --yes deleted")


# ------------------------------------------------------------------ operations


def archive_jobs(archive: Path) -> dict[str, list[str]]:
    """id -> the state folders a backup archive has it in (read with the standard tarfile)."""
    import tarfile

    found: dict[str, list[str]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            folder, _, name = info.name.partition("/")
            if folder in (*STATES, "blocked", "held") and name.endswith(".json"):
                found.setdefault(name[:-5], []).append(folder)
    return found


def scenario_backup_while_draining(env: Env) -> None:
    """A backup taken while a worker drains 200 jobs holds each exactly once, in one folder;
    the running job comes back pending with its attempt counted; the restored home is
    fsck-clean and a rebuild changes nothing."""
    gate = env.scratch / "gate"
    ids = [f"d{n:03d}" for n in range(200)]
    lines = [json.dumps({"id": "slow", "command": f"until [ -e {gate} ]; do sleep 0.01; done"})]
    lines += [json.dumps({"id": i, "command": "sleep 0.01"}) for i in ids]
    env.ok("enqueue", "-", stdin="\n".join(lines) + "\n")
    worker = env.start_worker("--count", "3")
    wait_until(
        lambda: "slow" in env.ids("processing") and len(env.ids("completed")) >= 10,
        "the slow job running while the drain goes on",
    )
    archive = env.scratch / "home.tar.gz"
    out = env.ok("backup", str(archive), "--logs", timeout=WORKER_TIMEOUT)
    gate.touch()
    check("running job(s) saved" in out and "slow" in out, f"backup said {out.strip()!r}")
    found = archive_jobs(archive)
    check(sorted(found) == sorted(["slow", *ids]), f"{len(found)} of 201 jobs in the archive")
    twice = [i for i, folders in found.items() if len(folders) != 1]
    check(not twice, f"jobs in several folders: {twice[:3]}")
    check(found["slow"] == ["pending"], f"the running job was saved in {found['slow']}")
    restored = Env(home=env.scratch / "restored", scratch=env.scratch)
    said = restored.ok("restore", str(archive), timeout=WORKER_TIMEOUT)
    check("restored 201 job(s)" in said, f"restore said {said.strip()!r}")
    slow = restored.job("pending", "slow")
    check(slow["attempts"] == 1, f"the running job has attempts {slow['attempts']}")
    check(slow["history"][-1]["outcome"] == "worker_lost", "its lost attempt is not in history")
    check(restored.ok("fsck").strip() == "clean", "fsck of the restored home is not clean")
    rebuilt = restored.ok("journal", "rebuild")
    check("0 written, 201 already right" in rebuilt, f"rebuild said {rebuilt.strip()!r}")
    wait_until(lambda: len(env.ids("completed")) == 201, "the source drain to finish", 60)
    worker.send_signal(signal.SIGTERM)
    check(wait_exit(worker, "worker") == 0, "the worker did not exit 0 after SIGTERM")


def scenario_restore_refusals(env: Env) -> None:
    """restore refuses a home that is not empty (exit 1), --force without --yes off a
    terminal (exit 2), and hostile archives (exit 2, one line, nothing written); --force
    --yes replaces the contents."""
    import io
    import tarfile

    env.enqueue({"id": "mine", "command": "true"})
    archive = env.scratch / "b.tar.gz"
    env.ok("backup", str(archive))
    other = Env(home=env.scratch / "other", scratch=env.scratch)
    other.enqueue({"id": "theirs", "command": "true"})
    before = other.listing()
    refused = other.run("restore", str(archive))
    check(refused.returncode == 1 and "--force" in refused.stderr, "a full home was not refused")
    asked = other.run("restore", str(archive), "--force")
    check(asked.returncode == 2 and "--yes" in asked.stderr, "--force without --yes went on")
    check(other.listing() == before, "a refused restore changed the home")
    hostile = env.scratch / "evil.tar.gz"
    with tarfile.open(hostile, "w:gz") as tar:
        with tarfile.open(archive, "r:gz") as good:
            manifest = good.extractfile("queuectl-backup.json")
            data = manifest.read() if manifest else b""
        info = tarfile.TarInfo("queuectl-backup.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pending/x.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        escape = tarfile.TarInfo("../../escape.json")
        escape.size = 2
        tar.addfile(escape, io.BytesIO(b"{}"))
    scratch_before = sorted(p.name for p in env.scratch.iterdir())
    new_home = env.scratch / "new"
    bad = Env(home=new_home, scratch=env.scratch).run("restore", str(hostile))
    lines = bad.stderr.splitlines()
    check(bad.returncode == 2 and len(lines) == 1, f"hostile archive: exit {bad.returncode}")
    check("symbolic link" in lines[0], f"hostile archive message: {lines[0]!r}")
    check(not new_home.exists(), "a refused restore left its home behind")
    check(sorted(p.name for p in env.scratch.iterdir()) == scratch_before, "it wrote outside")
    replaced = other.ok("restore", str(archive), "--force", "--yes")
    check("restored 1 job(s)" in replaced, f"restore --force said {replaced.strip()!r}")
    check(other.ids("pending") == {"mine"}, f"pending/ after --force: {other.ids('pending')}")
    check(other.ok("fsck").strip() == "clean", "fsck after --force is not clean")


def scenario_config_export_import_reset(env: Env) -> None:
    """config export prints every setting; import is all or nothing; reset restores the
    defaults."""
    defaults = json.loads(env.ok("config", "export"))
    check(len(defaults) >= 6 and defaults["max-retries"] == 3, f"export said {defaults}")
    env.ok("config", "set", "max-retries", "6")
    exported = env.scratch / "settings.json"
    env.ok("config", "export", str(exported))
    other = Env(home=env.scratch / "other", scratch=env.scratch)
    other.ok("config", "import", str(exported))
    check(json.loads(other.ok("config", "export"))["max-retries"] == 6, "import did not apply")
    bad = env.scratch / "bad.json"
    bad.write_text('{"backoff-base": 3, "job-timeout": -5, "extra": 1}')
    before = (other.home / "config.json").read_bytes()
    failed = other.run("config", "import", str(bad))
    check(failed.returncode == 2, f"a bad import exited {failed.returncode}")
    check(len(failed.stderr.splitlines()) == 1, f"bad import said {failed.stderr!r}")
    check((other.home / "config.json").read_bytes() == before, "a bad import changed settings")
    other.ok("config", "reset", "max-retries")
    check(json.loads(other.ok("config", "export")) == defaults, "reset did not restore defaults")


def scenario_dlq_stats(env: Env) -> None:
    """dlq stats groups dead jobs by last error and by command, with counts and times."""
    for n in range(3):
        env.enqueue({"id": f"x{n}", "command": "exit 3", "max_retries": 0})
    env.enqueue({"id": "y", "command": "exit 4", "max_retries": 0})
    run_burst(env, "--count", "2")
    stats = json.loads(env.ok("dlq", "stats", "--json"))
    check(stats["total"] == 4, f"total {stats['total']}")
    errors = {row["error"]: row["jobs"] for row in stats["by_error"]}
    check(errors == {"exit code 3": 3, "exit code 4": 1}, f"by_error {errors}")
    commands = [(row["command"], row["jobs"]) for row in stats["by_command"]]
    check(commands == [("exit 3", 3), ("exit 4", 1)], f"by_command {commands}")
    check(stats["oldest"] <= stats["newest"], "oldest is after newest")
    table = env.ok("dlq", "stats")
    check(table.startswith("4 dead job(s)") and "exit code 3" in table, f"table: {table!r}")


SCENARIOS: list[tuple[str, Callable[[Env], None]]] = [
    ("job-completes", scenario_job_completes),
    ("retry-backoff-dlq", scenario_retry_backoff_dlq),
    ("200-jobs-3-processes-exactly-once", scenario_many_jobs_exactly_once),
    ("sigkill-recovery", scenario_sigkill_recovery),
    ("restart-keeps-pending-jobs", scenario_restart_keeps_jobs),
    ("invalid-command", scenario_invalid_command),
    ("sigterm-finishes-running-job", scenario_sigterm_finishes_running),
    ("worker-stop", scenario_worker_stop),
    ("dropped-files", scenario_dropped_files),
    ("bad-input", scenario_bad_input),
    ("journal-rebuild", scenario_journal_rebuild),
    ("fsck-repair", scenario_fsck_repair),
    ("kill-loop", scenario_kill_loop),
    ("priority", scenario_priority),
    ("delayed-job", scenario_delayed),
    ("per-job-timeout", scenario_timeout),
    ("backoff-max-and-jitter", scenario_backoff_controls),
    ("env-and-cwd", scenario_env_and_cwd),
    ("cancel", scenario_cancel),
    ("dlq-retry-all-and-purge", scenario_dlq_bulk),
    ("attempt-history-in-dlq", scenario_history_in_dlq),
    ("logs-show-wait-stats", scenario_logs_show_wait_stats),
    ("dashboard-and-metrics", scenario_dashboard_and_metrics),
    ("dashboard-views-and-actions", scenario_dashboard_views_and_actions),
    ("background-child-never-doubles-a-run", scenario_background_child_never_doubles_a_run),
    ("purged-id-can-be-reused", scenario_purged_id_can_be_reused),
    ("bad-config-is-reported", scenario_bad_config_is_reported),
    ("add-a-plain-command", scenario_add_a_plain_command),
    ("queue-limit-is-global", scenario_queue_limit_is_global),
    ("pause-and-resume", scenario_pause_and_resume),
    ("dependencies", scenario_dependencies),
    ("hold-release-restart-edit", scenario_hold_release_restart_edit),
    ("unique-jobs", scenario_unique_jobs),
    ("wait-exit-codes", scenario_wait_exit_codes),
    ("schedules", scenario_schedules),
    ("completion-hooks", scenario_completion_hooks),
    ("gpu-slots", scenario_gpu_slots),
    ("cli-conventions", scenario_cli_conventions),
    ("dask-executor", scenario_dask_executor),
    ("backup-while-draining", scenario_backup_while_draining),
    ("restore-refusals", scenario_restore_refusals),
    ("config-export-import-reset", scenario_config_export_import_reset),
    ("dlq-stats", scenario_dlq_stats),
]


def run_scenario(name: str, scenario: Callable[[Env], None]) -> bool:
    """Run one scenario in a fresh environment and print its PASS/FAIL line."""
    try:
        with fresh_env() as env:
            scenario(env)
    except Failure as exc:
        print(f"FAIL {name}: {exc}", flush=True)
        return False
    except Exception as exc:  # a bug in a check, or an unexpected on-disk state
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"FAIL {name}: unexpected {type(exc).__name__}: {exc} (line {where.lineno})",
            flush=True,
        )
        return False
    print(f"PASS {name}", flush=True)
    return True


def main(names: list[str]) -> int:
    """Run every scenario (or the ones named), print the summary line, return the status."""
    unknown = set(names) - {name for name, _ in SCENARIOS}
    if unknown:
        print(f"no such scenario: {' '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chosen = [(n, s) for n, s in SCENARIOS if not names or n in names]
    results = [run_scenario(name, scenario) for name, scenario in chosen]
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
