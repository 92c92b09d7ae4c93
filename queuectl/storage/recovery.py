"""Recovery: settling a processing/ job whose worker and command are both gone.

A file in processing/ belongs to whoever holds the job's run lock: its worker, or after the
worker died, the command (and anything it started that kept fd 3). Once the lock can be
taken, nobody is running the job, and recovery finishes what the dead worker left:

- its commit had published the new copy already: make sure the journal has it, drop the
  processing/ copy;
- its commit had written a durable tmp file: publish and journal it;
- otherwise the run is lost: ``lost(job)`` decides the next state (pending, or dead after
  the last retry) and that is committed as ``recovered``, an attempt that counts.

A file in processing/ is untrusted input like any other: one that fails the trust checks or
is not a valid job is moved to rejected/, never run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from queuectl.errors import InvalidJob
from queuectl.job import ID_PATTERN, Job, JobState, format_time, utcnow
from queuectl.storage.commit import Change, Committer
from queuectl.storage.drops import Rejector
from queuectl.storage.durable import fsync_dir
from queuectl.storage.events import Event, job_entry
from queuectl.storage.folders import Folders
from queuectl.storage.home import Home
from queuectl.storage.jobfile import Untrusted, read_job
from queuectl.storage.journal import Journal
from queuectl.storage.journal_index import GENERATION, REV
from queuectl.storage.locks import Holder, LockFile, change_offset, job_offset

__all__ = ["Recovery"]


class Recovery:
    def __init__(
        self,
        home: Home,
        folders: Folders,
        commits: Committer,
        journal: Journal,
        locks: LockFile,
        rejector: Rejector,
        change: Callable[[], Holder],
    ) -> None:
        self.home = home
        self.folders = folders
        self.commits = commits
        self.journal = journal
        self.locks = locks
        self.rejector = rejector
        self._change = change

    def is_running(self, job_id: str) -> bool:
        """Whether some process (a worker, a command, a leftover of one) holds the job."""
        return self.locks.is_held(job_offset(job_id))

    def orphan(self, name: str) -> bool:
        """Whether ``processing/<name>`` is a job nobody runs (no lock is taken for long)."""
        job_id = name[:-5] if name.endswith(".json") else ""
        return bool(ID_PATTERN.fullmatch(job_id)) and not self.is_running(job_id)

    def recover_orphan(self, name: str, lost: Callable[[Job], Job]) -> str | None:
        """Settle ``processing/<name>`` if nobody runs it; describe what was done."""
        src = self.home.state_dir(JobState.PROCESSING) / name
        job_id = name[:-5] if name.endswith(".json") else ""
        if not ID_PATTERN.fullmatch(job_id):
            message = self.rejector.reject(src, "is not named <id>.json")
            return f"rejected {message}" if message else None
        run = self.locks.holder()
        try:
            if not run.take(job_offset(job_id)):
                return None
            change = self._change()
            change.wait(change_offset(job_id))
            try:
                return self._settle(src, job_id, lost)
            finally:
                change.drop(change_offset(job_id))
        finally:
            run.close()

    def _settle(self, src: Path, job_id: str, lost: Callable[[Job], Job]) -> str | None:
        try:
            job = read_job(src, JobState.PROCESSING)
        except FileNotFoundError:
            return None
        except (Untrusted, InvalidJob) as exc:
            message = self.rejector.reject(src, str(exc))
            return f"rejected {message}" if message else None
        except OSError:
            return None
        newer = self._newer_copy(job)
        if newer is not None:
            self._journal_if_missing(newer, attempt=newer.runs > job.runs)
            os.unlink(src)
            return f"finished the interrupted commit of {job_id} ({newer.state.value})"
        pending_tmp = self._newer_tmp(job)
        if pending_tmp is not None:
            tmp, finished = pending_tmp
            os.replace(tmp, self.home.job_path(finished.state, finished.id))
            fsync_dir(self.home.state_dir(finished.state))
            self._journal_if_missing(finished, attempt=finished.runs > job.runs)
            os.unlink(src)
            return f"finished the interrupted commit of {job_id} ({finished.state.value})"
        updated = lost(job)
        self.commits.commit([Change(updated, Event.RECOVERED, remove=src, attempt=True)])
        return f"recovered {job_id}: its worker died; now {updated.state.value}"

    def _journal_if_missing(self, job: Job, attempt: bool) -> None:
        """The dead worker may have died before or after journaling its commit."""
        for fields, _source in self.journal.rows_of(job.id):
            if fields[GENERATION] == str(job.generation) and fields[REV] == str(job.rev):
                return
        stamp = format_time(utcnow())
        self.journal.append_entries([job_entry(job.state.value, job, stamp, attempt=attempt)])

    def _newer_copy(self, job: Job) -> Job | None:
        for state, path in self.folders.copies(job.id, besides=JobState.PROCESSING):
            try:
                other = read_job(path, None)
            except (OSError, InvalidJob):
                continue
            if other.state is state and (other.generation, other.rev) > (job.generation, job.rev):
                return other
        return None

    def _newer_tmp(self, job: Job) -> tuple[Path, Job] | None:
        best: tuple[Path, Job] | None = None
        for entry in os.scandir(self.home.tmp):
            parts = entry.name.rsplit(".", 3)
            if len(parts) != 4 or parts[0] != job.id or parts[3] != "tmp":
                continue
            candidate = _read_tmp(Path(entry.path), job.id)
            if candidate is None:
                continue  # the name says one job, the text another: not ours to publish
            newer = (candidate.generation, candidate.rev) > (job.generation, job.rev)
            if newer and (best is None or candidate.rev > best[1].rev):
                best = (Path(entry.path), candidate)
        return best


def _read_tmp(path: Path, job_id: str) -> Job | None:
    from queuectl.storage.jobfile import read_open

    try:
        raw, _ = read_open(path)
        job = Job.from_json(raw)
    except (OSError, InvalidJob):
        return None
    return job if job.id == job_id else None
