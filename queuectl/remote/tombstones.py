"""The scheduler plugin that turns Dask's own reruns of an attempt into refusals.

Dask may run a task again by itself: a task *processing* on a worker that is retired or
removed gracefully is rescheduled without counting against ``allowed-failures`` (measured:
``retire_workers`` ran a command twice, the runs overlapping), and a finished result lost
with its worker is recomputed while a client wants it (dask/distributed#7870). Every such
rerun begins with the transition ``processing -> released`` (or ``memory -> released`` while
a client still wants the key). This plugin sees that transition and sends a *tombstone* for
the key on the scheduler->worker batched streams, which are ordered, so a worker handles it
before the ``compute-task`` that would start the key again, and refuses (``plugin``). It
costs nothing per normal task.

Tombstones go only to workers that run queuectl's plugin (an unknown stream op makes a
worker's stream fail and the worker close): those that advertise ``metrics["queuectl"]`` in
their heartbeat or said ``queuectl_hello``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from distributed.diagnostics.plugin import SchedulerPlugin

from queuectl.remote.plugin import VERSION

__all__ = ["EXTENSION_NAME", "QueuectlSchedulerPlugin", "install_scheduler_extension"]

EXTENSION_NAME: Final = "queuectl"
KEY_PREFIX: Final = "queuectl-"
KEPT: Final = 100_000


class QueuectlSchedulerPlugin(SchedulerPlugin):
    name = EXTENSION_NAME

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.tombstones: OrderedDict[str, None] = OrderedDict()
        self.hello: set[str] = set()
        self.sent = 0
        scheduler.handlers["queuectl_hello"] = self.h_hello
        scheduler.handlers["queuectl_where"] = self.h_where
        scheduler.handlers["queuectl_stats"] = self.h_stats

    def _capable(self, address: str) -> bool:
        if address in self.hello:
            return True
        ws = self.scheduler.workers.get(address)
        return ws is not None and bool(ws.metrics.get("queuectl"))

    def _send(self, address: str, keys: list[str]) -> None:
        stream = self.scheduler.stream_comms.get(address)
        if stream is not None and self._capable(address):
            stream.send({"op": "queuectl-tombstone", "keys": keys})
            self.sent += 1

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(key, str) and key.startswith(KEY_PREFIX)) or finish != "released":
            return
        if start == "memory":
            ts = self.scheduler.tasks.get(key)
            if ts is None or not ts.who_wants:
                return  # the normal release of a result: nobody wants it again
        elif start != "processing":
            return
        self.tombstones[key] = None
        while len(self.tombstones) > KEPT:
            self.tombstones.popitem(last=False)
        for address in list(self.scheduler.stream_comms):
            self._send(address, [key])

    def add_worker(self, scheduler: Any, worker: str) -> None:
        if self.tombstones:
            self._send(worker, list(self.tombstones))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.hello.discard(worker)

    def h_hello(self, worker: str) -> dict[str, Any]:
        self.hello.add(worker)
        return {"tombstones": list(self.tombstones)}

    def h_where(self, keys: list[str]) -> dict[str, str]:
        """Where each key is processing (for following a key no renewal reply named yet)."""
        out: dict[str, str] = {}
        for key in keys:
            ts = self.scheduler.tasks.get(key)
            if ts is not None and ts.processing_on is not None:
                out[key] = ts.processing_on.address
        return out

    def h_stats(self) -> dict[str, Any]:
        return {"tombstones": len(self.tombstones), "sent": self.sent, "hello": sorted(self.hello)}


def install_scheduler_extension(dask_scheduler: Any) -> str:
    """Run on the scheduler (``run_on_scheduler`` or the preload); idempotent."""
    if EXTENSION_NAME not in dask_scheduler.plugins:
        dask_scheduler.add_plugin(QueuectlSchedulerPlugin(dask_scheduler), name=EXTENSION_NAME)
    return VERSION
