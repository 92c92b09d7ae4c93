"""Reading one job file, which is untrusted input whatever folder it sits in.

Anyone who can write into the home can put a file anywhere in it, and a worker runs what it
reads; so every reader goes through here: no symlink is followed, a FIFO or socket is refused
instead of blocking the reader, nothing over ``MAX_JOB_FILE_BYTES`` is read, a file that
another user owns, that others may write, or that has other hard links is not trusted
(Postfix treats its world-writable maildrop the same way), and every known field is checked
by ``Job.from_dict``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

from queuectl.errors import InvalidJob
from queuectl.job import Job, JobState
from queuectl.storage.durable import read_regular

__all__ = [
    "MAX_JOB_FILE_BYTES",
    "Untrusted",
    "distrust",
    "is_job_name",
    "read_job",
    "read_job_file",
    "read_open",
]

MAX_JOB_FILE_BYTES: Final = 4 << 20
"""Job files larger than this are refused unread (enqueue keeps jobs far below it)."""


class Untrusted(InvalidJob):
    """A file that must not be read or run (its owner, mode, links or type are wrong)."""


def is_job_name(name: str) -> bool:
    """Hidden files and ``*.tmp`` are writes in progress by other tools (the nq convention)."""
    return not name.startswith(".") and not name.endswith((".tmp", "~"))


def distrust(st: os.stat_result) -> str | None:
    """Why a file must not be run even though it sits in our folder."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {st.st_mode & 0o777:o})"
    if st.st_nlink > 1:
        return "has other hard links (its content could be changed from elsewhere)"
    if st.st_size > MAX_JOB_FILE_BYTES:
        return f"is larger than {MAX_JOB_FILE_BYTES} bytes"
    return None


def read_job_file(path: str | os.PathLike[str]) -> bytes:
    """A job file's bytes, never blocking on a FIFO or following a symlink."""
    return read_regular(path, MAX_JOB_FILE_BYTES)[0]


def read_open(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """Bytes and stat of a job file that passed the trust checks; ``Untrusted`` otherwise,
    OSError when it cannot be read (FileNotFoundError when it is gone)."""
    try:
        raw, st = read_regular(path, MAX_JOB_FILE_BYTES)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Untrusted("is a symbolic link") from None
        if exc.errno == errno.EFBIG:
            raise Untrusted(f"is larger than {MAX_JOB_FILE_BYTES} bytes") from None
        if exc.errno in (errno.EINVAL, errno.ENXIO):
            raise Untrusted("is not a regular file") from None
        raise
    reason = distrust(st)
    if reason is not None:
        raise Untrusted(reason)
    return raw, st


def read_job(path: str | os.PathLike[str], state: JobState | None = None) -> Job:
    """The job in a file, checked as untrusted input; ``state`` (the folder) overrides the
    file's ``state`` field, which in processing/ is the state it was claimed from."""
    raw, _ = read_open(path)
    job = Job.from_json(raw)
    name = Path(path).name
    if name != f"{job.id}.json":
        raise InvalidJob(f"its name does not match its id {job.id!r}")
    if state is not None:
        job.state = state
    return job
