"""How the command line shows things: tables, JSON, progress bars, one-line errors.

Every command prints through here, so that one job looks the same in ``list``, ``show`` and
``dlq list``, errors share one style, and a script gets the same JSON shapes everywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from queuectl.text import clip, one_line

if TYPE_CHECKING:
    from datetime import datetime

    from queuectl.job import Job
    from queuectl.storage.store import Store

__all__ = [
    "Progress",
    "attempts_table",
    "collect",
    "fail",
    "note",
    "print_jobs",
    "print_json",
    "progress",
    "running_info",
    "running_map",
    "warn",
    "write_stdout",
]

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled", "blocked", "held")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def note(message: str) -> None:
    """Something a user should know that is not an error (stderr)."""
    click.echo(f"queuectl: note: {one_line(message)}", err=True)


def warn(message: str) -> None:
    click.echo(f"queuectl: error: {one_line(message)}", err=True)


def fail(message: str, code: int) -> NoReturn:
    warn(message)
    sys.exit(code)


def confirm(question: str) -> None:
    """Ask on a terminal; without one, refuse at once (a script must say ``--yes``) rather
    than prompt into a pipe. Raises ``QueueError`` when the answer is no."""
    from queuectl.errors import QueueError, UsageError

    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation and there is no terminal: add --yes")
    if not click.confirm(f"{question}?", err=True):
        raise QueueError("not confirmed: nothing changed")


class Progress:
    """A click progress bar on a terminal (stderr), silence when piped."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._enabled = sys.stderr.isatty()

    def set_total(self, total: int, minimum: int = 200) -> None:
        if self._enabled and total >= minimum:
            self._bar = click.progressbar(
                length=total, label=self.label, file=sys.stderr, show_pos=True, show_percent=True
            )
            self._bar.__enter__()

    def update(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def progress(label: str) -> Progress:
    return Progress(label)


def collect(
    store: Store,
    states: list[str],
    limit: int,
    wanted: Callable[[Job], bool] | None = None,
) -> list[Job]:
    """Valid jobs of the folders that ``wanted`` accepts; files that are not valid jobs are
    skipped (never moved) and named on stderr, so a script reading stdout still gets a clean
    list."""
    from queuectl.job import JobState
    from queuectl.storage.folders import Skipped

    jobs: list[Job] = []
    skipped: list[Skipped] = []
    for name in states:
        for job in store.folders.jobs(JobState(name), skipped=skipped):
            if limit and len(jobs) >= limit:
                break
            if wanted is None or wanted(job):
                jobs.append(job)
    for bad in skipped[:10]:
        warn(f"skipped {bad.path.parent.name}/{bad.path.name}: {bad.reason}")
    if len(skipped) > 10:
        warn(f"skipped {len(skipped) - 10} more file(s) that are not valid jobs (queuectl fsck)")
    return jobs


def print_jobs(store: Store, jobs: list[Job], as_json: bool) -> None:
    running = running_map(store, jobs)
    if as_json:
        print_json(
            [
                {
                    **j.to_dict(),
                    **({"running": running[j.id]} if j.id in running else {}),
                    **(
                        {"waiting_for": store.workflow.waiting_for(j)}
                        if j.state.value == "blocked"
                        else {}
                    ),
                }
                for j in jobs
            ]
        )
        return
    if not jobs:
        click.echo("no jobs")
        return
    from tabulate import tabulate

    from queuectl.job import utcnow

    now = utcnow()
    queues = len({j.queue for j in jobs}) > 1
    rows = []
    for j in jobs:
        run = running.get(j.id)
        where = ((run.get("worker") or {}).get("id") or "(starting)") if run else ""
        waits = store.workflow.waiting_for(j) if j.state.value == "blocked" else None
        rows.append(
            [
                clip(j.id, 64),
                j.state.value,
                *([clip(j.queue, 32)] if queues else []),
                f"{j.attempts}/{j.max_retries + 1}",
                clip("after " + " ".join(waits), 40) if waits else when(j, run, now),
                *([clip(where, 40)] if running else []),
                clip(j.command, 40),
                clip(j.last_error or "", 40),
            ]
        )
    headers = [
        "id",
        "state",
        *(["queue"] if queues else []),
        "attempts",
        "when",
        *(["worker"] if running else []),
        "command",
        "last error",
    ]
    click.echo(tabulate(rows, headers=headers))


def when(job: Job, run: dict[str, Any] | None, now: datetime) -> str:
    """What a person wants to know about a job's time: how long it has been running, when
    its retry or start is due, else when it last changed."""
    from queuectl.job import parse_time
    from queuectl.text import duration, relative

    try:
        if run is not None and run.get("started_at"):
            return "running " + duration((now - parse_time(run["started_at"])).total_seconds())
        due = job.next_run_at if job.state.value == "failed" else job.run_at
        if due and job.state.value in ("failed", "pending") and parse_time(due) > now:
            return ("retry " if job.state.value == "failed" else "starts ") + relative(
                parse_time(due), now
            )
        return relative(parse_time(job.updated_at), now)
    except (TypeError, ValueError):
        return job.updated_at


def running_map(store: Store, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    from queuectl.storage.registry import running_jobs

    busy = [j for j in jobs if j.state.value == "processing"]
    if not busy:
        return {}
    listed = running_jobs(store.home.workers)
    return {j.id: running_info(store, j, listed) for j in busy}


def running_info(
    store: Store, job: Job, listed: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """When and where a job in processing/ runs, from its worker's ``<id>.jobs`` (no /proc:
    it works from another container); a job claimed this instant is not listed yet, and
    then the claim's time is taken from the file (the rename that claimed it)."""
    from queuectl.job import format_time
    from queuectl.storage.registry import running_jobs

    entry = (listed if listed is not None else running_jobs(store.home.workers)).get(job.id)
    if entry is not None:
        return {
            "started_at": entry.get("started_at"),
            "worker": entry.get("worker"),
            "run": entry.get("run"),
        }
    from datetime import UTC, datetime

    try:
        claimed = store.home.job_path("processing", job.id).stat().st_ctime
        started = format_time(datetime.fromtimestamp(claimed, UTC))
    except OSError:
        started = None
    return {"started_at": started, "worker": None, "run": job.runs + 1}


def attempts_table(runs: list[dict[str, Any]]) -> str:
    """The attempt table ``history`` prints. It has the same columns as ``show``'s, so that
    ``show`` can switch to it."""
    from tabulate import tabulate

    rows = [
        [
            run.get("run"),
            run.get("outcome"),
            run.get("exit_code"),
            run.get("started_at"),
            run.get("duration"),
            run.get("worker"),
            clip(run.get("error") or "", 40),
        ]
        for run in runs
    ]
    headers = ["run", "outcome", "exit", "started", "seconds", "worker", "error"]
    return tabulate(rows, headers=headers)


def write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
