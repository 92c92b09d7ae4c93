"""The append-only event journal: checksummed lines, group commit, torn-tail repair, readers.

Format: segments ``journal/00000001.log``, ``00000002.log``, ... each a sequence of lines::

    <crc32 of the JSON, 8 hex digits> <one compact JSON object>\\n

(``records``). Every record carries the full job after the change, with its ``generation``
(which life of the id) and ``rev`` (which change of that life): the state is rebuilt by
keeping, per id, the record with the highest (generation, rev), so replay does not depend on
the order in which processes interleaved their appends. Each segment has an index
(``journal_index``) written next to it.

Writers in all processes append to the newest segment while holding ``locks/journal.lock``
(a ``flock``; appends take it on a descriptor kept open, maintenance through ``filelock``:
both are the same kernel lock on the same file). Inside one process, threads share fsyncs
(group commit): whoever finds no flush in progress becomes the leader and writes and fsyncs
every record queued so far in one go; the others wait.

Readers that walk several files (``rows``, ``records``) hold ``locks/compact.lock`` shared,
and compaction holds it exclusively while it replaces segments by a snapshot, so a reader
never finds a segment gone under it. This module is the only code that creates, rewrites or
removes segment, snapshot and index files in a live journal (a restore writes them into its
staging folder first, ``storage.archive``, where no journal is in use yet).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from queuectl.errors import JournalCorrupt, StorageError
from queuectl.storage.durable import FILE_MODE, fsync_dir, fsync_fd
from queuectl.storage.events import Entry
from queuectl.storage.journal_index import (
    INDEX_SUFFIX,
    LENGTH,
    OFFSET,
    derive_parts,
    derived_lines,
    index_line,
)
from queuectl.storage.records import checksum_ok, decode_line, encode_record, frame_payload

if TYPE_CHECKING:
    from filelock import FileLock

__all__ = [
    "SEGMENT_BYTES",
    "Follower",
    "Journal",
    "JournalScan",
    "Record",
    "decode_line",
    "encode_record",
    "frame_payload",
    "scan",
    "segment_numbers",
]

SEGMENT_BYTES: Final = 64 << 20
"""Rotate to a new segment once the current one passes 64 MiB (etcd's choice)."""

_SUFFIX: Final = ".log"
SNAPSHOT_SUFFIX: Final = ".snap"
_CHUNK: Final = 1 << 20


def _segment_name(number: int) -> str:
    return f"{number:08d}{_SUFFIX}"


def _numbers(directory: Path, suffix: str) -> list[int]:
    numbers = []
    for name in os.listdir(directory):
        stem = name[: -len(suffix)]
        if name.endswith(suffix) and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


def segment_numbers(directory: Path) -> list[int]:
    return _numbers(directory, _SUFFIX)


def snapshot_numbers(directory: Path) -> list[int]:
    return _numbers(directory, SNAPSHOT_SUFFIX)


def segment_path(directory: Path, number: int) -> Path:
    return directory / _segment_name(number)


def snapshot_path(directory: Path, number: int) -> Path:
    """``00000007.snap`` holds the latest record of every kept job as of the end of segment 6."""
    return directory / f"{number:08d}{SNAPSHOT_SUFFIX}"


def index_path(source: Path) -> Path:
    return source.with_name(source.name + INDEX_SUFFIX)


def sources(directory: Path) -> list[Path]:
    """What a reader reads, in order: the newest snapshot, then every segment from it on."""
    snapshots = snapshot_numbers(directory)
    first = snapshots[-1] if snapshots else 0
    found = [snapshot_path(directory, first)] if snapshots else []
    return found + [segment_path(directory, n) for n in segment_numbers(directory) if n >= first]


class _Batch:
    """Records waiting for the same fsync; ``error`` is set if that fsync failed."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.done = False
        self.error: BaseException | None = None


class Journal:
    def __init__(self, directory: Path, lock_path: Path, segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.lock_path = lock_path
        self.compact_lock_path = lock_path.with_name("compact.lock")
        self._file_lock_object: FileLock | None = None
        self._lock_fd: int | None = None
        self._cond = threading.Condition()
        self._open_batch = _Batch()
        self._flushing = False
        self._fd: int | None = None
        self._number = 0
        self._our_end: tuple[int, int, bytes] | None = None
        """(inode, size, last line) of the segment right after our last append: if it still
        ends with exactly those bytes, the tail is sound without a checksum walk."""
        self._index_fd: int | None = None
        self._index_number = 0
        self._our_index_end: tuple[int, int, int] | None = None
        """(index inode, index size, segment size) after our last append: unchanged means
        nobody appended since, so the index is known to be complete."""

    # ------------------------------------------------------------------ appending

    def append(self, records: list[dict[str, Any]]) -> None:
        """Durably append records given as dicts; returns only after they are fsynced."""
        entries = []
        for record in records:
            line = encode_record(record)
            entries.append(Entry(line, *derive_parts(record)))
        self.append_entries(entries)

    def append_entries(self, entries: list[Entry]) -> None:
        """Durably append records built by ``events``; returns only after the fsync."""
        if not entries:
            return
        with self._cond:
            batch = self._open_batch
            batch.entries.extend(entries)
            while not batch.done:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                self._open_batch = _Batch()
                self._cond.release()
                try:
                    self._flush(batch)
                except BaseException as exc:  # every waiter of this batch must see it
                    batch.error = exc
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    batch.done = True
                    self._cond.notify_all()
        if batch.error is not None:
            if isinstance(batch.error, StorageError):
                raise StorageError(str(batch.error))
            raise batch.error

    def exclusive(self) -> FileLock:
        """The cross-process journal lock, for maintenance that must not race appends."""
        return self._file_lock

    @property
    def _file_lock(self) -> FileLock:
        """filelock's lock on the journal lock file, made on first use: appends take the
        same lock with one ``flock`` on a kept descriptor (``_lock``), and importing
        filelock costs a CLI call tens of milliseconds it only needs for maintenance."""
        if self._file_lock_object is None:
            from filelock import FileLock

            self._file_lock_object = FileLock(
                self.lock_path, poll_interval=0.001, thread_local=False
            )
        return self._file_lock_object

    def _flush(self, batch: _Batch) -> None:
        data = b"".join(entry.line for entry in batch.entries)
        lock_fd = self._lock()
        try:
            fd = self._current_fd()
            size = self._repair_tail(fd)
            if size >= self.segment_bytes:
                fd, size = self._rotate(), 0
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                fsync_fd(fd, self._path(self._number))
            except (OSError, StorageError) as exc:
                # The batch is not acknowledged, so it must not stay: cut the file back to
                # where it started (after a failed fsync the kernel's copy is all we can fix).
                self._our_end = None
                self._truncate_quietly(fd, size)
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                raise StorageError(f"cannot append to the journal: {reason}") from exc
            last = batch.entries[-1].line
            self._our_end = (os.fstat(fd).st_ino, size + len(data), last)
            self._index(fd, size, batch.entries)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _lock(self) -> int:
        """Take the cross-process journal lock on a descriptor kept open between appends.

        ``FileLock`` opens the file and stats its folder on every acquire (about 50 us here,
        per commit); a kept descriptor makes it one ``flock`` call. The lock file is never
        removed, but if it were, the next append would lock the new file, not a stale one.
        """
        for _ in range(3):
            if self._lock_fd is None:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                try:
                    self._lock_fd = os.open(self.lock_path, flags, FILE_MODE)
                except OSError as exc:
                    raise StorageError(
                        f"cannot open the journal lock {self.lock_path}: {exc.strerror}"
                    ) from exc
            fd = self._lock_fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink > 0:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None
        raise StorageError(f"the journal lock {self.lock_path} keeps disappearing")

    def _path(self, number: int) -> Path:
        return self.directory / _segment_name(number)

    def _current_fd(self) -> int:
        """The newest segment; another process may have rotated since our last append."""
        if self._fd is not None and not self._still_linked(self._fd, self._path(self._number)):
            os.close(self._fd)  # replaced by a repair or removed by compaction
            self._fd = None
        if self._fd is None:
            numbers = segment_numbers(self.directory)
            self._open(numbers[-1] if numbers else max(1, *snapshot_numbers(self.directory), 1))
        while self._path(self._number + 1).exists():
            self._open(self._number + 1)
        assert self._fd is not None
        return self._fd

    @staticmethod
    def _still_linked(fd: int, path: Path) -> bool:
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            return False
        return on_disk.st_ino == os.fstat(fd).st_ino

    def _open(self, number: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self._path(number)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot open journal segment {path}: {exc.strerror}") from exc
        self._fd, self._number = fd, number
        if os.fstat(fd).st_size == 0:
            fsync_dir(self.directory)

    def _rotate(self) -> int:
        self._open(self._number + 1)
        assert self._fd is not None
        return self._fd

    def _repair_tail(self, fd: int) -> int:
        """Cut off a damaged end of the segment; return the clean size.

        Only called under the journal lock, so a tail without a newline cannot belong to a
        writer that is still alive: it is a record torn by a writer that died mid-append.
        The last complete line's checksum is verified too (a few microseconds), since damage
        that happens to end in a newline (a flipped bit, a power cut) would otherwise become
        corruption in the middle once we append after it.
        """
        st = os.fstat(fd)
        size = good = st.st_size
        if self._our_end is not None and self._our_end[:2] == (st.st_ino, size):
            last = self._our_end[2]
            if os.pread(fd, len(last), size - len(last)) == last:
                return size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            good = _last_newline_end(fd, size)
        while good and not checksum_ok(_line_before(fd, good)):
            good = _last_newline_end(fd, good - 1)
        if good == size:
            return size
        try:
            os.ftruncate(fd, good)
        except OSError as exc:
            raise StorageError(f"cannot repair the journal tail: {exc.strerror}") from exc
        fsync_fd(fd, self._path(self._number))
        return good

    # ------------------------------------------------------------------ the index

    def _index(self, segment_fd: int, start: int, entries: list[Entry]) -> None:
        """Append the batch's index lines (derived data: never fsynced, and a failure here
        never fails the append; readers derive whatever the index lacks)."""
        try:
            fd = self._index_fd_for(self._number)
            st = os.fstat(fd)
            if self._our_index_end != (st.st_ino, st.st_size, start):
                _catch_up(fd, segment_fd, start)
            lines = []
            offset = start
            for entry in entries:
                lines.append(index_line(entry.head, offset, len(entry.line), entry.tail))
                offset += len(entry.line)
            data = b"".join(lines)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._our_index_end = (st.st_ino, os.fstat(fd).st_size, offset)
        except OSError:
            self._our_index_end = None

    def _index_fd_for(self, number: int) -> int:
        path = index_path(self._path(number))
        fd = self._index_fd
        if fd is not None and (self._index_number != number or not self._still_linked(fd, path)):
            os.close(fd)
            fd = self._index_fd = None
        if fd is None:
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = self._index_fd = os.open(path, flags, FILE_MODE)
            self._index_number = number
            self._our_index_end = None
        return fd

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold off compaction while walking several journal files."""
        with _flocked(self.compact_lock_path, fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def compacting(self) -> Iterator[None]:
        """Exclusive against readers: for replacing or removing segments."""
        with _flocked(self.compact_lock_path, fcntl.LOCK_EX):
            yield

    def sources(self) -> list[Path]:
        return sources(self.directory)

    def rows(self) -> Iterator[tuple[list[str], Path]]:
        """Every index line (split into fields) of the journal, oldest first. Streams:
        memory stays bounded whatever the journal's size. Call inside ``reading()``."""
        for source in self.sources():
            for fields in _source_rows(source, self._persist_index):
                yield fields, source

    def source_rows(self, source: Path) -> Iterator[list[str]]:
        """The index lines of one segment or snapshot (see ``rows``)."""
        return _source_rows(source, self._persist_index)

    def rows_after(self, segment: int, offset: int) -> Iterator[tuple[list[str], int, int]]:
        """Index lines of records at or after byte ``offset`` of segment ``segment``, then
        of every newer segment, as (fields, segment number, end offset of the record); for
        a reader that keeps its own place (the hook runner). Snapshots are skipped (they
        repeat states, they are not events). Call inside ``reading()``."""
        for number in segment_numbers(self.directory):
            if number < segment:
                continue
            start = offset if number == segment else 0
            for fields in _source_rows(segment_path(self.directory, number), self._persist_index):
                try:
                    begin, length = int(fields[OFFSET]), int(fields[LENGTH])
                except (IndexError, ValueError):
                    continue
                if begin >= start:
                    yield fields, number, begin + length

    def rows_of(self, job_id: str) -> list[tuple[list[str], Path]]:
        """The index lines of one job's records (every life), oldest first: one substring
        search per index file, so it costs milliseconds at 200,000 records."""
        found = []
        with self.reading():
            for source in self.sources():
                for fields in _source_rows_of(source, job_id):
                    found.append((fields, source))
        return found

    def read_at(self, source: Path, offset: int, length: int) -> dict[str, Any] | None:
        """The record at a position an index line gave (None if it is not there)."""
        try:
            with open(source, "rb") as handle:
                line = os.pread(handle.fileno(), length, offset)
        except OSError:
            return None
        return decode_line(line)

    def records_of(self, job_id: str) -> list[dict[str, Any]]:
        """Every record of one job, oldest first, found through the index."""
        out = []
        for fields, source in self.rows_of(job_id):
            record = self.read_at(source, int(fields[OFFSET]), int(fields[LENGTH]))
            if record is not None:
                out.append(record)
        return out

    def records(self) -> Iterator[Record]:
        """Every valid record, oldest first, parsed (streams; call inside ``reading()``).
        Damage followed by valid records raises ``JournalCorrupt``; a torn tail is skipped."""
        damage: tuple[Path, int] | None = None
        for path in self.sources():
            for offset, data in iter_segment(path):
                if data is None:
                    damage = damage or (path, offset)
                    continue
                if damage is not None:
                    raise _corrupt(damage)
                yield Record(path, offset, data)

    def _persist_index(self, source: Path, expected_size: int, lines: list[bytes]) -> None:
        """Write what a reader derived for a sealed segment's index, so the next reader
        does not derive it again (under the journal lock; skipped if anything moved)."""
        if source.suffix != _SUFFIX:
            return
        try:
            number = int(source.stem)
        except ValueError:
            return
        if number >= max(segment_numbers(self.directory), default=0):
            return  # the newest segment: its appender keeps the index
        path = index_path(source)
        with self._file_lock:
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(path, flags, FILE_MODE)
            except OSError:
                return
            try:
                if os.fstat(fd).st_size == expected_size:
                    os.write(fd, b"".join(lines))
            except OSError:
                pass
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ maintenance

    def rewrite_segment(self, path: Path, keep: Callable[[bytes], bool]) -> list[bytes]:
        """Rewrite one segment keeping the lines ``keep`` accepts (fsck cuts damage out this
        way); returns the dropped lines. Its index is rebuilt from the result."""
        with self.compacting(), self._file_lock:
            with open(path, "rb") as handle:
                lines = handle.readlines()
            kept = [line for line in lines if keep(line)]
            dropped = [line for line in lines if not keep(line)]
            self._replace_file(path, b"".join(kept))
            self._replace_file(index_path(path), b"".join(derived_lines(b"".join(kept), 0)))
            self.close()  # our descriptors may point at the replaced files
        return dropped

    def cut_damage(self, path: Path, valid: Callable[[bytes], bool]) -> tuple[int, Path]:
        """Move the lines ``valid`` refuses out of a segment into ``<segment>.damaged``
        (kept for inspection); returns (how many, that file)."""
        dropped = self.rewrite_segment(path, valid)
        aside = path.with_name(path.name + ".damaged")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(aside, flags, FILE_MODE)
        try:
            os.write(fd, b"".join(dropped))
            fsync_fd(fd, aside)
        finally:
            os.close(fd)
        return len(dropped), aside

    def truncate_segment(self, path: Path, size: int) -> None:
        """Cut a torn last record off (fsck, under the journal lock)."""
        os.truncate(path, size)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fsync_fd(fd, path)
        finally:
            os.close(fd)

    def rebuild_indexes(self) -> int:
        """Recreate every index file from its segment; returns how many were rewritten."""
        rewritten = 0
        with self.compacting(), self._file_lock:
            for source in self.sources():
                data = source.read_bytes()
                fresh = b"".join(derived_lines(data, 0))
                target = index_path(source)
                try:
                    current = target.read_bytes()
                except FileNotFoundError:
                    current = None
                if current != fresh:
                    self._replace_file(target, fresh)
                    rewritten += 1
            self.close()
        return rewritten

    def write_snapshot(self, number: int, entries: Iterable[Entry], tmp_dir: Path) -> Path:
        """Write ``NNNNNNNN.snap`` and its index from entries (streamed), durably."""
        target = snapshot_path(self.directory, number)
        tmp = tmp_dir / f".snapshot.{os.getpid()}.tmp"
        tmp_index = tmp_dir / f".snapshot.{os.getpid()}.idx.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(tmp, flags, FILE_MODE)
        index_fd = os.open(tmp_index, flags, FILE_MODE)
        try:
            offset = 0
            for entry in entries:
                os.write(fd, entry.line)
                os.write(index_fd, index_line(entry.head, offset, len(entry.line), entry.tail))
                offset += len(entry.line)
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
            os.close(index_fd)
        os.replace(tmp_index, index_path(target))
        os.replace(tmp, target)
        fsync_dir(self.directory)
        return target

    def remove(self, paths: Iterable[Path]) -> None:
        """Delete folded segments or snapshots with their indexes (inside ``compacting``)."""
        for path in paths:
            for victim in (path, index_path(path)):
                try:
                    os.unlink(victim)
                except FileNotFoundError:
                    pass
        fsync_dir(self.directory)

    def start_segment(self) -> int:
        """Begin a new empty segment (under the journal lock) and return its number, so the
        current one can be folded by compaction."""
        numbers = segment_numbers(self.directory)
        following = (numbers[-1] + 1) if numbers else 1
        fd = os.open(segment_path(self.directory, following), os.O_WRONLY | os.O_CREAT, FILE_MODE)
        os.close(fd)
        fsync_dir(self.directory)
        return following

    def _replace_file(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".repair")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, data)
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)

    @staticmethod
    def _truncate_quietly(fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass

    def close(self) -> None:
        for name in ("_fd", "_lock_fd", "_index_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self._our_end = None
        self._our_index_end = None


@dataclass
class _Position:
    inode: int
    consumed: int
    """Bytes of the index file read so far (complete lines only)."""
    covered: int
    """Segment offset the rows seen so far reach (index lines or derived ones)."""


class Follower:
    """Reads a journal's index incrementally: each ``advance`` feeds only the rows appended
    since the last one (a dashboard scraped every few seconds must not re-read 200,000 rows
    each time). Anything but growth (compaction, a repair, rotation of a folded segment)
    makes it start over, and it says so with ``on_reset`` before feeding everything again."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._positions: dict[str, _Position] = {}
        self._order: list[str] = []

    def advance(
        self,
        on_reset: Callable[[], None],
        on_row: Callable[[list[str], Path], None],
    ) -> None:
        with self.journal.reading():
            found = self.journal.sources()
            names = [p.name for p in found]
            inodes = {p.name: _inode(p) for p in found}
            known = self._order
            incremental = (
                bool(known)
                and names[: len(known)] == known
                and all(self._positions[n].inode == inodes[n] for n in known)
            )
            if not incremental:
                on_reset()
                self._positions = {}
            self._order = names
            for path in found:
                position = self._positions.get(path.name)
                if position is None:
                    position = self._positions[path.name] = _Position(inodes[path.name], 0, 0)
                _follow_source(path, position, on_row)


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def _follow_source(
    source: Path, position: _Position, on_row: Callable[[list[str], Path], None]
) -> None:
    try:
        with open(index_path(source), "rb") as handle:
            handle.seek(position.consumed)
            data = handle.read()
    except FileNotFoundError:
        data = b""
    cut = data.rfind(b"\n") + 1
    for raw in data[:cut].split(b"\n")[:-1]:
        fields = raw.decode("utf-8", "replace").split("\t")
        try:
            end = int(fields[OFFSET]) + int(fields[LENGTH])
        except (IndexError, ValueError):
            continue
        if end <= position.covered:
            continue
        position.covered = end
        on_row(fields, source)
    position.consumed += cut
    try:
        size = os.stat(source).st_size
    except FileNotFoundError:
        return
    if position.covered >= size:
        return
    with open(source, "rb") as segment:
        tail = os.pread(segment.fileno(), size - position.covered, position.covered)
    for raw_line in derived_lines(tail, position.covered):
        fields = raw_line.decode("utf-8", "replace").rstrip("\n").split("\t")
        position.covered = int(fields[OFFSET]) + int(fields[LENGTH])
        on_row(fields, source)


@contextlib.contextmanager
def _flocked(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- index files


def _last_index_end(fd: int) -> tuple[int, int]:
    """(clean size of an index file, segment offset its last complete line reaches)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, 0
    tail = os.pread(fd, min(size, 8192), max(0, size - 8192))
    clean = size
    if not tail.endswith(b"\n"):
        cut = tail.rfind(b"\n")
        clean = size - len(tail) + cut + 1 if cut >= 0 else 0
        tail = tail[: cut + 1] if cut >= 0 else b""
    start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
    fields = tail[start:].rstrip(b"\n").split(b"\t")
    try:
        return clean, int(fields[OFFSET]) + int(fields[LENGTH])
    except (IndexError, ValueError):
        return clean, -1


def _catch_up(index_fd: int, segment_fd: int, segment_size: int) -> None:
    """Make an index complete up to ``segment_size`` before appending to it: drop a torn
    last line, derive lines for records a dead writer did not index, or start over when it
    does not match the segment (after a repair)."""
    clean, end = _last_index_end(index_fd)
    if clean != os.fstat(index_fd).st_size:
        os.ftruncate(index_fd, clean)
    if end < 0 or end > segment_size:
        os.ftruncate(index_fd, 0)
        end = 0
    if end < segment_size:
        data = os.pread(segment_fd, segment_size - end, end)
        os.write(index_fd, b"".join(derived_lines(data, end)))


def _source_rows(
    source: Path, persist: Callable[[Path, int, list[bytes]], None]
) -> Iterator[list[str]]:
    """Index lines of one segment or snapshot, then lines derived for whatever the index
    does not cover yet."""
    end = 0
    clean = 0
    try:
        handle = open(index_path(source), "rb")  # noqa: SIM115
    except FileNotFoundError:
        handle = None
    if handle is not None:
        with handle:
            rest = b""
            while chunk := handle.read(_CHUNK):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                for raw in data[:cut].split(b"\n")[:-1]:
                    fields = raw.decode("utf-8", "replace").split("\t")
                    try:
                        line_end = int(fields[OFFSET]) + int(fields[LENGTH])
                    except (IndexError, ValueError):
                        continue
                    if line_end <= end:
                        continue  # duplicated by a catch-up racing an appender
                    end = line_end
                    yield fields
                clean += cut
    try:
        size = os.stat(source).st_size
    except FileNotFoundError:
        return
    if end >= size:
        return
    with open(source, "rb") as segment:
        data = os.pread(segment.fileno(), size - end, end)
    lines = list(derived_lines(data, end))
    for raw in lines:
        yield raw.decode("utf-8", "replace").rstrip("\n").split("\t")
    if lines:
        persist(source, clean, lines)


def _source_rows_of(source: Path, job_id: str) -> Iterator[list[str]]:
    try:
        data = index_path(source).read_bytes()
    except FileNotFoundError:
        data = b""
    key = job_id.encode() + b"\t"
    end = 0
    position = 0 if data.startswith(key) else data.find(b"\n" + key)
    while position >= 0:
        start = position if position == 0 and data.startswith(key) else position + 1
        stop = data.find(b"\n", start)
        if stop < 0:
            break
        fields = data[start:stop].decode("utf-8", "replace").split("\t")
        try:
            end = max(end, int(fields[OFFSET]) + int(fields[LENGTH]))
        except (IndexError, ValueError):
            pass
        yield fields
        position = data.find(b"\n" + key, stop)
    end = max(end, _index_coverage(data))
    try:
        size = os.stat(source).st_size
    except FileNotFoundError:
        return
    if end < size:
        with open(source, "rb") as segment:
            tail = os.pread(segment.fileno(), size - end, end)
        for raw in derived_lines(tail, end):
            fields = raw.decode("utf-8", "replace").rstrip("\n").split("\t")
            if fields[0] == job_id:
                yield fields


def _index_coverage(data: bytes) -> int:
    """The segment offset an index's last complete line reaches."""
    if not data:
        return 0
    stop = data.rfind(b"\n")
    if stop < 0:
        return 0
    start = data.rfind(b"\n", 0, stop) + 1
    fields = data[start:stop].split(b"\t")
    try:
        return int(fields[OFFSET]) + int(fields[LENGTH])
    except (IndexError, ValueError):
        return 0


# ---------------------------------------------------------------------- raw segments


def _last_newline_end(fd: int, size: int) -> int:
    """Offset just past the last ``\\n`` before ``size`` (0 if none), reading backwards."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        index = chunk.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        end = start
    return 0


def _line_before(fd: int, end: int) -> bytes:
    """The complete line that ends at offset ``end`` (which follows a newline)."""
    start = _last_newline_end(fd, end - 1)
    return os.pread(fd, end - start, start)


@dataclass(frozen=True)
class Record:
    segment: Path
    offset: int
    data: dict[str, Any]


@dataclass
class JournalScan:
    """The outcome of reading the whole journal: records plus what was wrong with it."""

    records: list[Record]
    torn_tail: tuple[Path, int] | None = None


def iter_segment(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Yield (offset, record) per line; record is None for a damaged or torn line."""
    with open(path, "rb") as handle:
        offset = 0
        for line in handle:
            yield offset, decode_line(line)
            offset += len(line)


def _corrupt(damage: tuple[Path, int]) -> JournalCorrupt:
    return JournalCorrupt(
        f"journal damaged in {damage[0]} at byte {damage[1]} "
        "(valid records follow it); run: queuectl fsck --repair",
        path=damage[0],
        offset=damage[1],
    )


@dataclass
class Audit:
    """What ``audit`` found: records, a torn tail, and files whose index is out of date."""

    records: int = 0
    torn_tail: tuple[Path, int] | None = None
    stale_indexes: list[Path] = field(default_factory=list)


def audit(directory: Path) -> Audit:
    """One pass over every record: checksums (damage followed by valid records raises
    ``JournalCorrupt``; damage at the very end is a torn tail) and each file's index, line
    by line against what the records say. Memory stays bounded (a line at a time). The
    newest segment's index may lag by an append in flight: that is not stale."""
    result = Audit()
    damage: tuple[Path, int] | None = None
    found = sources(directory)
    for number, path in enumerate(found):
        newest = number == len(found) - 1
        stale = False
        try:
            index = open(index_path(path), "rb")  # noqa: SIM115
        except FileNotFoundError:
            index = None
            stale = True
        try:
            for offset, line, record in _iter_lines(path):
                if record is None:
                    damage = damage or (path, offset)
                    continue
                if damage is not None:
                    raise _corrupt(damage)
                result.records += 1
                if index is not None and not stale:
                    expected = index_line(*_split(derive_parts(record), offset, len(line)))
                    actual = index.readline()
                    if actual != expected and not (newest and actual == b""):
                        stale = True
            if index is not None and not stale and index.read(1):
                stale = True  # the index says more than the segment
        finally:
            if index is not None:
                index.close()
        if stale:
            result.stale_indexes.append(path)
    result.torn_tail = damage
    return result


def _split(parts: tuple[str, str], offset: int, length: int) -> tuple[str, int, int, str]:
    return parts[0], offset, length, parts[1]


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    with open(path, "rb") as handle:
        offset = 0
        for line in handle:
            yield offset, line, decode_line(line)
            offset += len(line)


def clean_end(path: Path, size: int) -> int:
    """Where the last complete, valid record of a segment ends at or before ``size`` (what
    an appender's tail repair would keep; read-only). Call under the journal lock, where
    no writer is mid-append."""
    if size <= 0:
        return 0
    with open(path, "rb") as handle:
        fd = handle.fileno()
        good = size
        if os.pread(fd, 1, size - 1) != b"\n":
            good = _last_newline_end(fd, size)
        while good and not checksum_ok(_line_before(fd, good)):
            good = _last_newline_end(fd, good - 1)
    return good


def verify_prefix(path: Path, end: int) -> int:
    """Check the checksum of every record in the first ``end`` bytes of a segment or
    snapshot (which must end on a record boundary); returns how many there are. Damage
    raises ``JournalCorrupt`` naming the file and offset."""
    count = 0
    offset = 0
    with open(path, "rb") as handle:
        rest = b""
        while offset + len(rest) < end:
            chunk = handle.read(min(_CHUNK, end - offset - len(rest)))
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            for line_offset, line in _lines_at(data[:cut], offset):
                if not checksum_ok(line):
                    raise _corrupt((path, line_offset))
                count += 1
            offset += cut
            rest = data[cut:]
    if rest or offset != end:
        raise _corrupt((path, offset))
    return count


def _lines_at(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    position = 0
    while position < len(data):
        stop = data.index(b"\n", position) + 1
        yield start + position, data[position:stop]
        position = stop


def write_fresh_indexes(directory: Path) -> int:
    """Write the index of every segment and snapshot of a journal folder that nothing uses
    yet (a restore's staging folder), from the records themselves; not fsynced here (the
    caller syncs the whole folder). Returns how many were written."""
    written = 0
    for source in sources(directory):
        lines = derived_lines(source.read_bytes(), 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(index_path(source), flags, FILE_MODE)
        try:
            batch: list[bytes] = []
            for line in lines:
                batch.append(line)
                if len(batch) >= 4096:
                    _write_fully(fd, b"".join(batch))
                    batch = []
            _write_fully(fd, b"".join(batch))
        finally:
            os.close(fd)
        written += 1
    return written


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def check(directory: Path) -> tuple[int, tuple[Path, int] | None]:
    """Walk every record without keeping them: (valid records, torn tail or None).
    Raises ``JournalCorrupt`` for damage followed by valid records."""
    count = 0
    damage: tuple[Path, int] | None = None
    for path in sources(directory):
        for offset, data in iter_segment(path):
            if data is None:
                damage = damage or (path, offset)
                continue
            if damage is not None:
                raise _corrupt(damage)
            count += 1
    return count, damage


def scan(directory: Path) -> JournalScan:
    """Every record in memory (tests and small homes; scaling readers use ``Journal.rows``).

    A damaged stretch at the very end is a torn tail (a writer died mid-append): reported and
    ignored. Damage followed by any valid record is corruption and raises ``JournalCorrupt``
    naming the file and byte offset, because silently skipping it could lose events.
    """
    result = JournalScan(records=[])
    damage: tuple[Path, int] | None = None
    for path in sources(directory):
        for offset, data in iter_segment(path):
            if data is None:
                damage = damage or (path, offset)
                continue
            if damage is not None:
                raise _corrupt(damage)
            result.records.append(Record(path, offset, data))
    result.torn_tail = damage
    return result
