"""``queuectl dlq stats``: the dead letter queue grouped by why and what died.

Pure over the jobs it is given (read by the caller from ``dead/``): each group is keyed by
the text ``list`` shows, the last error or the command clipped to one line of 40
characters, so the groups are exactly the rows a person would see as "the same".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from queuectl.job import Job, parse_time
from queuectl.text import clip

__all__ = ["CLIP", "died_at", "dlq_stats"]

CLIP: Final = 40
"""Characters of a command or error that tell groups apart (the width ``list`` shows)."""


def died_at(job: Job) -> str:
    """When a dead job died: its last run's end, else its last change."""
    return job.finished_at or job.updated_at


@dataclass
class _Group:
    jobs: int = 0
    oldest: str | None = None
    newest: str | None = None
    oldest_at: datetime | None = None
    newest_at: datetime | None = None

    def add(self, stamp: str) -> None:
        self.jobs += 1
        try:
            moment = parse_time(stamp)
        except ValueError:
            return
        if self.oldest_at is None or moment < self.oldest_at:
            self.oldest, self.oldest_at = stamp, moment
        if self.newest_at is None or moment > self.newest_at:
            self.newest, self.newest_at = stamp, moment


def dlq_stats(jobs: Iterable[Job]) -> dict[str, Any]:
    """``{"total", "oldest", "newest", "by_error": [...], "by_command": [...]}``; each group
    is ``{"error" | "command", "jobs", "oldest", "newest"}``, largest first (ties by text);
    a dead job without an error is grouped under ``null``."""
    total = _Group()
    errors: dict[str | None, _Group] = {}
    commands: dict[str | None, _Group] = {}
    for job in jobs:
        stamp = died_at(job)
        total.add(stamp)
        error = clip(job.last_error, CLIP) if job.last_error else None
        errors.setdefault(error, _Group()).add(stamp)
        commands.setdefault(clip(job.command, CLIP), _Group()).add(stamp)
    return {
        "total": total.jobs,
        "oldest": total.oldest,
        "newest": total.newest,
        "by_error": _rows(errors, "error"),
        "by_command": _rows(commands, "command"),
    }


def _rows(groups: dict[str | None, _Group], key: str) -> list[dict[str, Any]]:
    def order(item: tuple[str | None, _Group]) -> tuple[int, str]:
        return -item[1].jobs, item[0] or ""

    return [
        {key: text, "jobs": group.jobs, "oldest": group.oldest, "newest": group.newest}
        for text, group in sorted(groups.items(), key=order)
    ]
