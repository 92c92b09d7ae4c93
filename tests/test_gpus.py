"""GPU slots: the ``gpus`` and ``gpu-jobs-per-device`` settings, jobs asking ``--gpus N``.

A job starts only when N devices have a free place, counted across every worker process of
the home, and gets those devices in CUDA_VISIBLE_DEVICES and QUEUECTL_GPUS; with devices
configured a job asking for none gets CUDA_VISIBLE_DEVICES="". Devices are never
oversubscribed, not even after a worker is SIGKILLed while a job's command (or a grandchild
that kept its lock descriptor) still runs. The commands record their own devices and start
and end times (``ops_support.stamp_command``); overlaps are computed from those records.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Procs, pid_gone
from .ops_support import (
    Interval,
    all_jobs,
    assert_clean_error,
    here_ok,
    kill9,
    max_overlap,
    q,
    q_ok,
    read_intervals,
    run_here,
    spawn_worker,
    stamp_command,
    wait_for,
)


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    folder = tmp_path / "stamps"
    folder.mkdir()
    return folder


def enqueue_many(home: Path, jobs: list[dict]) -> list[str]:
    out = here_ok(home, "enqueue", "-", input="".join(json.dumps(j) + "\n" for j in jobs))
    ids = out.split()
    assert len(ids) == len(jobs), out
    return ids


def per_device(intervals: list[Interval]) -> dict[str, list[tuple[float, float]]]:
    found: dict[str, list[tuple[float, float]]] = {}
    for run in intervals:
        for device in run.devices:
            found.setdefault(device, []).append((run.start, run.end))
    return found


def states(home: Path) -> Counter[str]:
    return Counter(state for state, _ in all_jobs(home).values())


def gpu_status(home: Path) -> dict[str, int]:
    return json.loads(here_ok(home, "status", "--json"))["gpus"]


# ------------------------------------------------------------------ settings and requests


def test_gpu_settings_and_requests_are_validated(tmp_path: Path) -> None:
    h = tmp_path / "qhome"
    assert_clean_error(q(h, "add", "--gpus", "1", "true"), 2, "gpu")  # no devices configured
    assert_clean_error(run_here(h, "enqueue", '{"command": "true", "gpus": 1}'), 2, "gpu")
    for value in ("0,0", "a b", "0,,1", "../x", "0;1", ","):
        assert_clean_error(run_here(h, "config", "set", "gpus", value), 2, "gpus")
    for value in ("0", "-1", "1.5", "x", "65"):
        assert_clean_error(run_here(h, "config", "set", "gpu-jobs-per-device", value), 2)
    here_ok(h, "config", "set", "gpus", "0,1")
    assert here_ok(h, "config", "get", "gpus").strip() == "0,1"
    assert here_ok(h, "config", "get", "gpu-jobs-per-device").strip() == "1"
    refused = [
        ["add", "--gpus", "3", "true"],
        ["add", "--gpus", "65", "true"],
        ["add", "--gpus", "-1", "true"],
        ["enqueue", '{"command": "true", "gpus": 3}'],
        ["enqueue", '{"command": "true", "gpus": -1}'],
        ["enqueue", '{"command": "true", "gpus": true}'],
        ["enqueue", '{"command": "true", "gpus": 1.5}'],
        ["enqueue", '{"command": "true", "gpus": "1"}'],
        ["schedule", "add", "s", "--every", "1h", "--gpus", "3", "true"],
    ]
    for args in refused:
        result = run_here(h, *args)
        assert result.exit_code == 2, (args, result.exit_code, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("queuectl: error: "), (args, result.stderr)
    assert not list((h / "pending").iterdir())
    two = here_ok(h, "add", "--gpus", "2", "true").strip()
    assert all_jobs(h)[two][1]["gpus"] == 2
    # a dropped file asking for more than there are is rejected by a worker, not parked
    (h / "tmp" / "drop.json").write_text(json.dumps({"command": "true", "gpus": 3}))
    os.rename(h / "tmp" / "drop.json", h / "pending" / "too-many.json")
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(h), "worker", "start", "--burst"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert (h / "rejected" / "too-many.json").exists()
    assert all_jobs(h)[two][0] == "completed"


def test_devices_in_the_environment(qhome: Path, procs: Procs, stamps: Path) -> None:
    here_ok(qhome, "config", "set", "gpus", "0,1")
    cmd = stamp_command(stamps)
    one = here_ok(qhome, "add", "--id", "one", "--gpus", "1", "--", "sh", "-c", cmd).strip()
    two = here_ok(qhome, "add", "--id", "two", "--gpus", "2", "--", "sh", "-c", cmd).strip()
    cpu = here_ok(qhome, "add", "--id", "cpu", "--", "sh", "-c", cmd).strip()
    # a worker started from a shell that already has the variables set
    worker = spawn_worker(
        procs,
        qhome,
        "--burst",
        "--count",
        "3",
        env={"CUDA_VISIBLE_DEVICES": "7", "QUEUECTL_GPUS": "9"},
    )
    assert worker.wait(timeout=60) == 0
    runs = {r.job: r for r in read_intervals(stamps)}
    assert set(runs) == {one, two, cpu}
    assert runs["one"].cuda in ("0", "1") and runs["one"].gpus == runs["one"].cuda
    assert (
        sorted(runs["two"].cuda.split(",")) == ["0", "1"] and runs["two"].gpus == runs["two"].cuda
    )
    assert runs["cpu"].cuda == "", "a job asking for no GPU must see CUDA_VISIBLE_DEVICES=''"
    assert runs["cpu"].gpus in ("-", ""), runs["cpu"]


# ------------------------------------------------------------------ never oversubscribed


def test_never_two_jobs_on_one_device_across_two_workers(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "gpus", "0,1")
    cmd = stamp_command(stamps, work=0.15)
    singles = enqueue_many(qhome, [{"command": cmd, "gpus": 1} for _ in range(20)])
    doubles = enqueue_many(qhome, [{"command": cmd, "gpus": 2} for _ in range(3)])
    for n in range(2):
        spawn_worker(procs, qhome, "--count", "4", log=tmp_path / f"w{n}.log")
    wait_for(lambda: states(qhome)["completed"] == 23, "all 23 GPU jobs to complete", timeout=120)
    runs = read_intervals(stamps)
    assert len(runs) == 23 and all(r.end != float("inf") for r in runs)
    for r in runs:
        assert r.gpus == r.cuda, r
        want = 1 if r.job in singles else 2
        assert len(r.devices) == want and set(r.devices) <= {"0", "1"}, r
        assert len(set(r.devices)) == len(r.devices), r
    used = per_device(runs)
    assert set(used) == {"0", "1"}
    for device, intervals in used.items():
        assert max_overlap(intervals) == 1, f"device {device} had two jobs at once"
    assert {d for r in runs if r.job in singles for d in r.devices} == {"0", "1"}
    assert doubles


def test_two_jobs_per_device_allows_exactly_two(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "gpus", "0,1")
    here_ok(qhome, "config", "set", "gpu-jobs-per-device", "2")
    gate = tmp_path / "go"
    cmd = stamp_command(stamps, gate=gate, work=0.1)
    enqueue_many(qhome, [{"command": cmd, "gpus": 1} for _ in range(12)])
    for n in range(2):
        spawn_worker(procs, qhome, "--count", "4", log=tmp_path / f"w{n}.log")
    wait_for(lambda: len(read_intervals(stamps)) >= 4, "four jobs to start")
    first = read_intervals(stamps)
    assert len(first) == 4, first  # 8 threads, 4 places: a fifth must wait
    assert Counter(d for r in first for d in r.devices) == {"0": 2, "1": 2}
    assert gpu_status(qhome) == {"0": 2, "1": 2}
    gate.touch()
    wait_for(lambda: states(qhome)["completed"] == 12, "all twelve to complete", timeout=90)
    for device, intervals in per_device(read_intervals(stamps)).items():
        assert max_overlap(intervals) == 2, device


def test_a_waiting_gpu_job_does_not_hold_back_cpu_jobs(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "gpus", "0")
    gate = tmp_path / "release-g1"
    here_ok(
        qhome,
        "add",
        "--id",
        "g1",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        stamp_command(stamps, gate=gate),
    )
    spawn_worker(procs, qhome, "--count", "3", log=tmp_path / "w.log")
    wait_for(lambda: (stamps / "g1.1.start").exists(), "g1 to start")
    here_ok(
        qhome,
        "add",
        "--id",
        "g2",
        "-p",
        "50",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        stamp_command(stamps),
    )
    for n in range(4):
        here_ok(qhome, "add", "--id", f"c{n}", "-p", "-10", "--", "sh", "-c", stamp_command(stamps))
    wait_for(
        lambda: all(all_jobs(qhome).get(f"c{n}", ("",))[0] == "completed" for n in range(4)),
        "the CPU jobs to complete while g2 waits for the device",
    )
    assert not (stamps / "g2.1.start").exists()
    assert all_jobs(qhome)["g2"][0] == "pending"
    gate.touch()
    wait_for(lambda: all_jobs(qhome)["g2"][0] == "completed", "g2 once g1 let the device go")
    runs = {r.name: r for r in read_intervals(stamps)}
    assert runs["g2.1"].start >= runs["g1.1"].end and runs["g2.1"].cuda == "0"


# ------------------------------------------------------------------ SIGKILL, orphans


def _holder_command(stamps: Path, gate: Path) -> str:
    """Record the start, then leave a grandchild (a subshell: it keeps fd 3, the job's lock)
    that waits for ``gate``, records its end and exits. The shell itself exits at once
    (append ``; wait`` to have it wait for the grandchild)."""
    d, g = shlex.quote(str(stamps)), shlex.quote(str(gate))
    me = f'{d}/"$QUEUECTL_JOB_ID.$QUEUECTL_RUN"'
    return (
        f"printf '%s|%s|%s\\n' \"$(date +%s.%N)\" "
        f'"${{CUDA_VISIBLE_DEVICES--}}" "${{QUEUECTL_GPUS--}}"'
        f" > {me}.start.tmp && mv {me}.start.tmp {me}.start; "
        f"( while [ ! -e {g} ]; do sleep 0.05; done; date +%s.%N > {me}.end.tmp; "
        f"mv {me}.end.tmp {me}.end ) & echo $! > {me}.pid"
    )


def test_sigkill_mid_gpu_job_keeps_its_device_until_the_command_is_gone(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "gpus", "0,1")
    gate = tmp_path / "let-go"
    here_ok(
        qhome,
        "add",
        "--id",
        "held",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        _holder_command(stamps, gate) + "; wait",
    )
    first = spawn_worker(procs, qhome, "--count", "1", log=tmp_path / "w1.log")
    wait_for(lambda: (stamps / "held.1.pid").exists(), "the job and its grandchild to start")
    taken = read_intervals(stamps)[0].cuda
    assert taken in ("0", "1")
    other = "1" if taken == "0" else "0"
    kill9(first)
    grandchild = int((stamps / "held.1.pid").read_text())
    assert not pid_gone(grandchild)
    assert gpu_status(qhome)[taken] == 1  # still held by the orphaned command

    spawn_worker(procs, qhome, "--count", "4", log=tmp_path / "w2.log")
    short = enqueue_many(
        qhome, [{"command": stamp_command(stamps, work=0.1), "gpus": 1} for _ in range(6)]
    )
    wait_for(
        lambda: all(all_jobs(qhome).get(j, ("",))[0] == "completed" for j in short),
        "the six short GPU jobs",
        timeout=90,
    )
    assert not (stamps / "held.1.end").exists(), "the held job's command ended too early"
    for r in read_intervals(stamps):
        if r.job in short:
            assert r.devices == [other], f"{r.name} ran on {r.cuda} while device {taken} was held"
    assert all_jobs(qhome)["held"][0] == "processing"  # nobody recovered it meanwhile

    gate.touch()
    wait_for(lambda: pid_gone(grandchild), "the grandchild to exit")
    wait_for(
        lambda: all_jobs(qhome)["held"][0] == "completed", "the lost run to be recovered and rerun"
    )
    both = tmp_path / "both"
    pair = enqueue_many(
        qhome, [{"command": stamp_command(stamps, gate=both), "gpus": 1} for _ in range(2)]
    )
    wait_for(
        lambda: all((stamps / f"{j}.1.start").exists() for j in pair), "two jobs on both devices"
    )
    assert sorted(r.cuda for r in read_intervals(stamps) if r.job in pair) == ["0", "1"]
    both.touch()


def test_an_orphan_of_a_finished_gpu_job_keeps_the_device(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    """The job's shell exits at once, leaving a grandchild that kept fd 3: the job is
    completed, but its device is not free again until that grandchild is gone."""
    here_ok(qhome, "config", "set", "gpus", "0")
    gate = tmp_path / "let-go"
    here_ok(
        qhome,
        "add",
        "--id",
        "leaver",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        _holder_command(stamps, gate),
    )
    spawn_worker(procs, qhome, "--count", "3", log=tmp_path / "w.log")
    wait_for(
        lambda: all_jobs(qhome).get("leaver", ("",))[0] == "completed",
        "the leaving job to complete",
    )
    orphan = int((stamps / "leaver.1.pid").read_text())
    assert not pid_gone(orphan)
    here_ok(qhome, "add", "--id", "next", "--gpus", "1", "--", "sh", "-c", stamp_command(stamps))
    here_ok(qhome, "add", "--id", "cpu", "--", "sh", "-c", stamp_command(stamps))
    wait_for(lambda: all_jobs(qhome)["cpu"][0] == "completed", "the CPU job")
    assert gpu_status(qhome) == {"0": 1}
    assert not (stamps / "next.1.start").exists()
    gate.touch()
    wait_for(lambda: all_jobs(qhome)["next"][0] == "completed", "the next GPU job")
    runs = {r.name: r for r in read_intervals(stamps)}
    assert runs["next.1"].start >= runs["leaver.1"].end


# ------------------------------------------------------------------ showing devices


def test_status_and_queue_list_show_the_devices_in_use(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "gpus", "0,1")
    gate = tmp_path / "go"
    here_ok(
        qhome, "add", "--id", "g", "--gpus", "1", "--", "sh", "-c", stamp_command(stamps, gate=gate)
    )
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    wait_for(lambda: (stamps / "g.1.start").exists(), "the GPU job to start")
    device = read_intervals(stamps)[0].cuda
    assert gpu_status(qhome) == {device: 1, ("1" if device == "0" else "0"): 0}
    text = here_ok(qhome, "status")
    assert "gpu" in text.lower() and f"{device}: 1/1" in text, text
    table = here_ok(qhome, "queue", "list")
    assert "gpu" in table.lower(), f"queue list does not show the devices in use:\n{table}"

    def in_use_by_default() -> object:
        rows = json.loads(here_ok(qhome, "queue", "list", "--json"))
        return next(r for r in rows if r["name"] == "default").get("gpus_in_use")

    # what the workers publish about their running jobs follows within a moment
    wait_for(lambda: in_use_by_default() == {device: 1}, "queue list --json to show the device")
    gate.touch()


def test_auto_takes_the_devices_nvidia_smi_lists(
    qhome: Path, procs: Procs, stamps: Path, tmp_path: Path
) -> None:
    if shutil.which("nvidia-smi") is None:  # this machine has none: "auto" finds no device
        q_ok(qhome, "config", "set", "gpus", "auto")
        assert_clean_error(q(qhome, "add", "--gpus", "1", "true"), 2, "gpu")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        '[ "$1" = "-L" ] || exit 9\n'
        "echo 'GPU 0: Fake A100 (UUID: GPU-aaaa)'\n"
        "echo 'GPU 1: Fake A100 (UUID: GPU-bbbb)'\n"
    )
    (fake / "nvidia-smi").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    q_ok(qhome, "config", "set", "gpus", "auto", env=env)
    assert_clean_error(q(qhome, "add", "--gpus", "3", "true", env=env), 2, "gpu")
    q_ok(
        qhome,
        "add",
        "--id",
        "pair",
        "--gpus",
        "2",
        "--",
        "sh",
        "-c",
        stamp_command(stamps),
        env=env,
    )
    worker = spawn_worker(procs, qhome, "--burst", env=env, log=tmp_path / "w.log")
    assert worker.wait(timeout=60) == 0
    run = read_intervals(stamps)[0]
    assert sorted(run.devices) == ["0", "1"] and run.gpus == run.cuda
