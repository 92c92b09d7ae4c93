"""Commands about jobs: list, show, cancel, logs, wait, history, stats."""

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
from queuectl.errors import UsageError

if TYPE_CHECKING:
    pass


@click.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--queue", "queue", metavar="NAME", help="Only jobs of this queue.")
@click.option("--label", metavar="LABEL", help="Only jobs with this label.")
@click.option("--since", metavar="DURATION", help="Only jobs changed within this long (1h).")
@click.option("--command", "command", metavar="TEXT", help="Only jobs whose command has TEXT.")
@click.option(
    "--sort",
    type=click.Choice(["updated", "created", "id", "priority"]),
    default="updated",
    show_default=True,
    help="Order within each state: last change (oldest first), creation (oldest first), "
    "id (natural: build-2 before build-10) or priority (highest first).",
)
@click.option("--limit", type=click.IntRange(0), default=0, help="At most N jobs (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
@pass_context
def list_jobs(
    ctx: Context,
    state: str | None,
    queue: str | None,
    label: str | None,
    since: str | None,
    command: str | None,
    sort: str,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs state by state (pending, processing, failed, ...), each state in the
    --sort order; the filters combine."""
    from datetime import timedelta

    from queuectl.job import Job, format_time, utcnow
    from queuectl.text import natural_key

    cutoff = None
    if since is not None:
        try:
            cutoff = format_time(utcnow() - timedelta(seconds=duration_option(since)))
        except OverflowError:
            raise UsageError(f"invalid duration {since!r}: too long") from None

    def wanted(job: Job) -> bool:
        return (
            (queue is None or job.queue == queue)
            and (label is None or label in job.labels)
            and (cutoff is None or job.updated_at >= cutoff)
            and (command is None or command in job.command)
        )

    keys: dict[str, Any] = {
        "updated": lambda j: (j.updated_at, natural_key(j.id)),
        "created": lambda j: (j.created_at, natural_key(j.id)),
        "id": lambda j: natural_key(j.id),
        "priority": lambda j: (-j.priority, j.created_at, natural_key(j.id)),
    }
    jobs: list[Job] = []
    for name in [state] if state else list(STATES):
        jobs += sorted(collect(ctx.store, [name], 0, wanted), key=keys[sort])
        if limit and len(jobs) >= limit:
            break
    if limit:
        jobs = jobs[:limit]
    print_jobs(ctx.store, jobs, as_json)


def _shown(value: object) -> str:
    """A job field for a person: ids and labels plainly (``a b``, not ``['a', 'b']``)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


@click.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@pass_context
def show(ctx: Context, job_id: str, as_json: bool) -> None:
    """Show one job, whatever its state, with every attempt from the journal."""
    job = ctx.store.folders.load(job_id)
    running = running_info(ctx.store, job) if job.state.value == "processing" else None
    waiting = ctx.store.workflow.waiting_for(job) if job.state.value == "blocked" else None
    hooks = [h for h in ctx.store.hooks.results(job_id) if h.get("generation") == job.generation]
    if as_json:
        extra: dict[str, Any] = {"running": running, "hook": hooks[-1] if hooks else None}
        if waiting is not None:
            extra["waiting_for"] = waiting
        print_json({**job.to_dict(), **extra})
        return
    from tabulate import tabulate

    from queuectl.text import one_line

    fields = {k: v for k, v in job.to_dict().items() if k != "history"}
    fields["env"] = " ".join(f"{k}={v}" for k, v in job.env.items())
    rows = [[key, one_line(_shown(value))] for key, value in fields.items()]
    click.echo(tabulate(rows, tablefmt="plain", disable_numparse=True))
    if running is not None:
        worker = running.get("worker") or {}
        click.echo(
            f"running since {running.get('started_at')} on worker "
            f"{worker.get('id') or '(starting)'}"
        )
    if waiting is not None:
        click.echo(f"waiting for: {' '.join(waiting) or '(nothing: about to move on)'}")
    for hook in hooks[-3:]:
        tail = f": {hook['stderr_tail']}" if hook.get("stderr_tail") else ""
        code = hook.get("exit_code")
        coded = f", exit code {code}" if code is not None else ""
        click.echo(
            one_line(
                f"hook ({hook.get('state')}) {hook.get('outcome')}{coded}, "
                f"at {hook.get('finished_at')}{tail}"
            )
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
@click.option("--json", "as_json", is_flag=True, help="Print the outcome per id as JSON.")
@pass_context
def cancel(ctx: Context, job_ids: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Cancel jobs: a waiting job never runs; a running job's command is stopped
    (SIGTERM to its process group, SIGKILL 5 s later). Cancelled jobs go to cancelled/."""
    from queuectl.admin.canceling import cancel_job
    from queuectl.cli.batch import each_id

    each_id(
        job_ids,
        "cancel",
        lambda job_id: ("cancelled", cancel_job(ctx.store, job_id, timeout)),
        as_json,
    )


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


@click.command(
    epilog="""\b
Exit codes for one job: its own exit code (0 when completed); 124 when --timeout
expired; 125 cancelled; 126 dead without an exit code (timeout, worker lost, a
dependency failed); 128+N killed by signal N; 1 unknown id. Several jobs: 0 when all
completed, else 1."""
)
@click.argument("job_ids", metavar="[ID...]", nargs=-1, shell_complete=complete_ids)
@click.option("--queue", "queue", metavar="NAME", help="Wait until this queue has nothing left.")
@click.option("--timeout", type=click.FloatRange(0), help="Give up after S seconds (exit 124).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON array of {id, state, exit_code, signal} per job, also on a timeout "
    '(state "timeout") or an unknown id (state "unknown"); with --queue one object '
    '{queue, state ("drained" or "timeout"), waiting, running}.',
)
@pass_context
def wait(
    ctx: Context, job_ids: tuple[str, ...], queue: str | None, timeout: float | None, as_json: bool
) -> None:
    """Block until jobs finish (or a queue has nothing waiting or running)."""
    from queuectl.observe.waiting import (
        TIMED_OUT,
        WaitTimeout,
        exit_code_of,
        outcomes,
        problem_of,
        wait_for,
        wait_for_queue,
    )

    if job_ids and queue:
        raise UsageError("give job ids or --queue, not both")
    if not job_ids and not queue:
        raise UsageError("missing job ids or --queue NAME: say what to wait for")
    if queue is not None:
        ctx.store.queues.require(queue)
        drained = wait_for_queue(ctx.store, queue, timeout)
        if as_json:
            print_json(drained)
        if drained["state"] == TIMED_OUT:
            raise WaitTimeout(f"timed out waiting for queue {queue!r} to drain")
        return
    ids = list(dict.fromkeys(job_ids))
    with progress("waiting") as bar:
        if len(ids) > 1:
            bar.set_total(len(ids), minimum=2)
        final = wait_for(ctx.store, ids, timeout, progress=bar.update)
    results = outcomes(ctx.store, ids, final)
    if as_json:
        print_json(results)
    problem = problem_of(results)
    if problem is not None:
        raise problem
    if len(ids) == 1:
        code = exit_code_of(results[0])
        if code:
            sys.exit(code)
        return
    bad = [r["id"] for r in results if r["state"] != "completed"]
    if bad:
        if not as_json:
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
