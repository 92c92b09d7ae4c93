"""Measure ``queuectl backup`` and ``queuectl restore`` on a home of N jobs.

The home is built in-process, as fast as the store allows (every job enqueued, claimed and
finished: 90 % completed, 10 % failed and waiting for a retry, so the journal holds 2N
records), plus a queue and a schedule. Then, each as its own ``queuectl`` process: a
backup, a restore into a new home, and (``--check``) ``fsck`` and ``journal rebuild`` of the
restored home. Reports wall time, peak RSS (the child's ``ru_maxrss``) and the archive's
size; ``--json`` prints them as one object.

    python tools/bench_backup.py --jobs 100000 --dir /tmp/bench-backup
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


def build(root: Path, count: int) -> float:
    """A home with ``count`` jobs through it; seconds it took."""
    from queuectl.job import job_from_input, utcnow
    from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
    from queuectl.storage.commit import Change
    from queuectl.storage.home import Home
    from queuectl.storage.store import Store

    started = time.perf_counter()
    store = Store(Home(root).ensure())
    store.queues.add("builds", 4)
    jobs = [
        job_from_input(
            {"id": f"job-{i:06d}", "command": f"make -C /src target{i % 7}"},
            default_max_retries=3,
        )
        for i in range(count)
    ]
    for first in range(0, count, 10_000):
        store.enqueue(jobs[first : first + 10_000], explicit_ids=set())
    now = utcnow()
    batch: list[tuple[Any, Any]] = []
    for i, job in enumerate(jobs):
        claim = store.claims.claim(f"{job.id}.json", job.state, "bench:0", now)
        ok = i % 10 != 0
        outcome = Outcome(
            OutcomeKind.SUCCEEDED if ok else OutcomeKind.FAILED,
            exit_code=0 if ok else 2,
            error=None if ok else "exit code 2",
            started_at=now,
            finished_at=now + timedelta(milliseconds=5),
        )
        updated = after_attempt(claim.job, outcome, backoff_base=2, now=now)
        batch.append((claim, Change(updated, updated.state.value, remove=claim.path, attempt=True)))
        if len(batch) == 64 or i == count - 1:
            store.commits.commit([change for _, change in batch])
            for held, _ in batch:
                held.release()
            batch = []
    store.close()
    schedule = ["schedule", "add", "nightly", "--cron", "0 3 * * *", "--", "true"]
    subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(root), *schedule],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def timed(*args: str) -> dict[str, float]:
    """One queuectl process: wall seconds and peak RSS (MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuectl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"queuectl {' '.join(args)} failed: {err.decode().strip()}")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "output": out.decode().strip().splitlines()[0] if out.strip() else "",  # type: ignore[dict-item]
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-backup-"))
    base.mkdir(parents=True, exist_ok=True)
    home, copy, archive = base / "home", base / "copy", base / "home.tar.gz"
    shutil.rmtree(copy, ignore_errors=True)
    archive.unlink(missing_ok=True)
    out: dict[str, Any] = {"jobs": args.jobs}
    if args.reuse and (home / "journal").is_dir():
        out["jobs"] = sum(len(os.listdir(home / s)) for s in ("completed", "failed"))
        out["build_seconds"] = 0.0
    else:
        shutil.rmtree(home, ignore_errors=True)
        out["build_seconds"] = round(build(home, args.jobs), 1)
    out["journal_mib"] = round(
        sum(p.stat().st_size for p in (home / "journal").iterdir()) / 2**20, 1
    )
    os.sync()
    out["backup"] = timed("--home", str(home), "backup", str(archive))
    out["archive_mib"] = round(archive.stat().st_size / 2**20, 1)
    os.sync()
    out["restore"] = timed("--home", str(copy), "restore", str(archive))
    if args.check:
        out["fsck"] = timed("--home", str(copy), "fsck")
        out["rebuild"] = timed("--home", str(copy), "journal", "rebuild")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--dir", help="where to build (default: a new temporary folder)")
    parser.add_argument("--check", action="store_true", help="also fsck and rebuild the copy")
    parser.add_argument("--keep", action="store_true", help="keep the homes and the archive")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the home a --keep run left in --dir"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{out['jobs']} jobs, journal {out['journal_mib']} MiB (built in {out['build_seconds']} s)"
    )
    for step in ("backup", "restore", "fsck", "rebuild"):
        if step in out:
            print(
                f"{step:8} {out[step]['seconds']:7.2f} s  {out[step]['peak_rss_mib']:7.1f} MiB RSS"
            )
    print(f"archive  {out['archive_mib']} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
