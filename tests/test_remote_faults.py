"""The fence under faults, with real processes: a head or a Dask worker SIGKILLed mid-job,
a head frozen past its lease, Dask rerunning an attempt by itself, cancel and timeout.

Every command records its own start and end (tests/remote_support.py); the invariant checked
is the one that matters: every job completes, and no two runs of one job overlap in time."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import pid_gone, read_job, run_cli, settled_in, wait_until
from tests.remote_support import (
    Cluster,
    assert_never_overlapping,
    dask_env,
    enqueue_all,
    head,
    once_then,
    recorded,
    runs,
    stop_head,
    wait_jobs,
)


def _fast_retries(home: Path) -> None:
    assert run_cli(home, "config", "set", "backoff-base", "1").returncode == 0


def _long_then_short(tmp_path: Path, record: Path, tag: str, trap: str = "record") -> str:
    body = once_then(tmp_path / f"first.{tag}", "sleep 60", "sleep 0.1")
    return recorded(record, tag, body, trap=trap)


def _started(record: Path, count: int) -> bool:
    found = runs(record)
    return sum(len(r) for r in found.values()) >= count and all(
        r.child is not None for rs in found.values() for r in rs
    )


def test_a_sigkilled_head_s_jobs_rerun_only_after_its_lease(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home, record = tmp_path / "home", tmp_path / "record"
    _fast_retries(home)
    jobs = [
        {"id": f"k{n}", "command": _long_then_short(tmp_path, record, f"k{n}")} for n in range(10)
    ]
    ids = enqueue_all(home, jobs)
    first = head(home, dask_cluster, "--count", "10", log=tmp_path / "head1.log")
    wait_until(lambda: _started(record, 10), timeout=90, message="ten remote commands")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = head(home, dask_cluster, "--count", "10", log=tmp_path / "head2.log")
    try:
        done = wait_jobs(home, ids)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert stop_head(second) == 0
    found = runs(record)
    assert sorted(found) == sorted(ids)
    assert all(len(r) == 2 for r in found.values()), found
    assert_never_overlapping(found)
    assert all(pid_gone(r[0].child or 0) for r in found.values())
    assert (
        "recovering its jobs only once its lease has ended" in (tmp_path / "head2.log").read_text()
    )


def test_a_sigkilled_dask_worker_s_attempt_is_lost_and_retried(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home, record = tmp_path / "home", tmp_path / "record"
    _fast_retries(home)
    [job] = enqueue_all(home, [{"id": "w1", "command": _long_then_short(tmp_path, record, "w1")}])
    proc = head(home, dask_cluster, "--count", "2", log=tmp_path / "head.log")
    try:
        wait_until(lambda: _started(record, 1), timeout=60, message="the remote command")
        run = runs(record)["w1"][0]
        assert run.parent is not None
        os.kill(run.parent, signal.SIGKILL)  # the Dask worker process (its nanny restarts it)
        wait_until(lambda: pid_gone(run.child or 0), timeout=30, message="the warden's kill")
        done = wait_jobs(home, [job])
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert stop_head(proc) == 0
        dask_cluster.wait_workers()
    found = runs(record)
    assert len(found["w1"]) == 2, found
    assert_never_overlapping(found)
    assert read_job(home, "completed", job)["attempts"] == 2
    history = run_cli(home, "history", job).stdout
    assert "worker lost" in history, history


def test_a_frozen_head_s_commands_die_at_the_lease_end(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home, record = tmp_path / "home", tmp_path / "record"
    _fast_retries(home)
    [job] = enqueue_all(home, [{"id": "f1", "command": _long_then_short(tmp_path, record, "f1")}])
    proc = head(home, dask_cluster, "--count", "2", log=tmp_path / "head.log")
    try:
        wait_until(lambda: _started(record, 1), timeout=60, message="the remote command")
        os.kill(proc.pid, signal.SIGSTOP)  # no renewals: only the lease can stop it now
        try:
            wait_until(
                lambda: runs(record)["f1"][0].end is not None, timeout=30, message="the lease kill"
            )
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        run = runs(record)["f1"][0]
        wait_until(lambda: pid_gone(run.child or 0), timeout=10, message="the group's end")
        done = wait_jobs(home, [job])
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert stop_head(proc) == 0
    found = runs(record)
    assert len(found["f1"]) >= 2, found  # a head starved by a loaded machine may lapse again
    assert_never_overlapping(found)


def test_cancel_kills_the_remote_group_even_when_it_ignores_sigterm(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home, record = tmp_path / "home", tmp_path / "record"
    [job] = enqueue_all(
        home, [{"id": "c1", "command": recorded(record, "c1", "sleep 60", trap="ignore")}]
    )
    proc = head(home, dask_cluster, log=tmp_path / "head.log")
    try:
        wait_until(lambda: _started(record, 1), timeout=60, message="the remote command")
        assert run_cli(home, "cancel", job).returncode == 0
        wait_until(lambda: settled_in(home, "cancelled", job), timeout=30, message="cancelled")
        run = runs(record)["c1"][0]
        assert pid_gone(run.pid) and pid_gone(run.child or 0)
    finally:
        assert stop_head(proc) == 0


def test_a_timeout_kills_the_remote_group_even_when_it_ignores_sigterm(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home, record = tmp_path / "home", tmp_path / "record"
    command = recorded(record, "t1", "sleep 60", trap="ignore")
    [job] = enqueue_all(home, [{"id": "t1", "command": command, "timeout": 1, "max_retries": 0}])
    proc = head(home, dask_cluster, "--burst", log=tmp_path / "head.log")
    assert proc.wait(60) == 0, (tmp_path / "head.log").read_text()
    dead = read_job(home, "dead", job)
    assert "timeout" in dead["last_error"], dead
    run = runs(record)["t1"][0]
    assert pid_gone(run.pid) and pid_gone(run.child or 0)


def test_dask_s_own_rerun_of_an_attempt_is_refused(tmp_path: Path) -> None:
    """``retire_workers`` makes Dask run an executing key again elsewhere (even with
    allowed-failures=0): the scheduler plugin's tombstone refuses that second start; the
    attempt comes back lost and queuectl retries it after the fence, never overlapping."""
    cluster = Cluster(tmp_path / "cluster")
    home, record = tmp_path / "home", tmp_path / "record"
    _fast_retries(home)
    try:
        cluster.start()
        cluster.wait_workers()
        [job] = enqueue_all(
            home, [{"id": "r1", "command": _long_then_short(tmp_path, record, "r1")}]
        )
        proc = head(home, cluster, "--count", "2", log=tmp_path / "head.log")
        try:
            wait_until(lambda: _started(record, 1), timeout=60, message="the remote command")
            with cluster.client() as client:
                busy = [w for w, keys in client.processing().items() if keys]
                assert len(busy) == 1, busy
                client.retire_workers(busy)
            done = wait_jobs(home, [job])
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            assert stop_head(proc) == 0
    finally:
        cluster.stop()
    found = runs(record)
    assert len(found["r1"]) == 2, found  # the refused rerun never started a command
    assert_never_overlapping(found)


@pytest.mark.parametrize("outage", ["short", "long"])
def test_a_killed_and_restarted_scheduler_loses_no_job_and_runs_none_twice(
    tmp_path: Path, outage: str
) -> None:
    """SIGKILL the scheduler while six remote commands run (its workers exit with it, their
    wardens TERM the commands); the head's attempts come back lost after the fence, it keeps
    trying to reconnect, and once a scheduler is back on the same address with its workers,
    every job completes once, with no two runs of one job overlapping. ``short``: back before
    Dask's client gives up its own reconnect; ``long``: the head's connect timeout (1 s) ran
    out twice first, so the head replaced its client."""
    cluster = Cluster(tmp_path / "cluster", nthreads=3)
    home, record = tmp_path / "home", tmp_path / "record"
    _fast_retries(home)
    try:
        cluster.start()
        cluster.wait_workers()
        ids = enqueue_all(
            home,
            [
                {"id": f"s{n}", "command": _long_then_short(tmp_path, record, f"s{n}")}
                for n in range(6)
            ],
        )
        log = tmp_path / "head.log"
        env = dask_env(QUEUECTL_DASK_CONNECT_TIMEOUT="1" if outage == "long" else "30")
        proc = head(home, cluster, "--count", "6", log=log, env=env)
        try:
            wait_until(lambda: _started(record, 6), timeout=60, message="six remote commands")
            assert cluster.scheduler is not None
            os.killpg(cluster.scheduler.pid, signal.SIGKILL)
            cluster.scheduler.wait()
            for nanny in cluster.nannies.values():
                nanny.wait(60)  # dask worker exits once it has lost its scheduler
            first = {tag: rs[0] for tag, rs in runs(record).items()}
            wait_until(
                lambda: all(pid_gone(r.child or 0) for r in first.values()),
                timeout=30,
                message="the wardens' kill",
            )
            if outage == "long":
                wait_until(
                    lambda: log.read_text().count("cannot reach the Dask scheduler") >= 2,
                    timeout=60,
                    message="the head's failed reconnects",
                )
            assert proc.poll() is None  # the head waits for the cluster, it does not exit
            cluster.start()  # the same address
            done = wait_jobs(home, ids)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            assert stop_head(proc) == 0
    finally:
        cluster.stop()
    found = runs(record)
    assert sorted(found) == sorted(ids)
    assert all(len(r) == 2 for r in found.values()), found
    assert_never_overlapping(found)
    for job in ids:
        assert read_job(home, "completed", job)["attempts"] == 2
        assert "worker lost" in run_cli(home, "history", job).stdout
