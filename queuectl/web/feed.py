"""What the journal says happened since the dashboard last looked.

One ``journal.Follower`` reads only the index lines appended since its last call, and this
hands them out: the ids of jobs that records changed (for the catalog, which reads those
files again) and the rows that ended an attempt (for the charts). When the follower has to
start over (``journal compact`` replaced the segments), the charts are rebuilt from
everything, but only the records of the last moments count as changes: the files of the
jobs behind older records have not changed since the catalog last read them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from queuectl.job import ID_PATTERN
from queuectl.storage.journal import Follower, Journal
from queuectl.storage.journal_index import ATTEMPT_COLUMNS, TS, number
from queuectl.web.series import Series

__all__ = ["JournalFeed"]

REPLAY_SLACK_SECONDS: Final = 10.0
"""Records this much older than the previous look still count as news after a restart
of the follower (clocks of processes sharing a home differ a little)."""


class JournalFeed:
    def __init__(self, journal: Journal, series: Series) -> None:
        self.follower = Follower(journal)
        self.series = series
        self._since = time.time()
        self._replaying = False
        self._touched: set[str] = set()

    def advance(self) -> set[str]:
        """Ids of the jobs changed by records appended since the last call."""
        started = time.time()
        self._touched = set()
        self._replaying = False
        self.follower.advance(self._reset, self._row)
        self._since = started
        return self._touched

    def _reset(self) -> None:
        self._replaying = True
        self.series.reset()

    def _row(self, fields: list[str], _source: Path) -> None:
        if len(fields) >= ATTEMPT_COLUMNS:
            self.series.add(fields)
        job_id = fields[0]
        if not ID_PATTERN.fullmatch(job_id):
            return  # about a queue, a schedule, a hook or nothing
        if self._replaying:
            stamp = number(fields[TS]) if len(fields) > TS else None
            if stamp is None or stamp < self._since - REPLAY_SLACK_SECONDS:
                return
        self._touched.add(job_id)
