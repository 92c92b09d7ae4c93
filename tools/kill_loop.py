#!/usr/bin/env python3
"""Fault injection: SIGKILL worker processes at random moments and check nothing is lost.

Usage: python tools/kill_loop.py [--jobs 500] [--kills 50] [--workers 2] [--threads 4]
                                 [--seed N] [--home DIR] [--json]

Each job appends its id to a shared file, so the file is the ground truth of runs. While
workers serve the queue, one of them is SIGKILLed at a random moment and restarted, again and
again. Then the queue is drained and the invariants are checked:

- every job is in completed/ (none of these commands fails, so none may be dead);
- no job is in two folders, and nothing is left in pending/, processing/ or failed/;
- every job ran at least once;
- a job ran more than once only if it was in processing/ around a kill;
- ``journal rebuild`` from the journal alone reproduces the same tree, byte for byte.

Exit status 0 when every invariant holds. The counts (jobs, kills, duplicate runs) are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

STATES = ("pending", "processing", "completed", "failed", "dead")


def queuectl(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def start_worker(home: Path, threads: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "queuectl",
            "--home",
            str(home),
            "worker",
            "start",
            "--count",
            str(threads),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def processing_ids(home: Path) -> set[str]:
    return {p.stem for p in (home / "processing").glob("*.json")}


def tree(home: Path) -> dict[str, bytes]:
    return {
        f"{state}/{p.name}": p.read_bytes()
        for state in STATES
        for p in sorted((home / state).glob("*.json"))
    }


def run(home: Path, jobs: int, kills: int, workers: int, threads: int, seed: int) -> dict:
    rng = random.Random(seed)
    out = home.parent / "runs.log"
    out.write_text("")
    lines = [
        json.dumps(
            {
                "id": f"job-{i:05d}",
                "max_retries": 50,
                "command": f"echo $QUEUECTL_JOB_ID >> {out}; sleep 0.0{rng.randint(0, 5)}",
            }
        )
        for i in range(jobs)
    ]
    enqueued = queuectl(home, "enqueue", "-", stdin="\n".join(lines) + "\n")
    if enqueued.returncode != 0:
        raise SystemExit(f"enqueue failed: {enqueued.stderr}")

    procs = [start_worker(home, threads) for _ in range(workers)]
    at_risk: set[str] = set()
    done_kills = 0
    try:
        while done_kills < kills:
            time.sleep(rng.uniform(0.02, 0.25))  # a random moment: this is the fault, not a wait
            victim = rng.randrange(workers)
            at_risk |= processing_ids(home)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            at_risk |= processing_ids(home)
            done_kills += 1
            procs[victim] = start_worker(home, threads)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()

    drain = subprocess.run(
        [
            sys.executable,
            "-m",
            "queuectl",
            "--home",
            str(home),
            "worker",
            "start",
            "--count",
            str(threads),
            "--burst",
        ],
        capture_output=True,
        timeout=600,
        check=False,
    )
    runs = Counter(line for line in out.read_text().split())
    expected = {f"job-{i:05d}" for i in range(jobs)}
    per_state = {state: {p.stem for p in (home / state).glob("*.json")} for state in STATES}
    in_two = [job for job in expected if sum(job in ids for ids in per_state.values()) > 1]
    duplicates = {job: n for job, n in runs.items() if n > 1}
    unexplained = sorted(set(duplicates) - at_risk)

    before = tree(home)
    for state in STATES:
        shutil.rmtree(home / state)
    rebuilt = queuectl(home, "journal", "rebuild")
    after = tree(home)

    problems = []
    if drain.returncode != 0:
        problems.append(f"drain worker exited {drain.returncode}")
    if per_state["completed"] != expected:
        problems.append(f"{len(expected - per_state['completed'])} job(s) not completed")
    for state in ("pending", "processing", "failed", "dead"):
        if per_state[state]:
            problems.append(f"{len(per_state[state])} job(s) left in {state}/")
    if in_two:
        problems.append(f"in two folders: {in_two[:5]}")
    missing = sorted(expected - set(runs))
    if missing:
        problems.append(f"{len(missing)} job(s) never ran: {missing[:5]}")
    if unexplained:
        problems.append(f"ran twice without being near a kill: {unexplained[:5]}")
    if rebuilt.returncode != 0:
        problems.append(f"rebuild failed: {rebuilt.stderr.strip()}")
    differing = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if differing:
        first = differing[0]
        problems.append(
            f"rebuild differs in {len(differing)} file(s), e.g. {first}: "
            f"before={before.get(first)!r} after={after.get(first)!r}"
        )
    return {
        "jobs": jobs,
        "kills": done_kills,
        "runs": sum(runs.values()),
        "duplicate_runs": sum(n - 1 for n in duplicates.values()),
        "jobs_run_twice": len(duplicates),
        "jobs_at_risk": len(at_risk),
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--home", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="queuectl-kill-")) if args.home is None else args.home
    home = base / "home"
    os.makedirs(base, exist_ok=True)
    result = run(home, args.jobs, args.kills, args.workers, args.threads, args.seed)
    result["seed"] = args.seed
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"jobs={result['jobs']} kills={result['kills']} runs={result['runs']} "
            f"duplicate_runs={result['duplicate_runs']} (jobs run twice: "
            f"{result['jobs_run_twice']}, at risk: {result['jobs_at_risk']}) seed={args.seed}"
        )
        for problem in result["problems"]:
            print(f"PROBLEM: {problem}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
