"""Remote heads: the home's durable record that a worker runs commands on other hosts.

A local command keeps its job's run lock (fd 3) for as long as it lives, so recovery can
never start a second run next to a survivor. A command on a Dask worker holds no lock here:
when its head (a ``worker start --executor dask`` process) dies, the job's lock goes with the
head while the remote command may still run until its lease ends (``queuectl.remote.lease``).

So each such head writes ``remote/<head>.json`` (``{"lease": seconds, "pid": ...}``) durably
before it submits anything, and holds an exclusive ``flock`` on it for its whole life. A
recovering worker that finds such a file unlocked knows its head is dead (the lock went when
the process did, at or before that moment, ``observed``): every lease that head granted ends
by ``observed + lease``. Until ``observed + lease + margin`` it recovers no orphaned job of
``processing/`` (it cannot tell from the job file which head held it, so it waits for all);
after that it removes the file. A clean exit removes its own file. The cost is one durable
write per head start, none per job.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from queuectl.storage.durable import fsync_dir, fsync_fd

__all__ = ["FOLDER", "HeadRecord", "RemoteHeads"]

FOLDER: Final = "remote"
MARGIN_SECONDS: Final = 1.0
MAX_RECORD_BYTES: Final = 4096
MAX_LEASE_SECONDS: Final = 3600.0


@dataclass
class HeadRecord:
    """This process's own record, locked until it exits or calls ``remove``."""

    path: Path
    fd: int
    lease: float = 0.0

    def advertise_gpus(self, gpus: int) -> None:
        """Rewrite the record in place (same inode: the lock stays) with the largest ``GPU``
        resource a worker of the cluster advertises, for ``add --gpus`` to check against."""
        if self.fd < 0:
            return
        data = json.dumps({"lease": self.lease, "pid": os.getpid(), "gpus": int(gpus)}).encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError:
            pass  # advisory only: the lease is never shorter than what was written first

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = -1


@dataclass
class RemoteHeads:
    root: Path
    _observed: dict[str, float] = field(default_factory=dict)
    _told: set[str] = field(default_factory=set)

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    def register(self, head: str, lease: float, gpus: int = 0) -> HeadRecord:
        """Write and lock ``remote/<head>.json`` durably (before any attempt is submitted)."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        path = self.folder / f"{head}.json"
        tmp = self.folder / f".{head}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the inode keeps the lock across the rename
            record = {"lease": lease, "pid": os.getpid(), "gpus": int(gpus)}
            os.write(fd, json.dumps(record).encode())
            fsync_fd(fd, tmp)
            os.rename(tmp, path)
            fsync_dir(self.folder)
        except BaseException:
            os.close(fd)
            raise
        return HeadRecord(path, fd, lease)

    def advertised_gpus(self) -> int:
        """The largest ``GPU`` resource that the cluster of a running remote head advertises
        (0 when none runs). A head counts while its pid lives: no lock is taken here, so this
        never delays a recovery's view of a dead head (``hold_until``)."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        best = 0
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                with open(self.folder / name, "rb") as f:
                    record = json.loads(f.read(MAX_RECORD_BYTES))
                pid, gpus = int(record["pid"]), int(record.get("gpus", 0))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                continue
            if gpus > best and _alive(pid):
                best = gpus
        return best

    def hold_until(self, now: float | None = None) -> tuple[float, str] | None:
        """While a dead head's leases may still run: (monotonic time they surely ended, that
        head's name); None when no orphan needs to wait. Records whose wait is over go."""
        now = time.monotonic() if now is None else now
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return None
        latest: tuple[float, str] | None = None
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            safe = self._dead_until(self.folder / name, name[:-5], now)
            if safe is not None and (latest is None or safe > latest[0]):
                latest = (safe, name[:-5])
        return latest

    def first_notice(self, head: str) -> bool:
        """True once per dead head (so the worker logs the wait once)."""
        if head in self._told:
            return False
        self._told.add(head)
        return True

    def _dead_until(self, path: Path, head: str, now: float) -> float | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._observed.pop(head, None)
                return None  # alive: its jobs are locked, nothing to wait for
            observed = self._observed.setdefault(head, now)
            safe = observed + _lease_of(fd) + MARGIN_SECONDS
            if now < safe:
                return safe
            if os.fstat(fd).st_ino == _inode(path):  # still the file we locked
                os.unlink(path)
            self._observed.pop(head, None)
            return None
        finally:
            os.close(fd)


def _lease_of(fd: int) -> float:
    """The record's lease; the longest allowed when it cannot be read (never too short)."""
    try:
        value = json.loads(os.read(fd, MAX_RECORD_BYTES)).get("lease")
        lease = float(value)
    except (OSError, ValueError, TypeError, AttributeError):
        return MAX_LEASE_SECONDS
    if not 0 < lease <= MAX_LEASE_SECONDS:
        return MAX_LEASE_SECONDS
    return lease


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _inode(path: Path) -> int:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return -1
