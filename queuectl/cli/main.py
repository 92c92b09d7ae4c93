"""The ``queuectl`` command line: thin click commands over ``Store`` and ``WorkerPool``.

Only this module imports click and tabulate, and the domain modules are imported inside the
commands, so ``queuectl --help`` does not pay for them. Errors from the domain arrive as
``QueueError`` subclasses and leave as one line on stderr with the class's exit code.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from queuectl import __version__
from queuectl.errors import QueueError, UsageError
from queuectl.text import clip

if TYPE_CHECKING:
    from queuectl.job import Job
    from queuectl.storage.store import Store

__all__ = ["cli", "main"]

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")
ORIGINAL_UMASK = 0o022


class Context:
    """Carries the chosen home to every command; the store is built only when needed."""

    def __init__(self, home_option: str | None) -> None:
        self.home_option = home_option
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from queuectl.storage.home import Home, resolve_home
            from queuectl.storage.store import Store

            self._store = Store(Home(resolve_home(self.home_option)).ensure())
        return self._store


pass_context = click.make_pass_decorator(Context)


def _complete_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of job ids: file names in the home's state folders (no JSON read)."""
    from queuectl.storage.home import STATE_DIRS, resolve_home

    root = resolve_home(ctx.find_root().params.get("home"))
    found: list[str] = []
    for state in STATE_DIRS:
        try:
            names = os.listdir(root / state)
        except OSError:
            continue
        found += [n[:-5] for n in names if n.endswith(".json") and n.startswith(incomplete)]
        if len(found) > 500:
            break
    return sorted(found)[:500]


def _complete_config_keys(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[str]:
    from queuectl.config import KEYS

    return [key for key in KEYS if key.startswith(incomplete)]


class QueueGroup(click.Group):
    """Turns domain errors into one line on stderr and the error's exit code, for every
    subcommand (nested groups run inside this ``invoke``), under CliRunner too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc)
        except QueueError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            if os.environ.get("QUEUECTL_DEBUG") or isinstance(exc, BrokenPipeError):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{where}", 1)


@click.group(cls=QueueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    metavar="PATH",
    envvar="QUEUECTL_HOME",
    show_envvar=True,
    help="Queue home folder (default: ~/.queuectl).",
)
@click.version_option(__version__, prog_name="queuectl")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """A durable background job queue for shell commands.

    Jobs are JSON files under the queue home, moved between pending/, processing/,
    completed/, failed/ and dead/; every change is recorded in an fsynced journal.
    """
    ctx.obj = Context(home)


# -------------------------------------------------------------------- enqueue


@cli.command(context_settings={"ignore_unknown_options": True})
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
    with _progress("enqueueing") as bar:
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
        overrides["run_at"] = format_time(utcnow() + timedelta(seconds=_duration_option(delay)))
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


# -------------------------------------------------------------------- worker


@cli.group()
def worker() -> None:
    """Run or stop worker processes."""


@worker.command("start")
@click.option(
    "--count",
    "-c",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker threads in this process.",
)
@click.option(
    "--burst", is_flag=True, help="Exit once nothing is pending, running or waiting for a retry."
)
@pass_context
def worker_start(ctx: Context, count: int, burst: bool) -> None:
    """Run jobs in the foreground until SIGTERM/SIGINT (twice: stop now)."""
    from queuectl.worker.pool import WorkerPool

    store = ctx.store
    # Jobs inherit the umask of the shell that started the worker, not queuectl's private
    # 077; queuectl's own files are created with explicit modes, so they stay 0600/0700.
    os.umask(ORIGINAL_UMASK)
    pool = WorkerPool(store, count, burst=burst)
    sys.exit(pool.run())


@worker.command("stop")
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=None,
    help="Give up waiting after this many seconds (exit 1).",
)
@pass_context
def worker_stop(ctx: Context, timeout: float | None) -> None:
    """Gracefully stop every live worker of this home and wait for them to exit."""
    from queuectl.errors import NoWorkers
    from queuectl.storage.registry import live_workers, request_stop, wait_for_exit

    home = ctx.store.home
    workers = live_workers(home.workers, clean_stale=True)
    if not workers:
        raise NoWorkers("no workers are running for this home")
    for info in workers:
        request_stop(home.stop_requests, info)
    ids = [str(w["id"]) for w in workers]
    click.echo(f"asked {len(ids)} worker(s) to stop: {' '.join(ids)}")
    stuck = [i for i in ids if not wait_for_exit(home.workers, i, timeout)]
    if stuck:
        raise QueueError(f"still running after {timeout:g}s: {' '.join(stuck)}")
    click.echo("all workers stopped")


# -------------------------------------------------------------------- inspection


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Job counts per state and the live workers."""
    from queuectl.storage.registry import live_workers

    store = ctx.store
    counts = {state: store.folders.count(state) for state in STATES}
    workers = live_workers(store.home.workers)
    rejected = store.folders.rejected()
    if as_json:
        _print_json(
            {
                "jobs": counts,
                "workers": workers,
                "rejected": [{"file": f, "reason": r} for f, r in rejected],
            }
        )
        return
    from tabulate import tabulate

    click.echo(tabulate(list(counts.items()), headers=["state", "jobs"]))
    click.echo()
    if workers:
        rows = [
            [w.get("id"), w.get("pid"), w.get("threads"), w.get("started_at"), w.get("host")]
            for w in workers
        ]
        click.echo(tabulate(rows, headers=["worker", "pid", "threads", "started", "host"]))
    else:
        click.echo("no workers running")
    if rejected:
        click.echo()
        click.echo(f"{len(rejected)} rejected file(s) in {store.home.rejected}:")
        for _, reason in rejected[-10:]:
            click.echo(f"  {reason}")


@cli.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(0), default=0, help="At most N jobs (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
@pass_context
def list_jobs(ctx: Context, state: str | None, limit: int, as_json: bool) -> None:
    """List jobs, oldest first within each state."""
    jobs = _collect(ctx.store, [state] if state else list(STATES), limit)
    _print_jobs(ctx.store, jobs, as_json)


def _collect(store: Store, states: list[str], limit: int) -> list[Job]:
    """Valid jobs of the folders; files that are not valid jobs are skipped (never moved)
    and named on stderr, so a script reading stdout still gets a clean list."""
    from queuectl.job import JobState
    from queuectl.storage.folders import Skipped

    jobs: list[Job] = []
    skipped: list[Skipped] = []
    for name in states:
        remaining = limit - len(jobs) if limit else None
        if remaining == 0:
            break
        jobs.extend(store.folders.jobs(JobState(name), limit=remaining, skipped=skipped))
    for bad in skipped[:10]:
        _warn(f"skipped {bad.path.parent.name}/{bad.path.name}: {bad.reason}")
    if len(skipped) > 10:
        _warn(f"skipped {len(skipped) - 10} more file(s) that are not valid jobs (queuectl fsck)")
    return jobs


def _print_jobs(store: Store, jobs: list[Job], as_json: bool) -> None:
    running = _running_map(store, jobs)
    if as_json:
        _print_json(
            [
                {**j.to_dict(), **({"running": running[j.id]} if j.id in running else {})}
                for j in jobs
            ]
        )
        return
    if not jobs:
        click.echo("no jobs")
        return
    from tabulate import tabulate

    rows = []
    for j in jobs:
        run = running.get(j.id)
        when = f"started {run.get('started_at')}" if run else j.updated_at
        where = ((run.get("worker") or {}).get("id") or "(starting)") if run else ""
        rows.append(
            [
                j.id,
                j.state.value,
                f"{j.attempts}/{j.max_retries + 1}",
                when,
                *([where] if running else []),
                clip(j.command, 40),
                clip(j.last_error or "", 40),
            ]
        )
    headers = ["id", "state", "runs", "updated", *(["worker"] if running else [])]
    click.echo(tabulate(rows, headers=[*headers, "command", "last error"]))


def _running_map(store: Store, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    from queuectl.storage.registry import running_jobs

    busy = [j for j in jobs if j.state.value == "processing"]
    if not busy:
        return {}
    listed = running_jobs(store.home.workers)
    return {j.id: _running_info(store, j, listed) for j in busy}


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=_complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@pass_context
def show(ctx: Context, job_id: str, as_json: bool) -> None:
    """Show one job, whatever its state, with every attempt from the journal."""
    job = ctx.store.folders.load(job_id)
    running = _running_info(ctx.store, job) if job.state.value == "processing" else None
    if as_json:
        _print_json({**job.to_dict(), "running": running})
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
        click.echo(_attempts_table(runs))


# -------------------------------------------------------------------- dlq


@cli.group()
def dlq() -> None:
    """The dead letter queue: jobs that used up their retries."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
@pass_context
def dlq_list(ctx: Context, as_json: bool) -> None:
    """List dead jobs, oldest first."""
    _print_jobs(ctx.store, _collect(ctx.store, ["dead"], 0), as_json)


@dlq.command("retry")
@click.argument("job_ids", metavar="[ID...]", nargs=-1, shell_complete=_complete_ids)
@click.option("--all", "everything", is_flag=True, help="Every job in the DLQ.")
@pass_context
def dlq_retry(ctx: Context, job_ids: tuple[str, ...], everything: bool) -> None:
    """Move dead jobs back to pending with attempts reset to 0."""
    from queuectl.job import utcnow

    failures = 0
    for job_id in _dead_ids(ctx.store, job_ids, everything):
        try:
            ctx.store.retry_dead(job_id, utcnow())
        except QueueError as exc:
            _warn(str(exc))
            failures += 1
            continue
        click.echo(f"retried {job_id}")
    if failures:
        sys.exit(1)


@dlq.command("purge")
@click.argument("job_ids", metavar="[ID...]", nargs=-1, shell_complete=_complete_ids)
@click.option("--all", "everything", is_flag=True, help="Every job in the DLQ.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def dlq_purge(ctx: Context, job_ids: tuple[str, ...], everything: bool, yes: bool) -> None:
    """Delete dead jobs and their logs for good (the journal records the deletion)."""
    from queuectl.admin.maintenance import purge
    from queuectl.job import utcnow

    ids = _dead_ids(ctx.store, job_ids, everything)
    if not yes and not click.confirm(f"Delete {len(ids)} dead job(s) for good?", err=True):
        raise QueueError("nothing deleted")
    removed, missing = purge(ctx.store, ids, utcnow())
    click.echo(f"purged {len(removed)} job(s)")
    for job_id, why in missing:
        _warn(f"job {job_id!r} was not purged: {why}")
    if missing:
        sys.exit(1)


def _dead_ids(store: Store, job_ids: tuple[str, ...], everything: bool) -> list[str]:
    from queuectl.job import JobState

    if everything == bool(job_ids):
        raise UsageError("give job ids or --all (not both)")
    return store.folders.ids(JobState.DEAD) if everything else list(job_ids)


@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=_complete_ids)
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
            _warn(str(exc))
            failures += 1
    if failures:
        sys.exit(1)


# -------------------------------------------------------------------- config


@cli.group()
def config() -> None:
    """Read and change persisted settings (max-retries, backoff-base, job-timeout)."""


@config.command("get")
@click.argument("key", shell_complete=_complete_config_keys)
@pass_context
def config_get(ctx: Context, key: str) -> None:
    """Print one setting."""
    from queuectl.config import canonical_key

    click.echo(ctx.store.config.get(canonical_key(key)))


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key", shell_complete=_complete_config_keys)
@click.argument("value")
@pass_context
def config_set(ctx: Context, key: str, value: str) -> None:
    """Change one setting (validated) and persist it under the home."""
    from queuectl.config import canonical_key, parse_value

    name = canonical_key(key)
    parsed = parse_value(name, value)
    ctx.store.set_config(name, parsed)
    click.echo(f"{name} = {parsed}")


@config.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def config_list(ctx: Context, as_json: bool) -> None:
    """Print every setting with its meaning."""
    from queuectl.config import KEYS

    values = ctx.store.config.values()
    if as_json:
        _print_json(values)
        return
    from tabulate import tabulate

    rows = [[name, values[name], key.help] for name, key in KEYS.items()]
    click.echo(tabulate(rows, headers=["key", "value", "meaning"]))


# -------------------------------------------------------------------- journal


@cli.group()
def journal() -> None:
    """The append-only event journal."""


@journal.command("rebuild")
@pass_context
def journal_rebuild(ctx: Context) -> None:
    """Recreate the state folders from the journal alone (workers must be stopped).

    Jobs that were running go back to the state they were claimed from and run again.
    """
    from queuectl.admin.rebuild import rebuild

    with _progress("rebuilding") as bar:
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


@cli.command()
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely and say what was done.")
@pass_context
def fsck(ctx: Context, repair: bool) -> None:
    """Check the home: journal damage, duplicate or disagreeing job files, stale tmp files,
    orphaned processing/ jobs, permissions. Exit 0 when clean, 1 when problems were found."""
    from queuectl.admin.fsck import fsck as run_fsck

    findings = run_fsck(ctx.store, repair=repair)
    for finding in findings:
        click.echo(f"{finding.kind}: {finding.message}")
        if finding.repaired:
            click.echo(f"  repaired: {finding.repaired}")
        elif repair:
            click.echo("  not repaired")
    if not findings:
        click.echo("clean")
        return
    click.echo(f"{len(findings)} problem(s) found" + (", repairs attempted" if repair else ""))
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
    seconds = _duration_option(retention) if retention else store.config.get("journal-retention")
    report = compact(store, float(seconds), utcnow())
    if report.snapshot is None:
        click.echo("nothing to compact: every segment has records newer than the retention")
        return
    click.echo(
        f"folded {report.segments_folded} segment(s) into {report.snapshot.name}: "
        f"{report.jobs_kept} job(s) kept, {report.jobs_dropped} deleted job(s) dropped"
    )


@cli.command()
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
    with _progress("cleaning") as bar:
        bar.set_total(sum(ctx.store.folders.count(s) for s in chosen))
        removed, kept = run_cleanup(
            ctx.store, _duration_option(older_than), chosen, utcnow(), progress=bar.update
        )
    click.echo(f"removed {len(removed)} job(s)")
    for job_id, why in kept:
        _warn(f"kept {job_id}: {why}")


def _duration_option(text: str) -> float:
    from queuectl.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"invalid duration {text!r}: {exc}") from None


class _Progress:
    """A click progress bar on a terminal (stderr), silence when piped."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._enabled = sys.stderr.isatty()

    def set_total(self, total: int, minimum: int = 200) -> None:
        if self._enabled and total >= minimum:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self._bar.__enter__()

    def update(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _progress(label: str) -> _Progress:
    return _Progress(label)


# -------------------------------------------------------------------- observing


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=_complete_ids)
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
        follow_logs(ctx.store, job_id, _write_stdout)
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
        _write_stdout(path.read_bytes())


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, shell_complete=_complete_ids)
@click.option("--timeout", type=click.FloatRange(0), help="Give up after S seconds (exit 1).")
@pass_context
def wait(ctx: Context, job_ids: tuple[str, ...], timeout: float | None) -> None:
    """Block until jobs finish. One job: exit with its own exit code (0 when completed).
    Several: 0 when all completed, 1 when any is dead or cancelled."""
    from queuectl.job import JobState
    from queuectl.observe.waiting import wait_for

    ids = list(dict.fromkeys(job_ids))
    with _progress("waiting") as bar:
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
        _warn(f"not completed: {' '.join(bad)}")
        sys.exit(1)


@cli.command()
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
        start = now - timedelta(seconds=_duration_option(since)) if since else None
    except OverflowError:
        raise UsageError(f"invalid duration {since!r}: too long") from None
    figures = compute_stats(ctx.store, start, now)
    if as_json:
        _print_json(figures)
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


# -------------------------------------------------------------------- seeing the queue


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", help="Require this token on every request (needed off loopback).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (with --token).")
@pass_context
def dashboard(ctx: Context, host: str, port: int, token: str | None, allow_remote: bool) -> None:
    """Serve a web page, a JSON API (/api/...) and /metrics for this home until Ctrl-C."""
    from queuectl.web.server import check_bind, serve

    check_bind(host, token, allow_remote)
    try:
        server = serve(ctx.store, host, port, token)
    except OSError as exc:
        raise QueueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = server.server_address[1]
    suffix = f"?token={token}" if token else ""
    click.echo(f"queuectl dashboard on http://{host}:{bound}/{suffix} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
@pass_context
def metrics(ctx: Context) -> None:
    """Print Prometheus metrics (text format) for node_exporter's textfile collector."""
    from queuectl.observe.promtext import render, snapshot

    click.echo(render(snapshot(ctx.store)), nl=False)


# -------------------------------------------------------------------- history


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=_complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of attempts.")
@pass_context
def history(ctx: Context, job_id: str, as_json: bool) -> None:
    """Every attempt of a job from the journal, oldest first, numbered across DLQ retries.

    Works for jobs removed by cleanup or purge too, as long as the journal still has them.
    """
    from queuectl.observe.attempts import job_attempts

    runs = job_attempts(ctx.store, job_id)
    if as_json:
        _print_json(runs)
    elif runs:
        click.echo(_attempts_table(runs))
    else:
        click.echo(f"no attempts of {job_id} yet")


def _attempts_table(runs: list[dict[str, Any]]) -> str:
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


# -------------------------------------------------------------------- helpers


def _running_info(
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


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _warn(message: str) -> None:
    click.echo(f"queuectl: error: {message}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    _warn(message)
    sys.exit(code)


def _usage_error(exc: click.UsageError) -> NoReturn:
    """Click's usage errors as one line, like every other error (exit 2)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `queuectl` or `queuectl worker`
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    command = exc.ctx.command_path if exc.ctx else "queuectl"
    _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)


def main() -> None:
    """Entry point for the ``queuectl`` script and ``python -m queuectl``."""
    global ORIGINAL_UMASK
    ORIGINAL_UMASK = os.umask(0o077)  # queue files are private; jobs get the user's umask
    try:
        code = cli.main(prog_name="queuectl", standalone_mode=False)
    except click.UsageError as exc:
        _usage_error(exc)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("aborted", 1)
    except BrokenPipeError:  # e.g. `queuectl list | head`: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
