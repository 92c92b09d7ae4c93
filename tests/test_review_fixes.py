"""Regression tests for bugs a review of the round-2 performance work found."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

import pytest

from queuectl.dispatch import RESCAN_CHUNK, Dispatcher, RunnableIndex
from queuectl.durable import reuse_tmp
from queuectl.home import Home
from queuectl.job import job_from_input
from queuectl.store import Store
from queuectl.watch import Event
from queuectl.worker import WorkerPool

from .conftest import Procs, enqueue_job, jobs_in, wait_exit, wait_until


def _new(job_id: str, command: str = "true"):
    raw = f'{{"id": "{job_id}", "command": "{command}"}}'.encode()
    return job_from_input(raw, default_max_retries=3, source="cli")


def test_an_overflow_during_a_paced_scan_starts_the_scan_over(store: Store) -> None:
    """A scan lists the folders when it begins; jobs whose notifications an inotify overflow
    swallowed after that must not wait for the periodic rescan a minute later."""
    store.enqueue([_new(f"old{i:05d}") for i in range(2 * RESCAN_CHUNK)], explicit_ids=set())
    index = RunnableIndex()
    dispatcher = Dispatcher(
        store, index, stopping=threading.Event(), on_drained=None, is_idle=lambda: True, log=print
    )
    dispatcher._start_scan()
    store.enqueue([_new("late")], explicit_ids=set())

    class Overflowed:
        def read(self) -> list[Event]:
            return [Event(None, "")]

    dispatcher._handle_events(Overflowed())  # type: ignore[arg-type]
    while dispatcher._scan is not None:
        dispatcher._read_chunk()
    names = set()
    while (entry := index.take_entry(block=False)) is not None:
        names.add(entry[1])
    assert "late.json" in names
    assert len(names) == 2 * RESCAN_CHUNK + 1


def test_a_blank_still_locked_by_a_stray_process_is_not_reused(tmp_path: Path) -> None:
    """A command's leftover that left its process group keeps the old job file's lock through
    fd 3; a job file published from that inode would be born locked."""
    blank = tmp_path / ".blank.1.0.tmp"
    blank.write_bytes(b"old text")
    stray = os.open(blank, os.O_RDONLY)
    try:
        fcntl.flock(stray, fcntl.LOCK_EX)
        assert reuse_tmp(blank, b"new text") is None
        assert not blank.exists()  # given up: the next commit creates a fresh file
    finally:
        os.close(stray)
    free = tmp_path / ".blank.1.1.tmp"
    free.write_bytes(b"old text, longer")
    reused = reuse_tmp(free, b"new text")
    assert reused is not None
    os.close(reused[1])
    assert free.read_bytes() == b"new text"


def test_the_committer_outlives_a_failure_to_refill_the_output_pool(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the committer thread died, outcomes stopped being recorded and, with the queue
    bounded, every worker thread blocked for good: no signal could stop the worker."""
    from queuectl import outputs

    real_create = outputs.OutputPool._create

    def no_space_for_the_committer(self: outputs.OutputPool) -> outputs.OutputFiles:
        if threading.current_thread().name == "queuectl-committer":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_create(self)

    monkeypatch.setattr(outputs.OutputPool, "_create", no_space_for_the_committer)
    store = Store(home)
    store.enqueue([_new(f"j{i}") for i in range(40)], explicit_ids=set())
    lines: list[str] = []
    pool = WorkerPool(store, 2, burst=True, log=lines.append)
    runner = threading.Thread(target=pool.run)
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert len(jobs_in(home.root, "completed")) == 40
    assert any("error: committer" in line for line in lines)


def test_a_deeply_nested_drop_is_rejected_and_the_worker_keeps_going(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """json raises RecursionError, not ValueError, for deep nesting: the dispatcher died on it,
    and so did every worker started while the file was there."""
    (qhome / "pending" / "deep.json").write_text("[" * 100_000)
    os.chmod(qhome / "pending" / "deep.json", 0o600)
    enqueue_job(qhome, {"id": "after", "command": "true"})
    worker = procs.worker(qhome, "--burst", log=tmp_path / "worker.log")
    assert wait_exit(worker) == 0
    assert jobs_in(qhome, "completed") == ["after"]
    wait_until(lambda: (qhome / "rejected" / "deep.json").exists(), message="the rejection")
    assert jobs_in(qhome, "pending") == []


def test_closed_standard_descriptors_never_become_a_job_lock(qhome: Path, tmp_path: Path) -> None:
    """With stdin/stdout/stderr closed, a job lock could get fd 0-2 and be overwritten before
    it reached the command as fd 3."""
    import subprocess
    import sys

    enqueue_job(qhome, {"id": "fd3", "command": "ls -l /proc/self/fd/3"})
    code = (
        "import os, sys; os.close(0); os.close(1); os.close(2); "
        "from queuectl.cli import main; sys.argv = ['queuectl', *sys.argv[1:]]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--home", str(qhome), "worker", "start", "--burst"],
        timeout=60,
    )
    assert result.returncode == 0
    out = (qhome / "logs" / "fd3" / "1.out").read_text()
    assert out.rstrip().endswith("processing/fd3.json")


def test_a_stop_now_between_claim_and_start_still_stops_the_command(
    home: Home, tmp_path: Path
) -> None:
    """The second signal kills the commands it finds running; one whose job was claimed a
    moment earlier, but not yet started, must not run to its end either."""
    marker = tmp_path / "ran-to-the-end"
    store = Store(home)
    store.enqueue([_new("late", f"sleep 2; touch {marker}")], explicit_ids=set())
    pool = WorkerPool(store, 1, burst=True, log=lambda line: None)
    take_output = pool.outputs.take

    def stop_now_then_take() -> object:  # called by _start after the claim's stop check
        pool.request_stop(now=True)  # what the second SIGTERM does
        return take_output()

    pool.outputs.take = stop_now_then_take  # type: ignore[method-assign]
    runner = threading.Thread(target=pool.run)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert not marker.exists()
    assert jobs_in(home.root, "pending") == ["late"]
