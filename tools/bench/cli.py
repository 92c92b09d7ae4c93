"""Options, sections, and the run: a fresh folder, every section in turn, one report."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Final

from bench import __doc__ as DOC
from bench.common import REAPER, ROOT, Bench, allow_bytecode, log
from bench.report import Results
from bench.spooler import MAX_WAITING, ensure_tool, find_tsp

__all__ = ["main"]

SECTIONS: Final = (
    "drains",
    "tsp",
    "latency",
    "percall",
    "enqueue",
    "depth",
    "readers",
    "workflows",
)

SIZES: Final = {
    # option: (full run, --quick, --tiny)
    "jobs": (2000, 300, 40),
    "tsp_jobs": (MAX_WAITING, 200, 20),
    "repeat": (3, 1, 1),
    "latency": (50, 10, 2),
    "calls": (30, 5, 1),
    "batch": (10_000, 1000, 50),
    "depth": (100_000, 3000, 200),
    "readers_jobs": (100_000, 3000, 100),
    "chain": (2000, 100, 10),
}


def section_runner(name: str) -> Callable[[Bench], None]:
    """Import a section only when it runs (each pulls in what it needs)."""
    import importlib

    module = {"tsp": "sidebyside", "percall": "calls", "enqueue": "calls"}.get(name, name)
    loaded = importlib.import_module(f"bench.{module}")
    return getattr(loaded, f"run_{name}", None) or loaded.run


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tools/bench.py",
        description=DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sections: " + ", ".join(SECTIONS),
    )
    add = parser.add_argument
    add(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="dask: queuectl on a Dask cluster against raw client.submit instead "
        "(tools/bench_dask.py; the options after it are that benchmark's, see --executor dask "
        "--help)",
    )
    add("--quick", action="store_true", help="a small version of everything (about a minute)")
    add("--tiny", action="store_true", help="tiny sizes: checks that it runs, figures are noise")
    add("--only", metavar="A,B", help="run only these sections (comma-separated)")
    add("--skip", metavar="A,B", help="run every section but these")
    add("--jobs", type=int, help="jobs per drain in drains and workflows (2000)")
    add("--tsp-jobs", type=int, help=f"jobs per drain next to task-spooler ({MAX_WAITING})")
    add("--repeat", type=int, help="rounds of every alternated comparison; the median is kept (3)")
    add("--latency", type=int, help="idle latency samples of each kind (50)")
    add("--calls", type=int, help="per-call samples of each command (30)")
    add("--batch", type=int, help="jobs in the batch enqueue (10000)")
    add("--depth", type=int, help="pending jobs in the deep queue (100000)")
    add("--readers-jobs", type=int, help="jobs through the journal readers' home (100000)")
    add("--chain", type=int, help="jobs in the dependency chain, fan-out and release (2000)")
    add("--dir", help="where to create homes (default: a fresh folder in $HOME, removed after)")
    add("--keep", action="store_true", help="keep the homes afterwards")
    add("--no-install", action="store_true", help="never apt-get install tsp or eatmydata")
    add("--json", action="store_true", help="print JSON instead of the table")
    add("--save", metavar="FILE", help="also write the JSON report to FILE")
    args = parser.parse_args(argv)
    for option, (full, quick, tiny) in SIZES.items():
        if getattr(args, option) is None:
            setattr(args, option, tiny if args.tiny else quick if args.quick else full)
    if args.tsp_jobs > MAX_WAITING:
        parser.error(f"--tsp-jobs: a tsp server holds about 1,000 jobs; use <= {MAX_WAITING}")
    chosen = _names(parser, args.only) if args.only else list(SECTIONS)
    skipped = _names(parser, args.skip) if args.skip else []
    args.sections = [s for s in chosen if s not in skipped]
    return args


def _names(parser: argparse.ArgumentParser, text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return names


def tools(args: argparse.Namespace, results: Results) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    wanted = set(args.sections)
    if wanted & {"tsp", "latency", "percall"}:
        if args.no_install:
            found["tsp"] = find_tsp()
            note = "" if found["tsp"] else "task-spooler not measured: no tsp found (--no-install)"
        else:
            found["tsp"], note = ensure_tool(find_tsp, "task-spooler", "task-spooler")
        if note:
            results.note(note)
        else:
            log(f"task-spooler: {found['tsp']}")
    if "drains" in wanted:
        find = lambda: shutil.which("eatmydata")  # noqa: E731
        if args.no_install:
            found["eatmydata"], note = find(), ""
        else:
            found["eatmydata"], note = ensure_tool(find, "eatmydata", "the drain without fsync")
        if note:
            results.note(note)
    return found


class Stopped(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every process the bench started is stopped."""


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def _dask_argv(argv: list[str]) -> list[str] | None:
    """The other options when ``--executor dask`` is given (it has its own), else None."""
    for i, arg in enumerate(argv):
        if arg == "--executor" and i + 1 < len(argv) and argv[i + 1] == "dask":
            return argv[:i] + argv[i + 2 :]
        if arg == "--executor=dask":
            return argv[:i] + argv[i + 1 :]
    return None


def main(argv: list[str] | None = None) -> int:
    dask_argv = _dask_argv(sys.argv[1:] if argv is None else argv)
    if dask_argv is not None:
        # Its own process, run as a script: the Dask workers unpickle its task function by
        # value only then (imported, it would travel as ``bench_dask.run_shell``).
        import subprocess

        env = {**os.environ, "QUEUECTL_BENCH_PROG": "python tools/bench.py --executor dask"}
        script = ROOT / "tools" / "bench_dask.py"
        return subprocess.call([sys.executable, str(script), *dask_argv], env=env)
    args = parse(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    started = time.perf_counter()
    results = Results()
    own_folder = args.dir is None
    base = (
        Path(tempfile.mkdtemp(prefix=".queuectl-bench-", dir=Path.home()))
        if own_folder
        else Path(args.dir).absolute()
    )
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    results.raw.update(
        {"dir": str(base), "sections": args.sections, "mode": _mode(args), "root": str(ROOT)}
    )
    results.raw["sizes"] = {option: getattr(args, option) for option in SIZES}
    status = 0
    results.note(allow_bytecode())
    load_before = os.getloadavg()[0]
    try:
        bench = Bench(args, base, results, tools(args, results))
        for name in args.sections:
            log(f"section {name}")
            section_started = time.perf_counter()
            try:
                section_runner(name)(bench)
            except (KeyboardInterrupt, Stopped):
                raise
            except Exception as exc:
                # One broken section must not hide the others' figures.
                results.note(f"section {name} failed: {type(exc).__name__}: {exc}")
                log(f"section {name} failed: {exc!r}")
                status = 1
                if os.environ.get("BENCH_DEBUG"):
                    raise
            log(f"section {name} took {time.perf_counter() - section_started:.0f} s")
    except (KeyboardInterrupt, Stopped) as exc:
        results.note(f"interrupted ({type(exc).__name__} {exc}): the figures above are partial")
        status = 130
    finally:
        REAPER.close_all()
        if not args.keep:
            _remove(base, keep_cache=not own_folder)
    seconds = time.perf_counter() - started
    results.raw["seconds"] = seconds
    results.raw["loadavg"] = [load_before, os.getloadavg()[0]]
    results.note(
        f"machine load (1-min average) {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores"
    )
    results.note(f"run time {seconds:.0f} s ({_mode(args)}; {base})")
    if args.save:
        Path(args.save).write_text(results.json() + "\n")
    print(results.json() if args.json else results.table())
    return status


def _mode(args: argparse.Namespace) -> str:
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def _remove(base: Path, keep_cache: bool) -> None:
    """Delete the homes; with a ``--dir`` of the user's, keep the readers' cached home."""
    if not keep_cache:
        shutil.rmtree(base, ignore_errors=True)
        return
    for entry in base.iterdir():
        if entry.name != "readers-cache":
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
