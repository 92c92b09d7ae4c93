"""A worker keeps going: committer failures, overflows, hostile drops, closed descriptors,
stop-now races, paced scans and a slow disk never stop it or leak what it holds."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl.job import JobState, job_from_input
from queuectl.storage.home import Home
from queuectl.storage.store import Store
from queuectl.worker.dispatch import RESCAN_CHUNK, Dispatcher, RunnableIndex
from queuectl.worker.pool import WorkerPool
from queuectl.worker.watch import Event

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
        store, index, stopping=threading.Event(), on_drained=None, is_idle=lambda: 0, log=print
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


def test_the_committer_outlives_a_failure_to_refill_the_output_pool(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the committer thread died, outcomes stopped being recorded and, with the queue
    bounded, every worker thread blocked for good: no signal could stop the worker."""
    from queuectl.worker import outputs

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


def test_a_worker_that_fails_to_start_leaves_no_registration_or_tmp_files(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the worker pre-creates its output files used to leave
    ``workers/<pid>.json`` behind (listed as a worker until the process exited) and the
    output files it had made so far in ``tmp/``."""
    from queuectl.worker import outputs

    real_create = outputs.OutputPool._create
    made: list[int] = []

    def full_after_two(self: outputs.OutputPool) -> outputs.OutputFiles:
        if len(made) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        made.append(1)
        return real_create(self)

    monkeypatch.setattr(outputs.OutputPool, "_create", full_after_two)
    pool = WorkerPool(Store(home), 2, burst=True, log=lambda line: None)
    with pytest.raises(OSError):
        pool.run()
    assert made == [1, 1]
    assert sorted(os.listdir(home.workers)) == []
    assert [name for name in os.listdir(home.tmp) if not name.startswith(".")] == []


def test_stop_signals_are_handled_outside_the_main_thread(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python signal handler runs in the main thread between two bytecodes: a second
    SIGTERM that arrived while the first one's handler was inside ``Event.set`` took the
    event's lock again from the same thread, and the worker hung for good (seen in CI as
    a worker that never exited after two ^C). Signals are now taken by a thread of their
    own; afterwards the process has its handlers and mask back."""
    import signal

    started = tmp_path / "started"
    store = Store(home)
    store.enqueue([_new("long", f"touch {started}; sleep 300")], explicit_ids=set())
    lines: list[str] = []
    handled_in: list[str] = []
    pool = WorkerPool(store, 1, burst=False, log=lines.append)
    real_on_signal = pool._on_signal

    def on_signal(signum: int, frame: object) -> None:
        handled_in.append(threading.current_thread().name)
        real_on_signal(signum, None)

    monkeypatch.setattr(pool, "_on_signal", on_signal)

    def press_ctrl_c_twice() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # never taken here
        wait_until(started.exists, message="the command to start")
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: len(handled_in) == 1, message="the first signal")
        os.kill(os.getpid(), signal.SIGTERM)

    handler_before = signal.getsignal(signal.SIGTERM)
    presser = threading.Thread(target=press_ctrl_c_twice, daemon=True)
    presser.start()
    assert pool.run() == 0
    assert signal.getsignal(signal.SIGTERM) is handler_before
    presser.join()
    assert handled_in == ["queuectl-signals", "queuectl-signals"]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert [path.name for path in (home.root / "pending").iterdir()] == ["long.json"]


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


def test_closed_standard_descriptors_are_filled_and_the_spawn_refuses_low_ones(
    tmp_path: Path,
) -> None:
    """With stdin/stdout/stderr closed, a job lock or output file could get fd 0-2, which
    the spawn's dup2s onto 0-3 overwrite before copying: the worker fills closed standard
    descriptors with /dev/null at start, and the spawn refuses low ones outright."""
    import subprocess
    import sys

    from queuectl.worker.spawn import spawn_shell

    code = (
        "import os\n"
        "from queuectl.worker.pool import _standard_descriptors_open\n"
        "for fd in (0, 1, 2): os.close(fd)\n"
        "_standard_descriptors_open()\n"
        "fresh = os.open('/dev/null', os.O_RDONLY)\n"
        "assert fresh >= 3, fresh\n"
        "assert all(os.readlink(f'/proc/self/fd/{fd}') == '/dev/null' for fd in (0, 1, 2))\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0

    high = os.open(os.devnull, os.O_WRONLY)
    try:
        for low in (0, 1, 2):
            with pytest.raises(OSError, match="below 3"):
                spawn_shell("true", [], stdout=high, stderr=high, lock=low)
    finally:
        os.close(high)


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


def test_a_scan_reads_one_chunk_at_once_and_the_rest_later(store: Store) -> None:
    """A deep backlog must not be read up front (it took the interpreter from the first
    jobs): the README promises one chunk at once, then paced chunks."""
    store.enqueue([_new(f"j{i:05d}") for i in range(2 * RESCAN_CHUNK + 5)], explicit_ids=set())
    index = RunnableIndex()
    dispatcher = Dispatcher(
        store, index, stopping=threading.Event(), on_drained=None, is_idle=lambda: 0, log=print
    )
    dispatcher._start_scan()
    assert len(index) == RESCAN_CHUNK
    assert dispatcher._scan is not None
    first = index.take(block=False)
    assert first is not None and first[1] == "j00000.json"  # oldest first
    chunks = 1
    while dispatcher._scan is not None:
        dispatcher._read_chunk()
        chunks += 1
    assert len(index) == 2 * RESCAN_CHUNK + 5 - 1
    assert chunks == 4  # three chunks of files, then the step that finds the scan over


def test_commits_stay_bounded_while_the_disk_is_slow() -> None:
    """At most MAX_BATCH outcomes per commit, and worker threads wait once MAX_QUEUED are
    waiting (each holds a lock and output files open)."""
    from queuectl.storage.locks import Holder
    from queuectl.storage.store import Change, Claim
    from queuectl.worker.pipeline import MAX_BATCH, MAX_QUEUED, CommitQueue

    slow_disk = threading.Event()
    batches: list[int] = []
    queued_at_commit: list[int] = []

    class SlowCommits:
        def commit(self, changes: list[Change]) -> None:
            queued_at_commit.append(len(queue._items))
            batches.append(len(changes))
            slow_disk.wait()

    class SlowStore:
        commits = SlowCommits()

        @contextlib.contextmanager
        def changing(self, job_id: str) -> Iterator[None]:
            yield

    class NoOutputs:
        def place(self, *args: object) -> None: ...
        def refill(self) -> None: ...

    queue = CommitQueue(SlowStore(), print, NoOutputs())  # type: ignore[arg-type]
    total = MAX_QUEUED + 2 * MAX_BATCH
    job = _new("x")

    def submit_all() -> None:
        for _ in range(total):
            queue.submit(
                Change(job, "completed"), Claim(job, Holder(-1), Path("x"), JobState.PENDING)
            )

    submitter = threading.Thread(target=submit_all)
    submitter.start()
    wait_until(lambda: len(queue._items) >= MAX_QUEUED, message="the queue to fill")
    slow_disk.set()
    submitter.join(timeout=30)
    queue.close()
    assert sum(batches) == total
    assert max(batches) <= MAX_BATCH
    assert max(queued_at_commit) <= MAX_QUEUED
