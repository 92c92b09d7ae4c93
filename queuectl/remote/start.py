"""``worker start --executor dask``: connect, check the cluster, hand the pool its executor.

Order matters: the address and TLS files are checked before Dask is imported (a typo is a
one-line error at once), the cluster is checked before the head's record is written, and the
record is durable before the first attempt can be submitted (``storage.remote_heads``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from queuectl.remote.connection import Tls, check_address, import_distributed

if TYPE_CHECKING:
    from queuectl.worker.pool import WorkerPool

__all__ = ["CONNECT_TIMEOUT_SECONDS", "attach_dask"]

CONNECT_TIMEOUT_SECONDS = float(os.environ.get("QUEUECTL_DASK_CONNECT_TIMEOUT", "10"))
FOLLOW_SECONDS = float(os.environ.get("QUEUECTL_DASK_FOLLOW_SECONDS", "0.5"))
"""How often the output of running attempts is pulled into their log files."""

_QUIET_DASK = {
    # Dask logs every connection at INFO on stderr, which is the worker's log.
    "DASK_LOGGING__DISTRIBUTED": "warning",
    # Dask's sampling profiler walks other threads' frames every 10 ms; on CPython 3.11 that
    # crashed a worker process once in ~400,000 tasks (docs/remote.md). For in-process
    # clusters; the cluster's own workers need the variable in their environment.
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
}


class _ToPoolLog(logging.Handler):
    def __init__(self, log: object) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log(f"dask: {record.getMessage()}")  # type: ignore[operator]
        except Exception:
            pass


def attach_dask(
    pool: WorkerPool,
    scheduler: str,
    lease: float,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    tls = Tls(*(Path(p) if p else None for p in (tls_ca, tls_cert, tls_key)))
    address = check_address(scheduler, tls)
    for name, value in _QUIET_DASK.items():
        os.environ.setdefault(name, value)
    import_distributed()
    from queuectl.remote.executor import RemoteExecutor
    from queuectl.remote.launcher import DaskExecutor
    from queuectl.storage.remote_heads import RemoteHeads

    security = tls.security() if address.startswith("tls://") else None
    logging.getLogger("queuectl.remote").addHandler(_ToPoolLog(pool.log))
    remote = RemoteExecutor(
        address,
        security,
        lease_seconds=lease,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        follow_every=FOLLOW_SECONDS,
    )
    try:
        record = RemoteHeads(pool.store.home.root).register(
            remote.head_id, lease, gpus=remote.max_gpus()
        )
    except BaseException:
        remote.close(cancel=False)
        raise
    remote.on_gpus = record.advertise_gpus
    pool.store.claims.local_devices = False
    pool.executor = DaskExecutor(remote, record, {})
    workers = len(remote.probe())
    pool.log(
        f"dask executor: scheduler {address}, {workers} worker(s), lease {lease:g}s, "
        f"head {remote.head_id}"
    )
