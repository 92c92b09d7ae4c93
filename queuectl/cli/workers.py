"""Commands about worker processes: worker start, worker stop, status."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

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
@pass_context
def worker_start(ctx: Context, count: int, burst: bool, queues: tuple[str, ...]) -> None:
    """Run jobs in the foreground until SIGTERM/SIGINT (twice: stop now)."""
    from queuectl.worker.pool import WorkerPool

    store = ctx.store
    # Jobs inherit the umask of the shell that started the worker, not queuectl's private
    # 077; queuectl's own files are created with explicit modes, so they stay 0600/0700.
    for name in queues:
        store.queues.require(name)
    os.umask(app.ORIGINAL_UMASK)
    pool = WorkerPool(store, count, burst=burst, queues=frozenset(queues) or None)
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
    queues = [
        {"name": q.name, "parallel": q.parallel, "paused": q.paused} for q in store.queues.all()
    ]
    gpus = store.devices.in_use()
    if as_json:
        print_json(
            {
                "jobs": counts,
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
        rows = [
            [q["name"], q["parallel"] or "no limit", "yes" if q["paused"] else ""] for q in queues
        ]
        click.echo(tabulate(rows, headers=["queue", "parallel", "paused"]))
        click.echo()
    if gpus:
        _devices, per = store.devices.current()
        used = ", ".join(f"{d}: {n}/{per}" for d, n in gpus.items())
        click.echo(f"gpu devices in use: {used}")
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
