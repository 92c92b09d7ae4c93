"""``dask scheduler --preload queuectl.remote.preload`` and
``dask worker --preload queuectl.remote.preload``: install queuectl's scheduler extension
and worker plugin before the process serves anything. That survives scheduler restarts (a
head otherwise re-installs both whenever it sees a new scheduler) and lets a worker refuse
Dask's reruns from its first task on."""

from __future__ import annotations

from typing import Any

__all__ = ["dask_setup"]


async def dask_setup(server: Any) -> None:
    from distributed import Scheduler, Worker

    if isinstance(server, Scheduler):
        from queuectl.remote.tombstones import install_scheduler_extension

        install_scheduler_extension(server)
    elif isinstance(server, Worker):
        from queuectl.remote.plugin import PLUGIN_NAME, QueuectlPlugin

        await server.plugin_add(QueuectlPlugin(), name=PLUGIN_NAME)
