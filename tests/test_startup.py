"""A CLI call loads only what its command needs: start-up is most of what one
``queuectl add`` costs (tools/bench.py measures it against ``python -c pass``), so modules
that only maintenance, the worker, tables or the Dask executor use must stay unloaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import runpy, sys
sys.argv = ["queuectl", *sys.argv[1:]]
try:
    runpy.run_module("queuectl", run_name="__main__")
except SystemExit:
    pass
sys.stdout.flush()
print("\\nMODULES", " ".join(sorted(sys.modules)))
"""

NEVER_ON_A_PLAIN_CALL = {
    "filelock",  # maintenance's journal lock; appends use one flock on a kept descriptor
    "ctypes.util",  # find_library runs /sbin/ldconfig in a child process
    "subprocess",  # only workers, hooks and nvidia-smi detection start processes
    "secrets",  # pulls in hashlib and hmac; ids use os.urandom
    "_hashlib",  # OpenSSL (through hashlib); lock bytes hash with the built-in _blake2
    "shutil",  # pulls in bz2 and lzma; only deletions (logs) use it
    "tabulate",  # tables only
    "dask",
    "distributed",
    "queuectl.worker.pool",
    "queuectl.admin.fsck",
}


def _modules(home: Path, *args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = done.stdout.rsplit("MODULES ", 1)
    assert len(line) == 2, (done.stdout, done.stderr)
    return set(line[1].split())


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", json.dumps({"command": "true"})),
        ("add", "--", "true"),
        ("show", "nope"),
        ("status", "--json"),
    ],
    ids=lambda a: a[0],
)
def test_a_plain_call_loads_only_what_it_needs(tmp_path: Path, args: tuple[str, ...]) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    loaded = _modules(home, *args)
    assert "queuectl.cli.main" in loaded  # the probe ran the command
    assert not loaded & NEVER_ON_A_PLAIN_CALL, sorted(loaded & NEVER_ON_A_PLAIN_CALL)
