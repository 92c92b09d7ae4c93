"""Commands about worker processes: worker start, worker stop, status."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli import main as app
from queuectl.cli.main import (
    Context,
    pass_context,
)
from queuectl.cli.render import (
    STATES,
    print_json,
)
from queuectl.errors import QueueError
from queuectl.text import one_line

if TYPE_CHECKING:
    pass


@click.group()
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
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Run only jobs of this queue (repeatable; default: every queue).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Where commands run: this host, or the workers of a Dask cluster (docs/remote.md).",
)
@click.option(
    "--scheduler",
    metavar="ADDR",
    help="The Dask scheduler (tls://HOST:PORT; tcp:// on loopback only). With --executor dask.",
)
@click.option(
    "--lease",
    type=click.FloatRange(5, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Remote commands die this long after the head stops renewing (--executor dask).",
)
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA certificate (PEM) for tls://.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="This head's certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="The certificate's private key.")
@pass_context
def worker_start(
    ctx: Context,
    count: int,
    burst: bool,
    queues: tuple[str, ...],
    executor: str,
    scheduler: str | None,
    lease: float,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run jobs in the foreground until SIGTERM/SIGINT (twice: stop now)."""
    from queuectl.errors import UsageError

    store = ctx.store
    # Jobs inherit the umask of the shell that started the worker, not queuectl's private
    # 077; queuectl's own files are created with explicit modes, so they stay 0600/0700.
    for name in queues:
        store.queues.require(name)
    remote_options = scheduler or tls_ca or tls_cert or tls_key
    if executor == "local" and remote_options:
        raise UsageError("--scheduler and --tls-* need --executor dask")
    if executor == "dask" and not scheduler:
        raise UsageError("--executor dask needs --scheduler ADDR (e.g. tls://head:8786)")
    from queuectl.worker.pool import WorkerPool

    pool = WorkerPool(store, count, burst=burst, queues=frozenset(queues) or None)
    if scheduler:
        from queuectl.remote.start import attach_dask

        attach_dask(pool, scheduler, lease, tls_ca, tls_cert, tls_key)
    os.umask(app.ORIGINAL_UMASK)
    sys.exit(pool.run())


@worker.command("stop")
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=None,
    help="Give up waiting after this many seconds (exit 1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print which workers stopped as JSON.")
@pass_context
def worker_stop(ctx: Context, timeout: float | None, as_json: bool) -> None:
    """Gracefully stop every live worker of this home and wait for them to exit (their
    running jobs finish first)."""
    from queuectl.errors import NoWorkers
    from queuectl.storage.registry import live_workers, request_stop, wait_for_exit

    home = ctx.store.home
    workers = live_workers(home.workers, clean_stale=True)
    if not workers:
        raise NoWorkers("no workers are running for this home")
    for info in workers:
        request_stop(home.stop_requests, info)
    ids = [str(w["id"]) for w in workers]
    if not as_json:
        click.echo(f"asked {len(ids)} worker(s) to stop: {' '.join(ids)}")
    stuck = [i for i in ids if not wait_for_exit(home.workers, i, timeout)]
    if as_json:
        from queuectl.cli.render import print_json

        print_json({"asked": ids, "stopped": [i for i in ids if i not in stuck], "running": stuck})
    if stuck:
        raise QueueError(f"still running after {timeout:g}s: {' '.join(stuck)}")
    if not as_json:
        click.echo("all workers stopped")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Job counts per state and the live workers."""
    from queuectl.storage.registry import live_workers

    store = ctx.store
    counts = {state: store.folders.count(state) for state in STATES}
    workers = live_workers(store.home.workers)
    rejected = store.folders.rejected()
    from queuectl.cli.workflow import queue_problems, queue_rows

    rows = queue_rows(ctx)
    queues = [
        {"name": r["name"], "parallel": r["parallel"], "paused": r["paused"]}
        | ({"problem": r["problem"]} if r["problem"] else {})
        for r in rows
    ]
    problems = queue_problems(rows)
    gpus = store.devices.in_use()
    from queuectl.storage.registry import running_jobs

    running = sorted(
        running_jobs(store.home.workers).values(), key=lambda r: str(r.get("started_at"))
    )
    if as_json:
        print_json(
            {
                "jobs": counts,
                "running": running,
                "queues": queues,
                "gpus": gpus,
                "workers": workers,
                "rejected": [{"file": f, "reason": r} for f, r in rejected],
            }
        )
        return
    from tabulate import tabulate

    click.echo(tabulate(list(counts.items()), headers=["state", "jobs"]))
    click.echo()
    special = [q for q in queues if q["parallel"] or q["paused"] or q["name"] != "default"]
    if special:
        table = [
            [
                q["name"],
                "broken" if "problem" in q else q["parallel"] or "no limit",
                "yes" if q["paused"] else "",
            ]
            for q in queues
        ]
        click.echo(tabulate(table, headers=["queue", "parallel", "paused"]))
        click.echo()
    if problems:
        for line in problems:
            click.echo(one_line(line))
        click.echo()
    if gpus:
        _devices, per = store.devices.current()
        used = ", ".join(f"{d}: {n}/{per}" for d, n in gpus.items())
        click.echo(f"gpu devices in use: {used}")
        click.echo()
    if running:
        click.echo(_running_table(running))
        click.echo()
    if workers:
        click.echo(_workers_table(workers))
    else:
        click.echo("no workers running")
    if rejected:
        click.echo()
        click.echo(f"{len(rejected)} rejected file(s) in {store.home.rejected}:")
        for _, reason in rejected[-10:]:
            click.echo(f"  {reason}")


def _running_table(running: list[dict[str, Any]]) -> str:
    """What runs now, like pueue's status: id, queue, worker, running for, command."""
    from tabulate import tabulate

    from queuectl.job import parse_time, utcnow
    from queuectl.text import clip, duration

    now = utcnow()
    rows = []
    for entry in running:
        try:
            took = duration((now - parse_time(str(entry.get("started_at")))).total_seconds())
        except ValueError:
            took = "?"
        worker = entry.get("worker") or {}
        gpus = entry.get("gpus") or []
        rows.append(
            [
                entry.get("id"),
                entry.get("queue", "default"),
                worker.get("id"),
                took,
                ",".join(str(g) for g in gpus) if gpus else "",
                clip(str(entry.get("command", "")), 50),
            ]
        )
    headers = ["running", "queue", "worker", "for", "gpus", "command"]
    if not any(row[4] for row in rows):
        rows = [row[:4] + row[5:] for row in rows]
        headers = headers[:4] + headers[5:]
    return str(tabulate(rows, headers=headers))


def _workers_table(workers: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    from queuectl.job import parse_time, utcnow
    from queuectl.text import relative

    now = utcnow()
    rows = []
    for w in workers:
        try:
            since = relative(parse_time(str(w.get("started_at"))), now)
        except ValueError:
            since = str(w.get("started_at"))
        served = w.get("queues")
        rows.append(
            [
                w.get("id"),
                w.get("pid"),
                w.get("threads"),
                ",".join(served) if isinstance(served, list) and served else "all",
                since,
                w.get("host"),
            ]
        )
    return str(tabulate(rows, headers=["worker", "pid", "threads", "queues", "started", "host"]))
