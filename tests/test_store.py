"""The state folders: durable commits, exclusive claims, dropped files, retries, put-back."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import AlreadyExists, NotFound, QueueError, StorageError
from queuectl.job import Job, JobState, format_time, job_from_input, utcnow
from queuectl.storage.home import Home
from queuectl.storage.journal import scan
from queuectl.storage.store import DROP_GRACE_SECONDS, Change, Claim, ClaimMiss, Store, with_state

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def new_job(job_id: str = "j1", command: str = "echo hi", max_retries: int = 3) -> Job:
    return job_from_input(
        {"id": job_id, "command": command, "max_retries": max_retries},
        default_max_retries=3,
        now=NOW,
    )


def journal(store: Store) -> list[dict[str, Any]]:
    result = scan(store.home.journal)
    assert result.torn_tail is None
    return [r.data for r in result.records]


def names(store: Store, state: JobState | str) -> list[str]:
    return sorted(os.listdir(store.home.state_dir(state)))


def place(store: Store, job: Job, state: JobState, **changes: object) -> Job:
    """Put ``job`` into ``state`` through a real commit."""
    moved = with_state(job, state, NOW, **changes)
    store.commits.commit([Change(moved, state.value)])
    return moved


def drop(store: Store, name: str, content: bytes | str) -> Path:
    path = store.home.state_dir(JobState.PENDING) / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def make_old(path: Path) -> None:
    old = time.time() - 3600
    os.utime(path, (old, old), follow_symlinks=False)


def mtime_now(path: Path) -> datetime:
    """A claim clock that reads exactly the file's mtime: the drop is brand new."""
    return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)


# ------------------------------------------------------------------ commits


def test_enqueue_writes_a_private_file_and_one_journal_record(store: Store) -> None:
    job = new_job()
    store.enqueue([job])
    path = store.home.job_path(JobState.PENDING, "j1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Job.from_json(path.read_bytes()) == job
    assert names(store, "tmp") == []
    records = journal(store)
    assert len(records) == 1
    assert records[0]["event"] == "enqueued"
    assert records[0]["job"] == job.to_dict()
    assert records[0]["pid"] == os.getpid()


def test_commit_moves_the_job_and_removes_the_old_copy(store: Store) -> None:
    job = new_job()
    store.enqueue([job])
    old = store.home.job_path(JobState.PENDING, "j1")
    done = with_state(job, JobState.COMPLETED, NOW + timedelta(seconds=1), attempts=1)
    store.commits.commit([Change(done, "completed", remove=old)])
    new = store.home.job_path(JobState.COMPLETED, "j1")
    assert not old.exists()
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    stored = Job.from_json(new.read_bytes())
    assert stored.state is JobState.COMPLETED
    assert stored.rev == 2 and stored.attempts == 1
    assert names(store, "pending") == [] and names(store, "tmp") == []
    records = journal(store)
    assert [r["event"] for r in records] == ["enqueued", "completed"]
    assert records[-1]["job"]["rev"] == 2
    assert records[-1]["job"]["state"] == "completed"


def test_commit_of_several_changes_is_journaled_in_order(store: Store) -> None:
    jobs = [new_job(f"b{n}") for n in range(10)]  # >= 8 files: the syncfs path
    store.enqueue(jobs)
    pending = store.home.state_dir(JobState.PENDING)
    changes = [
        Change(with_state(j, JobState.DEAD, NOW), "dead", remove=pending / f"{j.id}.json")
        for j in jobs
    ]
    store.commits.commit(changes)
    assert names(store, "dead") == sorted(f"b{n}.json" for n in range(10))
    assert names(store, "pending") == []
    assert [r["job"]["id"] for r in journal(store)[10:]] == [f"b{n}" for n in range(10)]


def test_enqueue_in_groups_reports_each_group(store: Store) -> None:
    jobs = [new_job(f"g{n}") for n in range(5)]
    groups: list[list[str]] = []
    store.enqueue(jobs, on_group=lambda group: groups.append([j.id for j in group]), chunk=2)
    assert groups == [["g0", "g1"], ["g2", "g3"], ["g4"]]
    assert len(journal(store)) == 5
    assert names(store, "pending") == sorted(f"g{n}.json" for n in range(5))


@pytest.mark.parametrize("state", list(JobState))
def test_enqueue_duplicate_id_in_any_state_raises(store: Store, state: JobState) -> None:
    existing = place(store, new_job("dup", command="echo old"), state)
    before = journal(store)
    with pytest.raises(AlreadyExists, match="'dup' already exists"):
        store.enqueue([new_job("other"), new_job("dup", command="echo new")])
    assert journal(store) == before
    assert Job.from_json(store.home.job_path(state, "dup").read_bytes()) == existing
    assert not store.home.job_path(JobState.PENDING, "other").exists()
    assert names(store, "tmp") == []


def test_enqueue_duplicate_within_one_batch_raises(store: Store) -> None:
    with pytest.raises(AlreadyExists):
        store.enqueue([new_job("same"), new_job("x"), new_job("same")])
    assert names(store, "pending") == []
    assert journal(store) == []


def test_enqueue_never_replaces_a_file_that_appeared_meanwhile(store: Store) -> None:
    """Even when the look-up is skipped (generated ids), RENAME_NOREPLACE guards the file."""
    store.enqueue([new_job("taken", command="echo original")])
    original = store.home.job_path(JobState.PENDING, "taken").read_bytes()
    before = journal(store)
    with pytest.raises(AlreadyExists):
        store.enqueue(
            [new_job("fresh"), new_job("taken", command="echo intruder")], explicit_ids=set()
        )
    assert store.home.job_path(JobState.PENDING, "taken").read_bytes() == original
    assert not store.home.job_path(JobState.PENDING, "fresh").exists()
    assert names(store, "tmp") == []
    # The group was journaled first (a job is visible only once journaled), then withdrawn:
    # replay keeps the original "taken" and knows no "fresh".
    added = journal(store)[len(before) :]
    assert [r["event"] for r in added] == ["enqueued", "enqueued", "withdrawn", "withdrawn"]
    from queuectl.admin.rebuild import winners

    won = winners(store)
    assert set(won) == {"taken"}
    assert won["taken"].event == "enqueued" and won["taken"].rev == 1
    kept = Job.from_json(original)
    assert won["taken"].generation == kept.generation


def test_enqueue_whose_journal_append_fails_leaves_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(entries: list[object]) -> None:
        raise StorageError("cannot append to the journal: No space left on device")

    monkeypatch.setattr(store.journal, "append_entries", broken)
    with pytest.raises(StorageError):
        store.enqueue([new_job("a"), new_job("b")])
    assert names(store, "pending") == []
    assert names(store, "tmp") == []


# ------------------------------------------------------------------ look-ups


def test_load_uses_the_folder_as_the_state(store: Store, home: Home) -> None:
    store.enqueue([new_job()])
    claim = store.claims.claim("j1.json", JobState.PENDING, "w", NOW)
    assert isinstance(claim, Claim)
    loaded = store.folders.load("j1")
    assert loaded.state is JobState.PROCESSING
    claim.release()
    with pytest.raises(NotFound):
        store.folders.load("missing")
    with pytest.raises(NotFound):
        store.folders.load("../j1")


def test_load_reports_a_damaged_file(store: Store) -> None:
    (store.home.state_dir(JobState.DEAD) / "broken.json").write_text("{oops")
    with pytest.raises(QueueError, match="damaged"):
        store.folders.load("broken")


def test_jobs_and_count_skip_in_flight_names(store: Store) -> None:
    store.enqueue([new_job("a"), new_job("b"), new_job("c")])
    pending = store.home.state_dir(JobState.PENDING)
    (pending / ".hidden.json").write_text("{}")
    (pending / "x.json.tmp").write_text("{}")
    (pending / "edit.json~").write_text("{}")
    assert store.folders.count(JobState.PENDING) == 3
    assert sorted(store.folders.names(JobState.PENDING)) == ["a.json", "b.json", "c.json"]
    assert sorted(j.id for j in store.folders.jobs(JobState.PENDING)) == ["a", "b", "c"]
    assert len(list(store.folders.jobs(JobState.PENDING, limit=2))) == 2


def test_job_names_are_oldest_first(store: Store) -> None:
    for n, name in enumerate(["z", "a", "m"]):
        store.enqueue([new_job(name)])
        moment = 1_000_000 + n
        os.utime(store.home.job_path(JobState.PENDING, name), (moment, moment))
    assert store.folders.names(JobState.PENDING) == ["z.json", "a.json", "m.json"]


# ------------------------------------------------------------------ claims


def test_claim_moves_the_file_and_keeps_its_text(store: Store) -> None:
    store.enqueue([new_job()])
    before = store.home.job_path(JobState.PENDING, "j1").read_bytes()
    claim = store.claims.claim("j1.json", JobState.PENDING, "host:1:1", NOW)
    assert isinstance(claim, Claim)
    try:
        assert claim.origin is JobState.PENDING
        assert claim.path == store.home.job_path(JobState.PROCESSING, "j1")
        assert claim.path.read_bytes() == before
        assert claim.job.worker == "host:1:1"
        assert claim.job.started_at == format_time(NOW)
        assert names(store, "pending") == []
    finally:
        claim.release()
    assert claim.fd == -1


def test_two_stores_claiming_one_file_only_one_wins(home: Home) -> None:
    first, second = Store(home), Store(home)
    first.enqueue([new_job()])
    a = first.claims.claim("j1.json", JobState.PENDING, "a", NOW)
    b = second.claims.claim("j1.json", JobState.PENDING, "b", NOW)
    assert isinstance(a, Claim)
    assert isinstance(b, ClaimMiss)
    assert b.locked  # the job's run lock: a holds it
    a.release()
    c = second.claims.claim("j1.json", JobState.PENDING, "b", NOW)
    assert isinstance(c, ClaimMiss) and c.reason == "gone"  # released, but claimed: gone


def test_concurrent_claims_by_two_stores_are_exclusive(home: Home) -> None:
    stores = [Store(home), Store(home)]
    jobs = [new_job(f"r{n:03d}") for n in range(60)]
    stores[0].enqueue(jobs)
    # a few dropped files too: adoption must be exclusive as well
    for n in range(10):
        drop(stores[0], f"drop{n}.json", json.dumps({"command": f"echo {n}"}))
    files = sorted(os.listdir(home.state_dir(JobState.PENDING)))
    barrier = threading.Barrier(4)
    claims: list[Claim] = []
    guard = threading.Lock()

    def racer(store: Store, order: list[str]) -> None:
        barrier.wait()
        for name in order:
            result = store.claims.claim(name, JobState.PENDING, "w", utcnow())
            if isinstance(result, Claim):
                with guard:
                    claims.append(result)
            else:
                assert not result.rejected, result.reason

    threads = [
        threading.Thread(target=racer, args=(stores[k % 2], files if k < 2 else files[::-1]))
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        won = Counter(c.job.id for c in claims)
        expected = {f"r{n:03d}" for n in range(60)} | {f"drop{n}" for n in range(10)}
        missing = expected - set(won)
        # a loser that saw "busy" may leave a job unclaimed; claim the rest now
        for job_id in sorted(missing):
            again = stores[0].claims.claim(f"{job_id}.json", JobState.PENDING, "w", utcnow())
            assert isinstance(again, Claim), (job_id, again)
            claims.append(again)
            won[job_id] += 1
        assert set(won) == expected
        assert set(won.values()) == {1}
        assert sorted(os.listdir(home.state_dir(JobState.PROCESSING))) == sorted(
            f"{j}.json" for j in expected
        )
        adopted = [r for r in journal(stores[0]) if r.get("file", "").startswith("drop")]
        assert sorted(r["job"]["id"] for r in adopted) == sorted(f"drop{n}" for n in range(10))
    finally:
        for c in claims:
            c.release()


def test_claimed_job_is_running_until_released(store: Store, home: Home) -> None:
    store.enqueue([new_job()])
    claim = store.claims.claim("j1.json", JobState.PENDING, "w", NOW)
    assert isinstance(claim, Claim)
    other = Store(home)
    assert other.recovery.is_running("j1") and not other.recovery.orphan("j1.json")
    assert other.recovery.recover_orphan("j1.json", lambda job: job) is None
    assert claim.path.exists()  # still there: a live claim is left alone
    claim.release()
    assert other.recovery.orphan("j1.json")


def test_the_run_lock_follows_the_job_to_its_next_state(store: Store, home: Home) -> None:
    """The lock lives in locks/claims.lock, not on the job file's inode: a descriptor kept
    by a leftover of the command keeps every later claim of the job out, whatever files
    the job was written to since."""
    place(store, new_job(), JobState.FAILED, attempts=1, next_run_at=format_time(NOW))
    claim = store.claims.claim("j1.json", JobState.FAILED, "w", NOW)
    assert isinstance(claim, Claim)
    leftover = os.dup(claim.fd)  # what a background child of the command holds as fd 3
    try:
        failed = with_state(claim.job, JobState.FAILED, NOW, next_run_at=format_time(NOW))
        with store.changing("j1"):
            store.commits.commit([Change(failed, "failed", remove=claim.path)])
        claim.release()
        again = Store(home).claims.claim("j1.json", JobState.FAILED, "w", NOW)
        assert isinstance(again, ClaimMiss) and again.locked
    finally:
        os.close(leftover)
    third = Store(home).claims.claim("j1.json", JobState.FAILED, "w", NOW)
    assert isinstance(third, Claim)
    third.release()


def test_recovering_a_missing_file_does_nothing(store: Store) -> None:
    assert store.recovery.recover_orphan("nothing.json", lambda job: job) is None


def test_failed_job_is_not_claimed_before_it_is_due(store: Store) -> None:
    due = NOW + timedelta(seconds=10)
    place(store, new_job(), JobState.FAILED, attempts=1, next_run_at=format_time(due))
    miss = store.claims.claim("j1.json", JobState.FAILED, "w", NOW)
    assert isinstance(miss, ClaimMiss)
    assert miss.reason == "not due"
    assert miss.retry_at == pytest.approx(due.timestamp())
    assert not miss.rejected
    assert names(store, "failed") == ["j1.json"]
    assert names(store, "processing") == []
    # the lock was released: a later claim works
    claim = store.claims.claim("j1.json", JobState.FAILED, "w", due + timedelta(milliseconds=1))
    assert isinstance(claim, Claim)
    assert claim.origin is JobState.FAILED
    assert claim.job.attempts == 1
    claim.release()


def test_failed_job_exactly_due_is_claimed(store: Store) -> None:
    place(store, new_job(), JobState.FAILED, attempts=1, next_run_at=format_time(NOW))
    claim = store.claims.claim("j1.json", JobState.FAILED, "w", NOW)
    assert isinstance(claim, Claim)
    claim.release()


def test_invalid_file_in_failed_is_rejected_at_once(store: Store) -> None:
    path = store.home.state_dir(JobState.FAILED) / "junk.json"
    path.write_text('{"command": "echo not a stored job"}')
    miss = store.claims.claim("junk.json", JobState.FAILED, "w", mtime_now(path))
    assert isinstance(miss, ClaimMiss) and miss.rejected
    assert (store.home.rejected / "junk.json").exists()


# ------------------------------------------------------------------ dropped files


def test_plain_drop_is_adopted_with_the_file_name_as_id(store: Store) -> None:
    path = drop(store, "report-1.json", '{"command": "echo dropped"}')
    claim = store.claims.claim("report-1.json", JobState.PENDING, "w", mtime_now(path))
    assert isinstance(claim, Claim)
    try:
        assert claim.job.id == "report-1"
        assert claim.job.command == "echo dropped"
        assert claim.job.source == "drop"
        assert claim.job.max_retries == 3
        assert claim.path == store.home.job_path(JobState.PROCESSING, "report-1")
        stored = Job.from_json(claim.path.read_bytes())
        assert stored.source == "drop" and stored.state is JobState.PENDING
        assert stat.S_IMODE(claim.path.stat().st_mode) == 0o600
        assert names(store, "pending") == []
        records = journal(store)
        assert len(records) == 1
        assert records[0]["event"] == "enqueued"
        assert records[0]["file"] == "report-1.json"
        assert records[0]["job"]["id"] == "report-1"
        assert records[0]["job"]["source"] == "drop"
    finally:
        claim.release()


def test_drop_with_an_id_in_its_json_uses_that_id(store: Store) -> None:
    path = drop(store, "whatever.json", '{"id": "named", "command": "true", "max_retries": 0}')
    claim = store.claims.claim("whatever.json", JobState.PENDING, "w", mtime_now(path))
    assert isinstance(claim, Claim)
    claim.release()
    assert claim.job.id == "named"
    assert claim.job.max_retries == 0
    assert names(store, "pending") == []
    assert names(store, "processing") == ["named.json"]
    assert journal(store)[0]["file"] == "whatever.json"


def test_drop_without_json_suffix_and_default_retries_from_config(store: Store) -> None:
    store.set_config("max-retries", 9)
    path = drop(store, "nosuffix", '{"command": "true"}')
    claim = store.claims.claim("nosuffix", JobState.PENDING, "w", mtime_now(path))
    assert isinstance(claim, Claim)
    claim.release()
    assert claim.job.id == "nosuffix"
    assert claim.job.max_retries == 9


def test_drop_whose_id_already_exists_is_rejected(store: Store) -> None:
    place(store, new_job("taken"), JobState.COMPLETED)
    path = drop(store, "copy.json", '{"id": "taken", "command": "echo again"}')
    miss = store.claims.claim("copy.json", JobState.PENDING, "w", mtime_now(path))
    assert isinstance(miss, ClaimMiss) and miss.rejected
    assert "already exists" in miss.reason
    assert (store.home.rejected / "copy.json").exists()
    assert store.home.job_path(JobState.COMPLETED, "taken").exists()


def test_young_invalid_drop_is_left_alone(store: Store) -> None:
    path = drop(store, "partial.json", '{"command": "echo hal')
    now = mtime_now(path)
    miss = store.claims.claim("partial.json", JobState.PENDING, "w", now)
    assert isinstance(miss, ClaimMiss)
    assert miss.reason == "being written"
    assert not miss.rejected
    assert miss.retry_at == pytest.approx(os.stat(path).st_mtime + DROP_GRACE_SECONDS)
    assert path.read_bytes() == b'{"command": "echo hal'
    assert names(store, "rejected") == []
    assert journal(store) == []
    # once complete, the same file is adopted
    path.write_text('{"command": "echo hallo"}')
    claim = store.claims.claim("partial.json", JobState.PENDING, "w", mtime_now(path))
    assert isinstance(claim, Claim)
    claim.release()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"command": "echo hal', "invalid JSON"),
        ('{"command": "true", "max_retry": 3}', "unknown field 'max_retry'"),
        ('{"command": ""}', "must not be empty"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_old_invalid_drop_is_moved_to_rejected(store: Store, content: str, reason: str) -> None:
    path = drop(store, "bad.json", content)
    make_old(path)
    miss = store.claims.claim("bad.json", JobState.PENDING, "w", utcnow())
    assert isinstance(miss, ClaimMiss)
    assert miss.rejected
    assert reason in miss.reason
    assert not path.exists()
    assert (store.home.rejected / "bad.json").read_text() == content
    written = (store.home.rejected / "bad.json.reason").read_text()
    assert written.startswith("pending/bad.json ")
    assert reason in written
    assert store.folders.rejected() == [("bad.json", written.strip())]
    records = journal(store)
    assert [(r["event"], r["file"]) for r in records] == [("rejected", "bad.json")]


def test_rejected_names_never_collide(store: Store) -> None:
    for _ in range(3):
        path = drop(store, "same.json", "nope")
        make_old(path)
        miss = store.claims.claim("same.json", JobState.PENDING, "w", utcnow())
        assert isinstance(miss, ClaimMiss) and miss.rejected
    assert names(store, "rejected") == sorted(
        [
            "same.json",
            "same.json.reason",
            "same.json.1",
            "same.json.1.reason",
            "same.json.2",
            "same.json.2.reason",
        ]
    )


@pytest.mark.parametrize("target_kind", ["valid job", "directory", "dangling"])
def test_symlink_is_rejected_and_never_followed(
    store: Store, tmp_path: Path, target_kind: str
) -> None:
    target = tmp_path / "outside"
    if target_kind == "valid job":
        target.write_text('{"command": "echo followed"}')
        os.chmod(target, 0o600)
    elif target_kind == "directory":
        target.mkdir()
    link = store.home.state_dir(JobState.PENDING) / "link.json"
    link.symlink_to(target)
    miss = store.claims.claim("link.json", JobState.PENDING, "w", utcnow())
    assert isinstance(miss, ClaimMiss)
    assert miss.rejected
    assert "symbolic link" in miss.reason
    moved = store.home.rejected / "link.json"
    assert moved.is_symlink()
    assert os.readlink(moved) == str(target)
    assert names(store, "pending") == [] and names(store, "processing") == []
    if target_kind == "valid job":
        assert target.read_text() == '{"command": "echo followed"}'
    assert all(r["event"] == "rejected" for r in journal(store))


def test_symlink_in_failed_is_rejected(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    target.write_bytes(new_job().to_json())
    (store.home.state_dir(JobState.FAILED) / "j1.json").symlink_to(target)
    miss = store.claims.claim("j1.json", JobState.FAILED, "w", utcnow())
    assert isinstance(miss, ClaimMiss) and miss.rejected
    assert target.exists()


def _claim_in_thread(store: Store, name: str, fifo: Path | None = None) -> Claim | ClaimMiss:
    """Run a claim that must not block; if it does, unblock it and fail."""
    box: list[Claim | ClaimMiss | BaseException] = []

    def run() -> None:
        try:
            box.append(store.claims.claim(name, JobState.PENDING, "w", utcnow()))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        if fifo is not None:  # a blocking open of a FIFO waits for a writer: give it one
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        thread.join(5)
        pytest.fail(f"claiming {name} blocked")
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


def test_fifo_is_rejected_without_blocking(store: Store) -> None:
    fifo = store.home.state_dir(JobState.PENDING) / "fifo.json"
    os.mkfifo(fifo, 0o600)
    miss = _claim_in_thread(store, "fifo.json", fifo)
    assert isinstance(miss, ClaimMiss)
    assert miss.rejected
    assert "not a regular file" in miss.reason
    assert stat.S_ISFIFO(os.lstat(store.home.rejected / "fifo.json").st_mode)
    assert names(store, "pending") == []


def test_directory_in_pending_is_rejected(store: Store) -> None:
    (store.home.state_dir(JobState.PENDING) / "dir.json").mkdir(mode=0o700)
    miss = store.claims.claim("dir.json", JobState.PENDING, "w", utcnow())
    assert isinstance(miss, ClaimMiss) and miss.rejected
    assert "not a regular file" in miss.reason


def test_unix_socket_in_pending_is_rejected(home: Home) -> None:
    store = Store(home)
    path = home.state_dir(JobState.PENDING) / "s.json"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)  # keep the socket path short
    try:
        server.bind(path.name)
    finally:
        os.chdir(cwd)
    try:
        miss = _claim_in_thread(store, "s.json")
        assert isinstance(miss, ClaimMiss)
        assert miss.rejected, miss.reason
        assert names(store, "pending") == []
    finally:
        server.close()


# ------------------------------------------------------------------ dead letter queue


def test_retry_dead_resets_attempts_and_moves_to_pending(store: Store) -> None:
    dead = place(
        store, new_job(), JobState.DEAD, attempts=4, last_error="exit code 1", last_exit_code=1
    )
    later = NOW + timedelta(hours=1)
    retried = store.retry_dead("j1", later)
    assert retried.state is JobState.PENDING
    assert retried.attempts == 0
    assert retried.next_run_at is None
    assert retried.rev == dead.rev + 1
    assert retried.updated_at == format_time(later)
    assert names(store, "dead") == []
    stored = Job.from_json(store.home.job_path(JobState.PENDING, "j1").read_bytes())
    assert stored == retried
    assert journal(store)[-1]["event"] == "retried"
    assert journal(store)[-1]["job"]["attempts"] == 0


@pytest.mark.parametrize("job_id", ["missing", "../j1", "j1"])
def test_retry_dead_of_a_job_not_in_the_dlq(store: Store, job_id: str) -> None:
    store.enqueue([new_job("j1")])
    with pytest.raises(NotFound, match="dead letter queue"):
        store.retry_dead(job_id, NOW)
    assert names(store, "pending") == ["j1.json"]


def test_retry_dead_while_a_leftover_holds_the_run_lock(store: Store, home: Home) -> None:
    """``dlq retry`` moves the job back at once; its next run waits for the leftover."""
    place(store, new_job(), JobState.DEAD, attempts=4)
    from queuectl.storage.locks import job_offset

    holder = store.locks.holder()
    assert holder.take(job_offset("j1"))
    try:
        store.retry_dead("j1", NOW)
        assert names(store, "pending") == ["j1.json"]
        miss = Store(home).claims.claim("j1.json", JobState.PENDING, "w", NOW)
        assert isinstance(miss, ClaimMiss) and miss.locked
    finally:
        holder.close()


def test_retry_dead_waits_for_another_change_of_the_job(store: Store, home: Home) -> None:
    place(store, new_job(), JobState.DEAD, attempts=4)
    other = Store(home)
    with other.changing("j1"), pytest.raises(QueueError, match="being changed"):
        _retry_quickly(store)
    assert names(store, "dead") == ["j1.json"]


def _retry_quickly(store: Store) -> None:
    with store.changing("j1", timeout=0.05):
        store.retry_dead("j1", NOW)


# ------------------------------------------------------------------ put back


def test_put_back_returns_a_claim_unchanged(store: Store) -> None:
    store.enqueue([new_job()])
    path = store.home.job_path(JobState.PENDING, "j1")
    before = path.read_bytes()
    records = journal(store)
    claim = store.claims.claim("j1.json", JobState.PENDING, "w", NOW)
    assert isinstance(claim, Claim)
    store.claims.put_back(claim)
    assert claim.fd == -1
    assert path.read_bytes() == before
    assert names(store, "processing") == []
    assert journal(store) == records
    again = store.claims.claim("j1.json", JobState.PENDING, "w", NOW)
    assert isinstance(again, Claim)
    again.release()


def test_put_back_returns_to_the_origin_folder(store: Store) -> None:
    place(store, new_job(), JobState.FAILED, attempts=1, next_run_at=format_time(NOW))
    before = store.home.job_path(JobState.FAILED, "j1").read_bytes()
    claim = store.claims.claim("j1.json", JobState.FAILED, "w", NOW)
    assert isinstance(claim, Claim)
    store.claims.put_back(claim)
    assert store.home.job_path(JobState.FAILED, "j1").read_bytes() == before
    assert names(store, "pending") == [] and names(store, "processing") == []


def test_put_back_while_a_leftover_holds_the_run_lock(store: Store, home: Home) -> None:
    """A stopped command's process that escaped the kill keeps the job locked: the job is
    back in pending/, unchanged, and is claimed again only once the leftover is gone."""
    store.enqueue([new_job()])
    before = store.home.job_path(JobState.PENDING, "j1").read_bytes()
    records = journal(store)
    claim = store.claims.claim("j1.json", JobState.PENDING, "w", NOW)
    assert isinstance(claim, Claim)
    stray = os.dup(claim.fd)
    try:
        store.claims.put_back(claim)
        assert store.home.job_path(JobState.PENDING, "j1").read_bytes() == before
        assert names(store, "processing") == []
        assert journal(store) == records
        miss = Store(home).claims.claim("j1.json", JobState.PENDING, "w", NOW)
        assert isinstance(miss, ClaimMiss) and miss.locked
    finally:
        os.close(stray)
    again = store.claims.claim("j1.json", JobState.PENDING, "w", NOW)
    assert isinstance(again, Claim)
    again.release()


def test_lock_probes_count_every_held_byte_whatever_order_they_were_taken_in(
    tmp_path: Path,
) -> None:
    """F_OFD_GETLK names the oldest conflicting lock, not the lowest: a byte taken after a
    higher one was skipped, and ``status`` counted one job on a GPU device that ran two."""
    from queuectl.storage.locks import LockFile

    locks = LockFile(tmp_path / "claims.lock")
    holders = [locks.holder() for _ in range(4)]
    try:
        for holder, byte in zip(holders, (7, 3, 5, 4), strict=True):  # taken high, then low
            assert holder.take(100 + byte)
        assert locks.held_in(100, 10) == 4
        assert locks.first_held(100, 10) == 103
        assert locks.held_in(104, 3) == 2  # 104 and 105 (106 is free)
        assert locks.first_held(106, 4) == 107
        assert locks.first_held(108, 2) is None
        assert locks.held_in(108, 2) == 0
    finally:
        for holder in holders:
            holder.close()
        locks.close()
