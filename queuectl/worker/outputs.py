"""Output files for attempts, created ahead of time so no file is created on a job's start path.

On ext4, creating a file or folder waits while another thread's fsync commits the
filesystem journal; measured here, creating ``logs/<id>/`` and two files cost a worker about
2.5 ms per job while the committer was syncing, several times the cost of starting
``/bin/sh``. So a worker takes a ready pair of open files from a small pool, and the
committer thread, off the critical path, refills the pool and afterwards moves each pair to
``logs/<id>/<attempt>.out`` / ``.err``. An attempt that printed nothing keeps no files: its
empty pair goes back to the pool (see ``give_back``).

Until then a running attempt's output lives in ``tmp/output.<mark>.<random>.tmp.out`` /
``.err`` (``mark``: the worker's process mark, see ``storage.locks.ProcessMark``), flock-ed
by the worker and, through the inherited descriptors, by the command; fsck removes such
leftovers only once neither holds them.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["OutputFiles", "OutputPool"]

_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

LOG_CAP_BYTES: Final = 10 << 20
"""Each stored stream keeps at most its last 10 MiB (the end is where errors are), with a
first line saying how much was dropped. Applied when the attempt is recorded."""


@dataclass
class OutputFiles:
    """An open stdout/stderr pair, kept open while it sits in the pool."""

    stdout_path: Path
    stderr_path: Path
    stdout_fd: int
    stderr_fd: int

    def close_fds(self) -> None:
        for fd in (self.stdout_fd, self.stderr_fd):
            if fd >= 0:
                os.close(fd)
        self.stdout_fd = self.stderr_fd = -1


class OutputPool:
    def __init__(self, tmp_dir: Path, logs_dir: Path, spare: int, owner: str = "") -> None:
        self.owner = owner or str(os.getpid())
        self.tmp_dir = tmp_dir
        self.logs_dir = logs_dir
        self.spare = spare
        self._guard = threading.Lock()
        self._ready: list[OutputFiles] = []

    def give_back(self, files: OutputFiles) -> bool:
        """Reuse a pair the attempt left empty, if nothing can still write to it.

        Creating files is the slow part of a short job here (inode allocation on a busy
        filesystem), so an attempt without output costs no new files at all. The caller
        must only offer files whose process group is gone: a straggler could otherwise
        write into the next job's log.
        """
        try:
            empty = all(os.fstat(fd).st_size == 0 for fd in (files.stdout_fd, files.stderr_fd))
        except OSError:
            return False
        if not empty:
            return False
        with self._guard:
            if len(self._ready) >= self.spare:
                return False
            self._ready.append(files)
        return True

    def take(self) -> OutputFiles:
        with self._guard:
            if self._ready:
                return self._ready.pop()
        return self._create()  # the pool ran dry: create on the spot

    def refill(self) -> None:
        """Top the pool up; called from the committer thread between batches."""
        while True:
            with self._guard:
                if len(self._ready) >= self.spare:
                    return
            files = self._create()
            with self._guard:
                self._ready.append(files)

    def place(self, files: OutputFiles, job_id: str, attempt: int) -> Path:
        """Move a finished attempt's output to ``logs/<id>/<attempt>.out|.err``."""
        folder = self.logs_dir / job_id
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        for source, suffix in ((files.stdout_path, "out"), (files.stderr_path, "err")):
            _cap(source)
            os.replace(source, folder / f"{attempt}.{suffix}")
        return folder

    def discard(self) -> None:
        """Remove unused spares (at worker exit)."""
        with self._guard:
            ready, self._ready = self._ready, []
        for files in ready:
            files.close_fds()
            for path in (files.stdout_path, files.stderr_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def _create(self) -> OutputFiles:
        stem = self.tmp_dir / f"output.{self.owner}.{secrets.token_hex(4)}.tmp"
        out_path, err_path = Path(f"{stem}.out"), Path(f"{stem}.err")
        out = os.open(out_path, _FLAGS, 0o600)
        try:
            err = os.open(err_path, _FLAGS, 0o600)
        except BaseException:
            os.close(out)
            os.unlink(out_path)
            raise
        # The command gets these descriptors as its stdout and stderr, and the flock goes
        # with them: fsck sees a running attempt's output as in use even after its worker
        # died, for as long as the command (or anything that kept fd 1 or 2) lives.
        fcntl.flock(out, fcntl.LOCK_EX)
        fcntl.flock(err, fcntl.LOCK_EX)
        return OutputFiles(out_path, err_path, out, err)


def _cap(path: Path, limit: int = LOG_CAP_BYTES) -> None:
    """Keep only the last ``limit`` bytes of an over-long output file."""
    size = os.stat(path).st_size
    if size <= limit:
        return
    with open(path, "rb") as handle:
        handle.seek(size - limit)
        tail = handle.read(limit)
    note = f"[queuectl: {size - limit} earlier bytes dropped; the last {limit} are kept]\n"
    with open(path, "wb") as handle:
        handle.write(note.encode())
        handle.write(tail)
