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

from queuectl.home import Home
from queuectl.store import Store


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


def jobs_in(home: Path, state: str) -> list[str]:
    return sorted(p.stem for p in (home / state).glob("*.json"))


def read_job(home: Path, state: str, job_id: str) -> dict:
    return json.loads((home / state / f"{job_id}.json").read_text())


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    path = tmp_path / "qhome"
    os.environ.pop("QUEUECTL_HOME", None)
    return path
