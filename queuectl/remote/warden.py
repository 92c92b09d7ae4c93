"""The warden: one small single-threaded watchdog process per Dask worker. Standard library
only, started by file name (``python .../warden.py``): it never imports dask or queuectl.

The worker thread starts each command itself (``/bin/sh -c`` in a session of its own, like a
plain ``subprocess.run`` task) and enforces the timeout, cancels and the lease while it is
alive. The warden is the independent second line, for when the worker cannot:

* the worker dies (SIGKILL, OOM, nanny restart): the warden sees EOF on the socketpair,
  TERMs every command group of this worker, KILLs what is left after the grace, and exits;
* the worker is frozen (SIGSTOP, swapped out, stuck holding the GIL) or cut off, and a head's
  lease runs out: at the lease's end the warden KILLs that head's command groups;
* the warden dies: the worker sees EOF, kills its running groups and reports them lost;
* both die at once: the next worker started on the host reaps (``reap_dead_wardens``).

It costs nothing per job. Commands carry ``QUEUECTL_WARDEN=<warden id>`` and
``QUEUECTL_HEAD=<head id>`` in their environment, and the warden finds them by scanning
``/proc/*/environ`` only when it has to kill: no message per attempt. A command that was
already running when the worker checked its lease is found by the scan at the lease's end: the
worker checks the lease again *after* the spawn and kills the command itself if it missed.

Protocol (newline-delimited JSON, worker -> warden only): lease {head, deadline}, shutdown.
Deadlines are CLOCK_MONOTONIC, shared by every process of the host.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

WARDEN_DIR_PREFIX = "w-"
ENV_WARDEN = "QUEUECTL_WARDEN"
ENV_HEAD = "QUEUECTL_HEAD"


def scan(match: Callable[[dict[bytes, bytes]], bool]) -> dict[int, set[int]]:
    """Process groups (session leaders' ids) of our uid whose members' environment satisfies
    ``match(env: dict[bytes, bytes])``: {pgid: pids}. A member whose environment says nothing
    (it was replaced) still dies with its group when another member matches."""
    me = os.getuid()
    groups: dict[int, set[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.stat(f"/proc/{name}").st_uid != me:
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                raw = handle.read()
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if not match(env):
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        pgid, sid = int(fields[2]), int(fields[3])
        if pgid == sid:  # our commands are session leaders (setsid); never the worker itself
            groups.setdefault(pgid, set()).add(pid)
    return groups


def kill_groups(groups: Iterable[int], signum: int) -> int:
    done = 0
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
            done += 1
        except ProcessLookupError:
            pass
    return done


def reap_dead_wardens(root: str, also: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Kill the command groups of wardens that died (their lock is free) and remove their
    folders; ``also`` names warden ids known dead. Returns what was killed."""
    dead = set(also)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        names = []
    held: list[tuple[int, str]] = []
    for name in names:
        if not name.startswith(WARDEN_DIR_PREFIX):
            continue
        folder = os.path.join(root, name)
        try:
            lock = os.open(os.path.join(folder, "lock"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue  # alive
        dead.add(name[len(WARDEN_DIR_PREFIX) :])
        held.append((lock, folder))
    found: list[dict[str, Any]] = []
    if dead:
        wanted = {d.encode() for d in dead}
        groups = scan(lambda env: env.get(ENV_WARDEN.encode()) in wanted)
        kill_groups(groups, signal.SIGKILL)
        found = [{"pgid": pgid, "pids": sorted(pids)} for pgid, pids in groups.items()]
    for lock, folder in held:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)
    return found


class Warden:
    def __init__(self, sock: socket.socket, root: str, ident: str) -> None:
        self.sock = sock
        self.sock.set_inheritable(False)
        self.sock.setblocking(False)
        self.ident = ident.encode()
        self.buf = b""
        os.makedirs(root, exist_ok=True)
        self.dir = os.path.join(root, WARDEN_DIR_PREFIX + ident)
        os.makedirs(self.dir, exist_ok=True)
        self.lock = os.open(os.path.join(self.dir, "lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.heads: dict[str, float] = {}
        self.rescan: dict[str, float] = {}  # head -> when to look once more
        self.orphaned_at: float | None = None
        self.grace = 2.0
        self.stats = {"scans": 0, "killed": 0}

    def mine(self, env: dict[bytes, bytes]) -> bool:
        return env.get(ENV_WARDEN.encode()) == self.ident

    def expire(self, head: str) -> None:
        """A head's lease is over: its commands on this worker die now."""
        key = head.encode()
        groups = scan(lambda env: self.mine(env) and env.get(ENV_HEAD.encode()) == key)
        self.stats["scans"] += 1
        self.stats["killed"] += kill_groups(groups, signal.SIGKILL)

    def orphan(self) -> None:
        """The worker is gone: TERM all our groups now, KILL what is left after the grace."""
        if self.orphaned_at is None:
            self.orphaned_at = time.monotonic()
            kill_groups(scan(self.mine), signal.SIGTERM)

    def handle(self, msg: dict[str, Any]) -> None:
        if msg["op"] == "lease":
            head, deadline = msg["head"], float(msg["deadline"])
            if deadline > self.heads.get(head, 0.0):
                self.heads[head] = deadline
                self.rescan.pop(head, None)
        elif msg["op"] == "shutdown" and self.orphaned_at is None:
            # The worker is closing and has TERMed its commands itself: no second TERM (some
            # programs take a second one as "quit now"), only the KILL after the grace.
            self.orphaned_at = time.monotonic()

    def read(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.orphan()
            return
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line:
                self.handle(json.loads(line))

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while True:
            now = time.monotonic()
            wait: float | None
            if self.orphaned_at is not None:
                if now >= self.orphaned_at + self.grace:
                    kill_groups(scan(self.mine), signal.SIGKILL)
                    break
                wait = self.orphaned_at + self.grace - now
            else:
                for head, deadline in list(self.heads.items()):
                    if now >= deadline:
                        self.expire(head)
                        del self.heads[head]
                        self.rescan[head] = now + 1.0  # once more, in case of a late spawn
                for head, when in list(self.rescan.items()):
                    if now >= when:
                        self.expire(head)
                        del self.rescan[head]
                times = list(self.heads.values()) + list(self.rescan.values())
                wait = max(0.0, min(times) - now) if times else None
            try:
                events = poller.poll(-1 if wait is None else int(wait * 1000) + 1)
            except InterruptedError:
                continue
            if events and self.orphaned_at is None:
                self.read()
                if self.orphaned_at is not None:
                    poller.unregister(self.sock)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self.lock)


def main(argv: list[str]) -> None:
    fd, root, ident = int(argv[0]), argv[1], argv[2]
    # No SIG_IGN here: we start nothing, but stay default so a TERM to us is visible. We run in
    # a session of our own, so a terminal's Ctrl-C or a TERM to the worker's group misses us.
    Warden(socket.socket(fileno=fd), root, ident).run()


if __name__ == "__main__":
    main(sys.argv[1:])
