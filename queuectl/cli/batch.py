"""Commands that act on several jobs one by one (cancel, dlq retry, hold, release, restart).

Each id is tried on its own: a failure is reported on stderr as ``cannot <verb> <id>:
<reason>`` and the others still go ahead; the command exits 1 if any failed. With
``--json`` the outcome of every id is also printed as one JSON array, in the order given:
``{"id", "ok": true, "state", "message"}`` or ``{"id", "ok": false, "error"}``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from queuectl.cli.render import print_json, warn
from queuectl.errors import QueueError, UsageError
from queuectl.text import one_line

__all__ = ["each_id"]


def each_id(
    job_ids: Iterable[str],
    verb: str,
    action: Callable[[str], tuple[str, str]],
    as_json: bool,
) -> None:
    """Run ``action(id) -> (state after, message)`` for each id (an id given twice once);
    exit 1 if any failed.

    A failure is one line on stderr, ``cannot <verb> <id>: <reason>`` (the prefix said once,
    whether or not the error raised already said it); the JSON ``error`` is the reason. A usage
    error (bad arguments as a whole) stops at once, as for any command.
    """
    results: list[dict[str, Any]] = []
    for job_id in dict.fromkeys(job_ids):
        try:
            state, message = action(job_id)
        except UsageError:
            raise
        except QueueError as exc:
            reason = _reason(verb, job_id, exc)
            warn(f"cannot {verb} {job_id}: {reason}")
            results.append({"id": job_id, "ok": False, "error": reason})
            continue
        results.append({"id": job_id, "ok": True, "state": state, "message": message})
        if not as_json:
            click.echo(message)
    if as_json:
        print_json(results)
    if any(not r["ok"] for r in results):
        sys.exit(1)


def _reason(verb: str, job_id: str, exc: Exception) -> str:
    """Why ``verb`` failed for ``job_id``, without a ``cannot <verb> <id>:`` the error
    raised may already start with (the caller says it once)."""
    reason = str(exc)
    for prefix in (f"cannot {verb} {job_id}: ", f"cannot {verb} {job_id!r}: "):
        while reason.startswith(prefix):
            reason = reason[len(prefix) :]
    return one_line(reason)
