"""Reading the state folders: where a job is, what it says, how many there are.

Read-only: nothing here moves or writes a file, so ``list``, ``show``, ``status`` and the
dashboard can never disturb a worker. A file that is not a valid job is skipped and reported
(``Skipped``); moving it aside is the business of workers and ``fsck --repair``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from queuectl.errors import InvalidJob, NotFound, QueueError
from queuectl.job import ID_PATTERN, Job, JobState
from queuectl.storage.home import Home
from queuectl.storage.jobfile import is_job_name, read_job

__all__ = ["LOOKUP_ORDER", "Folders", "Skipped"]

LOOKUP_ORDER: Final = (
    JobState.DEAD,
    JobState.CANCELLED,
    JobState.HELD,
    JobState.BLOCKED,
    JobState.PENDING,
    JobState.FAILED,
    JobState.PROCESSING,
    JobState.COMPLETED,
)
"""The usual flow of a job, so a job moving while we look is still seen in one of the places
we check next."""


@dataclass(frozen=True)
class Skipped:
    """A file in a state folder that a reader passed over, and why."""

    path: Path
    reason: str


class Folders:
    def __init__(self, home: Home) -> None:
        self.home = home

    def locate(self, job_id: str) -> tuple[JobState, Path] | None:
        """The folder holding a job's file (any file by that name, valid or not)."""
        if not ID_PATTERN.fullmatch(job_id):
            return None
        for state in LOOKUP_ORDER:
            path = self.home.job_path(state, job_id)
            if os.path.lexists(path):
                return state, path
        return None

    def copies(self, job_id: str, besides: JobState | None = None) -> list[tuple[JobState, Path]]:
        """Every folder holding a file of this id (normally one), ``besides`` left out."""
        found = []
        for state in JobState:
            if state is besides:
                continue
            path = self.home.job_path(state, job_id)
            if os.path.lexists(path):
                found.append((state, path))
        return found

    def load(self, job_id: str) -> Job:
        for _ in range(3):  # the job may move between folders while we read it
            found = self.locate(job_id)
            if found is None:
                break
            state, path = found
            try:
                return read_job(path, state)  # the folder is authoritative
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise QueueError(f"cannot read job file {path}: {exc.strerror}") from None
            except InvalidJob as exc:
                raise QueueError(f"job file {path} is not a valid job: {exc}") from None
        raise NotFound(f"no job with id {job_id!r}")

    def entries(self, state: JobState) -> list[tuple[int, str]]:
        """(mtime in ns, file name) for each job file in a folder, oldest first."""
        found = []
        with os.scandir(self.home.state_dir(state)) as it:
            for entry in it:
                if is_job_name(entry.name):
                    try:
                        found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
                    except FileNotFoundError:
                        continue
        found.sort()
        return found

    def names(self, state: JobState) -> list[str]:
        """File names in a state folder, oldest first (by the time they entered it)."""
        return [name for _, name in self.entries(state)]

    def ids(self, state: JobState) -> list[str]:
        """Ids of the canonical job files in a folder, oldest first."""
        return [n[:-5] for n in self.names(state) if n.endswith(".json")]

    def count(self, state: JobState | str) -> int:
        with os.scandir(self.home.state_dir(state)) as it:
            return sum(1 for entry in it if is_job_name(entry.name))

    def jobs(
        self, state: JobState, limit: int | None = None, skipped: list[Skipped] | None = None
    ) -> Iterator[Job]:
        """Valid jobs of a folder, oldest first; invalid files go to ``skipped``."""
        directory = self.home.state_dir(state)
        produced = 0
        for name in self.names(state):
            if limit is not None and produced >= limit:
                return
            path = directory / name
            try:
                job = read_job(path, state)
            except FileNotFoundError:
                continue  # moved meanwhile
            except (InvalidJob, OSError) as exc:
                if skipped is not None and not (state is JobState.PENDING and _drop(path)):
                    skipped.append(Skipped(path, _reason(exc)))
                continue
            produced += 1
            yield job

    def queue_counts(self, states: tuple[JobState, ...]) -> dict[str, dict[str, int]]:
        """queue -> state -> jobs, for the given folders. Each file is read for its queue
        (a line match on the layout queuectl writes; other files are parsed); with only the
        default queue in use nothing is read at all (the caller can skip this then)."""
        out: dict[str, dict[str, int]] = {}
        for state in states:
            directory = self.home.state_dir(state)
            with os.scandir(directory) as it:
                names = [e.name for e in it if is_job_name(e.name)]
            for name in names:
                queue = queue_of(directory / name)
                counts = out.setdefault(queue, {})
                counts[state.value] = counts.get(state.value, 0) + 1
        return out

    def rejected(self) -> list[tuple[str, str]]:
        """(file name, reason) for every rejected file, oldest first."""
        out = []
        for entry in sorted(os.scandir(self.home.rejected), key=lambda e: e.name):
            if entry.name.endswith(".reason"):
                continue
            reason_file = self.home.rejected / (entry.name + ".reason")
            try:
                reason = reason_file.read_text(errors="replace").strip()[:500]
            except OSError:
                reason = "(no reason recorded)"
            out.append((entry.name, reason))
        return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or exc}"
    return str(exc)


def _drop(path: Path) -> bool:
    """A file in pending/ that a worker will adopt as a new job (or that is still being
    written): not a problem to report."""
    from queuectl.storage.drops import awaiting_adoption

    return awaiting_adoption(path)


_QUEUE_LINE: Final = re.compile(rb'\n  "queue": "([A-Za-z0-9][A-Za-z0-9._-]{0,127})",\n')


def queue_of(path: Path) -> str:
    """The queue a job file names (``default`` when it cannot be told)."""
    from queuectl.job import DEFAULT_QUEUE
    from queuectl.storage.jobfile import read_job_file

    try:
        raw = read_job_file(path)
    except OSError:
        return DEFAULT_QUEUE
    found = _QUEUE_LINE.search(raw)
    if found is not None:
        return found.group(1).decode()
    try:
        queue = json.loads(raw).get("queue", DEFAULT_QUEUE)
    except (ValueError, AttributeError, RecursionError):
        return DEFAULT_QUEUE
    return queue if isinstance(queue, str) and ID_PATTERN.fullmatch(queue) else DEFAULT_QUEUE
