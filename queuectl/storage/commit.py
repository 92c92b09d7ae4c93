"""The commit protocol: the only code that writes, moves or removes job files.

A change to an existing job (``commit``):

1. write the new job JSON to ``tmp/`` (or over a recycled old job file) and fsync it
   (``syncfs`` for large batches);
2. rename it into the destination folder, then fsync that folder: the new state is durable;
3. append one journal record per change and fsync the journal;
4. only now unlink the old copy, so a job file is never removed before its replacement is
   durable and a settled file is never ahead of the journal;
5. return, and only then tell the user.

A new job (``publish_new``) is journaled *before* it becomes visible: tmp file, fsync,
journal record, fsync, then the rename into its folder. So after a SIGKILL at any point,
every job a worker can see is in the journal; the caller prints ids after each group, so the
printed ids cover every visible job but at most the last group.

A deletion (``delete``, for cleanup and purge) is journaled first, then the logs and the file
go: killed midway, the file is still there but the journal already says ``deleted``, and
fsck finishes the deletion instead of bringing the job back.

Callers hold each job's change lock (``Store.changing``) around a commit, so two processes
never change one job at once.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from queuectl.errors import AlreadyExists, StorageError
from queuectl.job import Job, file_text, format_time, utcnow
from queuectl.storage.durable import (
    fsync_dir,
    rename_noreplace,
    reuse_tmp,
    sync_all,
    unlink_all,
    write_tmp,
)
from queuectl.storage.events import Event, job_entry
from queuectl.storage.home import Home
from queuectl.storage.journal import Journal
from queuectl.storage.locks import ProcessMark

__all__ = ["Change", "Committer"]


@dataclass
class Change:
    """One job written to the folder of ``job.state``; ``remove`` is the copy it replaces."""

    job: Job
    event: Event | str
    remove: Path | None = None
    recycle: bool = False
    """Keep the removed file as a blank for a later write (a worker's own processing/ copy,
    which nothing else can hold open)."""
    attempt: bool = False
    """The change ends an attempt (stats, metrics and history count it)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Event-specific keys of the journal record (e.g. ``file`` of an adopted drop)."""


class _Blanks:
    """Old job files kept in tmp/ (as ``.blank.<mark>.<n>.tmp``) to be overwritten later:
    creating a file means allocating an inode, which on a busy ext4 block group costs up to
    a millisecond here, more than everything else a commit does."""

    LIMIT: Final = 1024

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._guard = threading.Lock()
        self._count = itertools.count()

    def take(self) -> Path | None:
        with self._guard:
            return self._paths.pop() if self._paths else None

    def keep(self, old: Path, tmp_dir: Path, owner: str) -> bool:
        with self._guard:
            if len(self._paths) >= self.LIMIT:
                return False
        blank = tmp_dir / f".blank.{owner}.{next(self._count)}.tmp"
        try:
            os.rename(old, blank)
        except OSError:
            return False
        with self._guard:
            self._paths.append(blank)
        return True

    def discard(self) -> None:
        with self._guard:
            paths, self._paths = self._paths, []
        unlink_all(paths)


class Committer:
    def __init__(self, home: Home, journal: Journal, mark: ProcessMark) -> None:
        self.home = home
        self.journal = journal
        self.mark = mark
        self._blanks = _Blanks()

    # ---------------------------------------------------------------- changes

    def commit(self, changes: list[Change]) -> None:
        """Apply changes durably (see the module docstring): publish, journal, then unlink.

        The old copies go only after the journal has the change, so a crash at any point
        leaves something recovery can finish (``Recovery.recover_orphan``)."""
        if not changes:
            return
        encoded = [c.job.encoded_fields() for c in changes]
        published = self._publish(changes, [file_text(fields) for fields in encoded])
        stamp = format_time(utcnow())
        self.journal.append_entries(
            [
                job_entry(c.event, c.job, stamp, fields=f, attempt=c.attempt, extra=c.extra)
                for c, f in zip(changes, encoded, strict=True)
            ]
        )
        self._unlink_old(changes, published)

    def write_files(self, changes: list[Change]) -> None:
        """Commit without the journal: for rebuild and repairs, whose state it already has."""
        published = self._publish(changes, [c.job.to_json() for c in changes])
        self._unlink_old(changes, published)

    def _publish(self, changes: list[Change], texts: list[bytes]) -> list[Path]:
        """Steps 1-2: durable tmp files, renamed into their folders, folders fsynced."""
        tmps, fds = self._write_tmps([c.job for c in changes], texts, reuse=True)
        published: list[Path] = []
        try:
            sync_all(fds, tmps)
            for change, tmp in zip(changes, tmps, strict=True):
                dst = self.home.job_path(change.job.state, change.job.id)
                os.replace(tmp, dst)
                published.append(dst)
            for directory in {p.parent for p in published}:
                fsync_dir(directory)
        except BaseException as exc:
            # Nothing was unlinked yet, so withdrawing the new copies loses nothing.
            unlink_all(published)
            unlink_all(tmps)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot move job files into place: {exc.strerror}") from exc
            raise
        finally:
            for fd in fds:
                os.close(fd)
        return published

    def _write_tmps(
        self, jobs: list[Job], texts: list[bytes], reuse: bool
    ) -> tuple[list[Path], list[int]]:
        tmps: list[Path] = []
        fds: list[int] = []
        owner = self.mark.name
        try:
            for job, data in zip(jobs, texts, strict=True):
                reused = None
                if reuse:
                    blank = self._blanks.take()
                    if blank is not None:
                        reused = reuse_tmp(blank, data)
                path, fd = reused or write_tmp(self.home.tmp, job.id, data, owner)
                tmps.append(path)
                fds.append(fd)
        except BaseException:
            unlink_all(tmps)
            for fd in fds:
                os.close(fd)
            raise
        return tmps, fds

    def _unlink_old(self, changes: list[Change], published: list[Path]) -> None:
        for change, dst in zip(changes, published, strict=True):
            if change.remove is None or change.remove == dst:
                continue
            if change.recycle and self._blanks.keep(change.remove, self.home.tmp, self.mark.name):
                continue
            try:
                os.unlink(change.remove)
            except FileNotFoundError:
                pass

    def discard_blanks(self) -> None:
        self._blanks.discard()

    # ---------------------------------------------------------------- new jobs

    def publish_new(self, jobs: list[Job], event: Event = Event.ENQUEUED) -> None:
        """Make new jobs durable and journaled first, visible last (module docstring).

        If any of them cannot be published, the whole group is withdrawn again (unlinked,
        and a ``withdrawn`` record keeps replay from bringing it back), so an enqueue that
        reports an error leaves none of its jobs behind."""
        if not jobs:
            return
        encoded = [job.encoded_fields() for job in jobs]
        tmps, fds = self._write_tmps(jobs, [file_text(f) for f in encoded], reuse=False)
        try:
            sync_all(fds, tmps)
        except BaseException:
            unlink_all(tmps)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        stamp = format_time(utcnow())
        try:
            self.journal.append_entries(
                [
                    job_entry(event, job, stamp, fields=f)
                    for job, f in zip(jobs, encoded, strict=True)
                ]
            )
        except BaseException:
            unlink_all(tmps)
            raise
        published: list[Path] = []
        try:
            for job, tmp in zip(jobs, tmps, strict=True):
                dst = self.home.job_path(job.state, job.id)
                if not rename_noreplace(tmp, dst):
                    raise AlreadyExists(f"job {job.id!r} already exists")
                published.append(dst)
            for directory in {p.parent for p in published}:
                fsync_dir(directory)
        except BaseException as exc:
            self._withdraw(jobs, tmps, published)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot move job files into place: {exc.strerror}") from exc
            raise

    def _withdraw(self, jobs: list[Job], tmps: list[Path], published: list[Path]) -> None:
        """Journal ``withdrawn`` first, then remove what was published: killed in between,
        the files are still there but replay already drops them (fsck removes them). If
        even that append fails, the published jobs stay, journaled as enqueued, and the
        error says so."""
        stamp = format_time(utcnow())
        try:
            self.journal.append_entries(
                [job_entry(Event.WITHDRAWN, _next_rev(job, stamp), stamp) for job in jobs]
            )
        except StorageError as exc:
            unlink_all(tmps)
            if published:
                raise StorageError(
                    f"{exc}; {len(published)} job(s) of the failed group may still be queued "
                    "(run: queuectl fsck)"
                ) from exc
            return
        unlink_all(published)
        unlink_all(tmps)
        for directory in {p.parent for p in published}:
            try:
                fsync_dir(directory)
            except StorageError:
                pass  # replay already drops them; fsck removes any that come back

    def adopt(self, job: Job, drop: Path, canonical: Path, file_name: str) -> None:
        """Turn a dropped file into a journaled canonical job file (journal first: the drop
        was never a job, so nothing a worker runs is ever unjournaled)."""
        fields = job.encoded_fields()
        tmps, fds = self._write_tmps([job], [file_text(fields)], reuse=False)
        try:
            sync_all(fds, tmps)
        except BaseException:
            unlink_all(tmps)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        stamp = format_time(utcnow())
        try:
            self.journal.append_entries(
                [job_entry(Event.ENQUEUED, job, stamp, fields=fields, extra={"file": file_name})]
            )
        except BaseException:
            unlink_all(tmps)
            raise
        published: list[Path] = []
        try:
            if canonical == drop:
                os.replace(tmps[0], canonical)
            elif not rename_noreplace(tmps[0], canonical):
                raise AlreadyExists(f"job {job.id!r} already exists")
            published.append(canonical)
            if canonical != drop:
                os.unlink(drop)
            fsync_dir(canonical.parent)
        except BaseException:
            self._withdraw([job], tmps, published)
            raise

    # ---------------------------------------------------------------- deletions

    def delete(self, victims: Iterable[tuple[Job, Path]], now: datetime) -> list[Job]:
        """Remove jobs for good: journal ``deleted``, then their logs, then their files."""
        chosen = list(victims)
        if not chosen:
            return []
        stamp = format_time(now)
        self.journal.append_entries(
            [job_entry(Event.DELETED, _next_rev(job, stamp), stamp) for job, _ in chosen]
        )
        import shutil  # deletions only: shutil pulls in bz2 and lzma (~2 ms a CLI call)

        folders = set()
        for job, path in chosen:
            shutil.rmtree(self.home.logs / job.id, ignore_errors=True)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            folders.add(path.parent)
        for directory in folders:
            fsync_dir(directory)
        return [job for job, _ in chosen]

    def discard_copies(self, paths: Iterable[Path]) -> int:
        """Remove stale copies of jobs whose current copy is durable elsewhere (rebuild);
        returns how many were there."""
        removed = 0
        folders = set()
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed += 1
            folders.add(path.parent)
        for directory in folders:
            fsync_dir(directory)
        return removed

    def finish_deletion(self, path: Path) -> None:
        """Remove a file whose deletion the journal already has (a cleanup killed midway)."""
        import shutil  # deletions only, as above

        shutil.rmtree(self.home.logs / path.stem, ignore_errors=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(path.parent)


def _next_rev(job: Job, stamp: str) -> Job:
    return replace(job, rev=job.rev + 1, updated_at=stamp)
