"""Fault injection: kill loops, torn and damaged journals, a full disk, fsync errors, races.

Each test asserts that nothing accepted is lost and nothing runs twice concurrently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from queuectl.cli.main import cli
from queuectl.storage.journal import scan

from .conftest import jobs_in, run_cli, start_worker, wait_until

ROOT = Path(__file__).resolve().parent.parent
STATES = ("pending", "processing", "completed", "failed", "dead")


def invoke(home: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def tree(home: Path) -> dict[str, bytes]:
    return {f"{s}/{p.name}": p.read_bytes() for s in STATES for p in (home / s).glob("*.json")}


# --------------------------------------------------------------------------- kill loop


@pytest.mark.slow
def test_kill_loop_loses_nothing_and_rebuild_reproduces_the_tree(tmp_path: Path) -> None:
    """500 jobs, 2 workers x 4 threads, 50 SIGKILLs at random moments (tools/kill_loop.py)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "kill_loop.py"),
            "--jobs",
            "500",
            "--kills",
            "50",
            "--seed",
            "7",
            "--home",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    print(
        f"\nkill loop: jobs={result['jobs']} kills={result['kills']} "
        f"duplicate_runs={result['duplicate_runs']} at_risk={result['jobs_at_risk']}"
    )
    assert result["kills"] == 50
    assert result["problems"] == []


# --------------------------------------------------------------------------- claim race


def test_claim_race_one_job_eight_workers_fifty_times(tmp_path: Path) -> None:
    """Eight idle worker processes all wake for each new job; exactly one may run it."""
    home = tmp_path / "home"
    out = tmp_path / "runs"
    home.mkdir(mode=0o700)  # an empty folder: a new home
    assert run_cli(home, "status").returncode == 0
    workers = [start_worker(home, "--count", "1") for _ in range(8)]
    try:
        wait_until(
            lambda: len(list((home / "workers").glob("*.json"))) == 8,
            message="8 workers registered",
        )
        for round_ in range(50):
            job = json.dumps({"id": f"race-{round_}", "command": f"echo {round_} >> {out}"})
            assert run_cli(home, "enqueue", job).returncode == 0
            wait_until(
                lambda r=round_: (home / "completed" / f"race-{r}.json").exists(),
                message=f"race-{round_} completed",
            )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    runs = out.read_text().split()
    assert sorted(runs, key=int) == [str(i) for i in range(50)]


# --------------------------------------------------------------------------- torn journal


def _home_with_history(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    lines = "".join(json.dumps({"id": f"j{i}", "command": "true"}) + "\n" for i in range(3))
    assert invoke(home, "enqueue", "-", input=lines).exit_code == 0
    assert invoke(home, "enqueue", '{"id": "last", "command": "echo last"}').exit_code == 0
    return home


def test_torn_last_record_at_every_offset_keeps_every_command_working(tmp_path: Path) -> None:
    template = _home_with_history(tmp_path)
    segment = template / "journal" / "00000001.log"
    data = segment.read_bytes()
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    for cut in range(last_start + 1, len(data)):  # every byte of the last record torn off
        home = tmp_path / f"cut{cut}"
        shutil.copytree(template, home)
        (home / "journal" / "00000001.log").write_bytes(data[:cut])
        result = scan(home / "journal")
        assert [r.data["job"]["id"] for r in result.records] == ["j0", "j1", "j2"], cut
        assert result.torn_tail == (home / "journal" / "00000001.log", last_start)
        status = invoke(home, "status", "--json")
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["jobs"]["pending"] == 4
        listed = invoke(home, "list", "--json")
        assert listed.exit_code == 0 and len(json.loads(listed.output)) == 4
        added = invoke(home, "enqueue", '{"id": "after", "command": "true"}')
        assert added.exit_code == 0, added.output
        ids = [r.data["job"]["id"] for r in scan(home / "journal").records]
        assert ids == ["j0", "j1", "j2", "after"], cut  # the tail was repaired, not built on
        if cut % 16 == 0:
            for name in STATES:
                shutil.rmtree(home / name)
            rebuilt = invoke(home, "journal", "rebuild")
            assert rebuilt.exit_code == 0, rebuilt.output
            assert sorted(jobs_in(home, "pending")) == ["after", "j0", "j1", "j2"]
        shutil.rmtree(home)


def test_damage_in_the_middle_is_named_and_fsck_repair_recovers(tmp_path: Path) -> None:
    home = _home_with_history(tmp_path)
    before = tree(home)
    segment = home / "journal" / "00000001.log"
    data = bytearray(segment.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 30] ^= 0x20  # flip one bit inside the second record (j1)
    segment.write_bytes(bytes(data))

    rebuilt = invoke(home, "journal", "rebuild")
    assert rebuilt.exit_code == 1
    assert f"{segment} at byte {second}" in rebuilt.output
    checked = invoke(home, "fsck")
    assert checked.exit_code == 1 and "journal-damage" in checked.output

    repaired = invoke(home, "fsck", "--repair")
    assert repaired.exit_code == 1 and "repaired" in repaired.output, repaired.output
    clean = invoke(home, "fsck")
    assert clean.exit_code == 0, clean.output
    assert (home / "journal" / "00000001.log.damaged").exists()
    # The damaged record's job was re-journaled from its file: a rebuild gives the same tree.
    for name in STATES:
        shutil.rmtree(home / name)
    assert invoke(home, "journal", "rebuild").exit_code == 0
    assert tree(home) == before


# --------------------------------------------------------------------------- full disk


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    return proc.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_gives_a_clear_error_and_loses_nothing_accepted(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "256k"):
        pytest.skip("cannot mount tmpfs here")
    try:
        home = mount / "home"
        accepted: list[str] = []
        padding = "x" * 2000
        error = None
        for i in range(1000):
            job = json.dumps({"id": f"fill-{i}", "command": f"true {padding}"})
            proc = run_cli(home, "enqueue", job)
            if proc.returncode != 0:
                error = proc
                break
            accepted.append(proc.stdout.strip())
        assert error is not None, "the disk never filled up"
        assert error.returncode == 1
        assert "No space left on device" in error.stderr
        assert "Traceback" not in error.stderr and len(error.stderr.strip().splitlines()) == 1
        assert list((home / "tmp").iterdir()) == []  # no leftovers
        pending = jobs_in(home, "pending")
        assert pending == sorted(accepted)  # nothing half-written, nothing unreported
        for path in (home / "pending").glob("*.json"):
            json.loads(path.read_text())
        journaled = [r.data["job"]["id"] for r in scan(home / "journal").records]
        assert sorted(journaled) == sorted(accepted)

        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)
        drain = subprocess.run(
            [
                sys.executable,
                "-m",
                "queuectl",
                "--home",
                str(home),
                "worker",
                "start",
                "--count",
                "2",
                "--burst",
            ],
            capture_output=True,
            timeout=300,
        )
        assert drain.returncode == 0, drain.stderr
        assert jobs_in(home, "completed") == sorted(accepted)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# --------------------------------------------------------------------------- fsync errors


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_fsync_error_fails_the_enqueue_and_leaves_nothing(tmp_path: Path) -> None:
    """EIO on the n-th fsync of an enqueue: either it succeeded fully or failed cleanly."""
    outcomes = set()
    for nth in range(1, 6):
        home = tmp_path / f"h{nth}"
        home.mkdir(mode=0o700)  # an empty folder: a new home
        assert run_cli(home, "status").returncode == 0
        proc = subprocess.run(
            [
                "strace",
                "-f",
                "-o",
                "/dev/null",
                "-e",
                "trace=fsync,syncfs",
                "-e",
                f"inject=fsync:error=EIO:when={nth}",
                sys.executable,
                "-m",
                "queuectl",
                "--home",
                str(home),
                "enqueue",
                json.dumps({"id": "victim", "command": "true"}),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        files = [p for s in STATES for p in (home / s).glob("*.json")]
        events = [r.data["event"] for r in scan(home / "journal").records]
        if proc.returncode == 0:
            outcomes.add("ok")
            assert [p.name for p in files] == ["victim.json"] and events == ["enqueued"]
        else:
            outcomes.add("failed")
            assert proc.returncode == 1, proc.stderr
            assert "Input/output error" in proc.stderr and "Traceback" not in proc.stderr
            # nothing, or an enqueue journaled and then withdrawn (replay drops it)
            assert files == [] and events in ([], ["enqueued", "withdrawn"]), (nth, events)
            assert list((home / "tmp").iterdir()) == []
    assert "failed" in outcomes  # the injection really hit an fsync of ours


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_fsync_error_in_a_worker_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "runs"
    lines = "".join(
        json.dumps({"id": f"w{i}", "command": f"echo w{i} >> {out}"}) + "\n" for i in range(5)
    )
    assert run_cli(home, "enqueue", "-", input=lines).returncode == 0
    hurt = subprocess.run(
        [
            "strace",
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=fsync",
            "-e",
            "inject=fsync:error=EIO:when=3",
            sys.executable,
            "-m",
            "queuectl",
            "--home",
            str(home),
            "worker",
            "start",
            "--burst",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Input/output error" in hurt.stderr, hurt.stderr
    assert "Traceback" not in hurt.stderr
    drain = run_cli(home, "worker", "start", "--burst")
    assert drain.returncode == 0, drain.stderr
    assert jobs_in(home, "completed") == [f"w{i}" for i in range(5)]
    for state in ("pending", "processing", "failed", "dead"):
        assert jobs_in(home, state) == []
    assert set(out.read_text().split()) == {f"w{i}" for i in range(5)}
    assert invoke(home, "fsck").exit_code == 0
