"""Issue 10, "bad input never gives a traceback, and nothing hangs": a damaged config.json,
durations that overflow, a huge page number, folders the worker cannot write, and readers
racing a compaction all end in one clear line (or keep working), within a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    Procs,
    enqueue_job,
    jobs_in,
    run_cli,
    settled_in,
    wait_until,
)


def _assert_one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("queuectl: error:"), lines[0]
    return lines[0]


# ------------------------------------------------------------------ 11: a damaged config.json

MEMORY_LIMIT = 1 << 30
"""Commands run with 1 GiB of address space, so that one reading /dev/zero fails at once
instead of taking the machine's memory."""

CONFIG_TIMEOUT = 10.0


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_limited(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "queuectl", "--home", str(home), *args],
            capture_output=True,
            text=True,
            timeout=CONFIG_TIMEOUT,
            preexec_fn=_limited,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"'queuectl {' '.join(args)}' hung for {CONFIG_TIMEOUT}s") from None


SETTINGS_READERS = {
    "enqueue": ("enqueue", '{"command": "true"}'),
    "config-get": ("config", "get", "max-retries"),
    "config-list": ("config", "list"),
    "config-set": ("config", "set", "job-timeout", "5"),
    "worker-start": ("worker", "start", "--burst"),
}


def _damage(config: Path, kind: str) -> None:
    if kind == "not-json":
        config.write_bytes(b'{"max-retries": 2,\n')
    elif kind == "invalid-value":
        config.write_bytes(b'{"max-retries": "lots"}\n')
    elif kind == "fifo":
        os.mkfifo(config, 0o600)
    else:
        config.symlink_to("/dev/zero")


def _same_file(config: Path, kind: str, before: bytes | None) -> bool:
    st = config.lstat()
    if kind == "fifo":
        return stat.S_ISFIFO(st.st_mode)
    if kind == "symlink-to-dev-zero":
        return stat.S_ISLNK(st.st_mode) and os.readlink(config) == "/dev/zero"
    return config.read_bytes() == before


@pytest.mark.parametrize("command", list(SETTINGS_READERS))
@pytest.mark.parametrize("kind", ["not-json", "invalid-value", "fifo", "symlink-to-dev-zero"])
def test_a_damaged_config_file_is_one_error_line_naming_it_and_is_never_overwritten(
    qhome: Path, kind: str, command: str
) -> None:
    config = qhome / "config.json"
    _damage(config, kind)
    before = config.read_bytes() if kind in ("not-json", "invalid-value") else None

    result = _run_limited(qhome, *SETTINGS_READERS[command])

    line = _assert_one_error_line(result, 2)
    assert str(config) in line, line
    if kind == "invalid-value":
        assert "max-retries" in line, line
    assert _same_file(config, kind, before), "the damaged config.json was replaced"
    assert jobs_in(qhome, "pending") == []


@pytest.mark.parametrize("command", list(SETTINGS_READERS))
def test_an_unknown_config_key_is_a_warning_not_an_error(qhome: Path, command: str) -> None:
    (qhome / "config.json").write_text('{"future-key": 1}\n')

    result = _run_limited(qhome, *SETTINGS_READERS[command])

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "future-key" in result.stderr, f"no warning about the unknown key: {result.stderr!r}"


def _drop(home: Path, job: dict, staging: Path) -> None:
    """Submit without ``enqueue`` (which must refuse to run with a damaged config.json)."""
    staging.mkdir(exist_ok=True)
    staged = staging / f"{job['id']}.json"
    staged.write_text(json.dumps(job))
    os.rename(staged, home / "pending" / staged.name)


def test_a_running_worker_keeps_its_last_good_settings_when_config_json_is_damaged(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    assert run_cli(qhome, "config", "set", "job-timeout", "1").returncode == 0
    log = tmp_path / "worker.log"
    worker = procs.worker(qhome, log=log)
    enqueue_job(qhome, {"id": "warm-up", "command": "true"})
    wait_until(lambda: settled_in(qhome, "completed", "warm-up"), message="the warm-up job")

    (qhome / "config.json").write_bytes(b"{ this is not JSON\n")
    for number in range(3):  # the worker looks at config.json at most every 0.5 s
        looked = time.monotonic()
        wait_until(lambda t=looked: time.monotonic() > t + 1.0, message="a config re-check")
        job_id = f"after-{number}"
        command = "sleep 5" if number == 0 else "true"
        _drop(qhome, {"id": job_id, "command": command, "max_retries": 0}, tmp_path / "s")
        wait_until(
            lambda j=job_id: settled_in(qhome, "dead", j) or settled_in(qhome, "completed", j),
            timeout=30,
            message=f"{job_id} to finish",
        )

    assert settled_in(qhome, "dead", "after-0"), "job-timeout 1 was forgotten: sleep 5 completed"
    assert jobs_in(qhome, "completed") == ["after-1", "after-2", "warm-up"]
    assert worker.poll() is None
    mentions = [line for line in log.read_text().splitlines() if "config.json" in line]
    assert len(mentions) == 1, f"config.json mentioned {len(mentions)} times in the log: {mentions}"


# ------------------------------------------------------------------ 12: durations that overflow

HUGE = "99999999999d"


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "--delay", HUGE, '{"command": "true"}'),
        ("cleanup", "--older-than", HUGE),
        ("stats", "--since", HUGE),
        ("journal", "compact", "--retention", HUGE),
        ("config", "set", "journal-retention", HUGE),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_duration_that_overflows_is_one_error_line(qhome: Path, args: tuple[str, ...]) -> None:
    enqueue_job(qhome, {"id": "some", "command": "true"})

    _assert_one_error_line(run_cli(qhome, *args), 2)

    assert jobs_in(qhome, "pending") == ["some"]
    compact = run_cli(qhome, "journal", "compact")  # still works with the stored settings
    assert compact.returncode == 0, compact.stderr[-2000:]


# ------------------------------------------------------------------ 13: the dashboard's paging


@pytest.mark.parametrize("page", ["9" * 5000, "\u00b2"], ids=["5000-digits", "superscript-two"])
def test_dashboard_answers_400_to_a_page_number_it_cannot_use(qhome: Path, page: str) -> None:
    from queuectl.storage.home import Home
    from queuectl.storage.store import Store
    from queuectl.web.server import serve

    enqueue_job(qhome, {"id": "one", "command": "true"})
    httpd = serve(Store(Home(qhome).ensure()), "127.0.0.1", 0, None)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        query = urllib.parse.urlencode({"state": "pending", "page": page})
        assert _get(f"{base}/api/jobs?{query}") == 400
        assert _get(f"{base}/api/jobs?state=pending&page=0") == 200  # and it still serves
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(url: str) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError) as exc:
        return f"no answer: {exc}"


# ------------------------------------------------------------------ 14: a worker that cannot claim


@contextlib.contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Root ignores mode bits: make the folder immutable, or failing that a read-only bind
    mount of itself; skip when neither can be done here."""
    if (
        shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    ):
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip("cannot make a folder unwritable here (no chattr +i, no bind mount)")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(path)]
        if subprocess.run(remount, capture_output=True).returncode != 0:
            pytest.skip("cannot remount a bind mount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("folder", ["pending", "processing"])
def test_a_burst_worker_that_cannot_claim_exits_non_zero_with_an_error(
    qhome: Path, procs: Procs, tmp_path: Path, folder: str
) -> None:
    enqueue_job(qhome, {"id": "stuck", "command": "true"})
    log = tmp_path / "worker.log"
    with _unwritable(qhome / folder):
        worker = procs.worker(qhome, "--burst", log=log)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise AssertionError(
                f"the burst worker was still running after 30 s; log: {log.read_text()[-1500:]}"
            ) from None
    assert code != 0, log.read_text()[-1500:]
    assert "error" in log.read_text().lower(), log.read_text()[-1500:]


# ------------------------------------------------------------------ 15: readers vs compaction

READER_ROUNDS = 6
READERS = (("fsck",), ("history", "hist"), ("stats",), ("show", "hist"), ("metrics",))
COMPACTION_LOOPS = 2
"""Two loops: one compaction starts as soon as the other one ends (they take turns on a
lock), so the journal's files are replaced back to back, without interpreter start-ups."""


@pytest.mark.slow
def test_journal_readers_keep_working_while_journal_compact_runs(
    qhome: Path, tmp_path: Path
) -> None:
    """Every ``journal compact --retention 0s`` folds the whole journal into a new snapshot
    and deletes the old segment and snapshot, so loops of them replace the journal's files
    continuously; 3,000 records of 1 KB make each read long enough to be overtaken."""
    enqueue_job(qhome, {"id": "hist", "command": "echo hi"})
    assert run_cli(qhome, "worker", "start", "--burst").returncode == 0
    padding = "x" * 1000
    lines = "".join(json.dumps({"command": f"true {padding}"}) + "\n" for _ in range(3000))
    assert run_cli(qhome, "enqueue", "-", input=lines).returncode == 0
    errors = tmp_path / "compact.err"
    compact = (
        f'while :; do "{sys.executable}" -m queuectl --home "{qhome}" journal compact '
        f'--retention 0s > /dev/null 2>> "{errors}"; done'
    )
    loops = [
        subprocess.Popen(["sh", "-c", compact], start_new_session=True)
        for _ in range(COMPACTION_LOOPS)
    ]
    problems = []
    try:
        first = set(os.listdir(qhome / "journal"))
        wait_until(
            lambda: set(os.listdir(qhome / "journal")) != first, message="a first compaction"
        )
        for _ in range(READER_ROUNDS):
            for args in READERS:
                result = run_cli(qhome, *args)
                text = result.stdout + result.stderr
                allowed = (0, 1) if args == ("fsck",) else (0,)
                if (
                    result.returncode not in allowed
                    or "No such file or directory" in text
                    or "Traceback" in text
                ):
                    problems.append(f"{' '.join(args)}: rc {result.returncode}: {_last_line(text)}")
    finally:
        for loop in loops:
            os.killpg(loop.pid, signal.SIGKILL)
            loop.wait()
    assert not problems, (
        f"{len(problems)} of {len(READERS) * READER_ROUNDS} reads failed:\n" + "\n".join(problems)
    )
    assert "Traceback" not in errors.read_text(), errors.read_text()[-2000:]


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
