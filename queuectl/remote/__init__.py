"""Running attempts on a Dask cluster, with the queue home as the only durable control plane.

The head (a ``queuectl worker start --executor dask`` process on the host that owns the home)
claims, records and retries jobs exactly as a local worker does; only the command runs on a
Dask worker. Kernel locks cannot reach another host, so a *lease* fences remote commands
instead (``lease``): the head renews it, a remote command dies when it runs out, and a job
orphaned by a dead head is run again only after its lease has certainly ended.

Modules, each with one job:

- ``lease``       the lease arithmetic (timings, fences, the per-head state on a worker);
- ``wire``        what travels to a Dask worker (one attempt) and back (its report);
- ``warden``      a per-worker watchdog process (standard library only);
- ``task``        running one command on a Dask worker (pipes, pidfd, timeout, lease);
- ``plugin``      the Dask worker plugin: per-worker state, handlers, the task function;
- ``tombstones``  the scheduler plugin that refuses Dask's own reruns of an attempt;
- ``connection``  the scheduler address, TLS, connecting and checking the cluster;
- ``executor``    the head's Dask client, lease and follow threads, and one attempt as the
                  head sees it (first result wins, fence, follow);
- ``launcher``    the ``worker.runner.Executor`` the worker pool calls, and a remote result
                  as a queuectl ``Outcome``;
- ``start``       ``worker start --executor dask``: checks, connection, the head's record;
- ``preload``     ``dask scheduler|worker --preload queuectl.remote.preload``.

Nothing here is imported by plain ``queuectl`` commands: ``dask``/``distributed`` load only
when ``worker start --executor dask`` runs (or on the cluster's own processes).
"""
