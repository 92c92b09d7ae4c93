"""Which worker processes are alive, what they run, and asking them to stop.

Each ``worker start`` process picks an id unique across hosts and PID namespaces
(``<host>-<pid>-<random>``: in containers every worker may be PID 1), creates
``workers/<id>.json`` (id, host, pid, threads, queues, start time) and holds an exclusive
``flock`` on it for its whole life. The kernel drops the lock when the process exits, SIGKILL
included, so "the lock is held" means "alive" with no heartbeat, from any container that
shares the home's filesystem, and a recycled pid can never be mistaken for a worker.

Next to it, ``workers/<id>.jobs`` lists the jobs it runs now (id, run, start time, thread,
the files their output goes to), rewritten by the worker when that set changes: that is how
``show``, ``logs --follow`` and the dashboard see running jobs without the worker's /proc.

``worker stop`` writes ``stop/<id>`` for each live worker (the way across PID namespaces:
workers watch that folder) and also signals the ones whose pid it can see, then waits until
it can take each lock, which happens exactly when that worker has exited. A request names
one worker, so a worker started afterwards never obeys a stale one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from queuectl.job import format_time, utcnow
from queuectl.storage.durable import FILE_MODE

__all__ = [
    "Registration",
    "live_workers",
    "new_worker_id",
    "register",
    "request_stop",
    "running_jobs",
    "wait_for_exit",
]

JOBS_SUFFIX: Final = ".jobs"
STOP_NOW: Final = "now"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]+")


def new_worker_id() -> str:
    host = _UNSAFE.sub("-", socket.gethostname())[:40].strip("-.") or "host"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


def pid_namespace() -> str:
    """Which PID namespace this process lives in (a worker's pid means nothing outside)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass
class Registration:
    path: Path
    fd: int
    id: str

    def publish_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Replace ``<id>.jobs`` (not fsynced: it describes this process, which a crash
        ends anyway)."""
        target = self.path.with_suffix(JOBS_SUFFIX)
        tmp = target.with_name(f".{target.name}.tmp")
        data = json.dumps({"updated_at": format_time(utcnow()), "jobs": jobs}).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError:
            pass  # a full disk must not stop the worker; readers see an older list

    def close(self) -> None:
        """Unlist the worker but keep the lock: the kernel drops it when the process has
        really exited, the moment ``worker stop`` waits for."""
        for path in (self.path.with_suffix(JOBS_SUFFIX), self.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def register(
    directory: Path,
    threads: int,
    burst: bool,
    worker_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Registration:
    chosen = worker_id or new_worker_id()
    path = directory / f"{chosen}.json"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a stale file of a dead worker is never locked
        # Between our open and our lock, a 'worker stop' or 'status' may have found the file
        # unlocked and removed it as stale: then we hold a lock on a name nobody can find.
        if _still_named(path, fd):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    info = {
        "id": chosen,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pid_namespace": pid_namespace(),
        "threads": threads,
        "started_at": format_time(utcnow()),
        "burst": burst,
        **(extra or {}),
    }
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return Registration(path, fd, chosen)


def _still_named(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def live_workers(directory: Path, clean_stale: bool = False) -> list[dict[str, Any]]:
    """Workers whose registration file is locked, i.e. whose process is alive."""
    found = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = directory / name
        if not _is_locked(path):
            if clean_stale:
                _remove_stale(path)
            continue
        info = _read_json(path)
        stem = name[:-5]
        if not isinstance(info.get("pid"), int):
            info = {"pid": int(stem)} if stem.isdigit() else {}
        if info:
            info.setdefault("id", stem)  # registrations of older versions: <pid>.json
            found.append(info)
    return found


def running_jobs(directory: Path) -> dict[str, dict[str, Any]]:
    """Job id -> what its live worker says about the running attempt (with ``worker``)."""
    out: dict[str, dict[str, Any]] = {}
    for info in live_workers(directory):
        listed = _read_json(directory / f"{info['id']}{JOBS_SUFFIX}")
        jobs = listed.get("jobs")
        if not isinstance(jobs, list):
            continue
        for entry in jobs:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                out[entry["id"]] = {**entry, "worker": _brief(info)}
    return out


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    return {key: info.get(key) for key in ("id", "host", "pid")}


def _read_json(path: Path) -> dict[str, Any]:
    from queuectl.storage.durable import read_regular

    try:
        data = json.loads(read_regular(path, 1 << 20)[0])
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _remove_stale(path: Path) -> None:
    """Delete a dead worker's files, holding its lock so a new owner is never disturbed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _still_named(path, fd):
            for victim in (path.with_suffix(JOBS_SUFFIX), path):
                try:
                    os.unlink(victim)
                except FileNotFoundError:
                    pass
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def request_stop(stop_dir: Path, info: dict[str, Any], now: bool = False) -> str:
    """Ask one worker to stop: SIGTERM when its pid is ours to signal (same host and PID
    namespace), else a ``stop/<id>`` request file it watches (another container, another
    PID namespace; ``now`` asks for an immediate stop). Returns "signal" or "request"."""
    pid = info.get("pid")
    ours = info.get("pid_namespace", pid_namespace()) == pid_namespace()
    if isinstance(pid, int) and ours and info.get("host") in (None, socket.gethostname()):
        try:
            os.kill(pid, signal.SIGTERM)
            return "signal"
        except (ProcessLookupError, PermissionError):
            pass
    worker_id = str(info.get("id", ""))
    if worker_id and not worker_id.startswith(".") and "/" not in worker_id:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(stop_dir / worker_id, flags, FILE_MODE)
        try:
            os.write(fd, (STOP_NOW if now else "finish").encode())
        finally:
            os.close(fd)
    return "request"


def wait_for_exit(directory: Path, worker_id: str, timeout: float | None) -> bool:
    """Block until worker ``worker_id`` releases its lock (it has exited); False on timeout.

    A blocking ``flock`` in a helper thread is the event we wait on: no polling.
    """
    try:
        fd = os.open(directory / f"{worker_id}.json", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    released = threading.Event()

    def block() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            released.set()

    threading.Thread(target=block, name=f"wait-{worker_id}", daemon=True).start()
    if released.wait(timeout):
        os.close(fd)
        return True
    return False
