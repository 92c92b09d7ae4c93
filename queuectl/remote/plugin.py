"""The Dask side of a remote attempt: per-worker state, its handlers, and the task function.

``QueuectlPlugin`` (a Dask ``WorkerPlugin``) attaches one ``WorkerState`` to each Dask worker
process; ``run_attempt`` (the task) runs one attempt through it. Both are pickled *by
reference* to this module, so queuectl must be installed on every worker (``--preload
queuectl.remote.preload`` installs the plugin before the worker registers).

The head reaches the state through handlers called with ``scheduler.broadcast`` (no function
is pickled per call, and the worker logs no line per call):

- ``queuectl_renew``: the lease round (``lease``): commit the echoed token, hand out a new one,
  learn which attempts the head still wants, and kill the ones it dropped;
- ``queuectl_kill``: cancel attempts (TERM now, KILL after the grace);
- ``queuectl_output``: the bytes of running attempts' output since given offsets (following);
- ``queuectl_probe``: version, warden, GPUs, what runs (the head checks every worker with it).

Tombstones (``tombstones``) arrive on the scheduler's stream, ordered before any compute-task
that would start the same key again: a key with a tombstone never starts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Final

from distributed import get_worker
from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

from queuectl.remote import warden as _warden
from queuectl.remote.lease import HeadLease
from queuectl.remote.task import FOLLOW_CHUNK, Command, execute
from queuectl.remote.wire import AttemptReport, AttemptSpec
from queuectl.worker.spawn import Environment

__all__ = ["PLUGIN_NAME", "VERSION", "QueuectlPlugin", "WorkerState", "run_attempt"]

VERSION: Final = "1"
"""The remote protocol's version: the head refuses workers that run another one."""
PLUGIN_NAME: Final = "queuectl"
TOMBSTONES_KEPT: Final = 100_000
_PER_ATTEMPT: Final = frozenset(
    f"QUEUECTL_{name}"
    for name in (
        "JOB_ID", "ATTEMPT", "RUN", "CWD", "QUEUE", "SLOT", "GPUS", "ATTEMPT_KEY", "WARDEN", "HEAD"
    )
)  # fmt: skip
"""Variables of a job that a Dask worker started from inside one must not pass on."""
GPU_WAIT_SECONDS: Final = 30.0
HEAD_FORGOTTEN_SECONDS: Final = 3600.0

log = logging.getLogger("queuectl.remote")


class WorkerState:
    """Everything queuectl keeps in one Dask worker process (kept across re-registrations
    of the plugin: a new head, or a reconnect, keeps the running attempts)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.nonce = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.cond = threading.Condition()
        self.heads: dict[str, HeadLease] = {}
        self.by_key: dict[str, Command] = {}
        self.gpu_total = int(worker.state.total_resources.get("GPU", 0))
        self.gpu_free = list(range(self.gpu_total))
        local_dir = os.path.abspath(worker.local_directory)
        self.root = os.environ.get("QUEUECTL_WARDEN_ROOT") or os.path.join(
            os.path.dirname(local_dir), "queuectl-wardens"
        )
        inherited = {k: v for k, v in os.environ.items() if k not in _PER_ATTEMPT}
        self.environment = Environment(inherited)  # encoded once, not per spawn
        started = time.monotonic()
        self.reaped = _warden.reap_dead_wardens(self.root)
        self.reap_seconds = time.monotonic() - started
        if self.reaped:
            log.warning("queuectl: killed %d command groups of dead wardens", len(self.reaped))
        self.send_lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.wproc: subprocess.Popen[bytes] | None = None
        self.warden_id = ""
        self.closed = False
        self.tombstones: OrderedDict[str, None] = OrderedDict()
        """Keys the scheduler released while processing: Dask may run them again; we never
        start them (``tombstones``)."""
        self._start_warden()
        worker.stream_handlers["queuectl-tombstone"] = self.h_tombstone
        worker.metrics["queuectl"] = lambda worker: VERSION  # "has the tombstone handler"
        worker.handlers["queuectl_renew"] = self.h_renew
        worker.handlers["queuectl_kill"] = self.h_kill
        worker.handlers["queuectl_output"] = self.h_output
        worker.handlers["queuectl_probe"] = self.h_probe

    # ---------------------------------------------------------------- the warden

    def _start_warden(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.set_inheritable(True)
        ident = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.wproc = subprocess.Popen(
                [sys.executable, _warden.__file__, str(theirs.fileno()), self.root, ident],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock, self.warden_id = ours, ident
        for head, lease in self.heads.items():  # leases already known go to the new warden
            self._send({"op": "lease", "head": head, "deadline": lease.deadline})
        threading.Thread(
            target=self._watch_warden,
            args=(ours, self.wproc, ident),
            name="queuectl-warden-watch",
            daemon=True,
        ).start()

    def _send(self, msg: dict[str, Any]) -> bool:
        data = json.dumps(msg).encode() + b"\n"
        with self.send_lock:
            sock = self.sock
            if sock is None:
                return False
            try:
                sock.sendall(data)
                return True
            except OSError:
                return False

    def _watch_warden(self, sock: socket.socket, proc: subprocess.Popen[bytes], ident: str) -> None:
        """The warden never writes: EOF means it died. Nothing would stop our commands if
        this worker died too: stop them now and report their attempts lost."""
        while True:
            try:
                if not sock.recv(4096):
                    break
            except OSError:
                break
        proc.wait()
        with self.cond:
            if self.sock is sock:
                self.sock = None
            victims = [c for c in self.by_key.values() if c.spawned and not c.reaped]
        if not self.closed:
            log.warning("queuectl: the warden %s died; stopping %d commands", ident, len(victims))
        for command in victims:
            with command.guard:
                command.reason = command.reason or "warden"
            command.signal(9)
        sock.close()
        self.reaped = self.reaped + _warden.reap_dead_wardens(self.root)

    def shutdown(self) -> None:
        """The worker is closing: its attempts are lost anyway; stop their commands now so
        the task threads return (``Worker.close`` waits for them)."""
        self.closed = True
        with self.cond:
            running = list(self.by_key.values())
            self.cond.notify_all()
        for command in running:
            command.terminate("shutdown", 2.0)
        self._send({"op": "shutdown"})

    # ---------------------------------------------------------------- handlers

    def h_renew(
        self,
        head: str,
        token: list[Any] | None,
        lease: float,
        round: int,
        max_seq: int,
        live: list[str],
    ) -> dict[str, Any]:
        """One lease round (runs on the worker's event loop: short)."""
        now = time.monotonic()
        kills: list[Command] = []
        with self.cond:
            state = self.heads.get(head)
            if state is None:
                state = self.heads[head] = HeadLease()
            state.seen = now
            if token and state.commit(str(token[0]), float(token[1]), self.nonce, lease, now):
                self._send({"op": "lease", "head": head, "deadline": state.deadline})
            if round > state.round:
                state.round, state.max_seq, state.live = round, max_seq, set(live)
                kills = [
                    c
                    for c in self.by_key.values()
                    if c.head == head and not c.reaped and state.abandoned(c.key, c.seq)
                ]
            running = [c.key for c in self.by_key.values() if c.head == head and not c.reaped]
            self.cond.notify_all()
            for gone in [h for h, s in self.heads.items() if now - s.seen > HEAD_FORGOTTEN_SECONDS]:
                del self.heads[gone]
        for command in kills:
            command.terminate("dropped", 2.0)
        return {"token": [self.nonce, now], "running": running, "left": state.deadline - now}

    def h_tombstone(self, keys: list[str], **_: Any) -> None:
        kills: list[Command] = []
        with self.cond:
            for key in keys:
                self.tombstones[key] = None
                command = self.by_key.get(key)
                if command is not None and not command.reaped:
                    kills.append(command)
            while len(self.tombstones) > TOMBSTONES_KEPT:
                self.tombstones.popitem(last=False)
            self.cond.notify_all()
        for command in kills:
            command.terminate("dropped", command.grace)

    def h_kill(self, head: str, keys: list[str], grace: float) -> dict[str, bool]:
        found: dict[str, bool] = {}
        kills: list[Command] = []
        with self.cond:
            state = self.heads.setdefault(head, HeadLease())
            for key in keys:
                state.cancelled.add(key)
                command = self.by_key.get(key)
                found[key] = command is not None and not command.reaped
                if command is not None and found[key]:
                    kills.append(command)
            self.cond.notify_all()
        for command in kills:
            command.terminate("cancel", grace)
        return found

    def h_output(self, offsets: dict[str, list[int]]) -> dict[str, list[Any]]:
        """{key: [stdout bytes, their offset, stderr bytes, their offset]}."""
        chunks: dict[str, list[Any]] = {}
        for key, (out_off, err_off) in offsets.items():
            command = self.by_key.get(key)
            if command is None:
                continue
            with command.guard:
                out, out_start = command.streams[0].since(out_off, FOLLOW_CHUNK)
                err, err_start = command.streams[1].since(err_off, FOLLOW_CHUNK)
            chunks[key] = [out, out_start, err, err_start]
        return chunks

    def h_probe(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "host": self.host,
            "pid": os.getpid(),
            "warden": self.wproc.pid if self.wproc else None,
            "gpus": self.gpu_total,
            "gpu_free": list(self.gpu_free),
            "reaped": self.reaped,
            "reap_seconds": self.reap_seconds,
            "running": {c.key: c.pid for c in self.by_key.values() if not c.reaped},
        }

    # ---------------------------------------------------------------- one attempt

    def run(self, spec: AttemptSpec) -> dict[str, Any]:
        """Run one attempt in this task thread: only under a valid lease of its head, never
        for a key with a tombstone or one its head dropped."""
        base: dict[str, Any] = {
            "worker": self.worker.address,
            "host": self.host,
            "pid": None,
            "gpus": [],
        }
        command = Command(spec)
        gpus: list[int] = []
        with self.cond:
            refused = self._admit(spec, base)
            if refused is not None:
                return refused
            if spec.gpus:
                if not self.cond.wait_for(
                    lambda: len(self.gpu_free) >= spec.gpus, timeout=GPU_WAIT_SECONDS
                ):
                    return _lost(base, f"not started: {spec.gpus} GPU id(s) not free here")
                gpus, self.gpu_free = self.gpu_free[: spec.gpus], self.gpu_free[spec.gpus :]
            if self.sock is None:
                self._start_warden()
            warden_id = self.warden_id
            self.by_key[spec.key] = command  # from now on cancels and tombstones find it
        base["gpus"] = gpus
        env = dict(spec.env)
        if gpus or self.gpu_total:
            # A job without GPUs on a GPU worker sees none, so it cannot take another's.
            env["CUDA_VISIBLE_DEVICES"] = env["QUEUECTL_GPUS"] = ",".join(map(str, gpus))
        env["QUEUECTL_ATTEMPT_KEY"] = spec.key
        env[_warden.ENV_WARDEN] = warden_id  # how the warden finds the command if it must
        env[_warden.ENV_HEAD] = spec.head
        try:
            return execute(
                spec,
                command,
                self.environment,
                env,
                lambda: self._deadline(spec.head),
                base,
                self.host,
            )
        finally:
            with self.cond:
                if self.by_key.get(spec.key) is command:
                    del self.by_key[spec.key]
                if gpus:
                    self.gpu_free.extend(gpus)
                    self.gpu_free.sort()
                    self.cond.notify_all()

    def _admit(self, spec: AttemptSpec, base: dict[str, Any]) -> dict[str, Any] | None:
        """Wait (holding ``cond``) for a valid lease; a report when the attempt must not run."""
        give_up = time.monotonic() + spec.lease_wait
        while True:
            if spec.key in self.tombstones:
                return _lost(base, "not started: the scheduler released it (a Dask rerun)")
            state = self.heads.get(spec.head)
            if state is not None and state.abandoned(spec.key, spec.seq):
                return {**base, "kind": "cancelled", "error": "not started: dropped by the head"}
            if self.closed:
                return _lost(base, "not started: the Dask worker is closing")
            if state is not None and state.deadline > time.monotonic():
                return None
            left = give_up - time.monotonic()
            if left <= 0:
                return _lost(base, "not started: no valid lease from the head on this worker")
            self.cond.wait(left)

    def _deadline(self, head: str) -> float:
        state = self.heads.get(head)
        return state.deadline if state is not None else 0.0


def _lost(base: dict[str, Any], error: str) -> dict[str, Any]:
    return {**base, "kind": "worker_lost", "error": error}


def attach(worker: Any) -> WorkerState:
    state = getattr(worker, "_queuectl_state", None)
    if state is None:
        state = worker._queuectl_state = WorkerState(worker)
    return state


class QueuectlPlugin(WorkerPlugin):
    """Attaches queuectl's per-worker state. Idempotent: registering it again (a new head, a
    reconnect) keeps the running attempts; only the worker's closing stops them."""

    idempotent = True
    name = PLUGIN_NAME

    async def setup(self, worker: Any) -> None:
        state = attach(worker)
        if worker.status == Status.running:
            # Set up after registration (register_plugin): tell the scheduler now rather
            # than at the next heartbeat, and take the tombstones issued so far.
            try:
                reply = await worker.scheduler.queuectl_hello(worker=worker.address)
            except Exception:
                reply = None
            if isinstance(reply, dict):
                state.h_tombstone(reply.get("tombstones", []))

    def teardown(self, worker: Any) -> None:
        state = getattr(worker, "_queuectl_state", None)
        if state is not None and worker.status in (
            Status.closing,
            Status.closing_gracefully,
            Status.closed,
            Status.failed,
        ):
            state.shutdown()


_OPTIONAL: Final = ("stdout", "stderr", "stdout_size", "stderr_size", "gpus")


def run_attempt(spec: AttemptSpec) -> AttemptReport:
    """The Dask task: run one attempt on this worker under its head's lease."""
    worker = get_worker()
    state = getattr(worker, "_queuectl_state", None)
    if state is None:
        raise RuntimeError(f"the queuectl plugin is not set up on worker {worker.address}")
    report = state.run(spec)
    for name in _OPTIONAL:
        if not report.get(name, True):
            del report[name]  # a smaller result: the common case is a quiet command
    return AttemptReport(report)
