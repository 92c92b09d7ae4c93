"""A job's attempts, from the journal: what ``history``, ``show`` and the dashboard list.

An attempt is a record the appender marked as ending one (its index line has the attempt
columns). Each carries the job after the attempt, whose ``runs`` numbers the attempt across
DLQ retries and restarts (``attempts`` restarts at 0 there) and whose last ``history`` entry
says how it went; run numbers never change, not even when ``journal compact`` folds the
oldest attempts away (they are then listed from the job's snapshot record, whose
``history`` keeps its last 50 runs, marked ``"event": "compacted"``). Found through the
index, so a job's history costs milliseconds whatever the journal's size.

An id freed by ``cleanup`` or ``dlq purge`` may be enqueued again: each life has its own
``generation``, its attempts are numbered from 1 again, and each attempt says which life
(``life``: 1 for the first) it belongs to. ``history`` lists every life; ``show`` only the
current one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from queuectl.errors import NotFound
from queuectl.storage.journal import SNAPSHOT_SUFFIX
from queuectl.storage.journal_index import ATTEMPT_COLUMNS, GENERATION, LENGTH, OFFSET, RUN
from queuectl.storage.store import Store

__all__ = ["job_attempts", "lives"]


def job_attempts(store: Store, job_id: str) -> list[dict[str, Any]]:
    """Every finished attempt of ``job_id`` in every life, oldest first; ``NotFound`` for
    an id the queue has never seen (a job removed by cleanup is not an error: the journal
    still has its attempts until compaction folds them away)."""
    rows = store.journal.rows_of(job_id)
    if not rows and store.folders.locate(job_id) is None:
        raise NotFound(f"no job with id {job_id!r}")
    generations = sorted({_int(fields[GENERATION]) for fields, _ in rows})
    life_of = {generation: number for number, generation in enumerate(generations, 1)}
    found: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for fields, source in rows:
        if source.suffix == SNAPSHOT_SUFFIX:
            found += _folded(store, fields, source, life_of, seen)
            continue
        if len(fields) < ATTEMPT_COLUMNS:
            continue
        generation, run = _int(fields[GENERATION]), _int(fields[RUN])
        if (generation, run) in seen:
            continue  # re-journaled by the recovery of an interrupted commit
        record = store.journal.read_at(source, _int(fields[OFFSET]), _int(fields[LENGTH]))
        if record is None:
            continue
        seen.add((generation, run))
        found.append(_entry(record, run, life_of.get(generation, 1), generation))
    return found


def _folded(
    store: Store,
    fields: list[str],
    source: Path,
    life_of: dict[int, int],
    seen: set[tuple[int, int]],
) -> list[dict[str, Any]]:
    """Attempts that ``journal compact`` folded away, as the job's snapshot record still
    lists them (its ``history``: the last 50 runs, with their run numbers)."""
    record = store.journal.read_at(source, _int(fields[OFFSET]), _int(fields[LENGTH]))
    job = record.get("job") if record else None
    history = job.get("history") if isinstance(job, dict) else None
    if not isinstance(history, list):
        return []
    generation = _int(fields[GENERATION])
    out = []
    for entry in history:
        run = entry.get("run") if isinstance(entry, dict) else None
        if not isinstance(run, int) or isinstance(run, bool) or (generation, run) in seen:
            continue
        seen.add((generation, run))
        kept = dict(entry)
        kept.update(event="compacted", life=life_of.get(generation, 1), generation=generation)
        out.append(kept)
    return out


def lives(attempts: list[dict[str, Any]]) -> int:
    return max((a.get("life", 1) for a in attempts), default=1)


def _entry(record: dict[str, Any], run: int, life: int, generation: int) -> dict[str, Any]:
    found = record.get("job")
    job: dict[str, Any] = found if isinstance(found, dict) else {}
    history = job.get("history")
    entry = dict(history[-1]) if isinstance(history, list) and history else {}
    if record.get("event") == "recovered" and not entry.get("outcome"):
        entry["outcome"] = "worker_lost"
    entry.setdefault("finished_at", job.get("finished_at"))
    entry.setdefault("exit_code", job.get("last_exit_code"))
    entry.setdefault("error", job.get("last_error"))
    entry["event"] = record.get("event")
    entry["run"] = run
    entry["life"] = life
    entry["generation"] = generation
    return entry


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
