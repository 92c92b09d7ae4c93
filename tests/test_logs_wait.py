"""``logs`` and ``wait`` through the CLI, against homes prepared in-process.

Attempts are recorded the way the worker's committer records them: output first, moved to
``logs/<id>/<n>.out|.err``, then the job file and journal record. When a test needs
something to happen while a command blocks, a ``threading.Timer`` plays the other process.
The command under test notices on its own, and nothing sleeps to synchronise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner, Result

from queuectl.cli.main import cli
from queuectl.job import JobState, job_from_input, utcnow
from queuectl.scheduler import Outcome, OutcomeKind, after_attempt
from queuectl.storage.home import Home
from queuectl.storage.store import Change, Claim, Store

from .conftest import run_cli

SAFETY_TIMEOUT = "60"
"""Keeps a broken ``wait`` from hanging the suite; never reached when things work."""


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def new_store(tmp_path: Path) -> Store:
    return Store(Home(tmp_path / "home").ensure())


def add(store: Store, job_id: str, max_retries: int = 0, **fields: object) -> None:
    spec = {"id": job_id, "command": f"run {job_id}", "max_retries": max_retries, **fields}
    store.enqueue([job_from_input(spec, default_max_retries=0)])


def take(store: Store, job_id: str) -> Claim:
    claim = store.claims.claim(f"{job_id}.json", JobState.PENDING, "test:1:0", utcnow())
    assert isinstance(claim, Claim), claim
    return claim


def record(store: Store, claim: Claim, exit_code: int, out: bytes = b"", err: bytes = b"") -> None:
    """Finish a claimed attempt: place its output (if any), then commit, like the worker."""
    job, now = claim.job, utcnow()
    attempt = job.attempts + 1
    if out or err:
        folder = store.home.logs / job.id
        folder.mkdir(exist_ok=True)
        (folder / f"{attempt}.out").write_bytes(out)
        (folder / f"{attempt}.err").write_bytes(err)
    kind = OutcomeKind.SUCCEEDED if exit_code == 0 else OutcomeKind.FAILED
    error = None if exit_code == 0 else f"exit code {exit_code}"
    outcome = Outcome(kind, exit_code=exit_code, error=error, started_at=now, finished_at=now)
    updated = after_attempt(job, outcome, backoff_base=0.0, now=now)
    store.commits.commit([Change(updated, updated.state.value, remove=claim.path)])
    claim.release()


def run_once(store: Store, job_id: str, exit_code: int, out: bytes = b"", err: bytes = b"") -> None:
    record(store, take(store, job_id), exit_code, out, err)


@contextmanager
def soon(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` on a timer thread while the body blocks; re-raise what it raised."""
    errors: list[BaseException] = []

    def act() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    timer = threading.Timer(0.2, act)
    timer.start()
    try:
        yield
    finally:
        timer.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ logs


def test_logs_prints_the_latest_attempt_stdout_then_stderr_labelled(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "j", max_retries=1)
    run_once(store, "j", 3, out=b"first\n")
    claim = store.claims.claim("j.json", JobState.FAILED, "test:1:0", utcnow())
    assert isinstance(claim, Claim), claim
    record(store, claim, 0, out=b"second-out\n", err=b"second-err\n")
    result = invoke(store.home.root, "logs", "j")
    assert result.exit_code == 0, result.output
    assert result.output == ("--- run 2 stdout\nsecond-out\n--- run 2 stderr\nsecond-err\n")
    first = invoke(store.home.root, "logs", "j", "--attempt", "1")
    assert first.exit_code == 0 and first.output == "first\n"  # one stream: no label


def test_logs_reads_runs_by_number(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "j")
    run_once(store, "j", 0, out=b"run 1\n")
    folder = store.home.logs / "j"
    for n in (2, 9, 10):
        (folder / f"{n}.out").write_bytes(f"run {n}\n".encode())
    assert invoke(store.home.root, "logs", "j").output == "run 1\n"  # its latest real run
    assert invoke(store.home.root, "logs", "j", "--run", "10").output == "run 10\n"
    assert invoke(store.home.root, "logs", "j", "--attempt", "9").output == "run 9\n"


def test_logs_says_when_an_attempt_left_no_output(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "quiet")
    run_once(store, "quiet", 0)
    result = invoke(store.home.root, "logs", "quiet")
    assert result.exit_code == 0
    assert "no output recorded for the latest run of quiet" in result.output
    assert "run 4 of quiet" in invoke(store.home.root, "logs", "quiet", "-a", "4").output


def test_logs_of_an_unknown_job_fails(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    result = invoke(store.home.root, "logs", "ghost")
    assert result.exit_code == 1
    assert "no job with id 'ghost'" in result.output


def test_logs_follow_of_an_unknown_job_fails(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert invoke(store.home.root, "logs", "ghost", "--follow").exit_code == 1


def test_logs_follow_prints_what_is_recorded_until_the_job_leaves_processing(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    add(store, "f")
    claim = take(store, "f")  # now in processing/: --follow must keep watching
    actor = Store(Home(store.home.root))
    with soon(lambda: record(actor, claim, 0, out=b"made it\n")):
        result = invoke(store.home.root, "logs", "f", "--follow")
    assert result.exit_code == 0, result.output
    assert result.output == "made it\n"
    assert (
        store.folders.locate("f") is not None and store.folders.locate("f")[0] is JobState.COMPLETED
    )


def test_logs_after_a_dlq_retry_do_not_show_an_earlier_run(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    marker = tmp_path / "second-time"
    command = f"if [ -e {marker} ]; then exit 0; fi; echo from-the-first-run; exit 3"
    store.enqueue([job_from_input({"id": "r", "command": command}, default_max_retries=0)])
    assert run_cli(store.home.root, "worker", "start", "--burst").returncode == 0
    assert store.folders.locate("r") is not None and store.folders.locate("r")[0] is JobState.DEAD
    marker.touch()
    store.retry_dead("r", utcnow())
    assert run_cli(store.home.root, "worker", "start", "--burst").returncode == 0
    assert store.folders.load("r").state is JobState.COMPLETED
    assert "from-the-first-run" not in invoke(store.home.root, "logs", "r").output


# ------------------------------------------------------------------ wait


def test_wait_blocks_until_another_thread_completes_the_job(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "w")
    actor = Store(Home(store.home.root))
    with soon(lambda: run_once(actor, "w", 0)):
        result = invoke(store.home.root, "wait", "w", "--timeout", SAFETY_TIMEOUT)
        done = store.folders.load("w").state  # as wait returned, before the timer thread is joined
    assert result.exit_code == 0, result.output
    assert done is JobState.COMPLETED


def test_wait_on_one_dead_job_exits_with_its_exit_code(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "d")
    actor = Store(Home(store.home.root))
    with soon(lambda: run_once(actor, "d", 7)):
        result = invoke(store.home.root, "wait", "d", "--timeout", SAFETY_TIMEOUT)
    assert result.exit_code == 7, result.output


def test_wait_on_one_job_cancelled_before_it_ran_exits_125(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "c")
    assert store.cancel_waiting("c", utcnow()) is not None
    assert invoke(store.home.root, "wait", "c").exit_code == 125  # cancelled: a fixed code


def test_wait_passes_a_failed_job_waiting_for_its_retry(tmp_path: Path) -> None:
    """failed/ is not final: wait keeps going until the retry completes."""
    store = new_store(tmp_path)
    add(store, "r", max_retries=1)
    run_once(store, "r", 3)
    assert store.folders.locate("r") is not None and store.folders.locate("r")[0] is JobState.FAILED
    actor = Store(Home(store.home.root))

    def retry() -> None:
        claim = actor.claims.claim("r.json", JobState.FAILED, "test:1:0", utcnow())
        assert isinstance(claim, Claim), claim
        record(actor, claim, 0)

    with soon(retry):
        result = invoke(store.home.root, "wait", "r", "--timeout", SAFETY_TIMEOUT)
    assert result.exit_code == 0, result.output


def test_wait_for_several_is_0_when_all_completed_and_1_naming_the_others(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    for job_id in ("a", "b", "c"):
        add(store, job_id)
    run_once(store, "a", 0)
    run_once(store, "b", 0)
    run_once(store, "c", 4)
    assert invoke(store.home.root, "wait", "a", "b").exit_code == 0
    mixed = invoke(store.home.root, "wait", "a", "c", "b")
    assert mixed.exit_code == 1  # not c's own code: that is only for a single job
    assert "not completed: c" in mixed.output


def test_wait_timeout_exits_124_naming_only_the_unfinished(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "done")
    add(store, "never", run_at="2099-01-01T00:00:00Z")
    add(store, "nor")
    run_once(store, "done", 0)
    result = invoke(store.home.root, "wait", "done", "never", "nor", "--timeout", "0.3")
    assert result.exit_code == 124  # as timeout(1)
    assert "timed out waiting for: never nor" in result.output
    assert "done" not in result.output


def test_wait_for_an_unknown_id_fails_at_once(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    add(store, "real")
    result = invoke(store.home.root, "wait", "real", "ghost", "--timeout", SAFETY_TIMEOUT)
    assert result.exit_code == 1
    assert "no job with id 'ghost'" in result.output  # not a timeout after waiting for real


def test_a_successful_wait_prints_nothing(tmp_path: Path) -> None:
    """Scripts use wait as a plain barrier: nothing on stdout when all went well."""
    store = new_store(tmp_path)
    add(store, "q")
    run_once(store, "q", 0)
    result = invoke(store.home.root, "wait", "q")
    assert result.exit_code == 0 and result.output == ""
