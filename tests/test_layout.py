"""Rules of the code's shape, checked by reading the source so they stay true.

The storage package is the only code that creates, renames, unlinks or fsyncs a job file or
a journal segment; the rest goes through its API. A few modules outside it do touch files
under the home that are neither (logs, cancel and stop requests): they are listed here with
the reason, so a new one is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "queuectl"

FILE_CHANGING_CALLS = frozenset(
    {
        "os.unlink",
        "os.remove",
        "os.rename",
        "os.replace",
        "os.fsync",
        "os.truncate",
        "os.ftruncate",
        "shutil.move",
        "shutil.rmtree",
        "fsync_dir",
        "fsync_fd",
        "rename_noreplace",
        "sync_all",
        "write_tmp",
        "reuse_tmp",
    }
)

ALLOWED_OUTSIDE_STORAGE = {
    ("worker/outputs.py", "os.replace"): "moves an attempt's output into logs/<id>/",
    ("worker/outputs.py", "os.unlink"): "removes the worker's unused pre-created output files",
    ("worker/pool.py", "os.unlink"): "removes the worker's own stop/<id> request at exit",
    ("admin/canceling.py", "os.unlink"): "removes the cancel/<id> request it wrote",
    ("remote/warden.py", "shutil.rmtree"): "a Dask worker host's warden folders, never the home",
}


def _calls(path: Path) -> list[tuple[str, int]]:
    """Dotted names of every call in a module (``os.unlink``, ``fsync_dir``...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            found.append((func.id, node.lineno))
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            found.append((f"{func.value.id}.{func.attr}", node.lineno))
    return found


def test_only_storage_writes_job_files_and_journal_segments() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("storage/"):
            continue
        for name, line in _calls(path):
            if name in FILE_CHANGING_CALLS and (relative, name) not in ALLOWED_OUTSIDE_STORAGE:
                offenders.append(f"queuectl/{relative}:{line}: {name}")
    assert offenders == [], "file changes outside storage/:\n" + "\n".join(offenders)


def test_every_allowed_exception_is_still_needed() -> None:
    """An exception that no longer matches a call is stale: remove it from the list."""
    used = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        used |= {(relative, name) for name, _ in _calls(path)}
    assert set(ALLOWED_OUTSIDE_STORAGE) <= used


def test_storage_imports_nothing_above_it() -> None:
    """Imports point one way: storage/ knows the job model, config and errors, never the
    worker, the CLI, the dashboard, admin or observe code."""
    above = (
        "queuectl.worker",
        "queuectl.cli",
        "queuectl.web",
        "queuectl.admin",
        "queuectl.observe",
    )
    offenders = []
    for path in sorted((PACKAGE / "storage").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(above):
                offenders.append(f"{path.name}: from {node.module}")
    assert offenders == []


def test_only_the_cli_imports_click_and_tabulate() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{relative}: {n}" for n in names if n.split(".")[0] in ("click", "tabulate")
            ]
    assert offenders == []
