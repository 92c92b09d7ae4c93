"""One command on a Dask worker: spawn, read its output, wait, enforce timeout and lease.

The command runs as ``/bin/sh -c`` in a session of its own (``worker.spawn``), its stdout and
stderr on pipes read by the task thread: the last ``output_cap`` bytes of each stream are
kept in memory for the report and for the head's follow pulls. Pipes, not files: creating
and removing two files per attempt cost more than anything else the executor adds (ext4's
journal is shared with every fsync on the host), and nothing is left on the remote disk
after a crash. The wait is a ``poll`` on a pidfd and the pipes, with the timeout and the
lease's end as deadlines: no polling loop. No Dask import here.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from queuectl.remote.wire import AttemptSpec
from queuectl.worker.spawn import Environment, spawn_shell

__all__ = ["FOLLOW_CHUNK", "Command", "Stream", "execute"]

FOLLOW_CHUNK: Final = 1 << 20
"""At most this much of one stream per follow pull."""

READ_SIZE: Final = 1 << 16


class Stream:
    """One output stream: its last ``cap`` bytes (up to twice that between trims) and the
    total written."""

    __slots__ = ("buf", "cap", "total")

    def __init__(self, cap: int) -> None:
        self.buf = bytearray()
        self.total = 0
        self.cap = cap

    def add(self, data: bytes) -> None:
        self.buf += data
        self.total += len(data)
        if len(self.buf) > 2 * self.cap:
            del self.buf[: len(self.buf) - self.cap]

    def tail(self) -> bytes:
        return bytes(self.buf[-self.cap :]) if self.cap else b""

    def since(self, offset: int, limit: int) -> tuple[bytes, int]:
        """Bytes from ``offset`` on (or from the oldest still kept), and where they start."""
        first = self.total - len(self.buf)
        start = max(offset, first)
        return bytes(self.buf[start - first : start - first + limit]), start


class Command:
    """One attempt's command on this worker: its process group and how it is being stopped.
    ``terminate`` may be called from any thread (cancel, tombstone, lease, shutdown)."""

    __slots__ = (
        "grace",
        "guard",
        "head",
        "key",
        "kill_at",
        "pid",
        "reaped",
        "reason",
        "seq",
        "spawned",
        "started",
        "streams",
        "term_sent",
    )

    def __init__(self, spec: AttemptSpec) -> None:
        self.key, self.head, self.seq, self.grace = spec.key, spec.head, spec.seq, spec.grace
        self.spawned = False
        self.pid = 0
        self.started: float | None = None
        self.reason: str | None = None
        self.term_sent = False
        self.kill_at: float | None = None
        self.reaped = False
        self.guard = threading.Lock()
        self.streams = (Stream(spec.output_cap), Stream(spec.output_cap))

    def signal(self, signum: int) -> None:
        """Only before the leader is reaped: until then its id cannot name another group."""
        with self.guard:
            if self.pid and not self.reaped:
                try:
                    os.killpg(self.pid, signum)
                except ProcessLookupError:
                    pass

    def terminate(self, reason: str, grace: float) -> None:
        """SIGTERM the group now, SIGKILL it ``grace`` seconds later (the first reason stays)."""
        with self.guard:
            if self.reason is None:
                self.reason = reason
            first = not self.term_sent
            self.term_sent = True
            kill_at = time.monotonic() + grace
            self.kill_at = kill_at if self.kill_at is None else min(self.kill_at, kill_at)
        if first:
            self.signal(signal.SIGTERM)
        timer = threading.Timer(grace, self.signal, (signal.SIGKILL,))
        timer.daemon = True
        timer.start()


_KINDS: Final = {
    "timeout": "timed_out",
    "cancel": "cancelled",
    "dropped": "cancelled",
    "lease": "worker_lost",
    "shutdown": "worker_lost",
    "warden": "worker_lost",
}


def execute(
    spec: AttemptSpec,
    command: Command,
    env: Environment,
    extra_env: dict[str, str],
    deadline: Callable[[], float],
    base: dict[str, Any],
    host: str,
) -> dict[str, Any]:
    """Run the command and report how it ended (``wire.AttemptReport`` data). ``deadline``
    gives the head's lease end now (it moves with renewals)."""
    cwd = spec.cwd or None
    if cwd is not None and not os.path.isdir(cwd):
        return {
            **base,
            "kind": "spawn_failed",
            "error": f"cwd {cwd!r} does not exist on host {host} (a remote attempt runs "
            "in the job's cwd on the Dask worker's host, never elsewhere)",
        }
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn_shell(spec.command, env.block(extra_env), out_w, err_w, None, cwd)
    except (OSError, ValueError) as exc:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {**base, "kind": "spawn_failed", "error": f"cannot start /bin/sh: {reason}"}
    os.close(out_w)
    os.close(err_w)
    command.started = time.time()
    with command.guard:
        command.spawned, command.pid = True, pid
    base["pid"] = pid
    if command.reason is not None:  # cancelled (or the lease ran out) while we were starting
        command.signal(signal.SIGTERM)
    code = _wait(spec, command, out_r, err_r, deadline)
    out, err = command.streams
    report = {
        **base,
        "stdout": out.tail(),
        "stdout_size": out.total,
        "stderr": err.tail(),
        "stderr_size": err.total,
        "started": command.started,
        "finished": time.time(),
        "exit_code": code,
    }
    kind = _KINDS.get(command.reason or "")
    if kind == "timed_out":
        report.update(kind=kind, exit_code=None, error=f"timeout: killed after {spec.timeout:g}s")
    elif kind == "cancelled":
        report.update(kind=kind, error=f"cancelled (exit {code})")
    elif kind == "worker_lost":
        report.update(kind=kind, error=f"killed on the worker: {command.reason} (exit {code})")
    elif code == 0:
        report.update(kind="succeeded")
    elif code < 0:
        report.update(kind="killed", error=f"killed by {_signal_name(-code)}")
    else:
        report.update(kind="failed", error=f"exit code {code}")
    return report


def _wait(
    spec: AttemptSpec, command: Command, out_r: int, err_r: int, deadline: Callable[[], float]
) -> int:
    """Read both pipes and wait for the shell's exit, enforcing the timeout and the head's
    lease (SIGTERM ``lease_grace`` before its end, SIGKILL at its end). Then leftovers of
    the group are killed (nothing of an attempt may outlive its bookkeeping or its GPU ids),
    what is still in the pipes is read, and the shell is reaped."""
    pid = command.pid
    pidfd = os.pidfd_open(pid)
    streams = {out_r: command.streams[0], err_r: command.streams[1]}
    poller = select.poll()
    for fd in (pidfd, out_r, err_r):
        poller.register(fd, select.POLLIN)
    timeout_at = time.monotonic() + spec.timeout if spec.timeout > 0 else None
    exited = False
    try:
        while not exited:
            wait = _enforce(spec, command, timeout_at, deadline())
            for fd, events in poller.poll(int(min(wait, 3600.0) * 1000 + 0.999)):
                if fd == pidfd:
                    exited = True
                elif fd in streams:
                    if events & select.POLLIN:
                        if not _read_into(fd, streams, command):
                            poller.unregister(fd)
                    else:  # POLLHUP alone: the writers are gone and nothing is left
                        del streams[fd]
                        poller.unregister(fd)
        command.signal(signal.SIGKILL)  # the shell is a zombie until reaped: still our group
        for fd in list(streams):
            os.set_blocking(fd, False)
            while _read_into(fd, streams, command):
                pass
    finally:
        os.close(pidfd)
        os.close(out_r)
        os.close(err_r)
    _, status = os.waitpid(pid, 0)
    with command.guard:
        command.reaped = True
    return os.waitstatus_to_exitcode(status)


def _enforce(
    spec: AttemptSpec, command: Command, timeout_at: float | None, lease_end: float
) -> float:
    """Signal what is due now; return how long to wait for the next deadline."""
    now = time.monotonic()
    if not command.term_sent:
        if timeout_at is not None and now >= timeout_at:
            command.terminate("timeout", spec.grace)
        elif now >= lease_end - spec.lease_grace:
            command.terminate("lease", spec.lease_grace)
    if command.term_sent:
        with command.guard:
            command.kill_at = min(command.kill_at or lease_end, lease_end)
            kill_at = command.kill_at
        if now >= kill_at:
            command.signal(signal.SIGKILL)
            return 1.0
        return kill_at - now
    due = lease_end - spec.lease_grace
    if timeout_at is not None:
        due = min(due, timeout_at)
    return max(0.0, due - now)


def _read_into(fd: int, streams: dict[int, Stream], command: Command) -> bool:
    """One read; False at EOF (or nothing more without blocking)."""
    try:
        data = os.read(fd, READ_SIZE)
    except BlockingIOError:
        return False
    if not data:
        del streams[fd]
        return False
    with command.guard:
        streams[fd].add(data)
    return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
