"""Commands about jobs: enqueue, list, show, cancel, logs, wait, history, stats."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli.main import (
    Context,
    complete_ids,
    duration_option,
    pass_context,
)
from queuectl.cli.render import (
    STATES,
    attempts_table,
    collect,
    print_jobs,
    print_json,
    progress,
    running_info,
    warn,
    write_stdout,
)
from queuectl.errors import QueueError, UsageError

if TYPE_CHECKING:
    from queuectl.job import Job


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("job", metavar="JSON|@FILE|-")
@click.option(
    "--priority",
    "-p",
    type=click.IntRange(-100, 100),
    help="Higher runs first (-100..100, default 0); overrides the JSON.",
)
@click.option("--delay", metavar="DURATION", help="Run no sooner than this from now (30s, 5m).")
@click.option("--run-at", "run_at", metavar="TIME", help="Run no sooner than this ISO 8601 time.")
@pass_context
def enqueue(
    ctx: Context, job: str, priority: int | None, delay: str | None, run_at: str | None
) -> None:
    """Add a job: JSON text, @FILE, or - for one JSON object per line of stdin.

    Example: queuectl enqueue '{"command": "echo hi", "max_retries": 2}'

    @FILE reads one JSON object from a file; - reads one JSON object per line from stdin and
    commits the whole batch at once. Prints the id of each new job.
    """
    from queuectl.job import job_from_input, parse_object

    overrides = _schedule_overrides(priority, delay, run_at)
    texts = _enqueue_inputs(job)
    store = ctx.store
    default_retries = store.config.get("max-retries")
    jobs = []
    explicit: set[str] = set()
    for number, text in texts:
        try:
            data = {**parse_object(text), **overrides}
            jobs.append(job_from_input(data, default_max_retries=default_retries))
        except UsageError as exc:
            where = f"line {number}: " if number else ""
            raise type(exc)(f"{where}{exc}") from None
        if "id" in data:
            explicit.add(jobs[-1].id)
    if not jobs:
        raise UsageError("no jobs given on standard input")
    with progress("enqueueing") as bar:
        bar.set_total(len(jobs))

        def accepted(group: list[Job]) -> None:
            click.echo("\n".join(j.id for j in group))
            bar.update(len(group))

        store.enqueue(jobs, explicit_ids=explicit, on_group=accepted)


def _schedule_overrides(
    priority: int | None, delay: str | None, run_at: str | None
) -> dict[str, Any]:
    from datetime import timedelta

    from queuectl.job import format_time, utcnow

    if delay is not None and run_at is not None:
        raise UsageError("give --delay or --run-at, not both")
    overrides: dict[str, Any] = {}
    if priority is not None:
        overrides["priority"] = priority
    if delay is not None:
        overrides["run_at"] = format_time(utcnow() + timedelta(seconds=duration_option(delay)))
    if run_at is not None:
        overrides["run_at"] = run_at
    return overrides


def _enqueue_inputs(arg: str) -> list[tuple[int, bytes | str]]:
    """(line number or 0, JSON) for each job to create; bytes stay bytes, so text that is
    not UTF-8 is refused by the parser instead of being silently replaced."""
    if arg == "-":
        lines = sys.stdin.buffer.read().split(b"\n")
        return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if arg.startswith("@"):
        try:
            with open(arg[1:], "rb") as handle:
                return [(0, handle.read())]
        except OSError as exc:
            raise UsageError(f"cannot read {arg[1:]}: {exc.strerror}") from None
    return [(0, arg)]


@click.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(0), default=0, help="At most N jobs (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
@pass_context
def list_jobs(ctx: Context, state: str | None, limit: int, as_json: bool) -> None:
    """List jobs, oldest first within each state."""
    jobs = collect(ctx.store, [state] if state else list(STATES), limit)
    print_jobs(ctx.store, jobs, as_json)


@click.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@pass_context
def show(ctx: Context, job_id: str, as_json: bool) -> None:
    """Show one job, whatever its state, with every attempt from the journal."""
    job = ctx.store.folders.load(job_id)
    running = running_info(ctx.store, job) if job.state.value == "processing" else None
    if as_json:
        print_json({**job.to_dict(), "running": running})
        return
    from tabulate import tabulate

    fields = {k: v for k, v in job.to_dict().items() if k != "history"}
    fields["env"] = " ".join(f"{k}={v}" for k, v in job.env.items())
    rows = [[key, "" if value is None else value] for key, value in fields.items()]
    click.echo(tabulate(rows, tablefmt="plain"))
    if running is not None:
        worker = running.get("worker") or {}
        click.echo(
            f"running since {running.get('started_at')} on worker "
            f"{worker.get('id') or '(starting)'}"
        )
    from queuectl.observe.attempts import job_attempts

    runs = [a for a in job_attempts(ctx.store, job_id) if a.get("generation") == job.generation]
    if runs:
        click.echo()
        click.echo(attempts_table(runs))


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_ids)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="How long to wait for a running job's worker to stop it.",
)
@pass_context
def cancel(ctx: Context, job_ids: tuple[str, ...], timeout: float) -> None:
    """Cancel jobs: a waiting job never runs; a running job's command is stopped
    (SIGTERM to its process group, SIGKILL 5 s later). Cancelled jobs go to cancelled/."""
    from queuectl.admin.canceling import cancel_job

    failures = 0
    for job_id in job_ids:
        try:
            click.echo(cancel_job(ctx.store, job_id, timeout))
        except QueueError as exc:
            warn(str(exc))
            failures += 1
    if failures:
        sys.exit(1)


@click.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.option(
    "--attempt",
    "--run",
    "-a",
    "attempt",
    type=click.IntRange(1),
    help="Which run (counts across DLQ retries; default: the latest).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@pass_context
def logs(ctx: Context, job_id: str, attempt: int | None, follow: bool) -> None:
    """Print a job's captured stdout and stderr."""
    from queuectl.observe.logs import follow as follow_logs
    from queuectl.observe.logs import log_files

    if follow:
        follow_logs(ctx.store, job_id, write_stdout)
        return
    number, files = log_files(ctx.store, job_id, attempt)
    files = [path for path in files if path.stat().st_size > 0]
    if not files:
        which = f"run {attempt}" if attempt else "the latest run"
        click.echo(
            f"no output recorded for {which} of {job_id} "
            "(attempts that print nothing keep no log files)",
            err=True,
        )
        return
    labelled = len(files) > 1
    for path in files:
        if labelled:
            stream = "stdout" if path.suffix == ".out" else "stderr"
            click.echo(f"--- run {number} {stream}")
        write_stdout(path.read_bytes())


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_ids)
@click.option("--timeout", type=click.FloatRange(0), help="Give up after S seconds (exit 1).")
@pass_context
def wait(ctx: Context, job_ids: tuple[str, ...], timeout: float | None) -> None:
    """Block until jobs finish. One job: exit with its own exit code (0 when completed).
    Several: 0 when all completed, 1 when any is dead or cancelled."""
    from queuectl.job import JobState
    from queuectl.observe.waiting import wait_for

    ids = list(dict.fromkeys(job_ids))
    with progress("waiting") as bar:
        if len(ids) > 1:
            bar.set_total(len(ids), minimum=2)
        final = wait_for(ctx.store, ids, timeout, progress=bar.update)
    if len(ids) == 1:
        if final[ids[0]] is JobState.COMPLETED:
            return
        code = ctx.store.folders.load(ids[0]).last_exit_code
        sys.exit(code if code is not None and code > 0 else 1)
    bad = sorted(i for i, state in final.items() if state is not JobState.COMPLETED)
    if bad:
        warn(f"not completed: {' '.join(bad)}")
        sys.exit(1)


@click.command()
@click.option("--since", metavar="DURATION", help="Only attempts finished this recently (1h).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def stats(ctx: Context, since: str | None, as_json: bool) -> None:
    """Throughput, outcomes, queue wait and run time percentiles, from the journal."""
    from datetime import timedelta

    from queuectl.job import utcnow
    from queuectl.observe.stats import compute_stats

    now = utcnow()
    try:
        start = now - timedelta(seconds=duration_option(since)) if since else None
    except OverflowError:
        raise UsageError(f"invalid duration {since!r}: too long") from None
    figures = compute_stats(ctx.store, start, now)
    if as_json:
        print_json(figures)
        return
    from tabulate import tabulate

    wait_s, run_s = figures["queue_wait_seconds"], figures["run_seconds"]
    rows = [
        ["attempts finished", figures["attempts"]],
        ["per minute", figures["finished_per_minute"]],
        *([f"  {name}", count] for name, count in figures["outcomes"].items()),
        ["queue wait p50 / p95 (s)", f"{wait_s['p50']} / {wait_s['p95']}"],
        ["run time p50 / p95 (s)", f"{run_s['p50']} / {run_s['p95']}"],
    ]
    click.echo(tabulate(rows, tablefmt="plain"))
    if figures["busiest_commands"]:
        click.echo()
        busiest = [[c["attempts"], c["command"]] for c in figures["busiest_commands"]]
        click.echo(tabulate(busiest, headers=["attempts", "busiest commands"]))


@click.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of attempts.")
@pass_context
def history(ctx: Context, job_id: str, as_json: bool) -> None:
    """Every attempt of a job from the journal, oldest first, numbered across DLQ retries.

    Works for jobs removed by cleanup or purge too, as long as the journal still has them.
    """
    from queuectl.observe.attempts import job_attempts

    runs = job_attempts(ctx.store, job_id)
    if as_json:
        print_json(runs)
    elif runs:
        click.echo(attempts_table(runs))
    else:
        click.echo(f"no attempts of {job_id} yet")
