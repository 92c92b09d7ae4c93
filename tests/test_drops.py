"""Files that other tools drop into ``pending/`` while a worker runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
from pathlib import Path

from .conftest import (
    Procs,
    enqueue_job,
    job_events,
    jobs_in,
    journal_records,
    live_worker_info,
    read_job,
    run_cli,
    settled_in,
    wait_exit,
    wait_until,
)


def _drop(home: Path, name: str, data: bytes, outside: Path) -> None:
    """Write a file completely elsewhere on the same filesystem, then rename it in."""
    outside.mkdir(exist_ok=True)
    staged = outside / name
    staged.write_bytes(data)
    staged.chmod(0o644)
    os.rename(staged, home / "pending" / name)


def _ready_worker(
    home: Path, procs: Procs, *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A non-burst worker that has finished its start-up scan (it ran a first job)."""
    worker = procs.worker(home, *args, log=log)
    enqueue_job(home, {"id": "warm-up", "command": "true"})
    wait_until(lambda: "warm-up" in jobs_in(home, "completed"), message="the warm-up job")
    return worker


def _stop(worker: subprocess.Popen[bytes]) -> None:
    assert worker.poll() is None, "the worker should still be running"
    os.kill(worker.pid, signal.SIGTERM)
    assert wait_exit(worker, timeout=30) == 0


def test_renamed_in_file_runs_and_is_journaled_with_id_from_name_or_json(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    worker = _ready_worker(qhome, procs)
    out = tmp_path / "out"
    _drop(
        qhome,
        "build-42.json",
        json.dumps({"command": f"echo by-name >> {out}"}).encode(),
        tmp_path / "s",
    )
    _drop(
        qhome,
        "whatever.json",
        json.dumps({"id": "from-json", "command": f"echo by-json >> {out}"}).encode(),
        tmp_path / "s",
    )

    wait_until(
        lambda: {"build-42", "from-json"} <= set(jobs_in(qhome, "completed")),
        message="both dropped jobs to complete",
    )
    assert sorted(out.read_text().splitlines()) == ["by-json", "by-name"]
    for job_id, name in (("build-42", "build-42.json"), ("from-json", "whatever.json")):
        job = read_job(qhome, "completed", job_id)
        assert (job["source"], job["attempts"], job["last_exit_code"]) == ("drop", 1, 0)
        assert [event for event, _ in job_events(qhome, job_id)] == ["enqueued", "completed"]
        adopted = [r for r in journal_records(qhome) if r.get("file") == name]
        assert [r["event"] for r in adopted] == ["enqueued"]
    assert not any(
        (qhome / state / "whatever.json").exists() for state in ("pending", "processing")
    )
    assert os.listdir(qhome / "rejected") == []
    _stop(worker)


def test_file_written_in_place_in_two_halves_is_not_rejected_and_runs_once(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    worker = _ready_worker(qhome, procs, "--count", "1")
    out = tmp_path / "out"
    data = json.dumps({"id": "slow", "command": f"echo $QUEUECTL_JOB_ID >> {out}"}).encode()
    target = qhome / "pending" / "slow.json"

    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with open(fd, "wb") as handle:  # first half, then close: the worker gets an event
        handle.write(data[: len(data) // 2])
    # The pause lasts until the worker has certainly looked at the half file: a probe job
    # dropped after it is taken after it (one thread, oldest first), so when the probe has
    # run the half file was already tried and left alone.
    _drop(qhome, "probe.json", b'{"command": "true"}', tmp_path / "s")
    wait_until(lambda: "probe" in jobs_in(qhome, "completed"), message="the probe job")
    assert os.listdir(qhome / "rejected") == []
    assert jobs_in(qhome, "pending") == ["slow"]

    with open(target, "ab") as handle:  # second half, in place
        handle.write(data[len(data) // 2 :])

    wait_until(lambda: settled_in(qhome, "completed", "slow"), message="the completed file to run")
    assert out.read_text() == "slow\n"
    assert os.listdir(qhome / "rejected") == []
    assert [event for event, _ in job_events(qhome, "slow")] == ["enqueued", "completed"]
    _stop(worker)


def test_invalid_files_are_rejected_with_a_reason_and_the_worker_goes_on(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    worker = _ready_worker(qhome, procs)
    _drop(qhome, "garbage.json", b"this is not json {", tmp_path / "s")
    _drop(qhome, "typo.json", b'{"command": "true", "max_retry": 1}', tmp_path / "s")
    _drop(qhome, "bad id!.json", b'{"command": "true"}', tmp_path / "s")

    names = {"garbage.json", "typo.json", "bad id!.json"}
    wait_until(  # after the grace period for files that might still be being written
        lambda: names <= set(os.listdir(qhome / "rejected")),
        timeout=30,
        message="three rejections",
    )
    reasons = {n: (qhome / "rejected" / f"{n}.reason").read_text() for n in names}
    assert "pending/garbage.json" in reasons["garbage.json"]
    assert "invalid JSON" in reasons["garbage.json"]
    assert "max_retry" in reasons["typo.json"]
    assert "invalid id" in reasons["bad id!.json"]
    assert (qhome / "rejected" / "garbage.json").read_bytes() == b"this is not json {"
    assert jobs_in(qhome, "pending") == []

    status = run_cli(qhome, "status")
    assert status.returncode == 0
    assert "3 rejected file(s)" in status.stdout
    assert "max_retry" in status.stdout
    listed = json.loads(run_cli(qhome, "status", "--json").stdout)["rejected"]
    assert {entry["file"] for entry in listed} == names

    enqueue_job(qhome, {"id": "after", "command": "true"})  # the worker is still serving
    wait_until(lambda: "after" in jobs_in(qhome, "completed"), message="a job after rejections")
    _stop(worker)


def test_symlink_is_rejected_and_its_target_never_runs(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    worker = _ready_worker(qhome, procs)
    marker = tmp_path / "ran"
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"id": "evil", "command": f"touch {marker}"}))
    before = target.read_bytes()
    link = tmp_path / "link.json"
    link.symlink_to(target)
    os.rename(link, qhome / "pending" / "link.json")

    wait_until(
        lambda: os.path.lexists(qhome / "rejected" / "link.json"), message="the link rejected"
    )
    assert (qhome / "rejected" / "link.json").is_symlink()
    assert "symbolic link" in (qhome / "rejected" / "link.json.reason").read_text()
    enqueue_job(qhome, {"id": "after", "command": "true"})
    wait_until(lambda: "after" in jobs_in(qhome, "completed"), message="a job after the link")
    assert not marker.exists()
    assert target.read_bytes() == before
    assert all("evil" not in jobs_in(qhome, state) for state in ("pending", "completed"))
    assert run_cli(qhome, "show", "evil").returncode == 1
    _stop(worker)


IN_ACCESS, IN_OPEN = 0x1, 0x20


def test_symlink_target_is_never_opened(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    worker = _ready_worker(qhome, procs)
    target = tmp_path / "target.json"
    target.write_text('{"command": "true"}')
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(target), IN_OPEN | IN_ACCESS) >= 0
        link = tmp_path / "link.json"
        link.symlink_to(target)
        os.rename(link, qhome / "pending" / "link.json")
        wait_until(
            lambda: os.path.lexists(qhome / "rejected" / "link.json"), message="the link rejected"
        )
        try:
            events = os.read(fd, 4096)
        except BlockingIOError:
            events = b""
        assert events == b"", "the symlink's target was opened"
    finally:
        os.close(fd)
    _stop(worker)


def test_fifo_in_pending_does_not_hang_the_worker(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    worker = _ready_worker(qhome, procs)
    side = tmp_path / "side"
    side.mkdir()
    os.mkfifo(side / "pipe.json", 0o644)
    os.rename(side / "pipe.json", qhome / "pending" / "pipe.json")

    try:
        wait_until(
            lambda: os.path.lexists(qhome / "rejected" / "pipe.json"),
            timeout=8,
            message="the FIFO to be rejected",
        )
        assert "not a regular file" in (qhome / "rejected" / "pipe.json.reason").read_text()
        enqueue_job(qhome, {"id": "after", "command": "true"})
        wait_until(
            lambda: "after" in jobs_in(qhome, "completed"),
            timeout=8,
            message="a job after the FIFO",
        )
        _stop(worker)
    finally:
        # Free a dispatcher stuck opening the FIFO, so the worker can be cleaned up.
        for path in (qhome / "pending" / "pipe.json", qhome / "rejected" / "pipe.json"):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # ENXIO: nobody is reading it; ENOENT: not there


def test_hidden_and_tmp_files_are_ignored(qhome: Path, procs: Procs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = json.dumps({"command": f"touch {marker}"}).encode()
    hidden = qhome / "pending" / ".hidden.json"
    in_progress = qhome / "pending" / "partial.json.tmp"
    for path in (hidden, in_progress):
        path.write_bytes(job)
        path.chmod(0o644)
    enqueue_job(qhome, {"id": "visible", "command": "true"})

    worker = procs.worker(qhome, "--burst")

    assert wait_exit(worker) == 0  # drained: the ignored files do not count as pending
    assert jobs_in(qhome, "completed") == ["visible"]
    assert not marker.exists()
    assert hidden.read_bytes() == job
    assert in_progress.read_bytes() == job
    assert os.listdir(qhome / "rejected") == []
    assert json.loads(run_cli(qhome, "status", "--json").stdout)["jobs"]["pending"] == 0
    assert live_worker_info(qhome) == []
