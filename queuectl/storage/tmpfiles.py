"""Leftovers in ``tmp/``: which in-flight files belong to nobody any more.

Names say who wrote them: ``<stem>.<mark>.<n>.tmp`` (a job file or a snapshot being written),
``.blank.<mark>.<n>.tmp`` (an old job file kept for reuse), ``output.<mark>.<n>.tmp.out|.err``
(a running attempt's output), where ``mark`` is the writer's process mark
(``locks.ProcessMark``). A file is stale only when its writer is gone (the mark is no longer
held) and, for an attempt's output, no command holds it either (the flock its worker took
travels with the descriptors the command inherited). Never by age alone: a running command's
output can be hours old, and its worker may have died while the command runs on.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from queuectl.storage.locks import LockFile, mark_is_live

__all__ = ["by_writer", "remove", "remove_if_stale", "stale"]

LEGACY_SECONDS: Final = 3600.0
"""Files named by pid (written by versions before process marks) of a live pid are kept
this long."""


def stale(tmp_dir: Path, locks: LockFile) -> Iterator[Path]:
    for entry in os.scandir(tmp_dir):
        path = Path(entry.path)
        if not _in_use(path, locks):
            yield path


def by_writer(tmp_dir: Path, locks: LockFile) -> dict[str, list[Path]]:
    """The stale files grouped by the mark of the process that wrote them (``""`` for
    files whose name names none): a SIGKILLed worker leaves a few dozen, one group."""
    groups: dict[str, list[Path]] = {}
    for path in stale(tmp_dir, locks):
        groups.setdefault(_owner_of(path.name) or "", []).append(path)
    return {owner: sorted(paths) for owner, paths in groups.items()}


def remove_if_stale(path: Path, locks: LockFile) -> bool:
    """Delete a tmp file if it is still stale (looked at again: safe while workers run)."""
    if not os.path.lexists(path) or _in_use(path, locks):
        return False
    return remove(path)


def remove(path: Path) -> bool:
    """Delete a stale tmp file; False when it was gone already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _in_use(path: Path, locks: LockFile) -> bool:
    name = path.name
    if name.startswith("output.") and _flocked(path):
        return True
    owner = _owner_of(name)
    if owner is None:
        return False
    live = mark_is_live(locks, owner)
    if live is not None:
        return live
    if owner.isdigit():
        return _legacy_alive(int(owner), path)
    return False


def _owner_of(name: str) -> str | None:
    parts = name.split(".")
    if "tmp" not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index("tmp")
    return parts[at - 2] if at >= 2 else None


def _flocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _legacy_alive(pid: int, path: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return time.time() - path.lstat().st_mtime < LEGACY_SECONDS
    except OSError:
        return False
