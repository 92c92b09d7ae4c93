"""Commands that copy a whole home: backup and restore."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from queuectl.cli.main import Context, pass_context
from queuectl.cli.render import note, print_json, progress


def _counts(jobs: dict[str, int]) -> str:
    shown = [f"{n} {state}" for state, n in jobs.items() if n]
    return ", ".join(shown) or "none"


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--logs", is_flag=True, help="Include the output logs of the jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print what was backed up as JSON.")
@pass_context
def backup(ctx: Context, file: Path, logs: bool, as_json: bool) -> None:
    """Write the home to FILE (.tar.gz) while workers keep running.

    Every job accepted before the backup started is in it, once, as the journal last
    recorded it; jobs that were running come back as pending, their attempt counted as lost.
    """
    from queuectl.admin.backup import backup as run_backup

    with progress("backing up") as bar:
        report = run_backup(ctx.store, file, logs=logs, progress=bar.update, on_total=bar.set_total)
    total = sum(report.jobs.values())
    if as_json:
        print_json(
            {
                "file": str(file),
                "bytes": report.size,
                "jobs": report.jobs,
                "queues": report.queues,
                "schedules": report.schedules,
                "journal_records": report.journal_records,
                "log_files": report.log_files if logs else None,
                "recovered": report.recovered,
                "unjournaled": report.unjournaled,
                "skipped": report.skipped,
            }
        )
    else:
        click.echo(
            f"backed up {total} job(s) ({_counts(report.jobs)}), {_named(report)}, "
            f"{report.journal_records} journal record(s)"
            + (f", {report.log_files} log file(s)" if logs else "")
            + f" to {file} ({report.size} bytes)"
        )
    if report.recovered and not as_json:
        click.echo(
            f"{len(report.recovered)} running job(s) saved as their worker would find them "
            f"after a crash (the attempt counts as lost): {_ids(report.recovered)}"
        )
    if report.unjournaled:
        note(
            f"{len(report.unjournaled)} job file(s) are not in the journal and were left out: "
            f"{_ids(report.unjournaled)} (queuectl fsck --repair journals them)"
        )
    for job_id in report.skipped[:10]:
        note(f"left out {job_id}: its journal record is not a valid job")


def _named(report: Any) -> str:
    return f"{report.queues} queue(s), {report.schedules} schedule(s)"


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the contents of a home that is not empty.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before replacing (with --force).")
@click.option("--json", "as_json", is_flag=True, help="Print what was restored as JSON.")
@pass_context
def restore(ctx: Context, file: Path, force: bool, yes: bool, as_json: bool) -> None:
    """Restore a backup FILE into the home (--home): an empty or new one, or, with --force,
    one whose contents it replaces (workers must be stopped)."""
    from queuectl.admin.restore import Target, inspect_target
    from queuectl.admin.restore import restore as run_restore
    from queuectl.cli.render import confirm as ask
    from queuectl.storage.home import resolve_home

    root = resolve_home(ctx.home_option)
    target = inspect_target(root)
    if force and not yes and not target.empty and not sys.stdin.isatty():
        ask(f"replacing the contents of {root}")  # refuses at once, before reading FILE

    def confirm(current: Target, manifest: dict[str, Any]) -> bool:
        if not yes:
            jobs = sum(manifest["jobs"].values())
            ask(
                f"Replace the contents of {current.root} ({current.jobs} job file(s)) with "
                f"the backup of {manifest['created_at']} ({jobs} job(s))"
            )
        return True

    with progress("restoring") as bar:
        report = run_restore(
            root,
            file,
            force=force,
            confirm=confirm,
            progress=bar.update,
            on_total=bar.set_total,
        )
    total = sum(report.jobs.values())
    if as_json:
        print_json(
            {
                "home": str(root),
                "backup_created_at": report.manifest["created_at"],
                "replaced": report.replaced,
                "jobs": report.jobs,
                "queues": report.queues,
                "schedules": report.schedules,
                "journal_records": report.journal_records,
                "log_files": report.log_files,
                "recovered": report.recovered,
            }
        )
        return
    click.echo(
        f"restored {total} job(s) ({_counts(report.jobs)}), {_named(report)}, "
        f"{report.journal_records} journal record(s), {report.log_files} log file(s) "
        f"from the backup of {report.manifest['created_at']} into {root}"
    )
    if report.recovered:
        click.echo(
            f"{len(report.recovered)} job(s) were running when the backup was taken: they are "
            f"pending again with that attempt counted as lost: {_ids(report.recovered)}"
        )
