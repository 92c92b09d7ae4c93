"""Which worker processes are alive, found without pid guessing.

Each ``worker start`` process creates ``workers/<pid>.json`` (pid, threads, start time,
host) and holds an exclusive ``flock`` on it for its whole life. The kernel drops the lock
when the process exits, SIGKILL included, so "the lock is held" means "alive" with no
heartbeat, and a recycled pid can never be mistaken for a worker. ``worker stop`` sends SIGTERM
to each live pid and then waits until it can take each lock, which happens exactly when
that worker has exited.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queuectl.job import format_time, utcnow
from queuectl.storage.durable import FILE_MODE

__all__ = ["Registration", "live_workers", "register", "wait_for_exit"]


@dataclass
class Registration:
    path: Path
    fd: int

    def close(self) -> None:
        """Unlist the worker but keep the lock: the kernel drops it when the process has
        really exited, the moment ``worker stop`` waits for."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def register(directory: Path, threads: int, burst: bool) -> Registration:
    path = directory / f"{os.getpid()}.json"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a stale file of a dead pid is never locked
        # Between our open and our lock, a 'worker stop' or 'status' may have found the file
        # unlocked and removed it as stale: then we hold a lock on a name nobody can find.
        if _still_named(path, fd):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    info = {
        "pid": os.getpid(),
        "threads": threads,
        "started_at": format_time(utcnow()),
        "host": socket.gethostname(),
        "burst": burst,
    }
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return Registration(path, fd)


def _still_named(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def live_workers(directory: Path, clean_stale: bool = False) -> list[dict[str, Any]]:
    """Workers whose registration file is locked, i.e. whose process is alive."""
    found = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = directory / name
        if not _is_locked(path):
            if clean_stale:
                _remove_stale(path)
            continue
        try:
            info = json.loads(path.read_bytes())
        except (OSError, ValueError):
            info = {}
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            stem = name[:-5]
            info = {"pid": int(stem)} if stem.isdigit() else {}
        if info:
            found.append(info)
    return found


def _remove_stale(path: Path) -> None:
    """Delete a dead worker's file, holding its lock so a new owner is never disturbed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _still_named(path, fd):
            os.unlink(path)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def signal_worker(pid: int, signum: int = signal.SIGTERM) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def wait_for_exit(directory: Path, pid: int, timeout: float | None) -> bool:
    """Block until worker ``pid`` releases its lock (it has exited); False on timeout.

    A blocking ``flock`` in a helper thread is the event we wait on: no polling.
    """
    try:
        fd = os.open(directory / f"{pid}.json", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    released = threading.Event()

    def block() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            released.set()

    threading.Thread(target=block, name=f"wait-{pid}", daemon=True).start()
    if released.wait(timeout):
        os.close(fd)
        return True
    return False
