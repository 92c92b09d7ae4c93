"""Kernel locks that follow a job rather than a file: bytes of one lock file.

Every job id, queue slot, GPU place, unique key and process mark maps to one byte of
``locks/claims.lock``. Holding it means holding an open-file-description (OFD) write lock on
that byte (``fcntl(F_OFD_SETLK)``). Such a lock belongs to the open file description, not to
a process or to the job file's inode, which is what the job needs:

- a worker takes a job's lock *before* it claims the job file, and the command inherits the
  descriptor as fd 3, so the lock is held while the worker **or** the command (or anything
  the command started that kept fd 3) lives, whatever happens to the worker;
- every state change writes a new job file (a new inode), but the lock stays where it is:
  a retry, a DLQ retry, a restart or an edit of a job whose earlier run left a child behind
  finds the job still locked and waits, so no two runs of one job ever overlap;
- the kernel drops the lock when the last descriptor closes, SIGKILL included, and nothing
  is ever created or deleted per job (creating a file costs up to a millisecond here).

The same descriptor can hold several bytes at once (a job, its queue slot, its GPU places):
they are inherited, and released, together. Distinct descriptors conflict even inside one
process, so threads of one worker exclude each other exactly as processes do.

A byte is a 61-bit hash of the name: two names that collide only make each other wait
(never run together), with odds of about one in 10^12 for a million live jobs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from pathlib import Path
from typing import Final

try:  # hashlib would load OpenSSL (_hashlib, 2-3 ms of every CLI call) for a built-in hash
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without _blake2
    from hashlib import blake2b

from queuectl.errors import StorageError

__all__ = [
    "HOOK_BYTE",
    "LEADER_BYTE",
    "LOCK_FILE_NAME",
    "Holder",
    "LockFile",
    "ProcessMark",
    "change_offset",
    "gate_offset",
    "gpu_offset",
    "job_offset",
    "leader_offset",
    "slot_offset",
    "unique_offset",
]

LOCK_FILE_NAME: Final = "claims.lock"

_FLOCK: Final = struct.Struct("@hhqqi")
_PAD: Final = b"\0" * 4  # struct flock is 32 bytes on 64-bit Linux; the kernel reads them all

# Regions of the lock file, by purpose (offsets must stay below 2**63).
_JOB_BASE: Final = 1 << 62
_UNIQUE_BASE: Final = 1 << 61
_CHANGE_BASE: Final = 1 << 60
_SLOT_BASE: Final = 1 << 56
_GPU_BASE: Final = 1 << 52
_MARK_BASE: Final = 1 << 48
_GATE_BASE: Final = 1 << 47
LEADER_BYTE: Final = 1
"""Held by the worker that runs the schedules (``worker.leader``)."""
HOOK_BYTE: Final = 2
"""Held by the worker that runs the completion hooks (``worker.hooks``)."""


def _hash(text: str, bits: int) -> int:
    digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


def job_offset(job_id: str) -> int:
    return _JOB_BASE + _hash(job_id, 61)


def change_offset(job_id: str) -> int:
    """A job's change lock: held (never inherited) only while its files are being moved."""
    return _CHANGE_BASE + _hash(job_id, 59)


def unique_offset(key: str) -> int:
    return _UNIQUE_BASE + _hash(key, 60)


def slot_offset(queue: str, slot: int) -> int:
    """Slot ``slot`` (0-65535) of a queue's parallel limit."""
    return _SLOT_BASE + (_hash(queue, 40) << 16) + slot


def gpu_offset(device: str, place: int) -> int:
    """Place ``place`` (0-65535) of a GPU device (``gpu-jobs-per-device`` places each)."""
    return _GPU_BASE + (_hash(device, 32) << 16) + place


def gate_offset(queue: str) -> int:
    """A queue's gate: claims hold it shared while they check the queue's flags and rename;
    ``pause`` holds it exclusively while it writes them."""
    return _GATE_BASE + _hash(queue, 46)


def leader_offset() -> int:
    """The byte a worker holds while it leads (runs schedules and hooks)."""
    return LEADER_BYTE


def _request(kind: int, offset: int, length: int = 1) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, offset, length, 0) + _PAD


class LockFile:
    """``locks/claims.lock`` of one home; ``holder()`` opens a new description on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._probe: int | None = None
        self._guard = threading.Lock()

    def holder(self) -> Holder:
        return Holder(self._open())

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            return os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file {self.path}: {exc.strerror}") from exc

    def is_held(self, offset: int) -> bool:
        """Whether any description holds the byte (asked through one that never holds any)."""
        return self.first_held(offset, 1) is not None

    def _conflict(self, offset: int, length: int) -> tuple[int, int] | None:
        """Some held range overlapping ``[offset, offset + length)``, as (start, end), or
        None: one F_OFD_GETLK. The kernel answers with the first conflicting lock in its
        list (oldest first), not the lowest: callers that need more must ask again."""
        if length <= 0:
            return None
        with self._guard:
            if self._probe is None:
                self._probe = self._open()
            probe = self._probe
        answer = fcntl.fcntl(probe, fcntl.F_OFD_GETLK, _request(fcntl.F_WRLCK, offset, length))
        kind, _whence, start, size, _pid = _FLOCK.unpack(answer[: _FLOCK.size])
        if kind == fcntl.F_UNLCK:
            return None
        end = offset + length if size == 0 else start + size  # 0: to the end of the file
        return int(max(start, offset)), int(min(end, offset + length))

    def first_held(self, offset: int, length: int) -> int | None:
        """The lowest byte of ``[offset, offset + length)`` some description holds, or None
        (one system call when nothing is held, a few more to find the lowest)."""
        found = self._conflict(offset, length)
        if found is None:
            return None
        lowest = found[0]
        while (lower := self._conflict(offset, lowest - offset)) is not None:
            lowest = lower[0]
        return lowest

    def held_in(self, offset: int, length: int) -> int:
        """How many bytes of ``[offset, offset + length)`` are held: each answer splits the
        range around the lock it names (about two calls per held lock). Stepping past the
        kernel's answer instead skipped a lower byte taken after a higher one: ``status``
        once counted one job on a GPU device that ran two."""
        count, ranges = 0, [(offset, offset + length)]
        while ranges:
            low, high = ranges.pop()
            found = self._conflict(low, high - low)
            if found is None:
                continue
            start, end = found
            count += end - start
            ranges += [(low, start), (end, high)]
        return count

    def close(self) -> None:
        with self._guard:
            if self._probe is not None:
                os.close(self._probe)
                self._probe = None


class Holder:
    """One open file description on the lock file and the bytes it holds.

    Hand ``fd`` to a command (as fd 3) to let it keep every byte held here; ``close`` lets
    go of this process's copy (the bytes stay held while a command still has one)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.held: set[int] = set()

    def take(self, offset: int, shared: bool = False) -> bool:
        """Take the byte without waiting; False when another description holds it (in a
        conflicting mode: ``shared`` holders only conflict with exclusive ones)."""
        kind = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _request(kind, offset))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.held.add(offset)
        return True

    def wait(self, offset: int, shared: bool = False) -> None:
        """Take the byte, waiting as long as it takes (only for short-lived holders)."""
        kind = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLKW, _request(kind, offset))
        self.held.add(offset)

    def drop(self, offset: int) -> None:
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _request(fcntl.F_UNLCK, offset))
        self.held.discard(offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.held.clear()

    @property
    def open(self) -> bool:
        return self.fd >= 0


class ProcessMark:
    """A byte this process holds for its whole life, named in the tmp files it writes.

    ``fsck`` removes a tmp file only when its writer is gone, and tells that by whether the
    byte named in the file's name is still held: no pid (which another PID namespace, a
    container, would not see, and which can be recycled) and no age (a running command's
    output can be hours old)."""

    def __init__(self, locks: LockFile) -> None:
        self._locks = locks
        self._guard = threading.Lock()
        self._name: str | None = None
        self._holder: Holder | None = None

    @property
    def name(self) -> str:
        """16 hex digits; the byte is taken the first time a name is needed."""
        with self._guard:
            if self._name is None:
                for _ in range(8):
                    token = int.from_bytes(os.urandom(6)) >> 1  # 47 random bits
                    holder = self._locks.holder()
                    if holder.take(_MARK_BASE + token):
                        self._holder, self._name = holder, f"{token:016x}"
                        break
                    holder.close()
                else:
                    raise StorageError("cannot take a process mark in the lock file")
            return self._name

    def close(self) -> None:
        with self._guard:
            if self._holder is not None:
                self._holder.close()
            self._holder, self._name = None, None


def mark_is_live(locks: LockFile, name: str) -> bool | None:
    """Whether the writer named by a tmp file's mark still runs; None if not a mark."""
    if len(name) != 16:
        return None
    try:
        token = int(name, 16)
    except ValueError:
        return None
    return locks.is_held(_MARK_BASE + token)
