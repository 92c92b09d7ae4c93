"""Files that other tools drop into ``pending/``: when one is a job, and moving bad ones aside.

Other programs submit work by writing a JSON object such as ``{"command": "make"}`` into
``pending/``. Until a worker adopts it (validates it exactly as ``enqueue`` would, journals
it and rewrites it as a canonical job file), it is untrusted input, not a job. A file that is
not a valid job is moved to ``rejected/`` with a ``.reason`` next to it, and journaled.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

from queuectl.errors import InvalidJob
from queuectl.job import parse_object, utcnow
from queuectl.storage.durable import FILE_MODE, fsync_dir, rename_noreplace
from queuectl.storage.events import Event, plain_entry
from queuectl.storage.home import Home
from queuectl.storage.jobfile import read_open
from queuectl.storage.journal import Journal

__all__ = ["DROP_GRACE_SECONDS", "Rejector", "awaiting_adoption", "is_young"]

DROP_GRACE_SECONDS: Final = 2.0
"""A dropped file that does not parse is left alone until it has been unchanged this long,
because its writer may still be writing it."""

STORED_ONLY_FIELDS: Final = frozenset({"state", "attempts", "rev", "created_at", "updated_at"})
"""A drop carrying any of these was written to look like a stored job file."""


def is_young(mtime: float, now: float | None = None) -> bool:
    return mtime + DROP_GRACE_SECONDS > (time.time() if now is None else now)


def awaiting_adoption(path: Path) -> bool:
    """Whether a file in pending/ that is not a stored job is a drop a worker will adopt
    (new-job JSON) or may still be being written; read-only commands do not report those."""
    try:
        raw, st = read_open(path)
    except (OSError, InvalidJob):
        return False
    if is_young(st.st_mtime):
        return True
    try:
        data = parse_object(raw)
    except InvalidJob:
        return False
    return "command" in data and not STORED_ONLY_FIELDS & set(data)


class Rejector:
    """Moves a file that is not a valid job into rejected/, with its reason, and journals it."""

    def __init__(self, home: Home, journal: Journal) -> None:
        self.home = home
        self.journal = journal

    def reject(self, src: Path, reason: str) -> str | None:
        """The message recorded, or None when the file was gone already."""
        target = self.home.rejected / src.name
        suffix = 0
        while True:
            try:
                if rename_noreplace(src, target):
                    break
            except FileNotFoundError:
                return None
            suffix += 1
            target = self.home.rejected / f"{src.name}.{suffix}"
        message = f"{src.parent.name}/{src.name} {reason}"
        reason_path = target.with_name(target.name + ".reason")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(reason_path, flags, FILE_MODE)
        try:
            os.write(fd, (message + "\n").encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)
        fsync_dir(self.home.rejected)
        fsync_dir(src.parent)
        from queuectl.job import format_time

        self.journal.append_entries(
            [plain_entry(Event.REJECTED, format_time(utcnow()), file=target.name, reason=message)]
        )
        return message
