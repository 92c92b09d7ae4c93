"""Shared fixtures: a private queue home per test and helpers to drive the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from queuectl.storage.home import Home
from queuectl.storage.store import Store

# CI runs (CI=true) draw the same examples every time: a landing must not depend on luck.
# Locally each run draws new ones, which is how hidden cases get found (then pinned with
# @example). No per-example deadline anywhere: on two shared cores a slow example is load,
# not a bug (a round-trip property once took 200 ms at load 30), and speed lives in tools/.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("local", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "local")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def store(home: Home) -> Store:
    return Store(home)


def run_cli(
    home: Path, *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m queuectl --home HOME ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_worker(home: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``worker start ARGS`` in the background; stderr goes to ``log`` if given."""
    err = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), "worker", "start", *args],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )


def wait_until(
    condition: Callable[[], bool],
    timeout: float = 30.0,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll a condition every 20 ms up to a deadline (pueue's habit); fail with a message."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def settled_in(home: Path, state: str, job_id: str) -> bool:
    """True once a job's commit is complete: its new file is published (first step), it is
    journaled, and the old copy in processing/ is gone (last step)."""
    return job_id in jobs_in(home, state) and job_id not in jobs_in(home, "processing")


def jobs_in(home: Path, state: str) -> list[str]:
    return sorted(p.stem for p in (home / state).glob("*.json"))


def read_job(home: Path, state: str, job_id: str) -> dict:
    return json.loads((home / state / f"{job_id}.json").read_text())


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    path = tmp_path / "qhome"
    os.environ.pop("QUEUECTL_HOME", None)
    return path


# ---------------------------------------------------------------- process-level helpers
# (appended for the worker / concurrency / recovery / signals / drops tests)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs: no such process, or only a zombie left."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # the state letter follows the ")" that closes the command name
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X")


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def journal_records(home: Path) -> list[dict]:
    """Every valid journal record of a home, in file order."""
    from queuectl.storage.journal import scan

    return [record.data for record in scan(home / "journal").records]


def job_events(home: Path, job_id: str) -> list[tuple[str, dict]]:
    """(event, job after the change) for every journal record about one job."""
    return [
        (r["event"], r["job"])
        for r in journal_records(home)
        if isinstance(r.get("job"), dict) and r["job"].get("id") == job_id
    ]


def enqueue_job(home: Path, job: dict) -> str:
    """``queuectl enqueue JSON`` as a real process; returns the new id."""
    result = run_cli(home, "enqueue", json.dumps(job))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process {proc.pid} still running after {timeout}s") from None


def live_worker_info(home: Path) -> list[dict]:
    result = run_cli(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["workers"]


def _command_pids(home: Path) -> list[int]:
    """Processes started by a worker of ``home`` (their environment names the home and a job)."""
    marker = f"QUEUECTL_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
        except OSError:
            continue
        if marker in env and any(v.startswith(b"QUEUECTL_JOB_ID=") for v in env):
            found.append(int(entry))
    return found


class Procs:
    """Background processes of one test; everything is SIGKILLed at teardown, including
    the process groups of job commands that outlived their worker."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.homes: list[Path] = []

    def worker(
        self,
        home: Path,
        *args: str,
        log: Path | None = None,
        umask: int = -1,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """``worker start ARGS`` in the background; stderr (its log) goes to ``log``, or to
        the descriptor ``stderr``, else nowhere."""
        if home not in self.homes:
            self.homes.append(home)
        handle = open(log, "ab") if log else None  # noqa: SIM115
        if handle is not None:
            stderr = handle.fileno()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "--home", str(home), "worker", "start", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if stderr is None else stderr,
                umask=umask,
            )
        finally:
            if handle is not None:
                handle.close()
        self.procs.append(proc)
        return proc

    def watch_home(self, home: Path) -> None:
        if home not in self.homes:
            self.homes.append(home)

    def cleanup(self) -> None:
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for home in self.homes:
            for pid in _command_pids(home):
                try:
                    group = os.getpgid(pid)
                    if group != os.getpgrp():  # never our own group
                        os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Procs:
    tracker = Procs()
    request.addfinalizer(tracker.cleanup)
    return tracker


@pytest.fixture
def qhome(home: Home, procs: Procs) -> Path:
    """The root of a fresh private home whose leftover job commands are killed at teardown."""
    procs.watch_home(home.root)
    return home.root


# ---------------------------------------------------------------- the Dask executor's tests


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One ``dask scheduler`` and two ``dask worker`` processes on loopback, shared by the
    tests that do not break them (tests/remote_support.py)."""
    from tests.remote_support import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.start()
        cluster.wait_workers()
        yield cluster
    finally:
        cluster.stop()
