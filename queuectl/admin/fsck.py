"""Check a queue home for damage and, with ``repair=True``, fix what can be fixed safely.

Safe online: every check tolerates workers moving files meanwhile (a finding is confirmed by
looking twice), and repairs use the same locks as workers. Rewriting job files from the
journal is only done offline (no live workers), because it could race a worker's commit.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from queuectl.admin.rebuild import existing_job_files, journal_jobs
from queuectl.config import backoff_policy
from queuectl.errors import InvalidJob, JournalCorrupt
from queuectl.job import Job, JobState, utcnow
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.durable import fsync_dir
from queuectl.storage.home import AUX_DIRS, STATE_DIRS
from queuectl.storage.journal import scan
from queuectl.storage.store import Change, Store, read_job_file
from queuectl.worker.registry import live_workers

__all__ = ["Finding", "fsck"]

STALE_TMP_SECONDS: Final = 3600.0
"""A tmp file of a live process is only removed once it is this old."""


@dataclass
class Finding:
    kind: str
    message: str
    repair: Callable[[], str] | None = field(default=None, repr=False)
    repaired: str | None = None


def fsck(store: Store, repair: bool = False) -> list[Finding]:
    """Run every check; with ``repair``, fix and check again (a cut-out journal record can
    reveal job files the journal no longer covers), up to three passes."""
    findings = _checks(store)
    if not repair:
        return findings
    reported = []
    for _ in range(3):
        for finding in findings:
            if finding.repair is not None:
                finding.repaired = finding.repair()
        reported += findings
        if not any(f.repaired for f in findings):
            break
        findings = [f for f in _checks(store) if f.message not in {r.message for r in reported}]
        if not findings:
            break
    return reported


def _checks(store: Store) -> list[Finding]:
    offline = not live_workers(store.home.workers)
    findings: list[Finding] = []
    findings += _check_permissions(store)
    findings += _check_journal(store, offline)
    journal_ok = not any(f.kind == "journal-damage" for f in findings)
    findings += _check_tmp(store)
    findings += _check_orphans(store)
    findings += _check_duplicates(store)
    if journal_ok:
        findings += _check_against_journal(store, offline)
    return findings


# ------------------------------------------------------------------------ permissions


def _check_permissions(store: Store) -> list[Finding]:
    out = []
    root = store.home.root
    for path in [root, *(root / d for d in (*STATE_DIRS, *AUX_DIRS))]:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077:
            out.append(
                Finding(
                    "permissions",
                    f"{path} has mode {mode & 0o777:o}, expected 700",
                    _chmod(path, 0o700),
                )
            )
    for state in STATE_DIRS:
        for entry in os.scandir(root / state):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                out.append(
                    Finding(
                        "permissions",
                        f"{entry.path} has mode {st.st_mode & 0o777:o}, expected 600",
                        _chmod(Path(entry.path), 0o600),
                    )
                )
    return out


def _chmod(path: Path, mode: int) -> Callable[[], str]:
    def fix() -> str:
        os.chmod(path, mode, follow_symlinks=False)
        return f"chmod {mode:o} {path}"

    return fix


# ------------------------------------------------------------------------ journal


def _check_journal(store: Store, offline: bool) -> list[Finding]:
    try:
        result = scan(store.home.journal)
    except JournalCorrupt as exc:
        damaged, offset = exc.path, exc.offset
        assert damaged is not None
        if not offline:
            return [Finding("journal-damage", str(exc).split(";")[0] + "; stop workers to repair")]
        return [
            Finding(
                "journal-damage",
                str(exc).split(";")[0],
                lambda: _cut_damage(store, damaged, offset),
            )
        ]
    if result.torn_tail is None:
        return []
    path, offset = result.torn_tail
    return [
        Finding(
            "journal-torn-tail",
            f"torn last record in {path} at byte {offset}",
            lambda: _truncate_tail(store, path, offset),
        )
    ]


def _truncate_tail(store: Store, path: Path, offset: int) -> str:
    with store.journal.exclusive():
        current = scan(store.home.journal).torn_tail
        if current != (path, offset):
            return "already repaired by a writer"
        os.truncate(path, offset)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return f"truncated {path} to {offset} bytes"


def _cut_damage(store: Store, path: Path, offset: int) -> str:
    """Move each damaged line out of the segment, keeping every valid record around it.

    The damaged bytes are kept in ``<segment>.damaged`` for inspection; job files that are
    newer than what the journal now says are then re-journaled by the comparison check.
    """
    from queuectl.storage.journal import iter_segment

    with store.journal.exclusive():
        kept, damaged = [], []
        with open(path, "rb") as handle:
            lines = handle.readlines()
        for (_, record), line in zip(iter_segment(path), lines, strict=True):
            (kept if record is not None else damaged).append(line)
        aside = path.with_name(path.name + ".damaged")
        with open(aside, "ab") as handle:
            handle.writelines(damaged)
            handle.flush()
            os.fsync(handle.fileno())
        tmp = path.with_name(path.name + ".repair")
        with open(tmp, "wb") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        store.journal.close()  # our descriptor may point at the replaced file
    return f"moved {len(damaged)} damaged line(s) from {path} (first at byte {offset}) to {aside}"


# ------------------------------------------------------------------------ tmp files


def _check_tmp(store: Store) -> list[Finding]:
    out = []
    now = time.time()
    for entry in os.scandir(store.home.tmp):
        pid = _pid_of_tmp(entry.name)
        age = now - entry.stat(follow_symlinks=False).st_mtime
        if (pid is not None and not _alive(pid)) or age > STALE_TMP_SECONDS:
            path = Path(entry.path)
            out.append(Finding("stale-tmp", f"leftover temporary file {path}", _unlink(path)))
    return out


def _pid_of_tmp(name: str) -> int | None:
    """``<stem>.<pid>.<random>.tmp`` (job writes) or ``output.<pid>.<random>.tmp.out|.err``."""
    parts = name.split(".")
    if "tmp" not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index("tmp")
    if at >= 3 and parts[at - 2].isdigit():
        return int(parts[at - 2])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: Path) -> Callable[[], str]:
    def fix() -> str:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return "already gone"
        return f"removed {path}"

    return fix


# ------------------------------------------------------------------------ processing/


def _check_orphans(store: Store) -> list[Finding]:
    out = []
    directory = store.home.state_dir(JobState.PROCESSING)
    for name in sorted(os.listdir(directory)):
        if name.startswith("."):
            continue
        locked = store.try_lock_orphan(name)
        if locked is None:
            continue
        _job, fd, path = locked
        os.close(fd)
        out.append(
            Finding(
                "orphan",
                f"{path} is in processing/ but no worker or command holds it",
                lambda name=name: _recover(store, name),
            )
        )
    return out


def _recover(store: Store, name: str) -> str:
    def lost(job: Job) -> Job:
        outcome = Outcome(OutcomeKind.WORKER_LOST, error="worker lost (found by fsck)")
        return after_attempt(
            job, outcome, backoff_base=backoff_policy(store.config.values()), now=utcnow()
        )

    return store.recover_orphan(name, lost) or "no longer orphaned"


# ------------------------------------------------------------------------ duplicates


def _check_duplicates(store: Store) -> list[Finding]:
    first = {k: v for k, v in existing_job_files(store).items() if len(v) > 1}
    if not first:
        return []
    out = []
    second = existing_job_files(store)  # a worker's commit briefly has two copies: look again
    for job_id, paths in first.items():
        if len(second.get(job_id, [])) > 1 and set(second[job_id]) == set(paths):
            names = ", ".join(str(p.relative_to(store.home.root)) for p in paths)
            out.append(
                Finding(
                    "duplicate",
                    f"job {job_id} is in two folders: {names}",
                    lambda paths=paths: _keep_newest(store, paths),
                )
            )
    return out


def _keep_newest(store: Store, paths: list[Path]) -> str:
    """Keep the copy with the highest rev; a locked processing/ copy is never touched."""
    ranked = []
    for path in paths:
        try:
            job = Job.from_json(read_job_file(path))
        except (OSError, InvalidJob):
            continue
        # Highest rev first; on a tie, a copy whose text agrees with its folder.
        agrees = job.state.value == path.parent.name
        ranked.append(((job.rev, agrees, path.parent.name != "processing"), path))
    if not ranked:
        return "no readable copy"
    ranked.sort(key=lambda item: item[0])
    keep = ranked[-1][1]
    removed = []
    for _, path in ranked[:-1]:
        if path.parent.name == "processing" and store.try_lock_orphan(path.name) is None:
            continue
        aside = store.home.rejected / f"{path.parent.name}-{path.name}"
        shutil.move(path, aside)
        removed.append(str(aside))
    return f"kept {keep}; moved {', '.join(removed) or 'nothing'} aside"


# ------------------------------------------------------------------------ files vs journal


def _check_against_journal(store: Store, offline: bool) -> list[Finding]:
    jobs = journal_jobs(scan(store.home.journal))
    files = existing_job_files(store)
    out = []
    for job_id, paths in sorted(files.items()):
        settled = [p for p in paths if p.parent.name != JobState.PROCESSING.value]
        if len(settled) != 1:
            continue
        path = settled[0]
        try:
            on_disk = Job.from_json(read_job_file(path))
        except (OSError, InvalidJob):
            continue  # dropped files not yet adopted; rejected by workers if invalid
        journaled = jobs.get(job_id)
        if journaled is None:
            out.append(
                Finding(
                    "not-journaled",
                    f"{path} is not in the journal",
                    lambda job=on_disk: _journal(store, job),
                )
            )
            continue
        if journaled.rev == on_disk.rev and journaled.state.value == path.parent.name:
            continue
        if on_disk.rev > journaled.rev:
            out.append(
                Finding(
                    "journal-behind",
                    f"{path} (rev {on_disk.rev}) is newer than the journal "
                    f"(rev {journaled.rev}, {journaled.state.value})",
                    lambda job=on_disk: _journal(store, job),
                )
            )
        else:
            fix = (lambda job=journaled, path=path: _rewrite(store, job, path)) if offline else None
            out.append(
                Finding(
                    "file-behind",
                    f"{path} (rev {on_disk.rev}) disagrees with the journal "
                    f"(rev {journaled.rev}, {journaled.state.value})"
                    + ("" if offline else "; stop workers to repair"),
                    fix,
                )
            )
    for job_id, job in sorted(jobs.items()):
        if job_id not in files:
            fix = (lambda job=job: _rewrite(store, job, None)) if offline else None
            out.append(
                Finding(
                    "missing-file",
                    f"job {job_id} ({job.state.value}) is in the journal but has no file",
                    fix,
                )
            )
    return out


def _journal(store: Store, job: Job) -> str:
    store.journal.append(
        [{"ts": job.updated_at, "event": "fsck", "pid": os.getpid(), "job": job.to_dict()}]
    )
    return f"journaled {job.id} as {job.state.value} (rev {job.rev})"


def _rewrite(store: Store, job: Job, old: Path | None) -> str:
    store.write_files([Change(job, "fsck", remove=old)])
    return f"wrote {job.id} to {job.state.value}/ from the journal"
