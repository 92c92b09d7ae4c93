"""``queuectl schedule``: recurring jobs, enqueued by the worker that leads."""

from __future__ import annotations

from typing import Any

import click

from queuectl.cli.main import Context, pass_context
from queuectl.cli.render import print_json
from queuectl.cli.submit import job_options, overrides
from queuectl.errors import UsageError

__all__ = ["schedule"]


@click.group()
def schedule() -> None:
    """Recurring jobs: a cron rule or an interval, enqueued by one worker exactly once."""


class _NameThenCommand(click.Command):
    """``schedule add NAME [OPTIONS] COMMAND...``: the options sit between the name and the
    command, and everything from the command's first word on is the command's own (as with
    ``add``), so ``schedule add nightly --every 1d backup.sh --full`` works."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-"):
            ctx.meta["schedule_name"] = args[0]
            args = args[1:]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["NAME", *super().collect_usage_pieces(ctx)]


@schedule.command("add", cls=_NameThenCommand, context_settings={"allow_interspersed_args": False})
@click.option("--cron", metavar="EXPR", help="Five-field cron rule ('*/15 9-17 * * 1-5').")
@click.option("--every", metavar="DURATION", help="An interval instead (30s, 5m, 1h).")
@click.option("--utc", is_flag=True, help="Read the cron rule in UTC (default: local time).")
@click.option(
    "--catch-up",
    type=click.Choice(["one", "none"]),
    default="one",
    show_default=True,
    help="Occurrences missed while no worker ran: enqueue the newest one, or none.",
)
@click.option("--job", "job_json", metavar="JSON", help="The job as JSON instead of COMMAND.")
@job_options
@click.argument("command", nargs=-1)
@pass_context
def schedule_add(
    ctx: Context,
    cron: str | None,
    every: str | None,
    utc: bool,
    catch_up: str,
    job_json: str | None,
    command: tuple[str, ...],
    **options: Any,
) -> None:
    """Add a schedule NAME that enqueues a job (COMMAND, or --job JSON) on a rule."""
    import os
    import shlex

    from queuectl.cli.main import duration_option
    from queuectl.job import job_from_input, parse_object, utcnow
    from queuectl.recurrence import check_cron
    from queuectl.storage.schedules import Schedule

    name = click.get_current_context().meta.get("schedule_name")
    if name is None:
        raise UsageError("give the schedule a NAME first: schedule add NAME --every 1h COMMAND")
    if (cron is None) == (every is None):
        raise UsageError("give --cron EXPR or --every DURATION")
    if bool(command) == bool(job_json):
        raise UsageError("give a COMMAND or --job JSON (not both)")
    if options.get("job_id") or options.get("unique_key"):
        raise UsageError("a schedule names its jobs itself: --id and --unique-key do not apply")
    if options.get("delay") or options.get("run_at"):
        raise UsageError(
            "a schedule's jobs run when their occurrence falls: --delay and --run-at do not "
            "apply (put the offset in the rule: --cron '10 3 * * *')"
        )
    if job_json is not None:
        spec = parse_object(job_json)
        fixed = sorted({"id", "unique_key", "run_at"} & set(spec))
        if fixed:
            raise UsageError(
                f"a schedule sets {fixed[0]!r} of each job itself: leave it out of --job"
            )
    else:
        text = command[0] if len(command) == 1 else shlex.join(command)
        spec = {"command": text, "cwd": os.getcwd()}
    spec.update(overrides(options, spec))
    if cron is not None:
        try:
            check_cron(cron)
        except ValueError as exc:
            raise UsageError(f"invalid cron rule {cron!r}: {exc}") from None
    seconds = duration_option(every) if every is not None else None
    if seconds is not None and seconds < 1:
        raise UsageError("--every must be at least 1 second")
    store = ctx.store
    from queuectl.worker.leader import occurrence_id

    # checked as the job of an occurrence now, under the id such a job gets
    probe = job_from_input({**spec, "id": occurrence_id(name, utcnow())}, default_max_retries=0)
    store.check_new(probe)  # its queue exists, its dependencies too, it fits
    made = store.schedules.add(
        Schedule(name, cron=cron, every=seconds, utc=utc, catch_up=catch_up, job=spec)
    )
    click.echo(f"schedule {made.name} added ({made.rule})")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of schedules.")
@pass_context
def schedule_list(ctx: Context, as_json: bool) -> None:
    """Every schedule: its rule, next due time, last enqueued job, paused or not."""
    rows = [_row(s) for s in ctx.store.schedules.all()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no schedules")
        return
    from tabulate import tabulate

    table = [
        [
            r["name"],
            r["rule"],
            r["next_due"] or "-",
            r["last_job"] or "-",
            "yes" if r["paused"] else "",
        ]
        for r in rows
    ]
    click.echo(tabulate(table, headers=["schedule", "rule", "next due", "last job", "paused"]))


def _row(item: Any) -> dict[str, Any]:
    from datetime import UTC

    from queuectl.job import format_time, parse_time, utcnow
    from queuectl.recurrence import local_zone, next_occurrence

    upcoming = next_occurrence(
        cron=item.cron,
        every=item.every,
        anchor=parse_time(item.created_at or item.last_occurrence),
        after=max(parse_time(item.last_occurrence), utcnow()),
        zone=UTC if item.utc else local_zone(),
    )
    return {
        "name": item.name,
        "rule": item.rule,
        "cron": item.cron,
        "every": item.every,
        "utc": item.utc,
        "catch_up": item.catch_up,
        "next_due": format_time(upcoming) if upcoming else None,
        "last_occurrence": item.last_occurrence,
        "last_job": item.last_job,
        "paused": item.paused,
        "job": item.job,
    }


@schedule.command("remove")
@click.argument("name")
@pass_context
def schedule_remove(ctx: Context, name: str) -> None:
    """Remove a schedule (the jobs it enqueued stay)."""
    ctx.store.schedules.remove(name)
    click.echo(f"schedule {name} removed")


@schedule.command("pause")
@click.argument("name")
@pass_context
def schedule_pause(ctx: Context, name: str) -> None:
    """Enqueue nothing for a schedule until it is resumed."""
    _, changed = ctx.store.schedules.set_paused(name, True)
    click.echo(f"paused schedule {name}" if changed else f"schedule {name} was already paused")


@schedule.command("resume")
@click.argument("name")
@pass_context
def schedule_resume(ctx: Context, name: str) -> None:
    """Enqueue a paused schedule's occurrences again (what it missed: its catch-up rule)."""
    _, changed = ctx.store.schedules.set_paused(name, False)
    click.echo(f"resumed schedule {name}" if changed else f"schedule {name} was not paused")
