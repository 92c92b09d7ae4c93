"""A job's attempts for ``queuectl history``: every run from the journal, in order.

Rebuilding the attempts themselves is ``observe.attempts``'s job. ``show`` and the dashboard
use it too, so all three agree on what counts as an attempt: a record that raised the job's
``attempts``, numbered by position so DLQ retries, which reset ``attempts`` to 0, keep
counting. This module adds what a command needs on top of that: one journal scan, and a
``NotFound`` for an id the queue has never seen. A job removed by ``cleanup`` or
``dlq purge`` is not an error. The journal still holds its attempts until compaction folds
them away, and those are what someone asking after a vanished job wants to see.
"""

from __future__ import annotations

from typing import Any

from queuectl.errors import NotFound
from queuectl.observe.journal_views import attempts, journal_records
from queuectl.storage.store import Store

__all__ = ["job_attempts"]


def job_attempts(store: Store, job_id: str) -> list[dict[str, Any]]:
    """Every finished attempt of ``job_id``, oldest first; ``NotFound`` for an unknown id."""
    records = journal_records(store)
    if not _in_journal(records, job_id) and store.locate(job_id) is None:
        raise NotFound(f"no job with id {job_id!r}")
    return attempts(records, job_id)


def _in_journal(records: list[dict[str, Any]], job_id: str) -> bool:
    """Whether any record names the job. A file dropped into pending/ that no worker has
    adopted yet has no record, so the caller also checks the folders."""
    return any(
        isinstance(job := record.get("job"), dict) and job.get("id") == job_id for record in records
    )
