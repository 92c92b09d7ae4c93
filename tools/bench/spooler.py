"""task-spooler (``tsp``): finding or installing it, and one private server per use.

Debian's package ``task-spooler`` installs it as ``tsp``; ``/usr/bin/ts`` is usually
moreutils' timestamp filter, so a candidate counts only if ``-V`` says "Task Spooler".
Each server gets its own socket and output folder (``TS_SOCKET``, ``TMPDIR``) and an
environment without the user's ``TS_*`` settings (``TS_MAXFINISHED``, ``TS_SAVELIST``,
``TS_MAILTO``, ...), so a run never touches the user's own queue. Every submitted job is a
client process that stays connected to the server until its job has run, which is why a
server holds at most about 1,000 waiting jobs (its connection limit).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.common import REAPER, TIMEOUT, log

__all__ = ["MAX_WAITING", "TaskSpooler", "ensure_tool", "find_tsp"]

MAX_WAITING: Final = 900
"""Jobs per drain for task-spooler (its server takes about 1,000 waiting clients)."""

_CANDIDATES: Final = ("tsp", "ts", "task-spooler")


def find_tsp() -> str | None:
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path and _is_task_spooler(path):
            return path
    return None


def _is_task_spooler(path: str) -> bool:
    try:
        out = subprocess.run(
            [path, "-V"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=5,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "task spooler" in (out.stdout + out.stderr).lower()


def ensure_tool(find: Any, package: str, what: str) -> tuple[str | None, str]:
    """(path, how it was found) for a program: found, else installed with apt-get when root.

    ``find`` returns the program's path or None. The second value is one line for the report
    when the program could not be had (empty otherwise).
    """
    path = find()
    if path:
        return path, ""
    if os.geteuid() != 0:
        return None, f"{what} not measured: {package} is not installed and the bench is not root"
    if shutil.which("apt-get") is None:
        return None, f"{what} not measured: {package} is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    log(f"installing {package}: {' '.join(install)}")
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=TIMEOUT)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    path = find()
    if path:
        return path, ""
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return None, f"{what} not measured: apt-get install {package} failed ({tail})"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TS_")}


class TaskSpooler:
    """One private tsp server with ``slots`` slots, killed (``tsp -K``) on ``close``."""

    def __init__(self, tsp: str, folder: Path, slots: int) -> None:
        self.tsp = tsp
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out").mkdir(exist_ok=True)
        self.env = {
            **_clean_env(),
            "TS_SOCKET": str(folder / "socket"),
            "TMPDIR": str(folder / "out"),  # where it keeps each job's output file
        }
        self._token = REAPER.on_exit(self._kill)
        self.run("-S", str(slots))  # the first call starts the server

    def run(self, *args: str) -> None:
        subprocess.run(
            [self.tsp, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )

    def command(self, *args: str) -> list[str]:
        return [self.tsp, *args]

    def script(self, name: str, commands: Sequence[str]) -> Path:
        """A shell script that submits each command with one ``tsp`` call (``/bin/sh -c``)."""
        path = self.folder / name
        tsp = shlex.quote(self.tsp)
        lines = [f"{tsp} /bin/sh -c {shlex.quote(c)} > /dev/null" for c in commands]
        path.write_text("set -e\n" + "\n".join(lines) + "\n")
        return path

    def submit(self, script: Path) -> subprocess.Popen[Any]:
        return subprocess.Popen(
            ["/bin/sh", str(script)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def close(self) -> None:
        REAPER.done(self._token)

    def _kill(self) -> None:
        subprocess.run(
            [self.tsp, "-K"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )

    def __enter__(self) -> TaskSpooler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
