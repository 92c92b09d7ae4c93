"""Commands that show the queue to other programs: dashboard, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from queuectl.cli.main import (
    Context,
    pass_context,
)
from queuectl.errors import QueueError

if TYPE_CHECKING:
    pass


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on (0: any free port, printed at start).",
)
@click.option("--token", help="Require this token on every request (needed off loopback).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (with --token).")
@click.option(
    "--read-only",
    is_flag=True,
    help="Show everything, change nothing: no buttons, every POST refused (403).",
)
@pass_context
def dashboard(
    ctx: Context, host: str, port: int, token: str | None, allow_remote: bool, read_only: bool
) -> None:
    """Serve a web page, a JSON API (/api/...) and /metrics for this home until Ctrl-C."""
    from queuectl.web.server import check_bind, serve

    check_bind(host, token, allow_remote)
    try:
        server = serve(ctx.store, host, port, token, read_only)
    except OSError as exc:
        raise QueueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = server.server_address[1]
    suffix = f"?token={token}" if token else ""
    mode = ", read-only" if read_only else ""
    click.echo(f"queuectl dashboard on http://{host}:{bound}/{suffix} (Ctrl-C to stop{mode})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
@pass_context
def metrics(ctx: Context) -> None:
    """Print Prometheus metrics (text format) for node_exporter's textfile collector."""
    from queuectl.observe.promtext import render, snapshot

    click.echo(render(snapshot(ctx.store)), nl=False)
