"""The head's side: one Dask client, the lease thread, the follow thread, and attempts.

``RemoteExecutor`` (one per ``queuectl worker start --executor dask`` process) submits each
attempt as its own Dask key (``queuectl-<job>-<attempt>-<head>``, ``pure=False``,
``retries=0``), renews a lease on every worker (``lease``), gives up attempts whose worker
stopped answering, reconnects after losing the scheduler, and pulls the output of running
attempts for ``logs --follow``. ``RemoteAttempt`` is one attempt in flight: the first terminal
report wins (``_settle``), and a lost attempt's ``wait()`` returns only after its fence, so
the queuectl thread that waits keeps the job's lock until the job may safely run again.

Before any attempt the executor checks the cluster: the scheduler's ``allowed-failures`` must
be 0 (otherwise Dask reruns a command whose worker died), queuectl's scheduler extension is
installed (``tombstones``), and every worker runs queuectl's plugin in this version.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from distributed import Client
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from queuectl.remote.connection import RemoteConfigError, RemoteUnavailable
from queuectl.remote.lease import LeaseTiming, fence_until
from queuectl.remote.plugin import PLUGIN_NAME, VERSION, QueuectlPlugin, run_attempt
from queuectl.remote.tombstones import install_scheduler_extension
from queuectl.remote.wire import AttemptReport, AttemptSpec

__all__ = ["OUTPUT_CAP", "RemoteAttempt", "RemoteExecutor", "RemoteResult"]

OUTPUT_CAP: Final = 10 * 2**20
"""Each stream's last bytes that reach the head at the end of an attempt."""

log = logging.getLogger("queuectl.remote")

Follow = Callable[[str, bytes], None]


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def _scheduler_facts(dask_scheduler: Any) -> dict[str, Any]:
    return {
        "allowed_failures": dask_scheduler.allowed_failures,
        "id": dask_scheduler.id,
        "extension": "queuectl" in dask_scheduler.plugins,
    }


@dataclass
class RemoteResult:
    """How an attempt ended, as the head accepted it (the first terminal report wins).

    kind: succeeded | failed | killed | timed_out | spawn_failed | cancelled | worker_lost
    (the names of queuectl's ``OutcomeKind`` plus ``cancelled``)."""

    kind: str
    exit_code: int | None = None
    error: str | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_size: int = 0
    stderr_size: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    host: str | None = None
    gpus: tuple = ()
    pid: int | None = None
    fence_until: float = 0.0
    """time.monotonic() on the head before which the job must not run again (lost attempts)."""

    def as_tuple(self):
        return (
            self.exit_code,
            self.error,
            self.stdout,
            self.stderr,
            self.started_at,
            self.finished_at,
        )


class RemoteAttempt:
    """One attempt in flight. ``wait()`` and ``cancel()`` may be called from any thread."""

    def __init__(self, executor: RemoteExecutor, spec: AttemptSpec, follow) -> None:
        self._ex = executor
        self.spec = spec
        self.key = spec.key
        self.future: Any = None
        self.submitted = time.monotonic()
        self.submitted_wall = time.time()
        self._wake = threading.Event()
        self._result: RemoteResult | None = None
        self._cancel_grace: float | None = None
        self._follow = follow
        self.out_offset = self.err_offset = 0
        self.client_gen = executor._generation

    # -- settling: the first terminal report wins -----------------------------------------
    def _settle(self, result: RemoteResult, fence: bool = False) -> bool:
        ex = self._ex
        with ex._lock:
            if self._result is not None:
                return False
            ex._live.pop(self.key, None)
            if fence:
                # Only after the key has left the live set: no later round renews it.
                result.fence_until = ex._fence_for_locked(self.key)
            self._result = result
            ex._where.pop(self.key, None)
        self._wake.set()
        future, self.future = self.future, None
        if future is not None:
            try:
                if future.done():
                    future.release()  # a held result could be recomputed (#7870)
                else:
                    # Drop the task (and wake a thread blocked in result()) without blocking
                    # this thread, which may be the lease thread, on the scheduler's answer.
                    client = future.client
                    asyncio.run_coroutine_threadsafe(
                        client._cancel([future], reason="queuectl-settled"),
                        client.loop.asyncio_loop,
                    )
            except Exception:
                pass
        return True

    def _lost(self, error: str, worker: str | None = None) -> None:
        self._settle(
            RemoteResult(
                "worker_lost",
                error=error,
                started_at=_utc(self.submitted_wall),
                finished_at=_utc(time.time()),
                worker=worker,
            ),
            fence=True,
        )

    def _fetch(self, timeout: float | None) -> None:
        """Block up to ``timeout`` on the future (as a plain client.submit user would: no done
        callback, one gather), and settle from what it says."""
        future = self.future
        if future is None or self._result is not None:
            self._wake.wait(1.0 if timeout is None else timeout)
            return
        try:
            # Like a plain client.submit user when there is no timeout (a timeout costs a task
            # and a timer on the client's loop per call). A settle from another thread (lease
            # lapsed, cancel) wakes us: it cancels the future locally at once (_settle).
            raw = future.result() if timeout is None else future.result(timeout=timeout)
        except (TimeoutError, UnboundLocalError):
            # UnboundLocalError: distributed.utils.sync() when its timeout races the gather
            # (2026.8.0): nothing happened to the task; look again.
            return
        except KilledWorker as exc:
            self._lost(f"worker lost: {exc}", self._ex._where.get(self.key))
        except (FutureCancelledError, asyncio.CancelledError):
            if self._cancel_grace is not None:
                self._settle(
                    RemoteResult("cancelled", error="cancelled before it started"), fence=True
                )
            else:
                self._lost(
                    "lost: the connection to the Dask scheduler broke",
                    self._ex._where.get(self.key),
                )
        except Exception as first:
            log.debug("queuectl: fetching %s", self.key, exc_info=True)
            problem: BaseException = first
            if future.status == "finished":
                try:  # once more, without a timeout: it is done
                    raw = future.result()
                except Exception as again:  # the result vanished with its worker
                    problem = again
                else:
                    self._accept(raw)
                    return
                what = "result lost"
            else:
                what = "remote error"
            self._lost(
                f"{what}: {type(problem).__name__}: {problem}", self._ex._where.get(self.key)
            )
        else:
            self._accept(raw)

    def _accept(self, report) -> None:
        raw = report.data if isinstance(report, AttemptReport) else report
        kind = raw["kind"]
        result = RemoteResult(
            kind,
            exit_code=raw.get("exit_code"),
            error=raw.get("error"),
            stdout=raw.get("stdout", b""),
            stderr=raw.get("stderr", b""),
            stdout_size=raw.get("stdout_size", 0),
            stderr_size=raw.get("stderr_size", 0),
            started_at=_utc(raw.get("started")),
            finished_at=_utc(raw.get("finished")),
            worker=raw.get("worker"),
            host=raw.get("host"),
            gpus=tuple(raw.get("gpus", ())),
            pid=raw.get("pid"),
        )
        # A "lost" report from the remote side itself (lease ran out, duplicate refused...)
        # gets a fence too: another copy may be the one that is still running.
        if self._settle(result, fence=kind == "worker_lost") and self._follow is not None:
            self._follow_final(result)

    # -- output following -----------------------------------------------------------------
    def _follow_chunk(self, out: bytes, out_start: int, err: bytes, err_start: int) -> None:
        if out_start > self.out_offset:
            self._follow(
                "stdout", b"\n[queuectl: %d bytes skipped]\n" % (out_start - self.out_offset)
            )
            self.out_offset = out_start
        if err_start > self.err_offset:
            self._follow(
                "stderr", b"\n[queuectl: %d bytes skipped]\n" % (err_start - self.err_offset)
            )
            self.err_offset = err_start
        if out:
            self.out_offset += len(out)
            self._follow("stdout", out)
        if err:
            self.err_offset += len(err)
            self._follow("stderr", err)

    def _follow_final(self, result: RemoteResult) -> None:
        for name, data, size, offset in (
            ("stdout", result.stdout, result.stdout_size, self.out_offset),
            ("stderr", result.stderr, result.stderr_size, self.err_offset),
        ):
            missing = size - offset
            if missing <= 0:
                continue
            if missing > len(data):
                self._follow(name, b"\n[queuectl: %d bytes skipped]\n" % (missing - len(data)))
                missing = len(data)
            self._follow(name, data[len(data) - missing :])

    # -- public ---------------------------------------------------------------------------
    def done(self) -> bool:
        return self._result is not None

    def wait_settled(self, timeout: float) -> None:
        """Block up to ``timeout`` until another thread (the lease thread, a cancel, the
        thread in ``wait``) has settled the attempt."""
        self._wake.wait(timeout)

    def wait(self, timeout: float | None = None, fence: bool = True) -> RemoteResult | None:
        """The accepted result; None on timeout. With ``fence`` (default), a lost attempt's
        result is returned only once the job may safely run again (``fence_until``): a
        worker thread that calls this keeps the job's lock for exactly that long. (A cancelled
        attempt's job does not run again: its fence_until is informative only.)"""
        end = None if timeout is None else time.monotonic() + timeout
        while self._result is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._fetch(None if left is None else max(0.0, min(left, 1.0)))
        result = self._result
        if fence and result.fence_until and result.kind == "worker_lost":
            delay = result.fence_until - time.monotonic()
            if delay > 0:
                if end is not None and delay > end - time.monotonic():
                    return None
                time.sleep(delay)
        return result

    def cancel(self, grace: float | None = None) -> None:
        """Stop the attempt: its group gets SIGTERM now and SIGKILL ``grace`` seconds later;
        a queued task is dropped. ``wait()`` then reports ``cancelled`` (or how it ended if it
        finished first)."""
        ex = self._ex
        grace = ex.kill_grace if grace is None else grace
        with ex._lock:
            if self._result is not None:
                return
            self._cancel_grace = grace
            ex._live.pop(self.key, None)  # the next renewal drops it everywhere, too
        replies = ex._call_all(
            {"op": "queuectl_kill", "head": ex.head_id, "keys": [self.key], "grace": grace}
        )
        running = any(isinstance(r, dict) and r.get(self.key) for r in replies.values())
        future = self.future
        if not running and future is not None and not future.done():
            future.cancel()
        self._wake.set()


class RemoteExecutor:
    """Runs attempts' commands on Dask workers under leases renewed by this process."""

    def __init__(
        self,
        address: str,
        security: Any = None,
        lease_seconds: float = 10.0,
        *,
        kill_grace: float = 5.0,
        output_cap: int = OUTPUT_CAP,
        connect_timeout: float = 10.0,
        follow_every: float = 0.5,
        resources: dict[str, float] | None = None,
        register: bool = True,
    ) -> None:
        timing = LeaseTiming(float(lease_seconds), kill_grace=kill_grace)
        self.timing = timing
        self.lease = timing.lease
        self.renew_every = timing.renew_every
        self.kill_grace = kill_grace
        self.lease_grace = timing.lease_grace
        self.margin = timing.margin
        self.output_cap = output_cap
        self.dedupe = True
        self.follow_every = follow_every
        self.base_resources = dict(resources or {})
        self.register = register
        self.security = security
        self.connect_timeout = connect_timeout
        self.head_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._seq = 0
        self._round = 0
        self._live: dict[str, RemoteAttempt] = {}
        self._where: dict[str, str] = {}
        self._tokens: dict[str, list[Any]] = {}
        self._last_ok: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._scheduler_id: str | None = None
        self._generation = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.on_gpus: Callable[[int], None] | None = None
        """Called (from the lease thread) when the largest GPU count a worker advertises
        changes (the head's record tells ``add --gpus`` about it)."""
        self._gpus_seen = -1
        self._gpu_warned: set[int] = set()
        self.on_change: Callable[[], None] | None = None
        """Called (from the lease thread) when readiness changes."""
        self.stats: dict[str, float] = {
            "rounds": 0,
            "round_seconds_max": 0.0,
            "reconnects": 0,
            "renew_failures": 0,
        }
        self._owns, self._address = True, address
        self._client = self._connect()
        try:
            self._setup_cluster()
            self._renew_once()  # tokens
            self._renew_once()  # first commit: every current worker holds our lease
        except BaseException:
            self._client.close()
            raise
        self._ready.set()
        self._threads = [
            threading.Thread(target=self._renew_loop, name="queuectl-lease", daemon=True),
            threading.Thread(target=self._follow_loop, name="queuectl-follow", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- connection and cluster checks ----------------------------------------------------
    def _connect(self) -> Client:
        try:
            return Client(
                self._address,
                security=self.security,
                timeout=self.connect_timeout,
                set_as_default=False,
            )
        except Exception as exc:  # OSError, TimeoutError, ssl and TLS set-up errors
            raise RemoteUnavailable(
                f"cannot reach the Dask scheduler at {self._address} within "
                f"{self.connect_timeout:g}s: {exc}"
            ) from None

    def _setup_cluster(self) -> None:
        client = self._client
        facts = client.run_on_scheduler(_scheduler_facts)
        if facts["allowed_failures"] != 0:
            raise RemoteConfigError(
                "the Dask scheduler has distributed.scheduler.allowed-failures="
                f"{facts['allowed_failures']}: it would rerun a command whose worker died. "
                "Start it with DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0"
            )
        if self.dedupe and not facts["extension"]:
            try:
                client.run_on_scheduler(install_scheduler_extension)
            except Exception as exc:
                raise RemoteConfigError(
                    "cannot install queuectl's extension on the scheduler "
                    f"(is queuectl installed there?): {exc}"
                ) from None
        if self.register:
            # Idempotent at the scheduler: a no-op when a head (or --preload) did it already;
            # otherwise existing workers set it up now and later ones when they join.
            client.register_plugin(QueuectlPlugin(), name=PLUGIN_NAME)
        probes = self._probe(client)
        missing = [addr for addr, probe in probes.items() if not isinstance(probe, dict)]
        if missing:
            raise RemoteConfigError(f"the queuectl plugin is not set up on workers {missing}")
        wrong = {a: p["version"] for a, p in probes.items() if p["version"] != VERSION}
        if wrong:
            raise RemoteConfigError(f"queuectl {VERSION} here, other versions on workers: {wrong}")
        self._scheduler_id = facts["id"]

    def _probe(self, client) -> dict:
        return client.sync(self._broadcast_all, {"op": "queuectl_probe"}, self.renew_every * 4 + 5)

    async def _broadcast_all(self, msg: dict, timeout: float) -> dict:
        ident = await self._client.scheduler.identity(n_workers=-1)
        addrs = list(ident["workers"])
        results = await asyncio.gather(*(self._call_one(a, msg, timeout) for a in addrs))
        return dict(zip(addrs, results, strict=True))

    async def _call_one(self, addr: str, msg: dict, timeout: float):
        try:
            reply = await asyncio.wait_for(
                self._client.scheduler.broadcast(msg=msg, workers=[addr], on_error="return_pickle"),
                timeout,
            )
        except Exception as exc:
            return exc
        reply = reply.get(addr)
        return reply if isinstance(reply, dict) else RuntimeError(f"bad reply {reply!r:.200}")

    def _call_all(self, msg: dict, timeout: float = 5.0) -> dict:
        try:
            return self._client.sync(self._broadcast_all, msg, timeout)
        except Exception as exc:
            log.warning("queuectl: %s failed: %s", msg.get("op"), exc)
            return {}

    def probe(self) -> dict:
        """What every worker reports (version, warden pid, GPUs, reaped groups, running)."""
        return self._probe(self._client)

    # -- leases ---------------------------------------------------------------------------
    def _fence_for_locked(self, key: str) -> float:
        """When the command of a given-up attempt is surely dead (``lease.fence_until``),
        counted from the last renewal reply of the worker it ran on (from now when unknown)."""
        worker = self._where.get(key)
        last = self._last_ok.get(worker) if worker else None
        return fence_until(time.monotonic(), last, self.lease, self.margin)

    def _renew_once(self) -> None:
        loop: Any = self._client.loop
        asyncio.run_coroutine_threadsafe(self._round_coro(), loop.asyncio_loop).result(
            timeout=self.renew_every * 4 + 10
        )

    async def _round_coro(self) -> None:
        client = self._client
        started = time.monotonic()
        ident = await asyncio.wait_for(
            client.scheduler.identity(n_workers=-1), self.renew_every * 2 + 2
        )
        if ident["id"] != self._scheduler_id and self._scheduler_id is not None:
            self._ready.clear()  # a new scheduler: install again before new attempts
            raise RemoteUnavailable("the scheduler changed")
        self._workers = {
            addr: {"resources": w.get("resources", {}), "host": w.get("host")}
            for addr, w in ident["workers"].items()
        }
        self._tell_gpus()
        with self._lock:
            self._round += 1
            rnd, max_seq = self._round, self._seq
            live = list(self._live)
        tasks = []
        for addr in self._workers:
            if addr in self._inflight:
                continue  # its last renewal has not come back: do not pile up
            msg = {
                "op": "queuectl_renew",
                "head": self.head_id,
                "token": self._tokens.get(addr),  # None on first contact
                "lease": self.lease,
                "round": rnd,
                "max_seq": max_seq,
                "live": live,
            }
            task = asyncio.ensure_future(self._renew_worker(addr, msg))
            self._inflight[addr] = task
            tasks.append(task)
        if self.dedupe:
            now = time.monotonic()
            with self._lock:
                unknown = [
                    k
                    for k, a in self._live.items()
                    if k not in self._where and now - a.submitted > 2 * self.renew_every
                ]
            if unknown:
                try:
                    found = await client.scheduler.queuectl_where(keys=unknown)
                    with self._lock:
                        for k, addr in (found or {}).items():
                            self._where.setdefault(k, addr)
                except Exception:
                    pass
        if tasks:
            await asyncio.wait(tasks, timeout=max(1.0, self.renew_every))
        elapsed = time.monotonic() - started
        self.stats["rounds"] += 1
        self.stats["round_seconds_max"] = max(self.stats["round_seconds_max"], elapsed)

    async def _renew_worker(self, addr: str, msg: dict) -> None:
        try:
            for _ in range(2):
                reply = await self._client.scheduler.broadcast(
                    msg=msg, workers=[addr], on_error="return_pickle"
                )
                reply = reply.get(addr)
                if not isinstance(reply, dict) or "token" not in reply:
                    self.stats["renew_failures"] += 1
                    return
                now = time.monotonic()
                with self._lock:
                    self._tokens[addr] = reply["token"]
                    self._last_ok[addr] = now
                    for key in reply["running"]:
                        if key in self._live:
                            self._where[key] = addr
                if msg["token"] is not None and msg["token"][0] == reply["token"][0]:
                    break
                # First contact (a new worker, or a restarted one: new nonce): commit its
                # token at once rather than a round later, so it can run our attempts now.
                msg = {**msg, "token": reply["token"]}
        except Exception:
            self.stats["renew_failures"] += 1
        finally:
            self._inflight.pop(addr, None)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                if self._owns and self._client.status in ("closed", "closing"):
                    self._reconnect()
                    continue
                identity = getattr(self._client, "_scheduler_identity", None) or {}
                if identity.get("id", self._scheduler_id) != self._scheduler_id:
                    self._ready.clear()
                if not self._ready.is_set():
                    if self._client.status != "running":
                        continue
                    self._setup_cluster()
                    with self._lock:
                        self._tokens.clear()
                    self._renew_once()
                    self._renew_once()
                    self._ready.set()
                    continue
                self._renew_once()
            except Exception as exc:
                log.warning("queuectl: lease round failed: %s: %s", type(exc).__name__, exc)
            self._check_lapsed()

    def _reconnect(self) -> None:
        self._ready.clear()
        try:
            client = self._connect()
        except RemoteUnavailable as exc:
            log.warning("queuectl: %s", exc)
            return
        old, self._client = self._client, client
        self._generation += 1
        self.stats["reconnects"] += 1
        with self._lock:
            self._tokens.clear()
            self._inflight.clear()
        try:
            old.close(timeout=2)
        except Exception:
            pass
        self._scheduler_id = None
        self._setup_cluster()
        self._renew_once()
        self._renew_once()
        self._ready.set()

    def _check_lapsed(self) -> None:
        """Give up attempts whose worker has not acknowledged a renewal for a lease: their
        command is dead by now (the warden enforces the lease) even if Dask still says
        'processing' (a frozen or partitioned worker takes worker-ttl, 5 min, to be removed)."""
        now = time.monotonic()
        with self._lock:
            live = list(self._live.values())
            where, last_ok = dict(self._where), dict(self._last_ok)
        for attempt in live:
            if attempt.client_gen != self._generation and attempt.future is not None:
                attempt._lost("lost: the Dask client was replaced", where.get(attempt.key))
                continue
            addr = where.get(attempt.key)
            if addr is None:
                continue
            last = last_ok.get(addr, attempt.submitted)
            if now - last > self.lease + self.margin:
                attempt._lost(
                    f"lost: no renewal reached {addr} for {now - last:.1f}s (lease lapsed)", addr
                )

    # -- following output -----------------------------------------------------------------
    def _follow_loop(self) -> None:
        while not self._stop.wait(self.follow_every):
            with self._lock:
                following = [a for a in self._live.values() if a._follow is not None]
                where = dict(self._where)
            unknown = [a.key for a in following if a.key not in where]
            if unknown and self.dedupe:
                # Not seen in a renewal reply yet: the scheduler knows where it is processing.
                try:
                    found = self._client.sync(self._client.scheduler.queuectl_where, keys=unknown)
                except Exception:
                    found = None
                for key, addr in (found or {}).items():
                    where[key] = addr
            by_worker: dict[str, dict] = {}
            for attempt in following:
                addr = where.get(attempt.key)
                if addr:
                    by_worker.setdefault(addr, {})[attempt.key] = attempt
            if not by_worker:
                continue

            async def pull(by_worker: dict[str, dict[str, RemoteAttempt]] = by_worker) -> Any:
                calls = {
                    addr: self._call_one(
                        addr,
                        {
                            "op": "queuectl_output",
                            "offsets": {k: [a.out_offset, a.err_offset] for k, a in group.items()},
                        },
                        max(2.0, self.follow_every * 4),
                    )
                    for addr, group in by_worker.items()
                }
                replies = await asyncio.gather(*calls.values())
                return dict(zip(calls, replies, strict=True))

            try:
                replies = self._client.sync(pull)
            except Exception:
                continue
            for addr, reply in replies.items():
                if not isinstance(reply, dict):
                    continue
                for key, (out, out_start, err, err_start) in reply.items():
                    found = by_worker[addr].get(key)
                    if found is not None and found._result is None:
                        found._follow_chunk(out, out_start, err, err_start)

    # -- starting attempts ----------------------------------------------------------------
    def _usable(self) -> bool:
        client = self._client
        if not self._ready.is_set() or client.status != "running":
            return False
        # After an automatic reconnect Dask may already talk to a *new* scheduler that lacks
        # our extension and plugin registration: not usable until _setup_cluster ran again.
        identity = getattr(client, "_scheduler_identity", None) or {}
        return identity.get("id", self._scheduler_id) == self._scheduler_id

    def usable(self) -> bool:
        """Connected, set up, and renewing: an attempt may be submitted now."""
        return self._usable()

    def wait_ready(self, timeout: float) -> bool:
        """True when connected and set up: a queuectl worker thread calls this before it
        claims a job, so a cluster outage leaves jobs pending instead of burning attempts."""
        end = time.monotonic() + timeout
        while not self._usable():
            if time.monotonic() >= end:
                return False
            self._ready.wait(0.05)
            time.sleep(0.05)
        return True

    def _refresh_workers(self) -> None:
        try:
            ident = self._client.sync(self._client.scheduler.identity, n_workers=-1)
        except Exception:
            return
        self._workers = {
            addr: {"resources": w.get("resources", {}), "host": w.get("host")}
            for addr, w in ident["workers"].items()
        }

    def max_gpus(self) -> int:
        """The largest ``GPU`` resource a worker advertises (as the scheduler knows them)."""
        return max((int(w["resources"].get("GPU", 0)) for w in self._workers.values()), default=0)

    def _tell_gpus(self) -> None:
        gpus = self.max_gpus()
        if gpus != self._gpus_seen and self.on_gpus is not None:
            self._gpus_seen = gpus
            try:
                self.on_gpus(gpus)
            except Exception:
                log.debug("queuectl: recording GPU=%d", gpus, exc_info=True)

    def start(
        self,
        attempt_key: str,
        command: str,
        env: dict | None = None,
        cwd: str | None = None,
        timeout: float = 0.0,
        gpus: int = 0,
        follow=None,
    ) -> RemoteAttempt:
        """Submit one attempt. ``follow(stream_name, bytes)`` (optional) receives the output
        while the command runs, every ``follow_every`` seconds, then the rest at the end."""
        if not self.wait_ready(self.connect_timeout):
            raise RemoteUnavailable("the Dask cluster is not available")
        with self._lock:
            self._seq += 1
            seq = self._seq
        key = f"queuectl-{attempt_key}-{self.head_id}"
        spec = AttemptSpec(
            key=key,
            head=self.head_id,
            seq=seq,
            command=command,
            env=dict(env or {}),
            cwd=cwd,
            timeout=float(timeout or 0),
            gpus=int(gpus),
            grace=self.kill_grace,
            lease_wait=self.timing.lease_wait,
            output_cap=self.output_cap,
            lease_grace=self.lease_grace,
        )
        attempt = RemoteAttempt(self, spec, follow)
        if gpus and gpus > self.max_gpus():
            self._refresh_workers()  # the cache is one round old: ask before refusing
        if gpus and gpus > self.max_gpus():
            error = f"no Dask worker advertises GPU={gpus} (largest: GPU={self.max_gpus()})"
            if gpus not in self._gpu_warned:  # once per head and size, not once per attempt
                self._gpu_warned.add(gpus)
                log.warning(
                    "queuectl: %s: attempts asking for it fail at once (start a worker with "
                    '--resources "GPU=%d" for them)',
                    error,
                    gpus,
                )
            attempt._settle(
                RemoteResult(
                    "spawn_failed",
                    error=error,
                    started_at=_utc(time.time()),
                    finished_at=_utc(time.time()),
                )
            )
            return attempt
        resources = dict(self.base_resources)
        if gpus:
            resources["GPU"] = gpus
        with self._lock:
            self._live[key] = attempt
        attempt.future = self._client.submit(
            run_attempt,
            spec,
            key=key,
            pure=False,
            retries=0,
            resources=resources or None,
        )
        return attempt

    def live_count(self) -> int:
        with self._lock:
            return len(self._live)

    def close(self, cancel: bool = True) -> None:
        """Stop renewing. With ``cancel``, running attempts are cancelled first; without, their
        commands die when the lease runs out."""
        if cancel:
            with self._lock:
                live = list(self._live.values())
            for attempt in live:
                attempt.cancel(grace=1.0)
            for attempt in live:
                attempt.wait(timeout=self.kill_grace + 5, fence=False)
        self._stop.set()
        for thread in getattr(self, "_threads", []):
            thread.join(timeout=5)
        if self._owns:
            try:
                self._client.close(timeout=5)
            except Exception:
                pass
