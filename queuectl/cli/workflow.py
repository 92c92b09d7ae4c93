"""Commands that steer work: queues (limits), pause and resume, hold and release, restart,
edit."""

from __future__ import annotations

from typing import Any

import click

from queuectl.cli.main import Context, complete_ids, pass_context
from queuectl.cli.render import print_json
from queuectl.errors import UsageError
from queuectl.text import one_line

__all__ = ["edit", "hold", "pause", "queue", "release", "restart", "resume"]

UNFINISHED = ("pending", "processing", "failed", "held", "blocked")


def queue_rows(ctx: Context) -> list[dict[str, Any]]:
    """Every queue with its limit, pause flag and jobs per state (``queue list``, status),
    plus a row with a ``problem`` for each queue that cannot run its jobs: a queue file that
    cannot be trusted, or a queue that unfinished jobs name but that does not exist."""
    from queuectl.job import DEFAULT_QUEUE, JobState
    from queuectl.storage.slots import running_slots

    store = ctx.store
    queues = {q.name: q for q in store.queues.all()}
    broken = store.queues.broken()
    states = tuple(JobState(s) for s in UNFINISHED)
    if not store.queues.directory.exists():
        # no queue was ever added or changed: every job is in the default queue (enqueue
        # refuses others, and a worker rejects a drop naming one), and nothing is read.
        counts = {DEFAULT_QUEUE: {s.value: store.folders.count(s) for s in states}}
    else:
        counts = store.folders.queue_counts(states)
    rows = []
    for name in sorted({*queues, *broken, *counts}):
        mine = counts.get(name, {})
        queue = queues.get(name)
        problem = None if queue is not None else store.queues.why_unusable(name)
        rows.append(
            {
                "name": name,
                "parallel": queue.parallel if queue is not None else None,
                "paused": queue.paused if queue is not None else None,
                "pending": mine.get("pending", 0),
                "running": mine.get("processing", 0),
                "failed": mine.get("failed", 0),
                "held": mine.get("held", 0),
                "blocked": mine.get("blocked", 0),
                "problem": problem,
                "slots_in_use": running_slots(store.locks, queue) if queue is not None else 0,
            }
        )
    return rows


def queue_problems(rows: list[dict[str, Any]]) -> list[str]:
    """One line per queue that cannot run its jobs (``queue list``, ``status``)."""
    out = []
    for row in rows:
        if row["problem"] is None:
            continue
        waiting = sum(row[k] for k in ("pending", "failed", "held", "blocked"))
        out.append(f"queue {row['name']}: {row['problem']}; {waiting} job(s) of it cannot run")
    return out


@click.group()
def queue() -> None:
    """Named queues with a parallel limit that holds across every worker of the home."""


@queue.command("add")
@click.argument("name")
@click.option(
    "--parallel",
    type=click.IntRange(0, 4096),
    default=0,
    show_default=True,
    help="At most this many of its jobs run at once, home-wide (0: no limit).",
)
@pass_context
def queue_add(ctx: Context, name: str, parallel: int) -> None:
    """Create a queue."""
    created = ctx.store.queues.add(name, parallel)
    click.echo(f"queue {created.name} added ({_limit(created.parallel)})")


@queue.command("set")
@click.argument("name")
@click.option(
    "--parallel",
    type=click.IntRange(0, 4096),
    required=True,
    help="The new limit (0: none); running jobs are not stopped.",
)
@pass_context
def queue_set(ctx: Context, name: str, parallel: int) -> None:
    """Change a queue's parallel limit; the next start obeys it, running jobs finish."""
    changed = ctx.store.queues.set_parallel(name, parallel)
    click.echo(f"queue {changed.name}: {_limit(changed.parallel)}")


@queue.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of queues.")
@pass_context
def queue_list(ctx: Context, as_json: bool) -> None:
    """Every queue with its limit, pause state and jobs."""
    rows = queue_rows(ctx)
    if as_json:
        used = _gpus_by_queue(ctx)
        for row in rows:
            row.pop("slots_in_use")
            row["gpus_in_use"] = used.get(row["name"], {})
        print_json(rows)
        return
    gpus = ctx.store.devices.in_use()
    from tabulate import tabulate

    table = [
        [
            r["name"],
            "broken" if r["problem"] else r["parallel"] or "-",
            "yes" if r["paused"] else "",
            r["pending"],
            r["running"],
            r["failed"],
            r["held"],
            r["blocked"],
        ]
        for r in rows
    ]
    headers = ["queue", "parallel", "paused", "pending", "running", "failed", "held", "blocked"]
    click.echo(tabulate(table, headers=headers))
    problems = queue_problems(rows)
    if problems:
        click.echo()
        for line in problems:
            click.echo(one_line(line))
    if gpus:
        _devices, per = ctx.store.devices.current()
        click.echo()
        click.echo("gpu devices in use: " + ", ".join(f"{d}: {n}/{per}" for d, n in gpus.items()))


def _gpus_by_queue(ctx: Context) -> dict[str, dict[str, int]]:
    """Queue -> device -> jobs of that queue running on it (what the workers publish)."""
    from queuectl.storage.registry import running_jobs

    used: dict[str, dict[str, int]] = {}
    for entry in running_jobs(ctx.store.home.workers).values():
        devices = entry.get("gpus")
        if not isinstance(devices, list):
            continue
        mine = used.setdefault(str(entry.get("queue", "default")), {})
        for device in devices:
            mine[str(device)] = mine.get(str(device), 0) + 1
    return used


@queue.command("remove")
@click.argument("name")
@pass_context
def queue_remove(ctx: Context, name: str) -> None:
    """Remove a queue that has no unfinished jobs."""
    ctx.store.queues.remove(name, ctx.store.unfinished_in)
    click.echo(f"queue {name} removed")


def _limit(parallel: int) -> str:
    return f"at most {parallel} at once" if parallel else "no limit"


# -------------------------------------------------------------------- pause, resume


@click.command()
@click.argument("names", metavar="[QUEUE...]", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every queue.")
@pass_context
def pause(ctx: Context, names: tuple[str, ...], everything: bool) -> None:
    """Start no new job of these queues (running ones finish); persists across restarts."""
    _set_paused(ctx, names, everything, True)


@click.command()
@click.argument("names", metavar="[QUEUE...]", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every queue.")
@pass_context
def resume(ctx: Context, names: tuple[str, ...], everything: bool) -> None:
    """Let paused queues start jobs again."""
    _set_paused(ctx, names, everything, False)


def _set_paused(ctx: Context, names: tuple[str, ...], everything: bool, paused: bool) -> None:
    if everything and names:
        raise UsageError("give queue names or --all, not both")
    if not everything and not names:
        verb = "pause" if paused else "resume"
        raise UsageError(f"missing queue names or --all: say which queues to {verb}")
    store = ctx.store
    chosen = store.queues.names() if everything else list(dict.fromkeys(names))
    for name in chosen:
        store.queues.require(name)
    verb = "paused" if paused else "resumed"
    for name in chosen:
        _queue, changed = store.queues.set_paused(name, paused)
        click.echo(f"{verb} {name}" if changed else f"{name} was already {verb}")


# -------------------------------------------------------------------- one job at a time


def _each(job_ids: tuple[str, ...], action: Any, verb: str, past: str, as_json: bool) -> None:
    """Apply an operation to each id (``cli.batch``)."""
    from queuectl.cli.batch import each_id
    from queuectl.job import utcnow

    def run(job_id: str) -> tuple[str, str]:
        job = action(job_id, utcnow())
        state = job.state.value
        return state, f"{past} {job_id}" + ("" if state == past else f" ({state})")

    each_id(job_ids, verb, run, as_json)


JSON_EACH = click.option(
    "--json", "as_json", is_flag=True, help="Print the outcome per id as JSON."
)


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_ids)
@JSON_EACH
@pass_context
def hold(ctx: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Keep waiting jobs (pending, failed-waiting, blocked) from running: to held/."""
    _each(job_ids, ctx.store.workflow.hold, "hold", "held", as_json)


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_ids)
@JSON_EACH
@pass_context
def release(ctx: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Let held jobs run (or wait for their dependencies, or their retry time)."""
    _each(job_ids, ctx.store.workflow.release, "release", "released", as_json)


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_ids)
@JSON_EACH
@pass_context
def restart(ctx: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Run finished jobs (completed, dead, cancelled) again: attempts start over, run
    numbers and history go on."""
    _each(job_ids, ctx.store.restart, "restart", "restarted", as_json)


@click.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.option("--command", help="The new command.")
@click.option("--priority", type=click.IntRange(-100, 100), help="The new priority.")
@click.option("--queue", metavar="NAME", help="Move it to this queue.")
@click.option("--run-at", "run_at", metavar="TIME", help="Not before this time.")
@click.option("--max-retries", type=click.IntRange(0, 1000), help="The new retry budget.")
@click.option("--label", multiple=True, help="Its labels (replace them; repeatable).")
@pass_context
def edit(ctx: Context, job_id: str, **changes: Any) -> None:
    """Change a job that is waiting (pending, held, blocked or failed-waiting)."""
    from queuectl.job import format_time, parse_time, utcnow

    wanted: dict[str, Any] = {}
    for key in ("command", "priority", "queue", "max_retries"):
        if changes.get(key) is not None:
            wanted[key] = changes[key]
    if changes.get("run_at") is not None:
        try:
            wanted["run_at"] = format_time(parse_time(changes["run_at"]))
        except ValueError:
            raise UsageError(f"invalid time {changes['run_at']!r}: use ISO 8601") from None
    if changes.get("label"):
        wanted["labels"] = list(changes["label"])
    if not wanted:
        raise UsageError("nothing to change: give --command, --priority, --queue, ...")
    job = ctx.store.workflow.edit(job_id, wanted, utcnow())
    click.echo(f"edited {job.id} ({', '.join(sorted(wanted))})")
