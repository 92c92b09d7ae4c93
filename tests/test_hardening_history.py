"""Issue 10, "history stays true": compaction never renumbers a job's runs or makes a
counter go down, and a running job can be seen as running (since when, on which worker)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from .conftest import (
    Procs,
    enqueue_job,
    jobs_in,
    run_cli,
    settled_in,
    wait_until,
)


def _ok(home: Path, *args: str) -> str:
    result = run_cli(home, *args, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def _history(home: Path, job_id: str) -> list[dict]:
    return json.loads(_ok(home, "history", job_id, "--json"))


def _show_runs(home: Path, job_id: str) -> list[tuple[int, str]]:
    """(run, started) of each row of the attempt table that ``show`` prints."""
    rows = []
    lines = _ok(home, "show", job_id).splitlines()
    header = next((i for i, line in enumerate(lines) if re.match(r"\s*run\s+outcome", line)), None)
    if header is None:
        return rows  # no attempts to show
    for line in lines[header + 2 :]:
        fields = line.split()
        if fields and fields[0].isdigit():
            rows.append((int(fields[0]), next(f for f in fields if _ISO.match(f))))
    return rows


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


_SAMPLE = re.compile(r"^(queuectl_attempts_total\{[^}]*\}) (\S+)$")


def _attempt_counters(home: Path) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for line in _ok(home, "metrics").splitlines()
        if (m := _SAMPLE.match(line))
    }


def test_compaction_keeps_run_numbers_log_numbers_and_counters(qhome: Path, tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    _ok(qhome, "config", "set", "backoff-base", "1")
    command = f"echo run $QUEUECTL_RUN; [ -e {ok} ] || exit 1"
    enqueue_job(qhome, {"id": "h", "command": command, "max_retries": 2})
    _ok(qhome, "worker", "start", "--burst")  # runs 1-3 fail: dead
    assert jobs_in(qhome, "dead") == ["h"]
    ok.touch()
    _ok(qhome, "dlq", "retry", "h")
    for number in range(3):  # more activity, before and around the job's last run
        enqueue_job(qhome, {"id": f"other{number}", "command": "echo other"})
    _ok(qhome, "worker", "start", "--burst")  # run 4 completes
    assert settled_in(qhome, "completed", "h")
    logs = sorted(int(p.stem) for p in (qhome / "logs" / "h").glob("*.out"))
    assert logs == [1, 2, 3, 4]
    for number in logs:  # log n holds run n: unchanged run numbers keep matching the logs
        assert (qhome / "logs" / "h" / f"{number}.out").read_text() == f"run {number}\n"
    before = {run["run"]: run for run in _history(qhome, "h")}
    assert sorted(before) == [1, 2, 3, 4]
    assert [r for r, _ in _show_runs(qhome, "h")] == [1, 2, 3, 4]
    counters_before = _attempt_counters(qhome)
    assert counters_before, "queuectl metrics printed no queuectl_attempts_total"

    _ok(qhome, "journal", "compact", "--retention", "0s")

    problems = []
    after = _history(qhome, "h")
    if not after:
        problems.append("history lost every run")
    for run in after:
        number = run["run"]
        same = before.get(number, {}).get("started_at") == run.get("started_at")
        if not same:
            was = [n for n, r in before.items() if r.get("started_at") == run.get("started_at")]
            problems.append(f"history lists run {was} as run {number}")
    for number, started in _show_runs(qhome, "h"):
        if before.get(number, {}).get("started_at") != started:
            problems.append(f"show lists the run that started {started} as run {number}")
    counters_after = _attempt_counters(qhome)
    for name, value in counters_before.items():
        if counters_after.get(name, 0.0) < value:
            problems.append(f"{name} went down from {value:g} to {counters_after.get(name, 0.0):g}")
    assert not problems, "after journal compact:\n" + "\n".join(problems)


def _iso(text: object) -> datetime:
    assert isinstance(text, str), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_running_job_shows_when_it_started_and_on_which_worker(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    enqueue_job(
        qhome,
        {
            "id": "busy",
            "command": f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
        },
    )
    worker = procs.worker(qhome, log=tmp_path / "worker.log")
    wait_until(started.exists, message="the job to start")

    shown = json.loads(_ok(qhome, "show", "--json", "busy"))
    running = shown.get("running")
    assert isinstance(running, dict), f"show --json has no 'running' object: {shown}"
    begun = _iso(running.get("started_at"))
    assert abs(begun.timestamp() - started.stat().st_mtime) < 60
    who = running.get("worker")
    assert isinstance(who, dict), running
    assert isinstance(who.get("id"), str) and who["id"], who
    assert isinstance(who.get("host"), str) and who["host"], who
    assert who.get("pid") == worker.pid, (who, worker.pid)

    text = _ok(qhome, "show", "busy")
    listed = [
        line for line in _ok(qhome, "list", "--state", "processing").splitlines() if "busy" in line
    ]
    assert len(listed) == 1, listed
    stamp = running["started_at"][:19]  # to the second, whatever the layout
    assert stamp in text, f"show does not show the start time {stamp}: {text}"
    # The table says how long it has been running (a relative time, as people read it).
    assert "running " in listed[0], f"list does not say the job runs: {listed[0]}"
    for name, output in (("show", text), ("list --state processing", listed[0])):
        assert str(worker.pid) in output, f"{name} does not show the worker {worker.pid}: {output}"
    (entry,) = json.loads(_ok(qhome, "list", "--state", "processing", "--json"))
    assert entry["running"]["started_at"] == running["started_at"]
    release.touch()
    wait_until(lambda: settled_in(qhome, "completed", "busy"), message="the job to complete")
