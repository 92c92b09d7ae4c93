"""Completion hooks on disk: where the hook runner is in the journal, and what each run did.

The hook runner (``worker.hooks``) reads the journal from a cursor, ``hooks/cursor.json``
(the segment and the offset it has read up to), and journals each hook's run as a ``hook``
record about the job (``hook:<id>`` in the index, so ``show`` finds it at once). The cursor
is moved on only after that record is durable: a runner killed in between runs the hook
again when it, or another worker, resumes (at least once, never skipped).

The cursor is created when hooks are first wanted (``config set on-finish``, or a job with
``on_finish`` is enqueued) at the journal's end at that moment, so no hook runs for jobs that
finished before, and none is missed after, even if no worker ran in between.
``hooks/enabled`` says a job with its own ``on_finish`` exists, so workers of homes that use
no hooks never read a record for them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queuectl.storage.durable import fsync_dir, fsync_fd, read_regular, write_tmp
from queuectl.storage.events import hook_entry
from queuectl.storage.home import Home
from queuectl.storage.journal import Journal, segment_numbers, segment_path
from queuectl.storage.journal_index import LENGTH, OFFSET
from queuectl.storage.locks import ProcessMark

__all__ = ["Cursor", "HookLedger"]


@dataclass(frozen=True)
class Cursor:
    segment: int
    """The segment number the runner is reading."""
    offset: int
    """Everything before this byte of that segment has been handled."""


class HookLedger:
    def __init__(self, home: Home, journal: Journal, mark: ProcessMark) -> None:
        self.home = home
        self.journal = journal
        self.mark = mark

    @property
    def directory(self) -> Path:
        return self.home.root / "hooks"

    def wanted(self, configured: bool) -> bool:
        """Whether the runner must read final records: a configured hook, or a job with
        its own (``hooks/enabled``)."""
        return configured or os.path.lexists(self.directory / "enabled")

    def enable(self, per_job: bool) -> None:
        """Hooks are wanted from now on: create the cursor at the journal's end (if there
        is none) and, for a job's own hook, the marker. Durable before the caller goes on."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if self.cursor() is None:
            self.save(self.end())
        if per_job and not os.path.lexists(self.directory / "enabled"):
            fd = os.open(self.directory / "enabled", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            fsync_dir(self.directory)

    def end(self) -> Cursor:
        numbers = segment_numbers(self.journal.directory)
        if not numbers:
            return Cursor(1, 0)
        last = numbers[-1]
        try:
            size = os.stat(segment_path(self.journal.directory, last)).st_size
        except FileNotFoundError:
            size = 0
        return Cursor(last, size)

    def cursor(self) -> Cursor | None:
        try:
            raw, _ = read_regular(self.directory / "cursor.json", 4096)
            data = json.loads(raw)
            return Cursor(int(data["segment"]), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, cursor: Cursor) -> None:
        """Move the cursor (tmp + rename; fsynced: a lost move would only repeat hooks)."""
        data = json.dumps({"segment": cursor.segment, "offset": cursor.offset}).encode()
        tmp, fd = write_tmp(self.home.tmp, "hook-cursor", data, self.mark.name)
        try:
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "cursor.json")

    def record(self, job_id: str, generation: int, rev: int, result: dict[str, Any]) -> None:
        self.journal.append_entries(
            [hook_entry(job_id, generation, rev, result, str(result.get("finished_at", "")))]
        )

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Every hook run of a job, oldest first (``show``)."""
        out = []
        for fields, source in self.journal.rows_of(f"hook:{job_id}"):
            record = self.journal.read_at(source, int(fields[OFFSET]), int(fields[LENGTH]))
            hook = record.get("hook") if record else None
            if isinstance(hook, dict):
                out.append(hook)
        return out
