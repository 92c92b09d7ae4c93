"""The read-only views of the dashboard, each assembled from the Store and ``observe``.

Nothing here takes a lock that a worker waits for: dependencies are judged from where
their files are (``Folders.locate``), not under their change locks as ``Workflow`` does
before it moves a job, so the job page of a blocked job may lag a commit by a moment but
never delays one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, Final

from queuectl.job import FINISHED_STATES, Job, JobState, format_time, parse_time, utcnow
from queuectl.observe.attempts import job_attempts
from queuectl.recurrence import local_zone, next_occurrence
from queuectl.storage.registry import live_workers, running_jobs
from queuectl.storage.slots import running_slots
from queuectl.storage.store import Store
from queuectl.web.actions import applicable
from queuectl.web.catalog import Catalog
from queuectl.web.natural import natural_key
from queuectl.web.output import read_output, run_files
from queuectl.web.summary import Summary

__all__ = [
    "job_detail",
    "list_rows",
    "queue_rows",
    "running_info",
    "schedule_rows",
    "worker_rows",
]

MAX_LINKED: Final = 200
"""Dependencies and dependents shown on a job page (a job may name up to 1000)."""

LOG_TAIL_BYTES: Final = 4096
LOG_TAIL_FILES: Final = 10

WAITING: Final = ("pending", "failed", "held", "blocked")


def running_info(
    store: Store, job_id: str, runs: int, listed: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """When and where a job in processing/ runs, from its worker's ``<id>.jobs``; a job
    claimed this instant is not listed yet, and then the claim's rename time is used."""
    entry = (listed if listed is not None else running_jobs(store.home.workers)).get(job_id)
    if entry is not None:
        return {
            "started_at": entry.get("started_at"),
            "worker": entry.get("worker"),
            "run": entry.get("run"),
            "thread": entry.get("thread"),
        }
    try:
        claimed = os.stat(store.home.job_path(JobState.PROCESSING, job_id)).st_ctime
        started: str | None = format_time(datetime.fromtimestamp(claimed, UTC))
    except OSError:
        started = None
    return {"started_at": started, "worker": None, "run": runs + 1, "thread": None}


def list_rows(store: Store, rows: list[Summary]) -> list[dict[str, Any]]:
    """JSON rows of the jobs view; running jobs get when and where they run."""
    listed = running_jobs(store.home.workers) if any(r.state == "processing" for r in rows) else {}
    out = []
    for summary in rows:
        row = summary.row()
        if summary.state == "processing":
            row["running"] = running_info(store, summary.id, summary.runs, listed)
        out.append(row)
    return out


def queue_rows(store: Store, catalog: Catalog | None) -> list[dict[str, Any]]:
    """Every queue with its limit, pause flag and unfinished jobs (as ``queue list``)."""
    rows = []
    for queue in store.queues.all():
        counts = {
            state: (catalog.per_queue.get((queue.name, state), 0) if catalog else None)
            for state in ("pending", "processing", *WAITING[1:])
        }
        waiting = None if catalog is None else sum(counts[s] or 0 for s in WAITING)
        rows.append(
            {
                "name": queue.name,
                "parallel": queue.parallel,
                "paused": queue.paused,
                "pending": counts["pending"],
                "running": counts["processing"],
                "failed": counts["failed"],
                "held": counts["held"],
                "blocked": counts["blocked"],
                "waiting": waiting,
                "slots_in_use": running_slots(store.locks, queue),
                "updated_at": queue.updated_at or None,
            }
        )
    return rows


def worker_rows(store: Store) -> list[dict[str, Any]]:
    """Each live worker (pid, threads, queues served, start) with the jobs it runs now."""
    workers = live_workers(store.home.workers)
    running: dict[str, list[dict[str, Any]]] = {}
    for job_id, entry in running_jobs(store.home.workers).items():
        worker = entry.get("worker") or {}
        running.setdefault(str(worker.get("id")), []).append(
            {
                "id": job_id,
                "run": entry.get("run"),
                "started_at": entry.get("started_at"),
                "thread": entry.get("thread"),
            }
        )
    rows = []
    for info in workers:
        queues = info.get("queues")
        jobs = sorted(running.get(str(info.get("id")), []), key=lambda j: str(j["started_at"]))
        rows.append(
            {
                "id": info.get("id"),
                "host": info.get("host"),
                "pid": info.get("pid"),
                "threads": info.get("threads"),
                "queues": queues if isinstance(queues, list) else None,
                "started_at": info.get("started_at"),
                "burst": info.get("burst") is True,
                "jobs": jobs,
            }
        )
    return rows


def schedule_rows(store: Store) -> list[dict[str, Any]]:
    """Every schedule with its rule and next due time (as ``schedule list``)."""
    rows = []
    for item in sorted(store.schedules.all(), key=lambda s: natural_key(s.name)):
        try:
            upcoming = next_occurrence(
                cron=item.cron,
                every=item.every,
                anchor=parse_time(item.created_at or item.last_occurrence),
                after=max(parse_time(item.last_occurrence), utcnow()),
                zone=UTC if item.utc else local_zone(),
            )
            next_due = format_time(upcoming) if upcoming else None
        except (ValueError, OverflowError):
            next_due = None
        command = item.job.get("command")
        rows.append(
            {
                "name": item.name,
                "rule": item.rule,
                "next_due": None if item.paused else next_due,
                "last_occurrence": item.last_occurrence or None,
                "last_job": item.last_job,
                "paused": item.paused,
                "command": command if isinstance(command, str) else "",
                "queue": item.job.get("queue") or "default",
            }
        )
    return rows


def job_detail(store: Store, catalog: Catalog | None, job_id: str) -> dict[str, Any]:
    """Everything the job page shows: the file, its attempts from the journal, its links,
    its output files and the actions its state allows."""
    job = store.folders.load(job_id)
    attempts = job_attempts(store, job_id)
    running = running_info(store, job.id, job.runs) if job.state is JobState.PROCESSING else None
    hooks = [h for h in _hook_results(store, job_id) if h.get("generation") == job.generation]
    dependencies = _dependencies(store, job)
    return {
        "job": job.to_dict(),
        "attempts": attempts,
        "running": running,
        "dependencies": dependencies,
        "waiting_for": _waiting_for(job, dependencies) if job.state is JobState.BLOCKED else [],
        "dependents": _dependents(catalog, job_id),
        "outputs": _outputs(store, job, running),
        "hook": hooks[-1] if hooks else None,
        "actions": list(applicable(job.state)),
        "logs": _log_tails(store, job_id),
    }


def _hook_results(store: Store, job_id: str) -> list[dict[str, Any]]:
    """The job's completion hook runs; none without a ``hooks/`` folder, which is made before
    any hook runs (``Hooks.enable``), so a home that never used hooks is spared a second
    search of the journal's index (half of a job page's time at 100,000 records)."""
    if not os.path.isdir(store.hooks.directory):
        return []
    return store.hooks.results(job_id)


def _dependencies(store: Store, job: Job) -> list[dict[str, Any]]:
    found = []
    for kind, ids in (("after", job.after), ("after_any", job.after_any)):
        for dep in ids[:MAX_LINKED]:
            where = store.folders.locate(dep)
            found.append({"id": dep, "kind": kind, "state": where[0].value if where else None})
    return found


def _waiting_for(job: Job, dependencies: list[dict[str, Any]]) -> list[str]:
    finished = {s.value for s in FINISHED_STATES}
    return [
        d["id"]
        for d in dependencies
        if (d["kind"] == "after" and d["state"] != "completed")
        or (d["kind"] == "after_any" and d["state"] is not None and d["state"] not in finished)
    ]


def _dependents(catalog: Catalog | None, job_id: str) -> list[dict[str, Any]]:
    if catalog is None:
        return []
    ids = sorted(catalog.dependents.get(job_id, ()), key=natural_key)[:MAX_LINKED]
    return [{"id": i, "state": catalog.jobs[i].state if i in catalog.jobs else None} for i in ids]


def _outputs(store: Store, job: Job, running: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each run with output, newest first: its streams' sizes, and whether it is live."""
    runs = {int(run): streams for run, streams in run_files(store, job.id).items()}
    live = running.get("run") if running else None
    if isinstance(live, int):
        runs.setdefault(live, {})
    return [
        {"run": run, "streams": runs[run], "live": run == live}
        for run in sorted(runs, reverse=True)
    ]


def _log_tails(store: Store, job_id: str) -> dict[str, str]:
    """The ends of the newest output files (the API's ``logs``, kept for scripts)."""
    tails: dict[str, str] = {}
    files = [
        (int(run), stream)
        for run, streams in run_files(store, job_id).items()
        for stream in streams
    ]
    for run, stream in sorted(files)[-LOG_TAIL_FILES:]:
        found = read_output(store, job_id, run, stream, None)
        text = found["text"]
        tails[f"{run}.{stream}"] = text[-LOG_TAIL_BYTES:]
    return tails
