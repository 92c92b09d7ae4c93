"""Commands that look after a home: dlq, config, journal, fsck, cleanup."""

from __future__ import annotations

import sys
import textwrap
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli.main import (
    Context,
    complete_config_keys,
    complete_ids,
    duration_option,
    pass_context,
)
from queuectl.cli.render import (
    collect,
    print_jobs,
    print_json,
    progress,
    warn,
)
from queuectl.errors import QueueError, UsageError

if TYPE_CHECKING:
    from queuectl.storage.store import Store


@click.group()
def dlq() -> None:
    """The dead letter queue: jobs that used up their retries."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
@pass_context
def dlq_list(ctx: Context, as_json: bool) -> None:
    """List dead jobs, oldest first."""
    print_jobs(ctx.store, collect(ctx.store, ["dead"], 0), as_json)


@dlq.command("retry")
@click.argument("job_ids", metavar="[ID...]", nargs=-1, shell_complete=complete_ids)
@click.option("--all", "everything", is_flag=True, help="Every job in the DLQ.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome per id as JSON.")
@pass_context
def dlq_retry(ctx: Context, job_ids: tuple[str, ...], everything: bool, as_json: bool) -> None:
    """Move dead jobs back to pending with attempts reset to 0 (to blocked/ if a
    dependency of theirs has to run again first)."""
    from queuectl.cli.batch import each_id
    from queuectl.job import utcnow

    def retry(job_id: str) -> tuple[str, str]:
        job = ctx.store.retry_dead(job_id, utcnow())
        return job.state.value, f"retried {job_id} ({job.state.value})"

    each_id(_dead_ids(ctx.store, job_ids, everything), "retry", retry, as_json)


@dlq.command("purge")
@click.argument("job_ids", metavar="[ID...]", nargs=-1, shell_complete=complete_ids)
@click.option("--all", "everything", is_flag=True, help="Every job in the DLQ.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print what was purged as JSON.")
@pass_context
def dlq_purge(
    ctx: Context, job_ids: tuple[str, ...], everything: bool, yes: bool, as_json: bool
) -> None:
    """Delete dead jobs and their logs for good (the journal records the deletion)."""
    from queuectl.admin.maintenance import purge
    from queuectl.cli.render import confirm
    from queuectl.job import utcnow

    ids = _dead_ids(ctx.store, job_ids, everything)
    if not yes:
        confirm(f"delete {len(ids)} dead job(s) for good")
    removed, missing = purge(ctx.store, ids, utcnow())
    for job_id, why in missing:
        warn(f"cannot purge {job_id}: {why}")
    if as_json:
        print_json(
            {
                "purged": removed,
                "not_purged": [{"id": job_id, "error": why} for job_id, why in missing],
            }
        )
    else:
        click.echo(f"purged {len(removed)} job(s)")
    if missing:
        sys.exit(1)


@dlq.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def dlq_stats(ctx: Context, as_json: bool) -> None:
    """Dead jobs grouped by last error and by command, with counts and the oldest and
    newest time each group died (text clipped to 40 characters, as list shows it)."""
    from queuectl.observe.dlq import dlq_stats as compute

    stats = compute(collect(ctx.store, ["dead"], 0))
    if as_json:
        print_json(stats)
        return
    if not stats["total"]:
        click.echo("no dead jobs")
        return
    from tabulate import tabulate

    click.echo(
        f"{stats['total']} dead job(s), died between {stats['oldest']} and {stats['newest']}"
    )
    for key, title in (("by_error", "last error"), ("by_command", "command")):
        rows = [
            [row[key.split("_")[1]] or "(none)", row["jobs"], row["oldest"], row["newest"]]
            for row in stats[key]
        ]
        click.echo("")
        click.echo(tabulate(rows, headers=[title, "jobs", "oldest", "newest"]))


def _dead_ids(store: Store, job_ids: tuple[str, ...], everything: bool) -> list[str]:
    from queuectl.job import JobState

    if everything == bool(job_ids):
        raise UsageError("give job ids or --all (not both)")
    return store.folders.ids(JobState.DEAD) if everything else list(job_ids)


def _config_help() -> str:
    from queuectl.config import KEYS

    lines = [
        "Read and change the home's settings (config.json; every worker reads them).",
        "",
        "\b",
        "Keys (default in brackets):",
    ]
    for name, key in KEYS.items():
        default = key.default if key.default != "" else "empty"
        text = f"{name} [{default}]: {key.help}"
        lines += textwrap.wrap(text, 76, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


@click.group(help=_config_help(), short_help="Read and change the home's settings.")
def config() -> None:
    pass


@config.command("get")
@click.argument("key", shell_complete=complete_config_keys)
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ..., "value": ...}.')
@pass_context
def config_get(ctx: Context, key: str, as_json: bool) -> None:
    """Print one setting."""
    from queuectl.config import canonical_key

    name = canonical_key(key)
    value = ctx.store.config.get(name)
    if as_json:
        print_json({"key": name, "value": value})
    else:
        click.echo(value)


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key", shell_complete=complete_config_keys)
@click.argument("value")
@pass_context
def config_set(ctx: Context, key: str, value: str) -> None:
    """Change one setting (validated) and persist it under the home."""
    from queuectl.config import canonical_key, parse_value

    name = canonical_key(key)
    parsed = parse_value(name, value)
    ctx.store.set_config(name, parsed)
    if name == "on-finish" and parsed:
        ctx.store.hooks.enable(per_job=False)  # hooks run for jobs that finish from now on
    click.echo(f"{name} = {parsed}")


@config.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def config_list(ctx: Context, as_json: bool) -> None:
    """Print every setting with its meaning."""
    from queuectl.config import KEYS

    values = ctx.store.config.values()
    if as_json:
        print_json(values)
        return
    from tabulate import tabulate

    rows = [[name, values[name], key.help] for name, key in KEYS.items()]
    click.echo(tabulate(rows, headers=["key", "value", "meaning"]))


@config.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@pass_context
def config_export(ctx: Context, file: str | None) -> None:
    """Write every setting as one JSON object to FILE (stdout without FILE or with -)."""
    import json

    text = json.dumps(ctx.store.config.values(), indent=2) + "\n"
    if file is None or file == "-":
        click.echo(text, nl=False)
        return
    try:
        with click.open_file(file, "w", atomic=True) as handle:
            handle.write(text)
    except OSError as exc:
        raise QueueError(f"cannot write {file}: {exc.strerror or exc}") from None
    click.echo(f"exported {len(ctx.store.config.values())} setting(s) to {file}")


@config.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@pass_context
def config_import(ctx: Context, file: str) -> None:
    """Set the settings a JSON object in FILE (- for stdin) names, checked as a whole: one
    bad value and nothing changes. Settings it does not name keep their values."""
    import json

    from queuectl.config import MAX_CONFIG_BYTES, parse_settings

    raw = _read_settings_file(file, MAX_CONFIG_BYTES)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise UsageError(f"{file} is not valid JSON") from None
    values, unknown = parse_settings(data, file)
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:10])
        click.echo(
            f"queuectl: warning: {file} has unknown key(s) {shown}; they were not imported",
            err=True,
        )
    ctx.store.write_config(lambda stored: {**stored, **values})
    if values.get("on-finish"):
        ctx.store.hooks.enable(per_job=False)  # as config set: hooks from now on
    for key, value in values.items():
        click.echo(f"{key} = {value}")


def _read_settings_file(file: str, limit: int) -> bytes:
    from queuectl.storage.durable import read_regular

    if file == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            data = read_regular(file, limit)[0]
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"{file} is larger than {limit} bytes")
    return data


@config.command("reset")
@click.argument("key", required=False, shell_complete=complete_config_keys)
@pass_context
def config_reset(ctx: Context, key: str | None) -> None:
    """Put KEY (every setting without KEY) back to its default."""
    from queuectl.config import KEYS, canonical_key

    names = [canonical_key(key)] if key is not None else list(KEYS)

    def change(stored: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in stored.items() if k not in names}

    ctx.store.write_config(change)
    for name in names:
        click.echo(f"{name} = {KEYS[name].default} (default)")


@click.group()
def journal() -> None:
    """The append-only event journal."""


@journal.command("rebuild")
@pass_context
def journal_rebuild(ctx: Context) -> None:
    """Recreate the state folders from the journal alone (workers must be stopped).

    Jobs that were running go back to the state they were claimed from and run again.
    """
    from queuectl.admin.rebuild import rebuild

    with progress("rebuilding") as bar:
        report = rebuild(ctx.store, progress=bar.update, on_total=bar.set_total)
    click.echo(
        f"rebuilt: {report.written} written, {report.unchanged} already right, "
        f"{report.removed} stale copies removed"
    )
    if report.torn_tail:
        path, offset = report.torn_tail
        click.echo(f"ignored a torn last record in {path} at byte {offset}")
    if report.unknown:
        click.echo(
            f"{len(report.unknown)} job file(s) not in the journal were left in place "
            "(queuectl fsck reports them)"
        )


@click.command()
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely and say what was done.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON object.")
@pass_context
def fsck(ctx: Context, repair: bool, as_json: bool) -> None:
    """Check the home: journal damage, duplicate or disagreeing job files, stale tmp files,
    orphaned processing/ jobs, permissions. Exit 0 when clean, 1 when problems were found."""
    from queuectl.admin.fsck import fsck as run_fsck

    findings = run_fsck(ctx.store, repair=repair)
    if as_json:
        print_json(
            {
                "clean": not findings,
                "repair": repair,
                "findings": [
                    {"kind": f.kind, "message": f.message, "repaired": f.repaired} for f in findings
                ],
            }
        )
    else:
        for finding in findings:
            click.echo(f"{finding.kind}: {finding.message}")
            if finding.repaired:
                click.echo(f"  repaired: {finding.repaired}")
            elif repair:
                click.echo("  not repaired")
        if not findings:
            click.echo("clean")
        else:
            click.echo(
                f"{len(findings)} problem(s) found" + (", repairs attempted" if repair else "")
            )
    if findings:
        sys.exit(1)


@journal.command("compact")
@click.option(
    "--retention",
    metavar="DURATION",
    help="Keep full history this long (default: the journal-retention setting).",
)
@pass_context
def journal_compact(ctx: Context, retention: str | None) -> None:
    """Fold journal segments older than the retention into one snapshot."""
    from queuectl.admin.maintenance import compact
    from queuectl.job import utcnow

    store = ctx.store
    seconds = duration_option(retention) if retention else store.config.get("journal-retention")
    report = compact(store, float(seconds), utcnow())
    if report.snapshot is None:
        click.echo("nothing to compact: every segment has records newer than the retention")
        return
    click.echo(
        f"folded {report.segments_folded} segment(s) into {report.snapshot.name}: "
        f"{report.jobs_kept} job(s) kept, {report.jobs_dropped} deleted job(s) dropped"
    )


@click.command()
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    required=True,
    help="Remove jobs finished longer ago than this (e.g. 7d, 12h, 30m).",
)
@click.option(
    "--state",
    "states",
    type=click.Choice(["completed", "dead", "cancelled"]),
    multiple=True,
    help="Which finished states to clean (default: completed). Repeatable.",
)
@pass_context
def cleanup(ctx: Context, older_than: str, states: tuple[str, ...]) -> None:
    """Remove finished jobs and their logs; the journal records the deletion."""
    from queuectl.admin.maintenance import cleanup as run_cleanup
    from queuectl.job import JobState, utcnow

    chosen = tuple(JobState(s) for s in (states or ("completed",)))
    age = duration_option(older_than)  # arguments are checked before the home is opened
    with progress("cleaning") as bar:
        bar.set_total(sum(ctx.store.folders.count(s) for s in chosen))
        removed, kept = run_cleanup(ctx.store, age, chosen, utcnow(), progress=bar.update)
    click.echo(f"removed {len(removed)} job(s)")
    for job_id, why in kept:
        warn(f"kept {job_id}: {why}")
