"""What every section shares: running queuectl, timing, the floor, knowing when the last job
of a drain is done (inotify on a file the commands write), and leaving no process behind."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "QUEUECTL",
    "REAPER",
    "ROOT",
    "Bench",
    "Drain",
    "Marks",
    "Reaper",
    "allow_bytecode",
    "floor",
    "fresh",
    "jobs_json",
    "log",
    "make_home",
    "median_pair",
    "percentile",
    "queuectl",
    "uncompiled_copy",
    "wait_for",
    "wall",
]

ROOT: Final = Path(__file__).resolve().parents[2]
QUEUECTL: Final = [sys.executable, "-m", "queuectl"]
"""How the bench runs queuectl: the interpreter running the bench (so ``python -c pass``
of the same interpreter is the fair baseline), as in every earlier round."""


def allow_bytecode() -> str:
    """Let every queuectl the bench starts read and write bytecode, and compile it first.

    With ``PYTHONDONTWRITEBYTECODE`` set (some sandboxes and containers set it) and no
    ``__pycache__`` next to the sources, every CLI call compiles every module it imports,
    which about doubles a call's cost; an installed queuectl has its bytecode from pip. So
    the bench drops the variable from its own environment (every child inherits that) and
    runs ``compileall`` on the package. ``percall`` measures the uncompiled case separately.
    Returns a note for the report.
    """
    import compileall

    was = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(ROOT / "queuectl"), quiet=1)
    told = f" (PYTHONDONTWRITEBYTECODE={was} was unset for the children)" if was else ""
    return f"queuectl ran with bytecode: compileall on {ROOT / 'queuectl'} first{told}"


def uncompiled_copy(folder: Path) -> dict[str, str]:
    """An environment in which queuectl runs without bytecode, as in a sandbox that sets
    ``PYTHONDONTWRITEBYTECODE=1`` on a source checkout: a copy of the package without
    ``__pycache__`` first on ``PYTHONPATH``, and the variable set (the standard library and
    click keep their compiled files, as they do there)."""
    target = folder / "src"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        ROOT / "queuectl", target / "queuectl", ignore=shutil.ignore_patterns("__pycache__")
    )
    return {**os.environ, "PYTHONPATH": str(target), "PYTHONDONTWRITEBYTECODE": "1"}


TIMEOUT: Final = 900.0
"""Longest any one wait of the bench may take before it gives up with an error."""

_STARTED: Final = time.perf_counter()


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the report)."""
    print(f"[bench {time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def wall(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median_pair(pairs: list[tuple[float, ...]]) -> tuple[float, ...]:
    """The pair (ratio first) with the median ratio: a rate and its baseline stay together."""
    return sorted(pairs)[len(pairs) // 2]


def fresh(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark condition not reached: {what or condition}")
        time.sleep(0.001)


# ------------------------------------------------------------------ processes


class Reaper:
    """Every long-lived process the bench starts, so none outlives it, even on Ctrl-C:
    worker processes get SIGTERM (then SIGKILL), task-spooler servers ``tsp -K``."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._cleanups: dict[int, Callable[[], None]] = {}
        self._next = 0

    def spawn(self, command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        # A session of its own: Ctrl-C reaches only the bench, which then stops it in order.
        proc = subprocess.Popen(command, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 60.0) -> int:
        """SIGTERM (a worker finishes its running jobs and exits), SIGKILL after ``timeout``."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"process {proc.pid} ignored SIGTERM for {timeout:.0f}s: SIGKILL")
                proc.kill()
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def on_exit(self, cleanup: Callable[[], None]) -> int:
        self._next += 1
        self._cleanups[self._next] = cleanup
        return self._next

    def done(self, token: int) -> None:
        cleanup = self._cleanups.pop(token, None)
        if cleanup is not None:
            cleanup()

    def close_all(self) -> None:
        for token in sorted(self._cleanups, reverse=True):
            try:
                self.done(token)
            except Exception as exc:  # cleanup must go on whatever one step did
                log(f"cleanup: {exc}")
        for proc in list(self._procs):
            self.stop(proc, timeout=30)


REAPER: Final = Reaper()


def queuectl(
    home: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*QUEUECTL, "--home", str(home), *args],
        input=stdin,
        text=True,
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"queuectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


def make_home(home: Path) -> Path:
    """Create an empty home: reading commands never create one (a mistyped ``--home`` is an
    error), but ``status`` on an empty 0700 folder makes it a home."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    queuectl(home, "status")
    return home


def start_worker(home: Path, threads: int, *, burst: bool = False) -> subprocess.Popen[Any]:
    command = [*QUEUECTL, "--home", str(home), "worker", "start", "--count", str(threads)]
    return REAPER.spawn(
        [*command, *(["--burst"] if burst else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def jobs_json(commands: Sequence[str], **fields: Any) -> str:
    import json

    return "".join(json.dumps({"command": c, **fields}) + "\n" for c in commands)


# ------------------------------------------------------------------ the floor


def floor(commands: Sequence[str], threads: int) -> float:
    """Jobs/s of a bare thread pool running ``/bin/sh -c COMMAND``: no queue at all."""

    def one(command: str) -> None:
        subprocess.run(["/bin/sh", "-c", command], check=False)

    with ThreadPoolExecutor(threads) as pool:
        seconds = wall(lambda: list(pool.map(one, commands)))
    return len(commands) / seconds


# ------------------------------------------------------------------ inotify

_IN_CLOSE_WRITE: Final = 0x008
_IN_MOVED_TO: Final = 0x080
_IN_CREATE: Final = 0x100
_IN_NONBLOCK: Final = 0o4000
_IN_CLOEXEC: Final = 0o2000000
_HEADER: Final = struct.Struct("iIII")


class Marks:
    """A folder whose new files are timed the moment they appear (inotify, ``IN_CREATE``):
    the commands of a job create them, so the bench never polls queuectl to learn that a
    job ran. A thread records the first time each name is seen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed: the bench needs inotify")
        mask = _IN_CREATE | _IN_CLOSE_WRITE | _IN_MOVED_TO
        if libc.inotify_add_watch(self._fd, os.fsencode(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="bench-marks", daemon=True)
        self._thread.start()

    def path(self, name: str) -> Path:
        return self.folder / name

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            now = time.perf_counter()
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            with self._cond:
                while offset + _HEADER.size <= len(data):
                    _wd, _mask, _cookie, length = _HEADER.unpack_from(data, offset)
                    offset += _HEADER.size
                    name = os.fsdecode(data[offset : offset + length].rstrip(b"\0"))
                    offset += length
                    if name:
                        self.seen.setdefault(name, now)
                self._cond.notify_all()

    def wait(self, *names: str, timeout: float = TIMEOUT) -> float:
        """When the last of ``names`` appeared (perf_counter seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.seen]
                    raise TimeoutError(f"never saw {missing[:3]} in {self.folder}")
                self._cond.wait(left)
            return max(self.seen[n] for n in names)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


@contextmanager
def marks(folder: Path) -> Iterator[Marks]:
    watcher = Marks(folder)
    try:
        yield watcher
    finally:
        watcher.close()


# ------------------------------------------------------------------ one drain's jobs

LINE: Final = b"x\n"


@dataclass
class Drain:
    """The N shell commands of one drain and how to tell that the last has finished.

    ``true``: every command is ``true`` except the last, which creates ``DONE`` in the marks
    folder (``: > DONE``, a shell builtin: no extra program). With C > 1 a few commands
    started just before it may end a little later, by at most one command's run (~1 ms).
    ``append``: every command appends a line to ``lines`` and the last one also creates
    ``DONE``; once it appears the bench waits until ``lines`` holds N lines (a few stat
    calls at most), so the end is exact. Queues, task-spooler and the floor run the same
    commands in the same order (FIFO in all three, so the last submitted starts last).
    """

    folder: Path
    count: int
    variant: str
    commands: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.marks_dir.mkdir(exist_ok=True)
        done = shlex.quote(str(self.marks_dir / "DONE"))
        lines = shlex.quote(str(self.lines))
        if self.variant == "true":
            body, last = "true", f": > {done}"
        elif self.variant == "append":
            body = f"echo x >> {lines}"
            last = f"{body}; : > {done}"
        else:
            raise ValueError(self.variant)
        self.commands = [body] * (self.count - 1) + [last]

    @property
    def marks_dir(self) -> Path:
        return self.folder / "marks"

    @property
    def lines(self) -> Path:
        return self.folder / "lines"

    def finished(self, watcher: Marks, timeout: float = TIMEOUT) -> float:
        """perf_counter time of the last command's end (see the class docstring)."""
        at = watcher.wait("DONE", timeout=timeout)
        if self.variant == "append":
            want = self.count * len(LINE)
            deadline = time.monotonic() + timeout
            while _size(self.lines) < want:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.lines} never reached {self.count} lines")
                time.sleep(0.0005)
                at = time.perf_counter()
        return at

    def check(self) -> None:
        if self.variant == "append":
            lines = _size(self.lines) // len(LINE)
            assert lines == self.count, f"{lines} lines instead of {self.count}: a job ran twice?"

    def reset(self) -> None:
        shutil.rmtree(self.marks_dir, ignore_errors=True)
        self.marks_dir.mkdir()
        self.lines.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def completion_rate(home: Path, first: int | None = None) -> float:
    """Jobs/s of the (first N) completed jobs: N over the time from the earliest of their
    starts to the last of their recorded completions (the journal's timestamps).

    Completions are stamped once per commit, and a commit holds several outcomes: timing from
    the first stamp would leave out the jobs of the first commit's span, which flatters a
    drain of 100 jobs (~60 ms) by 10% or more, and a drain of thousands not at all.
    """
    done = sorted(completions(home))
    if first is not None:
        done = done[:first]
    begin = min(started for _, started in done)
    return len(done) / max(done[-1][0] - begin, 1e-6)


def completions(home: Path) -> list[tuple[float, float]]:
    """(completion time, start time) of every completed attempt, as epoch seconds."""
    from queuectl.job import parse_time
    from queuectl.storage.journal import iter_segment, sources

    found = []
    for path in sources(home / "journal"):  # streamed: a deep home's journal is large
        for _offset, record in iter_segment(path):
            if record is not None and record.get("event") == "completed":
                started = record["job"]["started_at"]
                found.append(
                    (parse_time(record["ts"]).timestamp(), parse_time(started).timestamp())
                )
    return found


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Bench:
    """What a section gets: the options, the folder for its homes, where figures go, and the
    external programs found (``tsp``, ``eatmydata``; None when missing)."""

    args: Any
    base: Path
    results: Any
    tools: dict[str, str | None] = field(default_factory=dict)
