"""Regressions for what a hostile tester found in the workflow features (queues, GPU places,
unique keys, rebuild, hostile queue files, the CLI's shapes). Each test failed before its fix.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import QueueError
from queuectl.job import Job, job_from_input, utcnow
from queuectl.storage.gpus import Devices
from queuectl.storage.home import Home
from queuectl.storage.locks import Holder, change_offset, slot_offset
from queuectl.storage.slots import free_slots, has_room, running_slots, take_slot
from queuectl.storage.store import Store

from .conftest import run_cli, start_worker, wait_exit, wait_until
from .workflow_support import invoke, ok


@pytest.fixture
def h(tmp_path: Path) -> Path:
    path = tmp_path / "qhome"
    path.mkdir(mode=0o700)
    ok(invoke(path, "status"))
    return path


# ------------------------------------------------------------------ A1: lowering a limit drains


def _run(store: Store, name: str) -> Holder:
    """A stand-in for a running job of queue ``name``: a description holding its slot."""
    queue = store.queues.get(name)
    assert queue is not None
    holder = store.locks.holder()
    assert take_slot(holder, store.locks, queue) is not None
    return holder


def _can_start(store: Store, name: str) -> bool:
    queue = store.queues.get(name)
    assert queue is not None
    probe = store.locks.holder()
    try:
        slot = take_slot(probe, store.locks, queue)
    finally:
        probe.close()
    assert (slot is not None) == has_room(store.locks, queue)
    assert (slot is not None) == bool(free_slots(store.locks, queue, limit=8))
    return slot is not None


def test_lowering_an_unlimited_queue_drains_every_slot_above_the_new_limit(store: Store) -> None:
    store.queues.add("q", 0)
    running = [_run(store, "q") for _ in range(4)]  # slots 0..3
    store.queues.set_parallel("q", 1)
    running[0].close()  # slot 0 frees, 3 still run above the new limit of 1
    assert not _can_start(store, "q")
    assert not store.queues.settle_high_water("q")
    queue = store.queues.get("q")
    assert queue is not None and running_slots(store.locks, queue) == 3
    for holder in running[1:]:
        holder.close()
    assert store.queues.settle_high_water("q")
    assert _can_start(store, "q")


def test_a_limit_raised_to_unlimited_and_lowered_again_drains(store: Store) -> None:
    store.queues.add("q", 2)
    running = [_run(store, "q") for _ in range(2)]  # slots 0, 1
    store.queues.set_parallel("q", 0)
    running += [_run(store, "q") for _ in range(2)]  # slots 2, 3
    store.queues.set_parallel("q", 2)
    running[0].close()
    assert not _can_start(store, "q")
    for holder in running[1:]:
        holder.close()
    assert store.queues.settle_high_water("q")
    assert _can_start(store, "q")


def test_settling_looks_at_the_slots_itself_under_the_change_lock(store: Store) -> None:
    """A worker's earlier look ("drained") must not settle a queue whose slots above the
    limit were taken since (the limit went up and down again in between)."""
    store.queues.add("q", 4)
    store.queues.set_parallel("q", 1)  # nothing runs: no draining at all
    queue = store.queues.get("q")
    assert queue is not None and queue.high_water == 1
    store.queues.set_parallel("q", 4)
    running = [_run(store, "q") for _ in range(4)]
    store.queues.set_parallel("q", 1)
    assert not store.queues.settle_high_water("q")
    queue = store.queues.get("q")
    assert queue is not None and queue.high_water == 4
    running[0].close()
    assert not _can_start(store, "q")
    assert store.locks.is_held(slot_offset("q", 3))
    for holder in running[1:]:
        holder.close()


# ------------------------------------------------------------------ A3: remove vs enqueue/edit


def _new(job_id: str, **fields: object) -> Job:
    return job_from_input({"id": job_id, "command": "true", **fields}, default_max_retries=0)


def _queue_change_lock_is_free(store: Store, name: str) -> bool:
    probe = store.locks.holder()
    try:
        return probe.take(change_offset(f"queue:{name}"))
    finally:
        probe.close()


def test_an_enqueue_holds_its_queue_against_removal_until_it_is_published(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.queues.add("q", 1)
    seen: list[bool] = []
    publish = store.commits.publish_new

    def observed(group: list[Job]) -> None:
        seen.append(_queue_change_lock_is_free(store, "q"))  # what a remove would need
        publish(group)

    monkeypatch.setattr(store.commits, "publish_new", observed)
    store.enqueue([_new("j1", queue="q")])
    assert seen == [False]
    with pytest.raises(QueueError, match="still has 1 unfinished"):
        store.queues.remove("q", store.unfinished_in)
    assert store.queues.get("q") is not None


def test_an_edit_into_a_queue_holds_it_against_removal(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.queues.add("q", 1)
    store.enqueue([_new("j1")])
    seen: list[bool] = []
    commit = store.workflow.commits.commit

    def observed(changes: list[Any]) -> Any:
        seen.append(_queue_change_lock_is_free(store, "q"))
        return commit(changes)

    monkeypatch.setattr(store.workflow.commits, "commit", observed)
    store.workflow.edit("j1", {"queue": "q"}, utcnow())
    assert seen == [False]
    with pytest.raises(QueueError, match="unfinished"):
        store.queues.remove("q", store.unfinished_in)


def test_removal_counts_the_jobs_under_the_queue_lock(store: Store) -> None:
    store.queues.add("q", 1)
    looked: list[bool] = []

    def count(name: str) -> int:
        looked.append(_queue_change_lock_is_free(store, name))
        return 0

    store.queues.remove("q", count)
    assert looked == [False]
    assert store.queues.get("q") is None


def _strand_jobs(home: Path) -> None:
    """Jobs of queue q whose queue file is then removed behind queuectl's back (what a
    remove racing an enqueue used to leave)."""
    ok(invoke(home, "queue", "add", "q", "--parallel", "1"))
    for i in (1, 2):
        ok(invoke(home, "add", "--id", f"s{i}", "-q", "q", "--", "true"))
    (home / "queues" / "q.json").unlink()


def test_jobs_of_a_missing_queue_are_reported_and_a_burst_worker_exits_1(h: Path) -> None:
    _strand_jobs(h)
    listed = {row["name"]: row for row in json.loads(ok(invoke(h, "queue", "list", "--json")))}
    assert listed["default"]["pending"] == 0
    assert listed["q"]["pending"] == 2
    assert "no queue named 'q'" in listed["q"]["problem"]
    text = ok(invoke(h, "queue", "list"))
    assert "queue q: no queue named 'q'" in text and "2 job(s) of it cannot run" in text
    status = json.loads(ok(invoke(h, "status", "--json")))
    assert any(q["name"] == "q" and "problem" in q for q in status["queues"])
    assert "2 job(s) of it cannot run" in ok(invoke(h, "status"))
    checked = invoke(h, "fsck")
    assert checked.exit_code == 1
    assert "2 job(s) of queue q cannot run: no queue named 'q'" in checked.stdout
    assert "s1 s2" in checked.stdout
    done = run_cli(h, "worker", "start", "--burst", "--count", "2", timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("cannot run: no queue named 'q'") == 1, done.stderr
    assert "burst: giving up" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ C2: hostile queue files


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _patch(**fields: object) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = json.loads(path.read_text())
        data.update(fields)
        path.write_text(json.dumps(data))

    return apply


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda p: p.write_text("{bad"), "not valid JSON"),
        (_fifo, "not a regular file"),
        (_dev_zero, "is a symbolic link"),
        (_patch(parallel=100000), "'parallel' must be a whole number"),
        (_patch(parallel="1"), "'parallel' must be a whole number"),
        (_patch(paused="yes"), "'paused' must be true or false"),
    ],
    ids=["corrupt", "fifo", "dev-zero", "huge", "string", "paused-yes"],
)
def test_a_hostile_queue_file_is_reported_everywhere(
    h: Path, spoil: Callable[[Path], None], reason: str
) -> None:
    ok(invoke(h, "queue", "add", "q", "--parallel", "1"))
    ok(invoke(h, "add", "--id", "b1", "-q", "q", "--", "true"))
    spoil(h / "queues" / "q.json")
    listed = {row["name"]: row for row in json.loads(ok(invoke(h, "queue", "list", "--json")))}
    assert listed["default"]["pending"] == 0
    assert listed["q"]["pending"] == 1 and reason in listed["q"]["problem"]
    assert "broken" in ok(invoke(h, "queue", "list"))
    checked = invoke(h, "fsck")
    assert checked.exit_code == 1
    assert f"queue q: queues/q.json: {reason}" in checked.stdout
    done = run_cli(h, "worker", "start", "--burst", timeout=120)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error: jobs of queue" in line]
    assert len(lines) == 1 and reason in lines[0], done.stderr
    assert "burst: giving up" in done.stderr
    assert "Traceback" not in done.stderr
    repaired = invoke(h, "fsck", "--repair")
    assert "restored queues/q.json from the journal" in repaired.stdout
    assert invoke(h, "fsck").exit_code == 0
    listed = {row["name"]: row for row in json.loads(ok(invoke(h, "queue", "list", "--json")))}
    assert listed["q"]["problem"] is None and listed["q"]["parallel"] == 1


# ------------------------------------------------------------------ C1: hand-edited queue file


def test_fsck_names_what_a_hand_edited_queue_file_changed_and_repair_restores_it(h: Path) -> None:
    ok(invoke(h, "queue", "add", "q", "--parallel", "1"))
    path = h / "queues" / "q.json"
    data = json.loads(path.read_text())
    data["parallel"] = 3
    path.write_text(json.dumps(data))
    checked = invoke(h, "fsck")
    assert checked.exit_code == 1
    assert (
        "queue q disagrees with the journal: parallel is 3 in queues/q.json, 1 in the journal"
        in checked.stdout
    )
    repaired = invoke(h, "fsck", "--repair")
    assert "restored queues/q.json from the journal" in repaired.stdout
    assert json.loads(path.read_text())["parallel"] == 1
    assert invoke(h, "fsck").exit_code == 0


# ------------------------------------------------------------------ A2: fewer jobs per device


def _devices(settings: dict[str, Any], store: Store) -> Devices:
    return Devices(store.locks, lambda: settings)


def test_lowering_jobs_per_device_drains_the_places_above_it(store: Store) -> None:
    settings: dict[str, Any] = {"gpus": "0", "gpu-jobs-per-device": 2}
    devices = _devices(settings, store)
    running = [store.locks.holder() for _ in range(2)]
    assert [devices.take(holder, 1) for holder in running] == [["0"], ["0"]]
    settings["gpu-jobs-per-device"] = 1
    assert devices.in_use() == {"0": 2}
    running[0].close()  # place 0 frees; a job still runs in place 1, above the new setting
    probe = store.locks.holder()
    assert devices.take(probe, 1) is None
    assert devices.free() == 0
    running[1].close()
    assert devices.free() == 1
    assert devices.take(probe, 1) == ["0"]
    probe.close()


def test_status_counts_every_job_on_a_device(h: Path) -> None:
    ok(invoke(h, "config", "set", "gpus", "0"))
    ok(invoke(h, "config", "set", "gpu-jobs-per-device", "2"))
    store = Store(Home(h))
    running = [store.locks.holder() for _ in range(2)]
    assert all(store.devices.take(holder, 1) == ["0"] for holder in running)
    ok(invoke(h, "config", "set", "gpu-jobs-per-device", "1"))
    assert "0: 2/1" in ok(invoke(h, "status"))
    assert json.loads(ok(invoke(h, "status", "--json")))["gpus"] == {"0": 2}
    for holder in running:
        holder.close()


# ------------------------------------------------------------------ A4, A5, D5: unique keys


def test_rebuild_after_a_wipe_recreates_unique_keys(h: Path) -> None:
    first = ok(invoke(h, "add", "--unique-key", "K", "--", "true")).strip()
    for folder in ("pending", "unique"):
        for path in (h / folder).iterdir():
            path.unlink()
    ok(invoke(h, "journal", "rebuild"))
    again = invoke(h, "add", "--unique-key", "K", "--", "true")
    assert again.exit_code == 0 and again.stdout.strip() == first
    assert invoke(h, "fsck").exit_code == 0


def test_fsck_checks_unique_keys_and_repair_restores_them(h: Path) -> None:
    first = ok(invoke(h, "add", "--unique-key", "K", "--", "true")).strip()
    for path in (h / "unique").iterdir():
        path.unlink()
    checked = invoke(h, "fsck")
    assert checked.exit_code == 1
    assert "unique key 'K': " in checked.stdout and f"but job {first} holds it" in checked.stdout
    assert f"now names job {first}" in invoke(h, "fsck", "--repair").stdout
    assert invoke(h, "fsck").exit_code == 0
    assert ok(invoke(h, "add", "--unique-key", "K", "--", "true")).strip() == first


def test_restart_is_refused_while_another_job_holds_the_key(h: Path) -> None:
    ok(invoke(h, "add", "--id", "j1", "--unique-key", "K", "--", "true"))
    ok(invoke(h, "cancel", "j1"))
    ok(invoke(h, "add", "--id", "j2", "--unique-key", "K", "--", "true"))
    refused = invoke(h, "restart", "j1")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "unique key 'K' is held by job j2 (pending)" in refused.stderr
    assert "cannot restart j1: cannot restart" not in refused.stderr
    assert json.loads(ok(invoke(h, "show", "j1", "--json")))["state"] == "cancelled"
    ok(invoke(h, "cancel", "j2"))
    ok(invoke(h, "restart", "j1"))  # free again: j1 holds K now
    assert ok(invoke(h, "add", "--unique-key", "K", "--", "true")).strip() == "j1"


def test_dlq_retry_is_refused_while_another_job_holds_the_key(h: Path) -> None:
    ok(invoke(h, "add", "--id", "d1", "--max-retries", "0", "--unique-key", "K", "--", "false"))
    done = run_cli(h, "worker", "start", "--burst", timeout=120)
    assert done.returncode == 0, done.stderr
    ok(invoke(h, "add", "--id", "d2", "--hold", "--unique-key", "K", "--", "true"))
    refused = invoke(h, "dlq", "retry", "d1")
    assert refused.exit_code == 1
    assert "unique key 'K' is held by job d2 (held)" in refused.stderr
    assert json.loads(ok(invoke(h, "show", "d1", "--json")))["state"] == "dead"


def test_unique_for_counts_the_window_of_the_new_job(h: Path) -> None:
    ok(invoke(h, "add", "--id", "w1", "--unique-key", "K", "--unique-for", "1h", "--", "true"))
    done = run_cli(h, "worker", "start", "--burst", timeout=120)
    assert done.returncode == 0, done.stderr
    within = invoke(h, "add", "--unique-key", "K", "--unique-for", "1h", "--", "true")
    assert within.stdout.strip() == "w1"
    plain = ok(invoke(h, "add", "--unique-key", "K", "--", "true")).strip()
    assert plain != "w1"  # no window of its own: only unfinished jobs hold the key


def test_unique_for_without_unique_key_is_a_usage_error(h: Path) -> None:
    refused = invoke(h, "add", "--unique-for", "1h", "--", "true")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "--unique-key" in refused.stderr
    refused = invoke(h, "enqueue", input='{"command": "true", "unique_for": 60}')
    assert refused.exit_code == 2


# ------------------------------------------------------------------ D1: wait --json always


def test_wait_json_prints_every_job_on_a_timeout_and_an_unknown_id(h: Path) -> None:
    ok(invoke(h, "add", "--id", "w", "--", "true"))
    timed = invoke(h, "wait", "--json", "--timeout", "0", "w")
    assert timed.exit_code == 124
    assert json.loads(timed.stdout) == [
        {"id": "w", "state": "timeout", "exit_code": None, "signal": None}
    ]
    unknown = invoke(h, "wait", "--json", "w", "ghost")
    assert unknown.exit_code == 1
    states = {r["id"]: r["state"] for r in json.loads(unknown.stdout)}
    assert states == {"w": "pending", "ghost": "unknown"}
    assert "no job with id 'ghost'" in unknown.stderr
    drained = invoke(h, "wait", "--json", "--queue", "default", "--timeout", "0")
    assert drained.exit_code == 124
    assert json.loads(drained.stdout) == {
        "queue": "default",
        "state": "timeout",
        "waiting": 1,
        "running": 0,
    }


def test_wait_json_gives_a_signal_killed_job_128_plus_n(h: Path) -> None:
    ok(invoke(h, "add", "--id", "k", "--max-retries", "0", "--", "kill -9 $$"))
    done = run_cli(h, "worker", "start", "--burst", timeout=120)
    assert done.returncode == 0, done.stderr
    waited = invoke(h, "wait", "--json", "k")
    assert waited.exit_code == 137
    assert json.loads(waited.stdout) == [
        {"id": "k", "state": "dead", "exit_code": 137, "signal": 9}
    ]


# ------------------------------------------------------------------ D2, D3, D4, D6: CLI shapes


def test_a_refusal_says_cannot_verb_id_once(h: Path) -> None:
    ok(invoke(h, "add", "--id", "j5", "--", "true"))
    ok(invoke(h, "cancel", "j5"))
    for verb in ("hold", "release", "edit"):
        args = [verb, "j5"] + (["--priority", "1"] if verb == "edit" else [])
        refused = invoke(h, *args)
        assert refused.exit_code == 1
        assert refused.stderr.count(f"cannot {verb} j5") == 1, refused.stderr
    ok(invoke(h, "add", "--id", "j6", "--", "true"))
    refused = invoke(h, "restart", "--json", "j6")
    assert refused.exit_code == 1
    (entry,) = json.loads(refused.stdout)
    assert entry["error"] == "it has not finished (pending)"
    assert refused.stderr.count("cannot restart j6") == 1


def test_batch_commands_take_an_id_given_twice_once_and_say_the_state_once(h: Path) -> None:
    ok(invoke(h, "add", "--id", "j1", "--", "true"))
    assert ok(invoke(h, "hold", "j1", "j1")).splitlines() == ["held j1"]
    assert ok(invoke(h, "release", "j1", "j1")).splitlines() == ["released j1 (pending)"]


def test_the_default_queue_always_exists(h: Path) -> None:
    refused = invoke(h, "queue", "add", "default")
    assert refused.exit_code == 1 and "already exists" in refused.stderr
    ok(invoke(h, "queue", "set", "default", "--parallel", "2"))
    again = invoke(h, "queue", "add", "default")
    assert again.exit_code == 1 and "already exists" in again.stderr
    (row,) = json.loads(ok(invoke(h, "queue", "list", "--json")))
    assert (row["name"], row["parallel"]) == ("default", 2)


@pytest.mark.parametrize("command", ["pause", "resume", "wait"])
def test_a_command_given_nothing_says_what_is_missing(h: Path, command: str) -> None:
    refused = invoke(h, command)
    assert refused.exit_code == 2
    assert "missing" in refused.stderr and "not both" not in refused.stderr


# ------------------------------------------------------------------ C3, D6: what list/show print


def test_list_and_show_say_plainly_which_ids_a_blocked_job_waits_for(h: Path) -> None:
    ok(invoke(h, "add", "--id", "a", "--hold", "--", "true"))
    ok(invoke(h, "add", "--id", "c", "--", "true"))
    ok(invoke(h, "add", "--id", "b", "--after", "a", "--after", "c", "--label", "x", "true"))
    listed = ok(invoke(h, "list"))
    row = next(line for line in listed.splitlines() if line.startswith("b "))
    assert "after a c" in row
    (entry,) = json.loads(ok(invoke(h, "list", "--json", "--state", "blocked")))
    assert entry["waiting_for"] == ["a", "c"]
    shown = ok(invoke(h, "show", "b"))
    assert "[" not in shown and "'a'" not in shown
    assert any(line.split() == ["after", "a", "c"] for line in shown.splitlines())
    assert "waiting for: a c" in shown


def test_table_cells_escape_control_characters(h: Path) -> None:
    ok(invoke(h, "add", "--id", "x", "--", "printf a\x01b\x1b[2J"))
    for args in (["list"], ["show", "x"]):
        out = ok(invoke(h, *args))
        assert "\x01" not in out and "\x1b" not in out, args
        assert "a\\x01b" in out


# ------------------------------------------------------------------ C4: a killed worker's tmp/


def test_fsck_groups_a_killed_workers_tmp_files_and_repair_removes_them(h: Path) -> None:
    worker = start_worker(h, "--count", "4")
    try:
        wait_until(lambda: len(list((h / "tmp").iterdir())) >= 2, message="tmp files")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        wait_exit(worker)
    left = list((h / "tmp").iterdir())
    checked = invoke(h, "fsck")
    assert checked.exit_code == 1
    findings = [line for line in checked.stdout.splitlines() if line.startswith("stale-tmp")]
    assert len(findings) == 1, checked.stdout
    assert f"{len(left)} leftover temporary files" in findings[0]
    repaired = invoke(h, "fsck", "--repair")
    assert f"removed {len(left)} of {len(left)} file(s)" in repaired.stdout
    assert list((h / "tmp").iterdir()) == []
