"""One small error tree; every class knows the exit code the CLI must use for it.

Domain code raises these and never prints; ``cli.main`` turns them into one line on stderr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

__all__ = [
    "AlreadyExists",
    "BadArchive",
    "InvalidJob",
    "JournalCorrupt",
    "NoWorkers",
    "NotFound",
    "QueueError",
    "StorageError",
    "UsageError",
    "describe",
]


class QueueError(Exception):
    """Base class: an operational failure (exit 1) with a message fit for a user."""

    exit_code: ClassVar[int] = 1


class UsageError(QueueError):
    """Bad arguments or configuration values (exit 2)."""

    exit_code: ClassVar[int] = 2


class InvalidJob(UsageError):
    """Job JSON that does not describe a valid job (exit 2)."""


class BadArchive(UsageError):
    """A backup archive that is damaged, hostile or not a queuectl backup (exit 2)."""


class NotFound(QueueError):
    """No job (or no worker) with that name exists."""


class AlreadyExists(QueueError):
    """A job id is already taken in some state folder."""


class NoWorkers(QueueError):
    """An operation needed live workers and there were none."""


class StorageError(QueueError):
    """The disk refused a write or an fsync; the operation did not take effect."""


class JournalCorrupt(QueueError):
    """Damage in the middle of the journal, followed by valid records."""

    def __init__(self, message: str, *, path: Path | None = None, offset: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


def describe(exc: BaseException) -> str:
    """One line for a log, plus the traceback when ``QUEUECTL_DEBUG`` is set: a worker's
    catch-all must say what happened, and a developer must be able to see where."""
    text = str(exc) or type(exc).__name__
    if os.environ.get("QUEUECTL_DEBUG"):
        import traceback

        text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    return text
