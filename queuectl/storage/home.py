"""The queue home: where it is, what lives in it, and creating it safely.

Layout (a public interface, documented in the README)::

    <home>/
      pending/ processing/ completed/ failed/ dead/ cancelled/   one <id>.json per job
      tmp/        in-flight writes, renamed into a state folder when durable
      rejected/   dropped files that are not valid jobs, each with <name>.reason
      journal/    append-only event journal segments, 00000001.log, ...
      logs/<id>/  stdout and stderr of every attempt: <attempt>.out, <attempt>.err
      workers/    one <worker-id>.json per live worker process, flock-ed while it lives
      stop/<worker-id>  a request to stop one worker, watched by it (works across containers)
      locks/      lock files (never deleted: filelock #27); claims.lock holds the job locks
      cancel/<id>  a request to cancel a running job, watched by its worker
      config.json persisted settings
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from queuectl.errors import UsageError
from queuectl.job import JobState

__all__ = ["STATE_DIRS", "Home", "resolve_home"]

STATE_DIRS: Final = tuple(state.value for state in JobState)
AUX_DIRS: Final = ("tmp", "rejected", "journal", "logs", "workers", "locks", "cancel", "stop")
DIR_MODE: Final = 0o700


def resolve_home(option: str | None) -> Path:
    """``--home`` beats ``$QUEUECTL_HOME`` beats ``~/.queuectl``; an empty one is an error
    (it would otherwise quietly mean the default home)."""
    if option is not None and not option.strip():
        raise UsageError("--home (or QUEUECTL_HOME) is empty: give the queue home's folder")
    chosen = option or os.environ.get("QUEUECTL_HOME") or "~/.queuectl"
    return Path(chosen).expanduser().absolute()


def check_existing_home(root: Path) -> None:
    """Refuse a home that does not exist, or a folder with other things in it and no
    journal (a typo, or the wrong folder): commands that only read never create one."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        raise UsageError(
            f"cannot open queue home {root}: no such folder (check --home or QUEUECTL_HOME; "
            "'queuectl add' or 'queuectl worker start' creates a home)"
        ) from None
    except NotADirectoryError:
        raise UsageError(f"cannot open queue home {root}: not a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot open queue home {root}: {exc.strerror}") from None
    if names and "journal" not in names and not any(n.startswith(".restore.") for n in names):
        raise UsageError(
            f"cannot open queue home {root}: the folder has other files and no journal/, "
            "so it is not a queue home"
        )


@dataclass(frozen=True)
class Home:
    root: Path

    def state_dir(self, state: JobState | str) -> Path:
        return self.root / (state.value if isinstance(state, JobState) else state)

    def job_path(self, state: JobState | str, job_id: str) -> Path:
        name = state.value if isinstance(state, JobState) else state
        return Path(f"{self.root}/{name}/{job_id}.json")  # hot path: skip pathlib's parsing

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def cancel_requests(self) -> Path:
        return self.root / "cancel"

    @property
    def stop_requests(self) -> Path:
        return self.root / "stop"

    @property
    def claims_lock(self) -> Path:
        return self.root / "locks" / "claims.lock"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    def ensure(self) -> Home:
        """Create the tree on first use (0700) and refuse homes that others can write.

        A folder writable by other users would let them drop commands that run as us, so we
        refuse to run, as ssh does with StrictModes.
        """
        old_umask = os.umask(0o077)
        try:
            self._mkdir(self.root)
            names = os.listdir(self.root)
            if not names:  # an empty folder (a new volume) becomes a home:
                os.chmod(self.root, DIR_MODE)  # as private as one queuectl creates
            elif any(n.startswith(".restore.") for n in names):
                from queuectl.storage.archive import pending_install, recover

                # A restore killed after its commit is finished (waiting for one that runs);
                # the staging folders of restores killed before it are removed.
                recover(self.root, wait=pending_install(names))
            for name in (*STATE_DIRS, *AUX_DIRS):
                self._mkdir(self.root / name)
        finally:
            os.umask(old_umask)
        return self

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(mode=DIR_MODE, parents=path == self.root, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"{path} exists and is not a directory") from None
        except OSError as exc:
            raise UsageError(f"cannot create {path}: {exc.strerror}") from None
        st = path.stat() if path == self.root else path.lstat()
        if not _is_dir(st.st_mode):
            raise UsageError(f"{path} is not a directory (symlinks are not followed)")
        if st.st_uid != os.geteuid():
            raise UsageError(f"refusing to use {path}: it is owned by uid {st.st_uid}, not by you")
        if st.st_mode & 0o022:
            raise UsageError(
                f"refusing to use {path}: it is writable by group or others "
                f"(mode {st.st_mode & 0o777:o}); run: chmod go-w {path}"
            )


def _is_dir(mode: int) -> bool:
    import stat

    return stat.S_ISDIR(mode)
