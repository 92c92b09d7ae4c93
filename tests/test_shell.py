"""Shell niceties: completion through click's mechanism, and progress bars only on a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from queuectl.cli.main import cli


def complete(words: str, home: Path | None = None) -> list[str]:
    """What bash completion would offer for the last word of ``words``."""
    parts = words.split()
    cword = len(parts) if words.endswith(" ") else len(parts) - 1
    env = dict(
        os.environ, COMP_WORDS=words, COMP_CWORD=str(cword), _QUEUECTL_COMPLETE="bash_complete"
    )
    if home is not None:
        env["QUEUECTL_HOME"] = str(home)
    out = subprocess.run(
        [sys.executable, "-m", "queuectl"], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    return [line.split(",", 1)[1] for line in out.splitlines() if "," in line]


def test_completes_commands_states_and_config_keys() -> None:
    assert "worker" in complete("queuectl wo")
    assert complete("queuectl list --state p") == ["pending", "processing"]
    assert complete("queuectl config set backoff-") == [
        "backoff-base",
        "backoff-max",
        "backoff-jitter",
    ]


def test_completes_job_ids_of_the_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    runner = CliRunner()
    for job_id in ("build-1", "build-2", "deploy"):
        spec = f'{{"id": "{job_id}", "command": "true"}}'
        assert runner.invoke(cli, ["--home", str(home), "enqueue", spec]).exit_code == 0
    assert complete("queuectl show bu", home) == ["build-1", "build-2"]
    assert complete("queuectl cancel d", home) == ["deploy"]


def test_bash_source_script_is_generated() -> None:
    env = dict(os.environ, _QUEUECTL_COMPLETE="bash_source")
    out = subprocess.run(
        [sys.executable, "-m", "queuectl"], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    assert "_queuectl_completion" in out and "complete " in out


def test_progress_bar_on_a_terminal_and_silence_when_piped(tmp_path: Path) -> None:
    """A large `enqueue -` draws a bar on a terminal's stderr and prints nothing when piped."""
    import pty

    lines = "".join('{"command": "true"}\n' for _ in range(600))
    base = [sys.executable, "-m", "queuectl", "--home", str(tmp_path / "h"), "enqueue", "-"]
    piped = subprocess.run(base, input=lines, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    assert len(piped.stdout.split()) == 600
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            base, input=lines.encode(), stdout=subprocess.DEVNULL, stderr=follower, timeout=120
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert b"enqueueing" in seen and b"100%" in seen
