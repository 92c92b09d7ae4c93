"""Small named things a home keeps besides jobs: queues (``queues/<name>.json``) and
schedules (``schedules/<name>.json``).

Each is one JSON file written the way job files are (tmp, fsync, rename, fsync the folder),
and every change is journaled as a record about ``<kind>:<name>`` (``queue:gpu``,
``schedule:nightly``) with a generation and a rev, so the replay rule for jobs applies to
them unchanged (``journal rebuild`` recreates the folder, ``fsck`` checks it) and the index
can find their history. A change holds the object's change lock (a byte of
``locks/claims.lock``), so two processes never change one at once.

Reading goes through a cache keyed by the file's stat: a worker that looks at a queue per
claim parses its file again only when it changed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

from queuectl.errors import InvalidJob
from queuectl.job import ID_PATTERN, format_time, new_generation, utcnow
from queuectl.storage.durable import fsync_dir, fsync_fd, read_regular, write_tmp
from queuectl.storage.events import Event, named_entry
from queuectl.storage.home import Home
from queuectl.storage.journal import Journal
from queuectl.storage.locks import LockFile, ProcessMark, change_offset

__all__ = ["Named", "NamedRecord", "NamedStore", "record_name"]


class NamedRecord:
    """What every named record (a queue, a schedule: frozen dataclasses) does alike."""

    paused: bool

    @property
    def state(self) -> str:
        return "paused" if self.paused else "active"

    def to_dict(self) -> dict[str, Any]:
        return asdict(cast(Any, self))


def record_name(data: dict[Any, Any], kind: str, longest: int = 128) -> str:
    """The ``name`` of a record read from an untrusted file, checked as the CLI checks it."""
    name = data.get("name")
    if not isinstance(name, str) or not ID_PATTERN.fullmatch(name) or len(name) > longest:
        raise InvalidJob(f"invalid {kind} name {name!r}")
    return name


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def rev(self) -> int: ...

    @property
    def generation(self) -> int: ...

    @property
    def created_at(self) -> str: ...

    @property
    def updated_at(self) -> str: ...

    @property
    def state(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: object) -> Self: ...


T = TypeVar("T", bound=Named)

_Stamp = tuple[int, int, int] | None


class NamedStore(Generic[T]):
    """Files, journal records and the change lock of one kind of named object."""

    kind: ClassVar[str]
    """The record's key and the index id's prefix (``queue``, ``schedule``)."""
    folder: ClassVar[str]
    model: type[T]

    def __init__(self, home: Home, journal: Journal, locks: LockFile, mark: ProcessMark) -> None:
        self.home = home
        self.journal = journal
        self.locks = locks
        self.mark = mark
        self._cache: dict[str, tuple[_Stamp, T | None]] = {}
        self._guard = threading.Lock()

    @property
    def directory(self) -> Path:
        return self.home.root / self.folder

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    # ---------------------------------------------------------------- reading

    def read_file(self, name: str) -> T | None:
        """The object as its file says now (None: no file, or one that cannot be trusted:
        fsck reports it). The file is parsed again only when its stat changed."""
        if not ID_PATTERN.fullmatch(name):
            return None
        path = self.path(name)
        try:
            st = os.lstat(path)
            stamp: _Stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._guard:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = self._read(path) if stamp is not None else None
        with self._guard:
            self._cache[name] = (stamp, found)
        return found

    def has_file(self, name: str) -> bool:
        """Whether ``<folder>/<name>.json`` exists (as the last ``read_file`` saw it)."""
        with self._guard:
            cached = self._cache.get(name)
        if cached is not None:
            return cached[0] is not None
        return os.path.lexists(self.path(name))

    def file_names(self) -> list[str]:
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(
            e[:-5] for e in entries if e.endswith(".json") and ID_PATTERN.fullmatch(e[:-5])
        )

    def _read(self, path: Path) -> T | None:
        found = self._parse(path)
        return found if not isinstance(found, str) else None

    def _parse(self, path: Path) -> T | str:
        """The object in ``path``, or why it cannot be trusted."""
        try:
            raw, st = read_regular(path, 256 << 10)
        except FileNotFoundError:
            return "no such file"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link"
            return exc.strerror or str(exc)
        if st.st_uid != os.geteuid():
            return "owned by another user"
        if st.st_mode & 0o022:
            return "writable by group or others"
        if st.st_nlink > 1:
            return "has more than one hard link"
        try:
            found = self.model.from_dict(json.loads(raw))
        except (ValueError, RecursionError):
            return "not valid JSON"
        except InvalidJob as exc:
            return str(exc)
        if path.name != f"{found.name}.json":
            return f"names {self.kind} {found.name!r}"
        return found

    def problem(self, name: str) -> str | None:
        """Why ``<folder>/<name>.json`` cannot be used (None: it can, or there is none)."""
        path = self.path(name)
        if not os.path.lexists(path):
            return None
        found = self._parse(path)
        return found if isinstance(found, str) else None

    def broken(self) -> dict[str, str]:
        """Name -> why, for every file of the folder that is there but cannot be used (such
        an object counts as missing everywhere: a worker starts none of its jobs)."""
        out = {}
        for name in self.file_names():
            reason = self.problem(name)
            if reason is not None:
                out[name] = f"{self.folder}/{name}.json: {reason}"
        return out

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def changing(self, name: str) -> Iterator[None]:
        holder = self.locks.holder()
        try:
            holder.wait(change_offset(f"{self.kind}:{name}"))
            yield
        finally:
            holder.close()

    @contextlib.contextmanager
    def using(self, names: set[str] | list[str]) -> Iterator[None]:
        """Hold the change locks of ``names`` shared: what names an object (an enqueue or an
        edit naming a queue) holds it while it checks the object exists and publishes, so a
        removal (which holds it exclusively) cannot slip in between."""
        holder = self.locks.holder()
        try:
            for name in sorted(set(names)):
                holder.wait(change_offset(f"{self.kind}:{name}"), shared=True)
            yield
        finally:
            holder.close()

    def next_version(self, item: T, **changes: Any) -> T:
        """``item`` one revision later (a new generation for a new life)."""
        stamp = format_time(utcnow())
        return replace(  # type: ignore[type-var]
            item,
            rev=item.rev + 1,
            generation=item.generation or new_generation(),
            updated_at=stamp,
            created_at=item.created_at or stamp,
            **changes,
        )

    def save(self, item: T, event: Event) -> None:
        """Write the file durably, then journal the change."""
        self.write_file(item)
        self.journal.append_entries([named_entry(self.kind, event, item, item.updated_at)])

    def delete(self, item: T, event: Event) -> None:
        """Journal the removal first, then remove the file (killed in between, fsck and
        rebuild finish the removal)."""
        gone = self.next_version(item)
        self.journal.append_entries([named_entry(self.kind, event, gone, gone.updated_at)])
        self.remove_file(item.name)

    def write_file(self, item: T) -> None:
        """Write an object's file without journaling it (rebuild, fsck: the journal has it)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        data = (json.dumps(item.to_dict(), indent=2) + "\n").encode()
        tmp, fd = write_tmp(self.home.tmp, f"{self.kind}-{item.name}", data, self.mark.name)
        try:
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, self.path(item.name))
        fsync_dir(self.directory)

    def remove_file(self, name: str) -> bool:
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            return False
        fsync_dir(self.directory)
        return True

    def journal_file(self, item: T, event: Event) -> None:
        """Journal an object file the journal lacks (fsck)."""
        self.journal.append_entries([named_entry(self.kind, event, item, item.updated_at)])
