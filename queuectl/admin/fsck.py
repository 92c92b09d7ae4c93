"""Check a queue home for damage and, with ``repair=True``, fix what can be fixed safely.

Safe online: every check tolerates workers moving files meanwhile (a finding is confirmed by
looking twice, or under the job's change lock), and repairs take the same locks as workers.
Rewriting job files from the journal is only done offline (no live workers), because it
could race a worker's commit. Without ``repair`` nothing is moved or written.

Memory stays bounded whatever the journal's size: the journal is walked record by record,
and the comparison with the folders keeps one small tuple per job (``rebuild.winners``).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from queuectl.admin.rebuild import (
    existing_job_files,
    keyed_job,
    named_stores,
    split,
    winners,
    winning_job,
    winning_named,
)
from queuectl.config import backoff_policy
from queuectl.errors import InvalidJob, JournalCorrupt, QueueError
from queuectl.job import FINISHED_STATES, Job, JobState, utcnow
from queuectl.scheduler import worker_lost
from queuectl.storage import tmpfiles
from queuectl.storage.commit import Change
from queuectl.storage.drops import awaiting_adoption
from queuectl.storage.events import Event, job_entry
from queuectl.storage.home import AUX_DIRS, STATE_DIRS
from queuectl.storage.jobfile import is_job_name, read_job
from queuectl.storage.journal import audit, check
from queuectl.storage.named import NamedStore
from queuectl.storage.records import decode_line
from queuectl.storage.registry import live_workers
from queuectl.storage.replay import Winner
from queuectl.storage.store import Store
from queuectl.storage.unique import Keyed, expected_holders

__all__ = ["Finding", "fsck"]


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
    reported: list[Finding] = []
    for _ in range(3):
        for finding in findings:
            if finding.repair is not None:
                try:
                    finding.repaired = finding.repair()
                except (QueueError, OSError) as exc:
                    finding.repaired = None
                    finding.message += f" (repair failed: {exc})"
        reported += findings
        if not any(f.repaired for f in findings):
            break
        seen = {r.message for r in reported}
        findings = [f for f in _checks(store) if f.message not in seen]
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
    findings += _check_files(store, offline, journal_ok)
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
    # A job file others can read is made private again; one that others could *write* is
    # not made trustworthy by a chmod (its content may be theirs): it is reported as a bad
    # file and moved to rejected/ by --repair.
    for state in STATE_DIRS:
        for entry in os.scandir(root / state):
            st = entry.stat(follow_symlinks=False)
            readable = st.st_mode & 0o077 and not st.st_mode & 0o022
            if stat.S_ISREG(st.st_mode) and readable and st.st_uid == os.geteuid():
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
    """Checksums of every record and each segment's index, in one pass."""
    try:
        with store.journal.reading():
            found = audit(store.home.journal)
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
    out = []
    if found.stale_indexes:
        names = ", ".join(p.name for p in found.stale_indexes)
        out.append(
            Finding(
                "index",
                f"journal index out of date for {names}",
                lambda: f"rebuilt {store.journal.rebuild_indexes()} index file(s)",
            )
        )
    if found.torn_tail is not None:
        path, offset = found.torn_tail
        out.append(
            Finding(
                "journal-torn-tail",
                f"torn last record in {path} at byte {offset}",
                lambda: _truncate_tail(store, path, offset),
            )
        )
    return out


def _truncate_tail(store: Store, path: Path, offset: int) -> str:
    with store.journal.exclusive():
        with store.journal.reading():
            current = check(store.home.journal)[1]
        if current != (path, offset):
            return "already repaired by a writer"
        store.journal.truncate_segment(path, offset)
    return f"truncated {path} to {offset} bytes"


def _cut_damage(store: Store, path: Path, offset: int) -> str:
    """Move each damaged line out of the segment, keeping every valid record around it.

    The damaged bytes are kept in ``<segment>.damaged`` for inspection; job files that are
    newer than what the journal now says are then re-journaled by the comparison check.
    """
    dropped, aside = store.journal.cut_damage(path, lambda line: decode_line(line) is not None)
    return f"moved {dropped} damaged line(s) from {path} (first at byte {offset}) to {aside}"


# ------------------------------------------------------------------------ tmp files


def _check_tmp(store: Store) -> list[Finding]:
    """Leftovers whose writer is gone (``storage.tmpfiles``: never by age alone), one
    finding per dead writer (a SIGKILLed worker leaves its pre-created output files and
    blanks: a few dozen files, one problem)."""
    out = []
    for owner, paths in sorted(tmpfiles.by_writer(store.home.tmp, store.locks).items()):
        if len(paths) == 1:
            message = f"leftover temporary file {paths[0]}"
        else:
            writer = f"process mark {owner}" if owner else "no known writer"
            message = (
                f"{len(paths)} leftover temporary files in {store.home.tmp} of a process that "
                f"is gone ({writer}), e.g. {paths[0].name}"
            )
        out.append(Finding("stale-tmp", message, partial(_remove_tmp, store, paths)))
    return out


def _remove_tmp(store: Store, paths: list[Path]) -> str:
    removed = sum(1 for path in paths if tmpfiles.remove_if_stale(path, store.locks))
    if len(paths) == 1:
        return f"removed {paths[0]}" if removed else "already gone"
    return f"removed {removed} of {len(paths)} file(s)"


# ------------------------------------------------------------------------ job files


def _check_files(store: Store, offline: bool, journal_ok: bool) -> list[Finding]:
    """One read of every job file: files that are not valid jobs (or must not be trusted),
    and, with a sound journal, each settled job against its winning journal record."""
    best, named = split(winners(store)) if journal_ok else ({}, {})
    files = existing_job_files(store)
    out: list[Finding] = []
    queued: dict[str, list[str]] = {}
    keyed: list[Keyed] = []
    if journal_ok:
        for kind in named_stores(store):
            out += _check_named(store, kind, named[kind.kind], offline)
    for state in JobState:
        directory = store.home.state_dir(state)
        for name in sorted(os.listdir(directory)):
            if not is_job_name(name):
                continue
            path = directory / name
            out += _check_file(store, state, path, files, best, offline, journal_ok, queued, keyed)
    out += _check_stranded(store, queued)
    out += _check_unique(store, keyed)
    if journal_ok:
        for job_id, winner in sorted(best.items()):
            if job_id not in files and not winner.gone:
                fix = partial(_rewrite_missing, store, winner) if offline else None
                out.append(
                    Finding(
                        "missing-file",
                        f"job {job_id} ({winner.state}) is in the journal but has no file"
                        + ("" if offline else "; stop workers to repair"),
                        fix,
                    )
                )
    return out


def _check_unique(store: Store, keyed: list[Keyed]) -> list[Finding]:
    """Each unique key's entry against the job files: it must name the unfinished job with
    the key (else an enqueue of the key would create a second one), and no two unfinished
    jobs may share a key."""
    out = []
    for key, (holder, live) in sorted(expected_holders(keyed).items()):
        if len(live) > 1:
            ids = " ".join(j.id for j in live)
            out.append(
                Finding("unique", f"unique key {key!r} is held by {len(live)} live jobs: {ids}")
            )
        named = store.unique.holder_of(key)
        if named == holder.id or (not holder.unfinished and named is not None):
            continue
        where = store.unique.path(key).relative_to(store.home.root)
        says = f"names job {named}" if named else "is missing"
        message = f"unique key {key!r}: {where} {says}, but job {holder.id} holds it"
        out.append(Finding("unique", message, partial(_record_unique, store, key)))
    return out


def _record_unique(store: Store, key: str) -> str:
    """Point the key's entry at the job that holds it, under the key's lock (an enqueue of
    the key cannot interleave), from the job files as they are then."""
    with store.unique.locked([key]):
        found = []
        for state in JobState:
            directory = store.home.state_dir(state)
            for name in os.listdir(directory):
                if not is_job_name(name):
                    continue
                try:
                    job = read_job(directory / name, None)
                except (InvalidJob, OSError):
                    continue
                if job.unique_key == key:
                    found.append(keyed_job(job))
        expected = expected_holders(found).get(key)
        if expected is None:
            return "no job holds it now"
        store.unique.record(key, expected[0].id)
    return f"unique key {key!r} now names job {expected[0].id}"


def _check_stranded(store: Store, queued: dict[str, list[str]]) -> list[Finding]:
    """Waiting jobs of a queue that does not exist or cannot be read: no worker starts them
    (one finding per queue; add the queue again, fix its file, or cancel the jobs)."""
    out = []
    for name, ids in sorted(queued.items()):
        why = store.queues.why_unusable(name)
        if why is None:
            continue
        shown = " ".join(sorted(ids)[:10]) + (" ..." if len(ids) > 10 else "")
        out.append(
            Finding(
                "queue-missing", f"{len(ids)} job(s) of queue {name} cannot run: {why}: {shown}"
            )
        )
    return out


def _check_named(
    store: Store, kind: NamedStore[Any], found: dict[str, Winner], offline: bool
) -> list[Finding]:
    """Each queue (or schedule) file against its winning journal record, and files the
    journal lacks."""
    out = []
    label = kind.kind
    broken = kind.broken()
    on_disk = {name for name in kind.file_names() if kind.read_file(name) is not None}
    for name, winner in sorted(found.items()):
        current = kind.read_file(name)
        if current is None and name in broken and not winner.gone:
            out.append(
                Finding(
                    label,
                    f"{label} {name}: {broken[name]}; {_unusable(label)}",
                    partial(_restore_named, store, kind, winner),
                )
            )
            continue
        if winner.gone:
            if current is not None and current.rev <= winner.rev:
                out.append(
                    Finding(
                        label,
                        f"{label} {name} was removed but its file is still here",
                        partial(_remove_named_file, kind, name),
                    )
                )
            continue
        version = (current.generation, current.rev) if current is not None else None
        if version is not None and version > (winner.generation, winner.rev):
            out.append(
                Finding(
                    label,
                    f"{label} {name} is newer than the journal",
                    partial(_journal_named, kind, current),
                )
            )
            continue
        if version == (winner.generation, winner.rev):
            differs = _named_differences(store, kind, winner, current)
            if differs:
                out.append(
                    Finding(
                        label,
                        f"{label} {name} disagrees with the journal: " + "; ".join(differs),
                        partial(_restore_named, store, kind, winner),
                    )
                )
            continue
        fix = partial(_rewrite_named, store, kind, winner) if offline else None
        out.append(Finding(label, f"{label} {name} disagrees with the journal", fix))
    for name in sorted(set(broken) - set(found)):
        out.append(
            Finding(label, f"{label} {name}: {broken[name]}; {_unusable(label)} (not journaled)")
        )
    for name in sorted(on_disk - set(found)):
        current = kind.read_file(name)
        if current is not None:
            out.append(
                Finding(
                    label,
                    f"{label} {name} is not in the journal",
                    partial(_journal_named, kind, current),
                )
            )
    return out


def _named_differences(
    store: Store, kind: NamedStore[Any], winner: Winner, current: Any
) -> list[str]:
    """What a file says unlike its winning journal record of the same rev (a hand edit
    that still parses): ``parallel is 3 in queues/q.json, 1 in the journal``."""
    item = winning_named(store, kind, winner)
    if item is None:
        return []
    mine, theirs = _flat(current.to_dict()), _flat(item.to_dict())
    where = f"{kind.folder}/{current.name}.json"
    return [
        f"{key} is {_shown(mine.get(key))} in {where}, {_shown(theirs.get(key))} in the journal"
        for key in sorted(set(mine) | set(theirs))
        if mine.get(key) != theirs.get(key)
    ]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``job.command``): a difference names the field."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unusable(label: str) -> str:
    return "its jobs cannot run" if label == "queue" else f"the {label} is ignored"


def _shown(value: object) -> str:
    return (
        json.dumps(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    )


def _restore_named(store: Store, kind: NamedStore[Any], winner: Winner) -> str:
    """Put back what the journal says (a queue or schedule change holds the object's change
    lock, so this is safe while workers run)."""
    item = winning_named(store, kind, winner)
    if item is None:
        return "the journal record cannot be read"
    with kind.changing(item.name):
        now = kind.read_file(item.name)
        if now is not None and (now.generation, now.rev) != (item.generation, item.rev):
            return "changed meanwhile; run fsck again"
        kind.write_file(item)
    return f"restored {kind.folder}/{item.name}.json from the journal"


def _remove_named_file(kind: NamedStore[Any], name: str) -> str:
    removed = kind.remove_file(name)
    return f"removed {kind.folder}/{name}.json" if removed else "already gone"


def _journal_named(kind: NamedStore[Any], item: Any) -> str:
    kind.journal_file(item, Event.FSCK)
    return f"journaled {kind.kind} {item.name}"


def _rewrite_named(store: Store, kind: NamedStore[Any], winner: Winner) -> str:
    item = winning_named(store, kind, winner)
    if item is None:
        return "the journal record cannot be read"
    kind.write_file(item)
    return f"wrote {kind.kind} {item.name} from the journal"


def _check_file(
    store: Store,
    state: JobState,
    path: Path,
    files: dict[str, list[Path]],
    best: dict[str, Winner],
    offline: bool,
    journal_ok: bool,
    stranded: dict[str, list[str]],
    keyed: list[Keyed],
) -> list[Finding]:
    try:
        job = read_job(path, None)
        if state is not JobState.PROCESSING and job.state is not state:
            raise InvalidJob(f"says state {job.state.value!r} but is in {state.value}/")
    except FileNotFoundError:
        return []
    except (InvalidJob, OSError) as exc:
        reason = str(exc) if isinstance(exc, InvalidJob) else f"cannot be read: {exc.strerror}"
        if state is JobState.PROCESSING and store.recovery.is_running(path.stem):
            return []
        if state is JobState.PENDING and awaiting_adoption(path):
            return []
        return [Finding("bad-file", f"{path} {reason}", partial(_reject, store, path, reason))]
    out: list[Finding] = []
    if state not in FINISHED_STATES and state is not JobState.PROCESSING:
        stranded.setdefault(job.queue, []).append(job.id)
    if job.unique_key:
        keyed.append(keyed_job(job))
    settled = [p for p in files.get(job.id, []) if p.parent.name != JobState.PROCESSING.value]
    if not journal_ok or state is JobState.PROCESSING or len(settled) != 1:
        return out
    finding = _compare(store, path, job, best.get(job.id), offline)
    return out if finding is None else [*out, finding]


def _reject(store: Store, path: Path, reason: str) -> str:
    with store.changing(path.stem):
        try:
            read_job(path, None)
            return "valid now"
        except FileNotFoundError:
            return "already gone"
        except (InvalidJob, OSError):
            pass
        message = store.rejector.reject(path, reason)
    return f"moved to rejected/: {message}" if message else "already gone"


# ------------------------------------------------------------------------ processing/


def _check_orphans(store: Store) -> list[Finding]:
    out = []
    directory = store.home.state_dir(JobState.PROCESSING)
    for name in sorted(os.listdir(directory)):
        if not is_job_name(name) or not store.recovery.orphan(name):
            continue
        out.append(
            Finding(
                "orphan",
                f"{directory / name} is in processing/ but no worker or command holds it",
                partial(_recover, store, name),
            )
        )
    return out


def _recover(store: Store, name: str) -> str:
    def lost(job: Job) -> Job:
        return worker_lost(job, backoff_policy(store.config.values()), utcnow(), "fsck")

    return store.recovery.recover_orphan(name, lost) or "no longer orphaned"


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
                    partial(_keep_newest, store, job_id),
                )
            )
    return out


def _keep_newest(store: Store, job_id: str) -> str:
    """Keep the copy with the highest (generation, rev); a processing/ copy that someone
    runs is never touched."""
    with store.changing(job_id):
        ranked = []
        for state, path in store.folders.copies(job_id):
            try:
                job = read_job(path, None)
            except (OSError, InvalidJob):
                continue
            agrees = job.state is state
            ranked.append(
                ((job.generation, job.rev, agrees, state is not JobState.PROCESSING), path)
            )
        if len(ranked) < 2:
            return "no longer duplicated"
        ranked.sort(key=lambda item: item[0])
        keep = ranked[-1][1]
        moved = []
        for _, path in ranked[:-1]:
            if path.parent.name == "processing" and store.recovery.is_running(job_id):
                continue
            message = store.rejector.reject(path, f"is an older copy of {keep}")
            if message:
                moved.append(str(path))
    return f"kept {keep}; moved {', '.join(moved) or 'nothing'} to rejected/"


# ------------------------------------------------------------------------ files vs journal


def _compare(
    store: Store, path: Path, on_disk: Job, winner: Winner | None, offline: bool
) -> Finding | None:
    mine = (on_disk.generation, on_disk.rev)
    if winner is None:
        return Finding(
            "not-journaled", f"{path} is not in the journal", lambda: _journal(store, path)
        )
    theirs = (winner.generation, winner.rev)
    if winner.gone and mine <= theirs:
        return Finding(
            "deleted",
            f"{path} was deleted ({winner.event} in the journal) but its file is still here",
            lambda: _finish_deletion(store, path, theirs),
        )
    if mine == theirs and winner.state == path.parent.name:
        return None
    if mine > theirs:
        return Finding(
            "journal-behind",
            f"{path} (rev {on_disk.rev}) is newer than the journal "
            f"(rev {winner.rev}, {winner.state})",
            lambda: _journal(store, path),
        )
    fix = (lambda: _rewrite(store, winner, path)) if offline else None
    return Finding(
        "file-behind",
        f"{path} (rev {on_disk.rev}) disagrees with the journal "
        f"(rev {winner.rev}, {winner.state})" + ("" if offline else "; stop workers to repair"),
        fix,
    )


def _journal(store: Store, path: Path) -> str:
    """Journal a job file the journal lacks (re-read under its change lock first)."""
    with store.changing(path.stem):
        try:
            job = read_job(path, None)
        except (OSError, InvalidJob):
            return "changed meanwhile"
        store.journal.append_entries([job_entry(Event.FSCK, job, job.updated_at)])
    return f"journaled {job.id} as {job.state.value} (rev {job.rev})"


def _finish_deletion(store: Store, path: Path, deleted: tuple[int, int]) -> str:
    with store.changing(path.stem):
        try:
            job = read_job(path, None)
        except FileNotFoundError:
            return "already gone"
        except (OSError, InvalidJob):
            return "changed meanwhile"
        if (job.generation, job.rev) > deleted:
            return "a newer copy: kept"
        store.commits.finish_deletion(path)
    return f"removed {path} (its deletion was journaled)"


def _rewrite(store: Store, winner: Winner, old: Path | None) -> str:
    job = winning_job(store, winner)
    if job is None:
        return "the journal record cannot be read"
    store.commits.write_files([Change(job, Event.FSCK, remove=old)])
    return f"wrote {job.id} to {job.state.value}/ from the journal"


def _rewrite_missing(store: Store, winner: Winner) -> str:
    return _rewrite(store, winner, None)
