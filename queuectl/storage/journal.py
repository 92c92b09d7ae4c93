"""The append-only event journal: checksummed lines, group commit, torn-tail repair, replay.

Format: segments ``journal/00000001.log``, ``00000002.log``, ... each a sequence of lines::

    <crc32 of the JSON, 8 hex digits> <one compact JSON object>\\n

JSON never contains a raw newline, so a line is complete exactly when it ends in ``\\n`` and its
checksum matches. Every record carries the full job after the change and the job's ``rev``; the
state is rebuilt by keeping, per id, the record with the highest rev, so replay does not depend
on the order in which processes interleaved their appends.

Writers in all processes append to the newest segment while holding ``locks/journal.lock``
(a ``flock``; appends take it on a descriptor kept open, maintenance through ``filelock``: both
are the same kernel lock on the same file). Inside one process, threads share fsyncs (group
commit): whoever finds no flush in progress becomes the leader and writes and fsyncs every
record queued so far in one go; the others wait.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from filelock import FileLock

from queuectl.errors import JournalCorrupt, StorageError
from queuectl.storage.durable import FILE_MODE, fsync_dir, fsync_fd

__all__ = [
    "SEGMENT_BYTES",
    "Journal",
    "JournalScan",
    "Record",
    "decode_line",
    "encode_record",
    "frame_payload",
    "scan",
]

SEGMENT_BYTES: Final = 64 << 20
"""Rotate to a new segment once the current one passes 64 MiB (etcd's choice)."""

_SUFFIX: Final = ".log"
SNAPSHOT_SUFFIX: Final = ".snap"


def encode_record(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return frame_payload(text.encode("utf-8", "backslashreplace"))  # see job.object_text


def frame_payload(payload: bytes) -> bytes:
    """One journal line for an already encoded JSON object (which has no raw newline)."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _segment_name(number: int) -> str:
    return f"{number:08d}{_SUFFIX}"


def segment_numbers(directory: Path) -> list[int]:
    numbers = []
    for name in os.listdir(directory):
        stem = name[: -len(_SUFFIX)]
        if name.endswith(_SUFFIX) and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


class _Batch:
    """Records waiting for the same fsync; ``error`` is set if that fsync failed."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.done = False
        self.error: BaseException | None = None


class Journal:
    def __init__(self, directory: Path, lock_path: Path, segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.lock_path = lock_path
        self._file_lock = FileLock(lock_path, poll_interval=0.001, thread_local=False)
        self._lock_fd: int | None = None
        self._cond = threading.Condition()
        self._open_batch = _Batch()
        self._flushing = False
        self._fd: int | None = None
        self._number = 0
        self._our_end: tuple[int, int, bytes] | None = None
        """(inode, size, last line) of the segment right after our last append: if it still
        ends with exactly those bytes, the tail is sound without a checksum walk."""

    def append(self, records: list[dict[str, Any]]) -> None:
        """Durably append records; returns only after they are fsynced (or raises)."""
        self.append_lines([encode_record(r) for r in records])

    def append_lines(self, lines: list[bytes]) -> None:
        """``append`` for records already framed by ``encode_record``/``frame_payload``."""
        if not lines:
            return
        with self._cond:
            batch = self._open_batch
            batch.lines.extend(lines)
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

    def _flush(self, batch: _Batch) -> None:
        data = b"".join(batch.lines)
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
            self._our_end = (os.fstat(fd).st_ino, size + len(data), batch.lines[-1])
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
        if self._fd is not None and not self._still_linked(self._fd):
            os.close(self._fd)  # replaced by a repair or removed by compaction
            self._fd = None
        if self._fd is None:
            numbers = segment_numbers(self.directory)
            self._open(numbers[-1] if numbers else max(1, *snapshot_numbers(self.directory), 1))
        while self._path(self._number + 1).exists():
            self._open(self._number + 1)
        assert self._fd is not None
        return self._fd

    def _still_linked(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self._path(self._number))
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
        while good and not _checksum_ok(_line_before(fd, good)):
            good = _last_newline_end(fd, good - 1)
        if good == size:
            return size
        try:
            os.ftruncate(fd, good)
        except OSError as exc:
            raise StorageError(f"cannot repair the journal tail: {exc.strerror}") from exc
        fsync_fd(fd, self._path(self._number))
        return good

    @staticmethod
    def _truncate_quietly(fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


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


def _checksum_ok(line: bytes) -> bool:
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        return False
    try:
        return int(line[:8], 16) == zlib.crc32(line[9:-1])
    except ValueError:
        return False


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


def decode_line(line: bytes) -> dict[str, Any] | None:
    """One journal line's record; None for a damaged or torn line."""
    if len(line) < 11 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def snapshot_numbers(directory: Path) -> list[int]:
    numbers = []
    for name in os.listdir(directory):
        stem = name[: -len(SNAPSHOT_SUFFIX)]
        if name.endswith(SNAPSHOT_SUFFIX) and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


def snapshot_path(directory: Path, number: int) -> Path:
    """``00000007.snap`` holds the latest record of every kept job as of the end of segment 6."""
    return directory / f"{number:08d}{SNAPSHOT_SUFFIX}"


def scan(directory: Path) -> JournalScan:
    """Read the newest snapshot (if any), then every segment it does not cover, in order.

    A damaged stretch at the very end is a torn tail (a writer died mid-append): reported and
    ignored. Damage followed by any valid record is corruption and raises ``JournalCorrupt``
    naming the file and byte offset, because silently skipping it could lose events.
    """
    result = JournalScan(records=[])
    snapshots = snapshot_numbers(directory)
    first = 0
    sources: list[Path] = []
    if snapshots:
        first = snapshots[-1]
        sources.append(snapshot_path(directory, first))
    sources += [directory / _segment_name(n) for n in segment_numbers(directory) if n >= first]
    damage: tuple[Path, int] | None = None
    for path in sources:
        for offset, data in iter_segment(path):
            if data is None:
                damage = damage or (path, offset)
                continue
            if damage is not None:
                raise JournalCorrupt(
                    f"journal damaged in {damage[0]} at byte {damage[1]} "
                    "(valid records follow it); run: queuectl fsck --repair",
                    path=damage[0],
                    offset=damage[1],
                )
            result.records.append(Record(path, offset, data))
    result.torn_tail = damage
    return result
