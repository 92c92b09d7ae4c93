"""Completion hooks: the ``on-finish`` setting and a job's own ``--on-finish``, run by a worker
after a job reaches a final state (completed, dead, cancelled) once that state is durable,
with the job's facts in the environment, in a process group of its own with a time limit,
its result journaled and shown by ``show``; at least once across SIGKILLed workers.

Hooks here record what they saw into files of their own (written to a tmp name and renamed):
the environment, whether the job's file was already in its final folder, whether they were
handed any lock descriptor. Workers are real processes; everything is waited for by polling
with a generous deadline.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Procs, journal_records, pid_gone
from .ops_support import (
    all_jobs,
    here_ok,
    kill9,
    q,
    run_here,
    spawn_worker,
    term,
    wait_for,
)


def recorder(folder: Path) -> str:
    """A hook that writes ``<folder>/<job>.<ns>.<pid>.hook``: its QUEUECTL_* variables, then
    ``IN_FINAL`` (the job's file is in the folder of its state), ``IN_PROCESSING`` and
    ``LOCKS`` (descriptors it inherited that point at the home's lock file)."""
    d = shlex.quote(str(folder))
    return (
        f'f={d}/"$QUEUECTL_JOB_ID.$(date +%s%N).$$"; '
        "{ env | grep '^QUEUECTL_' | sort; "
        '[ -e "$QUEUECTL_HOME/$QUEUECTL_STATE/$QUEUECTL_JOB_ID.json" ] '
        "&& echo IN_FINAL=yes || echo IN_FINAL=no; "
        '[ -e "$QUEUECTL_HOME/processing/$QUEUECTL_JOB_ID.json" ] '
        "&& echo IN_PROCESSING=yes || echo IN_PROCESSING=no; "
        'echo LOCKS=$(for x in /proc/$$/fd/*; do readlink "$x"; done | grep -c claims.lock); '
        '} > "$f.tmp" && mv "$f.tmp" "$f.hook"'
    )


def recorded(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Job id -> what each of its hook runs recorded, oldest first."""
    out: dict[str, list[dict[str, str]]] = {}
    for path in sorted(folder.glob("*.hook")):
        values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        out.setdefault(values["QUEUECTL_JOB_ID"], []).append(values)
    return out


def hook_results(home: Path, job_id: str | None = None) -> list[dict]:
    """The journaled results of hook runs (of one job), oldest first."""
    out = []
    for record in journal_records(home):
        hook = record.get("hook")
        wanted = job_id is None or (isinstance(hook, dict) and hook.get("job") == job_id)
        if record.get("event") == "hook" and isinstance(hook, dict) and wanted:
            out.append(hook)
    return out


def show(home: Path, job_id: str) -> dict:
    return json.loads(here_ok(home, "show", job_id, "--json"))


def add(home: Path, *args: str) -> str:
    out = here_ok(home, "add", *args)
    assert len(out.splitlines()) == 1, out
    return out.strip()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------ what a hook sees


def test_hook_environment_and_it_runs_only_once_the_state_is_durable(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "queue", "add", "other")
    here_ok(qhome, "config", "set", "on-finish", recorder(spool))
    add(qhome, "--id", "ok", "true")
    add(qhome, "--id", "bad", "-q", "other", "--max-retries", "0", "--", "sh", "-c", "exit 4")
    spawn_worker(procs, qhome, "--count", "2", log=tmp_path / "w.log")
    wait_for(lambda: {"ok", "bad"} <= set(recorded(spool)), "the hooks of ok and bad")
    runs = recorded(spool)
    ok, bad = runs["ok"][0], runs["bad"][0]
    assert ok["QUEUECTL_STATE"] == "completed" and ok["QUEUECTL_EXIT_CODE"] == "0"
    assert ok["QUEUECTL_QUEUE"] == "default" and ok["QUEUECTL_HOME"] == str(qhome)
    assert bad["QUEUECTL_STATE"] == "dead" and bad["QUEUECTL_EXIT_CODE"] == "4"
    assert bad["QUEUECTL_QUEUE"] == "other"
    for seen in (ok, bad):
        assert "QUEUECTL_QUEUE_REMAINING" in seen
        assert seen["IN_FINAL"] == "yes" and seen["IN_PROCESSING"] == "no", seen
        assert seen["LOCKS"] == "0", "a hook must not hold the job's (or any) lock"
    wait_for(lambda: len(hook_results(qhome, "ok")) == 1, "ok's hook result in the journal")
    shown = show(qhome, "ok")
    assert shown["state"] == "completed"
    assert shown["hook"]["outcome"] == "succeeded" and shown["hook"]["exit_code"] == 0
    assert "hook" in here_ok(qhome, "show", "ok")


def test_a_failing_hook_is_shown_and_changes_nothing(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "on-finish", 'echo "it broke: $QUEUECTL_JOB_ID" >&2; exit 3')
    job = add(qhome, "--id", "j", "--max-retries", "2", "true")
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    wait_for(lambda: hook_results(qhome, job), "j's hook result")
    hook = show(qhome, job)["hook"]
    assert hook["outcome"] == "failed" and hook["exit_code"] == 3, hook
    assert "it broke: j" in (hook["stderr_tail"] or ""), hook
    text = here_ok(qhome, "show", job)
    assert "it broke: j" in text and "3" in text
    # the job: completed after one run, never touched again
    state, data = all_jobs(qhome)[job]
    assert (state, data["attempts"], data["last_exit_code"]) == ("completed", 1, 0)
    events = [
        r["event"]
        for r in journal_records(qhome)
        if isinstance(r.get("job"), dict) and r["job"]["id"] == job
    ]
    assert events == ["enqueued", "completed"], events
    assert run_here(qhome, "wait", job, "--timeout", "10").exit_code == 0


def test_queue_remaining_counts_that_queues_waiting_and_running_jobs(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "release"
    here_ok(qhome, "queue", "add", "q")
    here_ok(qhome, "queue", "add", "other")
    here_ok(qhome, "config", "set", "on-finish", recorder(spool))
    add(qhome, "-q", "other", "--hold", "true")  # waits, but in another queue
    add(qhome, "--hold", "true")  # and in the default queue
    slow = add(
        qhome,
        "--id",
        "slow",
        "-q",
        "q",
        "--",
        "sh",
        "-c",
        f"while [ ! -e {gate} ]; do sleep 0.05; done",
    )
    spawn_worker(procs, qhome, "--count", "2", log=tmp_path / "w.log")
    wait_for(lambda: (qhome / "processing" / f"{slow}.json").exists(), "slow to run")
    add(qhome, "--id", "quick", "-q", "q", "true")
    wait_for(lambda: "quick" in recorded(spool), "quick's hook")
    assert recorded(spool)["quick"][0]["QUEUECTL_QUEUE_REMAINING"] == "1"  # slow still runs
    gate.touch()
    wait_for(lambda: "slow" in recorded(spool), "slow's hook")
    assert recorded(spool)["slow"][0]["QUEUECTL_QUEUE_REMAINING"] == "0"  # q has drained


# ------------------------------------------------------------------ time limit, process group


def test_a_hook_past_its_time_limit_loses_its_whole_process_group(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """The hook ignores SIGTERM and so does its grandchild: both are gone once the result is
    recorded (timed out), the job is unchanged, and the next hook still runs."""
    here_ok(qhome, "config", "set", "on-finish-timeout", "1")
    d = shlex.quote(str(spool))
    stubborn = (
        f"trap '' TERM; sleep 300 & echo $! > {d}/grandchild.pid; echo $$ > {d}/hook.pid; "
        "wait; wait; wait"
    )
    add(qhome, "--id", "stubborn", "--on-finish", stubborn, "true")
    add(qhome, "--id", "next", "--on-finish", f"touch {d}/next.ran", "true")
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    wait_for(lambda: hook_results(qhome, "stubborn"), "the stubborn hook's result", timeout=60)
    hook = hook_results(qhome, "stubborn")[0]
    assert hook["outcome"] == "timed_out", hook
    assert "timeout" in (hook["error"] or ""), hook
    for name in ("hook.pid", "grandchild.pid"):
        pid = int((spool / name).read_text())
        wait_for(lambda p=pid: pid_gone(p), f"{name} ({pid}) to be gone", timeout=5)
    assert all_jobs(qhome)["stubborn"][0] == "completed"
    assert show(qhome, "stubborn")["hook"]["outcome"] == "timed_out"
    wait_for(lambda: (spool / "next.ran").exists(), "the next job's hook")


def test_a_hook_that_leaves_a_daemon_does_not_stop_later_hooks(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """A hook starts a daemon in a session of its own (which keeps the hook's stderr open)
    and exits at once. The time limit (1 s, plus the 5 s a stubborn group gets between
    SIGTERM and SIGKILL) is the most a hook may hold up the hooks after it."""
    here_ok(qhome, "config", "set", "on-finish-timeout", "1")
    d = shlex.quote(str(spool))
    add(qhome, "--id", "daemon", "--on-finish", "setsid sleep 45 & echo started", "true")
    add(qhome, "--id", "after", "--on-finish", f"touch {d}/after.ran", "true")
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    wait_for(lambda: (spool / "after.ran").exists(), "the next job's hook", timeout=10)


def test_what_a_hook_leaves_in_its_process_group_does_not_outlive_it(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """A hook backgrounds a child (same process group, stderr inherited) and exits: the
    hook is over, its group is killed (the child cannot linger past the hook or hold up
    the next one), and the hook is recorded as succeeded."""
    d = shlex.quote(str(spool))
    add(qhome, "--id", "leaver", "--on-finish", f"sleep 300 & echo $! > {d}/child.pid", "true")
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    wait_for(lambda: hook_results(qhome, "leaver"), "the leaver's hook result")
    assert hook_results(qhome, "leaver")[0]["outcome"] == "succeeded"
    child = int((spool / "child.pid").read_text())
    wait_for(lambda: pid_gone(child), f"the hook's child ({child}) to be gone", timeout=10)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_hook_with_huge_stderr_keeps_only_its_tail(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    """Only the tail of a hook's stderr is kept: a hook that writes 200 MB to stderr must
    not make the worker hold 200 MB (a chatty hook within its 60 s could exhaust memory)."""
    here_ok(
        qhome,
        "config",
        "set",
        "on-finish",
        "head -c 200000000 /dev/zero | tr '\\0' x >&2; echo the-last-line >&2",
    )
    worker = spawn_worker(procs, qhome, log=tmp_path / "w.log")
    add(qhome, "--id", "chatty", "true")
    wait_for(lambda: hook_results(qhome, "chatty"), "the chatty hook's result", timeout=60)
    peak = _peak_rss_mib(worker.pid)
    hook = hook_results(qhome, "chatty")[0]
    assert (hook["stderr_tail"] or "").endswith("the-last-line"), hook["stderr_tail"][-50:]
    assert len(hook["stderr_tail"]) <= 400
    assert peak < 150, f"the worker's peak RSS reached {peak:.0f} MiB for a hook's stderr"


# ------------------------------------------------------------------ final states without a worker


def test_hooks_for_final_states_reached_without_a_worker(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    here_ok(qhome, "config", "set", "on-finish", recorder(spool))
    add(qhome, "--id", "later", "--run-at", "2099-01-01T00:00:00Z", "true")
    add(qhome, "--id", "dep", "--hold", "true")
    add(qhome, "--id", "child", "--after", "dep", "true")
    add(qhome, "--id", "grandchild", "--after", "child", "true")
    add(qhome, "--id", "dies", "--max-retries", "0", "--", "sh", "-c", "exit 4")
    add(qhome, "--id", "orphan", "--after", "dies", "true")
    here_ok(qhome, "cancel", "later", "dep")  # no worker runs
    spawn_worker(procs, qhome, "--count", "2", log=tmp_path / "w.log")
    want = {
        "later": ("cancelled", ""),
        "dep": ("cancelled", ""),
        "child": ("dead", ""),
        "grandchild": ("dead", ""),
        "dies": ("dead", "4"),
        "orphan": ("dead", ""),
    }
    wait_for(lambda: set(want) <= set(recorded(spool)), f"hooks of {sorted(want)}")
    runs = recorded(spool)
    got = {j: (runs[j][0]["QUEUECTL_STATE"], runs[j][0]["QUEUECTL_EXIT_CODE"]) for j in want}
    assert got == want
    assert all(runs[j][0]["IN_FINAL"] == "yes" for j in want)


def test_a_burst_worker_runs_the_hooks_that_are_due_before_it_exits(
    qhome: Path, spool: Path
) -> None:
    d = shlex.quote(str(spool))
    here_ok(qhome, "config", "set", "on-finish", f'touch {d}/"$QUEUECTL_JOB_ID"')
    add(qhome, "--id", "waiting", "--run-at", "2099-01-01T00:00:00Z", "true")
    here_ok(qhome, "cancel", "waiting")
    add(qhome, "--id", "quick", "true")
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(qhome), "worker", "start", "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in spool.iterdir()) == ["quick", "waiting"], done.stderr
    assert show(qhome, "quick")["hook"] is not None


def test_no_hook_for_jobs_that_finished_before_hooks_were_configured(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    add(qhome, "--id", "old1", "true")
    add(qhome, "--id", "old2", "--max-retries", "0", "false")
    add(qhome, "--id", "old3", "--run-at", "2099-01-01T00:00:00Z", "true")
    here_ok(qhome, "cancel", "old3")
    burst = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(qhome), "worker", "start", "--burst"],
        capture_output=True,
        timeout=60,
    )
    assert burst.returncode == 0
    assert {s for s, _ in all_jobs(qhome).values()} == {"completed", "dead", "cancelled"}
    here_ok(qhome, "config", "set", "on-finish", recorder(spool))
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    add(qhome, "--id", "new1", "true")
    wait_for(lambda: "new1" in recorded(spool), "new1's hook")
    here_ok(qhome, "restart", "old1")  # a new final state after hooks were configured
    wait_for(lambda: "old1" in recorded(spool), "the restarted old1's hook")
    wait_for(lambda: len(hook_results(qhome)) >= 2, "both hook results in the journal")
    assert sorted(recorded(spool)) == ["new1", "old1"]
    assert sorted(h["job"] for h in hook_results(qhome)) == ["new1", "old1"]


def test_a_jobs_own_on_finish_replaces_the_configured_hook(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    d = shlex.quote(str(spool))
    own = f'touch {d}/own-"$QUEUECTL_JOB_ID"'
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    add(qhome, "--id", "p0", "true")
    add(qhome, "--id", "p1", "--on-finish", own, "true")  # no configured hook yet
    wait_for(lambda: (spool / "own-p1").exists(), "p1's own hook")
    here_ok(qhome, "config", "set", "on-finish", f'touch {d}/cfg-"$QUEUECTL_JOB_ID"')
    add(qhome, "--id", "p2", "--on-finish", own, "true")
    add(qhome, "--id", "p3", "true")
    here_ok(qhome, "schedule", "add", "sched", "--every", "1s", "--on-finish", own, "true")
    wait_for(
        lambda: (
            {"own-p2", "cfg-p3"} <= {p.name for p in spool.iterdir()}
            and any(p.name.startswith("own-sched.") for p in spool.iterdir())
        ),
        "the hooks of p2, p3 and a scheduled job",
    )
    here_ok(qhome, "schedule", "remove", "sched")
    names = {p.name for p in spool.iterdir()}
    assert {"own-p1", "own-p2", "cfg-p3"} <= names
    assert not names & {"own-p0", "cfg-p0", "cfg-p1", "cfg-p2", "own-p3"}, names
    assert not any(n.startswith("cfg-sched.") for n in names), names


def test_a_running_hook_does_not_hold_up_jobs(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """One worker, one thread: while the first job's hook runs (until released), the next
    jobs are claimed, run and completed."""
    d = shlex.quote(str(spool))
    here_ok(
        qhome,
        "config",
        "set",
        "on-finish",
        f'touch {d}/"$QUEUECTL_JOB_ID".hook; while [ ! -e {d}/release ]; do sleep 0.05; done',
    )
    spawn_worker(procs, qhome, "--count", "1", log=tmp_path / "w.log")
    add(qhome, "--id", "a1", "true")
    wait_for(lambda: (spool / "a1.hook").exists(), "a1's hook to start")
    add(qhome, "--id", "a2", "true")
    add(qhome, "--id", "a3", "--", "sh", "-c", "exit 5")
    wait_for(
        lambda: all(
            all_jobs(qhome).get(j, ("",))[0] in ("completed", "failed") for j in ("a2", "a3")
        ),
        "a2 and a3 to finish while a1's hook runs",
    )
    assert not (spool / "a2.hook").exists()  # hooks run one at a time, in order
    (spool / "release").touch()
    wait_for(lambda: (spool / "a2.hook").exists(), "a2's hook after the release")


# ------------------------------------------------------------------ at least once


def test_at_least_once_when_the_hook_runner_is_sigkilled(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """The worker running a hook is SIGKILLed mid-hook, three times: another worker runs
    that hook again, and every job's final state gets a completed hook run journaled."""
    starts, ends = spool / "starts", spool / "ends"
    here_ok(
        qhome,
        "config",
        "set",
        "on-finish",
        f'echo "$QUEUECTL_JOB_ID $PPID" >> {starts}; sleep 0.4; echo "$QUEUECTL_JOB_ID" >> {ends}',
    )
    live: dict[int, subprocess.Popen[bytes]] = {}

    def start(n: int) -> None:
        proc = spawn_worker(procs, qhome, "--count", "2", log=tmp_path / f"w{n}.log")
        live[proc.pid] = proc

    start(0)
    start(1)
    jobs = [add(qhome, "--id", f"h{i}", "true") for i in range(8)]

    def lines() -> list[list[str]]:
        return [ln.split() for ln in starts.read_text().splitlines()] if starts.exists() else []

    killed: list[str] = []
    for n in range(3):
        seen = len(lines())
        wait_for(lambda s=seen: len(lines()) > s, "a hook to start", timeout=60)
        job, runner = lines()[-1]
        assert int(runner) in live, (runner, sorted(live))
        kill9(live.pop(int(runner)))
        killed.append(job)
        start(n + 2)
    wait_for(
        lambda: {h["job"] for h in hook_results(qhome) if h["outcome"] == "succeeded"} >= set(jobs),
        "a journaled hook run for every job",
        timeout=90,
    )
    runs = [ln[0] for ln in lines()]
    for job in killed:
        assert runs.count(job) >= 2, (job, runs)  # run again after its runner died
    assert set(runs) == set(jobs)
    for proc in live.values():
        term(proc)


def test_stop_now_does_not_wait_for_a_long_hook(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """A second SIGTERM means "stop now" (running jobs go back): a hook still running is no
    reason to stay; its final state's hook is simply run again by the next runner."""
    d = shlex.quote(str(spool))
    here_ok(
        qhome, "config", "set", "on-finish", f'echo x >> {d}/"$QUEUECTL_JOB_ID".starts; sleep 40'
    )
    worker = spawn_worker(procs, qhome, log=tmp_path / "w.log")
    add(qhome, "--id", "j", "true")
    wait_for(lambda: (spool / "j.starts").exists(), "the hook to start")
    os.kill(worker.pid, signal.SIGTERM)
    wait_for(
        lambda: "again to stop now" in (tmp_path / "w.log").read_text(), "the first signal logged"
    )
    os.kill(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=8)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker, told to stop now, still waits for a hook") from None
    again = spawn_worker(procs, qhome, log=tmp_path / "w2.log")
    wait_for(lambda: len((spool / "j.starts").read_text().split()) >= 2, "the hook to run again")
    del again


# ------------------------------------------------------------------ maintenance


def test_journal_compaction_does_not_drop_hooks_not_yet_run(
    qhome: Path, procs: Procs, spool: Path, tmp_path: Path
) -> None:
    """Final states reached while no worker ran, then ``journal compact``: their hooks still
    run when a worker starts (none skipped)."""
    d = shlex.quote(str(spool))
    here_ok(qhome, "config", "set", "on-finish", f'touch {d}/"$QUEUECTL_JOB_ID"')
    add(qhome, "--id", "c1", "--run-at", "2099-01-01T00:00:00Z", "true")
    here_ok(qhome, "cancel", "c1")
    compact = q(qhome, "journal", "compact", "--retention", "0s")
    assert compact.returncode == 0, compact.stderr
    spawn_worker(procs, qhome, log=tmp_path / "w.log")
    add(qhome, "--id", "c2", "true")
    wait_for(lambda: (spool / "c2").exists(), "c2's hook")
    assert (spool / "c1").exists(), "the hook of c1 (cancelled before the compaction) never ran"
