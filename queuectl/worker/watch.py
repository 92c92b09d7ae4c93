"""Directory change notification with Linux inotify (through ctypes: no dependency).

A worker learns of a new job the moment its file is renamed or written into ``pending/``,
instead of listing the folder in a loop. Where inotify is missing (not Linux, or the watch
limit is reached) ``open_watcher`` returns None and the caller falls back to rescanning.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DirWatcher", "Event", "open_watcher"]

IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_Q_OVERFLOW: Final = 0x00004000
IN_NONBLOCK: Final = 0o4000
IN_CLOEXEC: Final = 0o2000000
_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class Event:
    directory: Path | None  # None means the kernel queue overflowed: rescan everything
    name: str


class DirWatcher:
    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self._fd = fd
        self._libc = libc
        self._dirs: dict[int, Path] = {}

    def fileno(self) -> int:
        return self._fd

    def add(self, directory: Path) -> None:
        wd = self._libc.inotify_add_watch(
            self._fd, os.fsencode(directory), IN_CLOSE_WRITE | IN_MOVED_TO
        )
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(directory))
        self._dirs[wd] = directory

    def remove(self, directory: Path) -> None:
        """Stop watching a folder (events already queued for it are dropped on read)."""
        for wd, known in list(self._dirs.items()):
            if known == directory:
                self._libc.inotify_rm_watch(self._fd, wd)
                del self._dirs[wd]

    def read(self) -> list[Event]:
        """Drain whatever events are queued (non-blocking)."""
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw_name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                events.append(Event(None, ""))
            elif wd in self._dirs and raw_name:
                events.append(Event(self._dirs[wd], os.fsdecode(raw_name)))
        return events

    def close(self) -> None:
        os.close(self._fd)


def open_watcher(directories: list[Path]) -> DirWatcher | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # no find_library: it runs ldconfig
        init = libc.inotify_init1
    except (OSError, AttributeError):
        return None
    fd = init(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    watcher = DirWatcher(fd, libc)
    try:
        for directory in directories:
            watcher.add(directory)
    except OSError:
        watcher.close()
        return None
    return watcher
