"""Submitting jobs: ``add`` (a plain command line) and ``enqueue`` (JSON), with one set of job
options shared by both."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli.main import Context, complete_ids, duration_option, pass_context
from queuectl.cli.render import note, progress
from queuectl.errors import UsageError

if TYPE_CHECKING:
    from queuectl.job import Job

__all__ = ["add", "enqueue"]

JOB_FIELDS_HELP = """\b
Accepted JSON fields (type, default):
  command      string, required: run with /bin/sh -c (at most 128 KiB)
  id           string, generated: 1-128 of A-Z a-z 0-9 . _ -
  queue        string, "default": a queue made with 'queuectl queue add'
  priority     integer -100..100, 0: higher runs first
  max_retries  integer 0..1000, the max-retries setting
  timeout      seconds, the job-timeout setting (0: no limit)
  run_at       ISO 8601 time, now: not before this
  cwd          absolute path, the worker's directory
  env          object of NAME: value strings, {}
  labels       list of strings, []
  after        list of job ids, []: run after they all completed
  after_any    list of job ids, []: run after they all finished, whatever the result
  unique_key   string, none: no second job with this key while one waits or runs
  unique_for   seconds, none: ... nor while one completed this recently
  held         true/false, false: wait for 'queuectl release'
  gpus         integer 0..64, 0: GPU devices it needs (the gpus setting)
  on_finish    string, the on-finish setting: a command run when it ends
"""


def job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The job options ``add`` and ``enqueue`` share (on ``enqueue`` they override the JSON:
    a scalar option replaces the field, a repeatable one adds to it)."""
    options = [
        click.option("--id", "job_id", metavar="ID", help="The job's id (default: generated)."),
        click.option("--queue", "-q", metavar="NAME", help="Queue to run in (default: default)."),
        click.option(
            "--priority",
            "-p",
            type=click.IntRange(-100, 100),
            help="Higher runs first (-100..100, default 0).",
        ),
        click.option("--delay", metavar="DURATION", help="Run no sooner than this from now (30s)."),
        click.option("--run-at", "run_at", metavar="TIME", help="Run no sooner than this time."),
        click.option(
            "--max-retries",
            type=click.IntRange(0, 1000),
            help="Retries after the first run (default: the max-retries setting).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(0, 31_536_000),
            metavar="SECONDS",
            help="Kill a run after this long (0: no limit).",
        ),
        click.option(
            "--after",
            multiple=True,
            metavar="ID",
            shell_complete=complete_ids,
            help="Run only after this job completed (repeatable).",
        ),
        click.option(
            "--after-any",
            multiple=True,
            metavar="ID",
            shell_complete=complete_ids,
            help="Run only after this job finished, whatever the result (repeatable).",
        ),
        click.option("--label", multiple=True, metavar="LABEL", help="A label (repeatable)."),
        click.option(
            "--unique-key",
            metavar="KEY",
            help="Create nothing while a job with this key is waiting, held, blocked, "
            "running or waiting for a retry; print that job's id instead. restart and dlq "
            "retry of a job are refused (exit 1) while another job holds its key.",
        ),
        click.option(
            "--unique-for",
            metavar="DURATION",
            help="With --unique-key (required): also create nothing while the key's latest job "
            "completed within DURATION. The window of the job being added (or restarted) "
            "counts, not the one the earlier job was added with.",
        ),
        click.option("--hold", is_flag=True, help="Do not run it until 'queuectl release ID'."),
        click.option(
            "--gpus",
            type=click.IntRange(0, 64),
            metavar="N",
            help="GPU devices it needs (the gpus setting lists them); sets CUDA_VISIBLE_DEVICES.",
        ),
        click.option(
            "--on-finish",
            metavar="COMMAND",
            help="Run this when it reaches a final state (instead of the on-finish setting).",
        ),
        click.option("--cwd", metavar="PATH", help="Directory to run in."),
        click.option(
            "--env",
            multiple=True,
            metavar="KEY=VALUE",
            help="An environment variable for the command (repeatable).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command(
    context_settings={"allow_interspersed_args": False},
    epilog="A command with options of its own needs -- before it: queuectl add -- ls -la",
)
@job_options
@click.argument("command", nargs=-1, required=True)
@pass_context
def add(ctx: Context, command: tuple[str, ...], **options: Any) -> None:
    """Add a shell command as a job and print its id.

    Several arguments are joined as the shell needs them (queuectl add -- printf '%s\\n'
    'a b'); a single argument is taken as a command line as it is
    (queuectl add 'make test && make install'). It runs in the current directory unless
    --cwd says otherwise.
    """
    text = command[0] if len(command) == 1 else shlex.join(command)
    data: dict[str, Any] = {"command": text, "cwd": os.getcwd()}
    data.update(overrides(options, data))
    _submit(ctx, [(0, data)], explicit={"id"} & set(data))


@click.command(epilog=JOB_FIELDS_HELP)
@job_options
@click.argument("job", metavar="JSON|@FILE|-")
@pass_context
def enqueue(ctx: Context, job: str, **options: Any) -> None:
    """Add a job: JSON text, @FILE, or - for one JSON object per line of stdin.

    Example: queuectl enqueue '{"command": "echo hi", "max_retries": 2}'

    @FILE reads one JSON object from a file; - reads one JSON object per line from stdin and
    commits the whole batch in groups. Prints the id of each new job. The options override
    the JSON: a scalar one replaces its field, --env, --label and --after add to it.
    """
    from queuectl.job import parse_object

    if job == "-" and options.get("job_id"):
        raise UsageError("--id names one job: it cannot be used with 'enqueue -'")
    batch = []
    for number, text in _enqueue_inputs(job):
        try:
            data = parse_object(text)
            data.update(overrides(options, data))
        except UsageError as exc:
            where = f"line {number}: " if number else ""
            raise type(exc)(f"{where}{exc}") from None
        batch.append((number, data))
    if not batch:
        raise UsageError("no jobs given on standard input")
    _submit(ctx, batch, explicit={"id"})


def _submit(ctx: Context, batch: list[tuple[int, dict[str, Any]]], explicit: set[str]) -> None:
    from queuectl.job import job_from_input

    store = ctx.store
    default_retries = store.config.get("max-retries")
    jobs: list[Job] = []
    chosen: set[str] = set()
    for number, data in batch:
        try:
            jobs.append(job_from_input(data, default_max_retries=default_retries))
        except UsageError as exc:
            where = f"line {number}: " if number else ""
            raise type(exc)(f"{where}{exc}") from None
        if explicit & set(data):
            chosen.add(jobs[-1].id)
    with progress("enqueueing") as bar:
        bar.set_total(len(jobs))

        def accepted(group: list[Job]) -> None:
            click.echo("\n".join(j.id for j in group))
            bar.update(len(group))

        duplicates = store.enqueue(jobs, explicit_ids=chosen, on_group=accepted)
    keys = {j.id: j.unique_key for j in jobs}
    for job_id, holder in duplicates.items():
        click.echo(holder)
        note(f"job {holder} holds unique key {keys[job_id]!r}: nothing new was created")


def overrides(options: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The JSON fields the options set (scalars replace, repeatables add)."""
    from datetime import timedelta

    from queuectl.job import format_time, utcnow

    out: dict[str, Any] = {}
    scalar = {
        "job_id": "id",
        "queue": "queue",
        "priority": "priority",
        "max_retries": "max_retries",
        "timeout": "timeout",
        "unique_key": "unique_key",
        "gpus": "gpus",
        "on_finish": "on_finish",
    }
    for option, field in scalar.items():
        if options.get(option) is not None:
            out[field] = options[option]
    delay, run_at = options.get("delay"), options.get("run_at")
    if delay is not None and run_at is not None:
        raise UsageError("give --delay or --run-at, not both")
    if delay is not None:
        try:
            out["run_at"] = format_time(utcnow() + timedelta(seconds=duration_option(delay)))
        except OverflowError:
            raise UsageError(f"invalid duration {delay!r}: too long") from None
    if run_at is not None:
        out["run_at"] = run_at
    if options.get("unique_for") is not None:
        out["unique_for"] = duration_option(options["unique_for"])
    if options.get("hold"):
        out["held"] = True
    if options.get("cwd") is not None:
        out["cwd"] = os.path.abspath(options["cwd"])
    for option, field in (("label", "labels"), ("after", "after"), ("after_any", "after_any")):
        if options.get(option):
            known = data.get(field)
            out[field] = [*(known if isinstance(known, list) else []), *options[option]]
    if options.get("env"):
        known_env = data.get("env")
        env = dict(known_env) if isinstance(known_env, dict) else {}
        for item in options["env"]:
            name, equals, value = item.partition("=")
            if not equals or not name:
                raise UsageError(f"--env needs KEY=VALUE, not {item!r}")
            env[name] = value
        out["env"] = env
    return out


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
