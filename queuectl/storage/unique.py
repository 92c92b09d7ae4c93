"""Unique jobs: which job holds a ``unique_key``, in ``unique/<hash of the key>.json``.

``enqueue`` of a job with a key takes the key's lock (a byte in ``locks/claims.lock``, held by
enqueuers only, for an fsync or two), reads the key's entry, and if the job it names still
holds the key (waiting, held, blocked, running, failed-waiting, or completed within its
``unique_for``) creates nothing and answers with that job's id; otherwise it records the new
job in the entry (durably, before the job is published) and enqueues it. Concurrent enqueues
of one key therefore create exactly one job. An entry naming a job that is gone or finished
is simply free: entries need no cleanup, and ``journal rebuild`` rewrites them from the jobs
(``expected_holders``); ``fsck`` checks them against the job files.

The rule for who holds a key, at enqueue and when a finished job is brought back (``restart``,
``dlq retry``): an unfinished job with the key holds it; a completed one holds it only against
a new (or revived) job whose own ``unique_for`` window it completed within. A restart or retry
while another job holds the key is refused (exit 1), as an enqueue creates nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

try:  # hashlib would load OpenSSL (_hashlib, 2-3 ms of every CLI call) for a built-in hash
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without _blake2
    from hashlib import blake2b

from queuectl.storage.durable import fsync_dir, fsync_fd, read_regular, write_tmp
from queuectl.storage.home import Home
from queuectl.storage.locks import LockFile, ProcessMark, unique_offset

__all__ = ["Keyed", "UniqueIndex", "entry_data", "entry_name", "expected_holders"]


@dataclass(frozen=True)
class Keyed:
    """What the key's entry is decided from: one job with a unique key."""

    id: str
    key: str
    unfinished: bool
    updated_at: str


def expected_holders(jobs: Iterable[Keyed]) -> dict[str, tuple[Keyed, list[Keyed]]]:
    """Key -> (the job its entry must name, every unfinished job with it). The job is an
    unfinished one if any, else the last one made live: the finished one changed last (a
    job is made live only while no other holds the key, and it finishes after that)."""
    by_key: dict[str, list[Keyed]] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)
    out = {}
    for key, found in by_key.items():
        live = sorted((j for j in found if j.unfinished), key=lambda j: (j.updated_at, j.id))
        best = live[-1] if live else max(found, key=lambda j: (j.updated_at, j.id))
        out[key] = (best, live)
    return out


def entry_name(key: str) -> str:
    """The file name of a key's entry (a hash: keys are free text)."""
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"{digest.hexdigest()}.json"


def entry_data(key: str, job_id: str) -> bytes:
    return (json.dumps({"key": key, "id": job_id}) + "\n").encode()


class UniqueIndex:
    def __init__(self, home: Home, locks: LockFile, mark: ProcessMark) -> None:
        self.home = home
        self.locks = locks
        self.mark = mark

    @property
    def directory(self) -> Path:
        return self.home.root / "unique"

    def path(self, key: str) -> Path:
        return self.directory / entry_name(key)

    @contextlib.contextmanager
    def locked(self, keys: list[str]) -> Iterator[None]:
        """Hold the locks of ``keys`` (in a fixed order: two enqueues never deadlock)."""
        holder = self.locks.holder()
        try:
            for key in sorted(set(keys)):
                holder.wait(unique_offset(key))
            yield
        finally:
            holder.close()

    def holder_of(self, key: str) -> str | None:
        """The id the key's entry names (whether that job still holds it is for the caller
        to decide), or None."""
        try:
            raw, _ = read_regular(self.path(key), 4096)
            data = json.loads(raw)
        except (OSError, ValueError, RecursionError):
            return None
        if isinstance(data, dict) and data.get("key") == key and isinstance(data.get("id"), str):
            return str(data["id"])
        return None

    def record(self, key: str, job_id: str) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        data = entry_data(key, job_id)
        tmp, fd = write_tmp(self.home.tmp, "unique", data, self.mark.name)
        try:
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, self.path(key))
        fsync_dir(self.directory)
