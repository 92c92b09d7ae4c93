"""Workflows: named queues with a parallelism limit that holds across every worker process
and thread of a home, the slot each running job gets, and workers that serve only some
queues.

Concurrency is computed from the intervals the commands record themselves
(``workflow_support.gate_command``): a run's real life encloses what it recorded, so two
recorded intervals that overlap prove two jobs ran at once, and the checks cannot be fooled
by a slow test process.
"""

from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path

import pytest

from .conftest import Procs, jobs_in, live_worker_info, settled_in, wait_until
from .workflow_support import (
    add,
    assert_one_line_error,
    cli_ok,
    gate_command,
    invoke,
    job_file,
    max_overlap,
    ok,
    queues,
    read_runs,
    run_in,
    started,
    stop,
    wait_started,
    where,
)


@pytest.fixture
def h(tmp_path: Path) -> Path:
    path = tmp_path / "qhome"
    path.mkdir(mode=0o700)  # an empty folder: a new home, set up by the first command
    ok(invoke(path, "status"))
    return path


def _queue_list(home: Path) -> dict[str, dict]:
    listed = json.loads(ok(invoke(home, "queue", "list", "--json")))
    assert isinstance(listed, list), listed
    return {entry["name"]: entry for entry in listed}


# ------------------------------------------------------------------ the queue commands


def test_default_queue_always_exists_unlimited_and_unpaused(h: Path) -> None:
    listed = _queue_list(h)
    assert list(listed) == ["default"]
    entry = listed["default"]
    assert set(entry) >= {"name", "parallel", "paused", "pending", "running", "failed"}
    assert set(entry) >= {"held", "blocked"}
    assert (entry["parallel"], entry["paused"]) == (0, False)
    assert [entry[k] for k in ("pending", "running", "failed", "held", "blocked")] == [0] * 5


def test_queue_add_set_list_remove(h: Path) -> None:
    ok(invoke(h, "queue", "add", "gpu", "--parallel", "2"))
    ok(invoke(h, "queue", "add", "batch"))
    assert (h / "queues" / "gpu.json").is_file()
    assert (h / "queues" / "batch.json").is_file()
    listed = _queue_list(h)
    assert sorted(listed) == ["batch", "default", "gpu"]
    assert (listed["gpu"]["parallel"], listed["gpu"]["paused"]) == (2, False)

    ok(invoke(h, "queue", "set", "gpu", "--parallel", "0"))  # 0: unlimited
    assert _queue_list(h)["gpu"]["parallel"] == 0
    ok(invoke(h, "queue", "set", "gpu", "--parallel", "5"))
    assert _queue_list(h)["gpu"]["parallel"] == 5

    ok(invoke(h, "queue", "remove", "batch"))
    assert sorted(_queue_list(h)) == ["default", "gpu"]
    assert not (h / "queues" / "batch.json").exists()
    table = ok(invoke(h, "queue", "list"))
    assert "gpu" in table and "default" in table and "batch" not in table


def test_queue_list_json_is_an_indented_array(h: Path) -> None:
    ok(invoke(h, "queue", "add", "q", "--parallel", "3"))
    out = ok(invoke(h, "queue", "list", "--json"))
    data = json.loads(out)
    assert isinstance(data, list)
    assert out == json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", ["../x", "a b", ".hidden", "x" * 129, "a/b"])
def test_queue_names_follow_the_job_id_rules(h: Path, name: str) -> None:
    ok(invoke(h, "queue", "add", "fine-name_1.2"))
    assert_one_line_error(invoke(h, "queue", "add", name), 2)
    assert sorted(_queue_list(h)) == ["default", "fine-name_1.2"]


def test_negative_parallel_is_refused(h: Path) -> None:
    ok(invoke(h, "queue", "add", "q", "--parallel", "1"))
    assert invoke(h, "queue", "add", "r", "--parallel", "-1").exit_code == 2
    assert invoke(h, "queue", "set", "q", "--parallel", "-1").exit_code == 2
    assert _queue_list(h)["q"]["parallel"] == 1
    assert "r" not in _queue_list(h)


def test_unknown_queue_names_are_usage_errors(h: Path) -> None:
    ok(invoke(h, "queue", "add", "real"))
    assert_one_line_error(invoke(h, "queue", "set", "nope", "--parallel", "1"), 2, "nope")
    assert_one_line_error(invoke(h, "queue", "remove", "nope"), 2, "nope")


def test_the_default_queue_cannot_be_removed(h: Path) -> None:
    ok(invoke(h, "queue", "add", "other"))
    invoke(h, "queue", "remove", "default")  # refused, whatever the message
    assert "default" in _queue_list(h)
    assert ok(invoke(h, "add", "true"))


@pytest.mark.parametrize("via", ["add", "enqueue", "enqueue-flag"])
def test_enqueue_into_a_missing_queue_exits_2_with_a_hint(h: Path, via: str) -> None:
    ok(invoke(h, "queue", "add", "exists"))
    if via == "add":
        result = invoke(h, "add", "--queue", "gpu", "true")
    elif via == "enqueue":
        result = invoke(h, "enqueue", '{"command": "true", "queue": "gpu"}')
    else:
        result = invoke(h, "enqueue", "--queue", "gpu", '{"command": "true"}')
    assert_one_line_error(result, 2, "gpu", "queuectl queue add")
    assert list((h / "pending").iterdir()) == []


@pytest.mark.parametrize("state", ["pending", "held", "blocked"])
def test_queue_remove_is_refused_while_the_queue_has_waiting_jobs(h: Path, state: str) -> None:
    ok(invoke(h, "queue", "add", "reports"))
    ok(invoke(h, "add", "--id", "dep", "--run-at", "2099-01-01T00:00:00Z", "true"))
    options = {"pending": [], "held": ["--hold"], "blocked": ["--after", "dep"]}[state]
    ok(invoke(h, "add", "--id", "j", "--queue", "reports", *options, "true"))
    assert where(h, "j") == [state]

    result = invoke(h, "queue", "remove", "reports")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "reports" in result.stderr  # says which queue, and why
    assert "job" in result.stderr or state in result.stderr
    assert "reports" in _queue_list(h)
    assert (h / "queues" / "reports.json").exists()
    if state == "pending":
        ok(invoke(h, "cancel", "j"))  # finished jobs do not keep a queue
        ok(invoke(h, "queue", "remove", "reports"))
        assert "reports" not in _queue_list(h)
        assert_one_line_error(
            invoke(h, "add", "--queue", "reports", "true"), 2, "queuectl queue add"
        )


def test_queue_list_counts_every_kind_of_unfinished_job_and_remove_waits_for_them(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "config", "set", "backoff-base", "1000")  # a failed job stays in failed/
    cli_ok(qhome, "queue", "add", "q", "--parallel", "1")
    procs.worker(qhome, "--count", "3", log=tmp_path / "worker.log")
    add(qhome, "--id", "F", "--queue", "q", "--max-retries", "1", "exit 1")
    wait_until(lambda: settled_in(qhome, "failed", "F"), message="F to fail once")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    add(qhome, "--id", "R", "--queue", "q", gate_command(stamps))
    wait_started(stamps, 1)
    add(qhome, "--id", "P", "--queue", "q", "true")  # no free slot: stays pending
    add(qhome, "--id", "H", "--queue", "q", "--hold", "true")
    add(qhome, "--id", "B", "--queue", "q", "--after", "P", "true")
    add(qhome, "--id", "other", "true")  # another queue is not counted here
    wait_until(lambda: settled_in(qhome, "completed", "other"), message="the default job")

    q = queues(qhome)["q"]
    counts = {k: q[k] for k in ("pending", "running", "failed", "held", "blocked")}
    assert counts == {"pending": 1, "running": 1, "failed": 1, "held": 1, "blocked": 1}
    assert q["parallel"] == 1
    d = queues(qhome)["default"]
    assert [d[k] for k in ("pending", "running", "failed", "held", "blocked")] == [0] * 5

    refused = run_in(qhome, "queue", "remove", "q")
    assert refused.returncode == 1, refused.stderr
    (stamps / "R.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "B"), message="R, then P, then B to run")
    assert run_in(qhome, "queue", "remove", "q").returncode == 1  # F waits, H is held
    cli_ok(qhome, "cancel", "F")
    assert run_in(qhome, "queue", "remove", "q").returncode == 1  # H is held
    cli_ok(qhome, "release", "H")
    wait_until(lambda: settled_in(qhome, "completed", "H"), message="H to run once released")
    cli_ok(qhome, "queue", "remove", "q")
    assert "q" not in queues(qhome)


# ------------------------------------------------------------------ the limit


def test_limit_2_holds_across_3_processes_of_4_threads_and_other_queues_are_not_held_back(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """The required test: 30 jobs in a ``--parallel 2`` queue served by 12 threads in 3
    processes. The jobs wait at a gate until the test opens it, so while it is closed the
    queue sits at its limit with 28 jobs waiting: jobs of the (unlimited) default queue
    enqueued behind them must still complete. Then the queue drains, never 3 at once."""
    cli_ok(qhome, "queue", "add", "lim", "--parallel", "2")
    stamps, gate = tmp_path / "stamps", tmp_path / "gate"
    stamps.mkdir()
    workers = [
        procs.worker(qhome, "--count", "4", log=tmp_path / f"worker{n}.log") for n in range(3)
    ]
    wait_until(lambda: len(live_worker_info(qhome)) == 3, message="3 registered workers")
    limited = [f"lim-{n:02d}" for n in range(30)]
    command = gate_command(stamps, release=gate, work=0.15)
    lines = "".join(
        json.dumps({"id": job_id, "queue": "lim", "command": command}) + "\n" for job_id in limited
    )
    cli_ok(qhome, "enqueue", "-", input=lines)
    wait_started(stamps, 2)  # the queue reached its limit (and would show a third)

    others = [f"free-{n}" for n in range(6)]
    for job_id in others:
        add(qhome, "--id", job_id, "true")
    wait_until(
        lambda: all(settled_in(qhome, "completed", job_id) for job_id in others),
        message="the default queue's jobs to complete behind the limited queue",
    )
    assert jobs_in(qhome, "completed") == others  # none of lim-*: the gate is still closed
    assert len(started(stamps)) == 2, sorted(started(stamps))

    gate.touch()
    wait_until(
        lambda: all(settled_in(qhome, "completed", job_id) for job_id in limited),
        timeout=90,
        message="the limited queue to drain",
    )
    for worker in workers:
        stop(worker)

    runs = read_runs(stamps)
    assert sorted(runs) == limited
    assert max_overlap(list(runs.values())) == 2, sorted(
        (r.start, r.end, r.job_id) for r in runs.values()
    )
    assert {r.queue for r in runs.values()} == {"lim"}
    assert {r.slot for r in runs.values()} <= {0, 1}
    for a, b in combinations(runs.values(), 2):
        if a.start < b.end and b.start < a.end:
            assert a.slot != b.slot, f"{a} and {b} ran at once in the same slot"
    for job_id in limited[::7]:
        assert (job_file(qhome, job_id)["attempts"], job_file(qhome, job_id)["runs"]) == (1, 1)


def test_a_limited_queue_does_not_hold_back_a_single_thread_worker(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """Two single-thread workers, a ``--parallel 1`` queue with two jobs: the job that may
    not start yet must not occupy the other worker's only thread."""
    cli_ok(qhome, "queue", "add", "one", "--parallel", "1")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "1", log=tmp_path / "first.log")
    procs.worker(qhome, "--count", "1", log=tmp_path / "second.log")
    add(qhome, "--id", "busy", "--queue", "one", gate_command(stamps))
    add(qhome, "--id", "waiting", "--queue", "one", gate_command(stamps))
    wait_started(stamps, 1)
    # one thread runs `busy` (or `waiting`); the other thread must stay free for `later`
    add(qhome, "--id", "later", "true")
    wait_until(lambda: settled_in(qhome, "completed", "later"), message="the default queue job")
    assert len(started(stamps)) == 1
    runner = next(iter(started(stamps)))
    (stamps / f"{runner}.release").touch()
    wait_started(stamps, 2)
    for job_id in started(stamps):
        (stamps / f"{job_id}.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "waiting"), message="waiting")
    wait_until(lambda: settled_in(qhome, "completed", "busy"), message="busy")


def test_slots_are_the_lowest_free_index_within_the_limit(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "two", "--parallel", "2")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "4", log=tmp_path / "worker.log")
    add(qhome, "--id", "a", "--queue", "two", gate_command(stamps))
    add(qhome, "--id", "b", "--queue", "two", gate_command(stamps))
    wait_started(stamps, 2)
    runs = read_runs(stamps)
    assert {runs["a"].slot, runs["b"].slot} == {0, 1}
    assert {runs["a"].queue, runs["b"].queue} == {"two"}
    freed = runs["a"].slot

    (stamps / "a.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "a"), message="a to complete")
    add(qhome, "--id", "c", "--queue", "two", gate_command(stamps))
    wait_started(stamps, 3)
    assert read_runs(stamps)["c"].slot == freed  # the one a left, the other is b's
    for job_id in ("b", "c"):
        (stamps / f"{job_id}.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "c"), message="c to complete")


@pytest.mark.parametrize("queue", ["default", "unlimited"])
def test_slots_in_an_unlimited_queue_count_its_running_jobs(
    qhome: Path, procs: Procs, tmp_path: Path, queue: str
) -> None:
    if queue != "default":
        cli_ok(qhome, "queue", "add", queue, "--parallel", "0")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    procs.worker(qhome, "--count", "2", log=tmp_path / "w1.log")
    procs.worker(qhome, "--count", "2", log=tmp_path / "w2.log")
    for job_id in ("u1", "u2", "u3"):
        add(qhome, "--id", job_id, "--queue", queue, gate_command(stamps))
    wait_started(stamps, 3)  # unlimited: all three at once
    runs = read_runs(stamps)
    assert sorted(r.slot if r.slot is not None else -1 for r in runs.values()) == [0, 1, 2]
    assert {r.queue for r in runs.values()} == {queue}

    (stamps / "u1.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "u1"), message="u1 to complete")
    add(qhome, "--id", "u4", "--queue", queue, gate_command(stamps))
    wait_started(stamps, 4)
    assert read_runs(stamps)["u4"].slot == runs["u1"].slot
    for job_id in ("u2", "u3", "u4"):
        (stamps / f"{job_id}.release").touch()
    wait_until(lambda: settled_in(qhome, "completed", "u4"), message="u4 to complete")


def test_queue_set_applies_to_running_workers_and_kills_nothing(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    cli_ok(qhome, "queue", "add", "q", "--parallel", "1")
    stamps, gate = tmp_path / "stamps", tmp_path / "gate"
    stamps.mkdir()
    worker = procs.worker(qhome, "--count", "4", log=tmp_path / "worker.log")
    jobs = [f"j{n}" for n in range(5)]
    for job_id in jobs:
        add(qhome, "--id", job_id, "--queue", "q", gate_command(stamps, release=gate))
    wait_started(stamps, 1)
    assert len(started(stamps)) == 1

    cli_ok(qhome, "queue", "set", "q", "--parallel", "3")  # raised without a restart
    wait_started(stamps, 3)
    first_three = started(stamps)
    assert len(first_three) == 3
    cli_ok(qhome, "queue", "set", "q", "--parallel", "1")  # lowered: nothing is killed
    # Negative check: give a wrong implementation the time to kill a run or to start a
    # fourth one (a change applies within a second).
    time.sleep(1.5)
    assert started(stamps) == first_three
    assert sorted(jobs_in(qhome, "processing")) == sorted(first_three)
    assert worker.poll() is None

    gate.touch()
    wait_until(
        lambda: all(settled_in(qhome, "completed", job_id) for job_id in jobs),
        message="every job to complete",
    )
    runs = read_runs(stamps)
    for job_id in first_three:  # ran to their own end
        stored = job_file(qhome, job_id)
        assert (stored["attempts"], stored["last_exit_code"]) == (1, 0)
    last_two = [runs[j] for j in jobs if j not in first_three]
    latest_end = max(runs[j].end for j in first_three)
    for run in last_two:  # limit 1 again: only once all three had ended, one at a time
        assert run.start > latest_end, (run, latest_end)
        assert run.slot == 0
    assert max_overlap(last_two) == 1


# ------------------------------------------------------------------ workers for some queues


def test_worker_with_queue_options_serves_only_those_queues(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        cli_ok(qhome, "queue", "add", name)
    # enqueued first, so a worker that served them would take them before the later ones
    add(qhome, "--id", "in-c", "--queue", "c", "true")
    add(qhome, "--id", "in-default", "true")
    add(qhome, "--id", "in-a", "--queue", "a", "true")
    add(qhome, "--id", "in-b", "--queue", "b", "true")
    worker = procs.worker(qhome, "--count", "1", "--queue", "a", "--queue", "b")

    wait_until(
        lambda: settled_in(qhome, "completed", "in-a") and settled_in(qhome, "completed", "in-b"),
        message="the jobs of queues a and b",
    )
    # Negative check: in-c and in-default were enqueued first, so a worker serving them
    # would normally have taken them already; leave it a moment more to do it wrongly.
    time.sleep(1)
    assert where(qhome, "in-c") == ["pending"]
    assert where(qhome, "in-default") == ["pending"]
    stop(worker)

    default_only = procs.worker(qhome, "--count", "1", "--queue", "default")
    wait_until(lambda: settled_in(qhome, "completed", "in-default"), message="in-default")
    assert where(qhome, "in-c") == ["pending"]
    stop(default_only)


def test_worker_for_an_unknown_queue_is_a_usage_error(qhome: Path) -> None:
    cli_ok(qhome, "queue", "add", "real")
    done = run_in(qhome, "worker", "start", "--burst", "--queue", "real", "--queue", "nope")
    assert done.returncode == 2, done.stderr
    assert "nope" in done.stderr
