"""The command line's conventions, across every command: reading never creates a home,
``--json`` where a script wants it, confirmations that refuse without a terminal, help
that answers questions, relative times, sorting that does what it says, running jobs in
``status``, one error style, and a worker that cleans up when it exits on an error."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest

from queuectl.cli.main import CREATES_HOME, cli
from queuectl.config import KEYS

from .conftest import Procs, live_worker_info, run_cli, wait_until
from .workflow_support import add, assert_one_line_error, invoke, ok, where

READERS = [
    ("status",),
    ("list",),
    ("show", "x"),
    ("logs", "x"),
    ("history", "x"),
    ("stats",),
    ("metrics",),
    ("wait", "x"),
    ("fsck",),
    ("dashboard", "--port", "0"),
    ("dlq", "list"),
    ("queue", "list"),
    ("schedule", "list"),
    ("config", "get", "max-retries"),
    ("config", "list"),
    ("cancel", "x"),
    ("worker", "stop"),
]


# ------------------------------------------------------------------ nothing created by reading


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a))
def test_a_command_that_reads_refuses_a_home_that_does_not_exist(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    missing = tmp_path / "typo-home"
    assert_one_line_error(invoke(missing, *args), 2, "no such folder", str(missing))
    assert not missing.exists()


@pytest.mark.parametrize("args", READERS[:5], ids=lambda a: " ".join(a))
def test_a_command_that_reads_refuses_a_folder_that_is_not_a_home(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert_one_line_error(invoke(folder, *args), 2, "not a queue home")
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_an_empty_folder_is_a_new_home_for_any_command(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)
    data = json.loads(ok(invoke(volume, "status", "--json")))
    assert set(data["jobs"].values()) == {0}
    assert (volume / "journal").is_dir() and (volume / "pending").is_dir()
    assert stat.S_IMODE(volume.stat().st_mode) == 0o700  # set up private, as a new home
    assert ok(invoke(volume, "fsck")) == "clean\n"


@pytest.mark.parametrize("args", [("add", "true"), ("worker", "start", "--burst")])
def test_commands_that_put_something_in_the_home_create_it(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    fresh = tmp_path / "new" / "home"
    done = run_cli(fresh, *args)
    assert done.returncode == 0, done.stderr
    assert (fresh / "journal").is_dir()


def test_every_creating_command_exists() -> None:
    """The table of commands that may create a home names real commands."""
    for path in CREATES_HOME:
        command: click.Command | None = cli
        for word in path.split():
            assert isinstance(command, click.Group), path
            command = command.get_command(click.Context(cli), word)
        assert command is not None, path


def test_an_empty_home_option_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", "", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "queuectl: error: --home (or QUEUECTL_HOME) is empty: give the queue home's folder"
    ]
    assert not (tmp_path / ".queuectl").exists()


# ------------------------------------------------------------------ --json shapes


@pytest.fixture
def ready(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return home


def test_cancel_json_reports_each_id(ready: Path) -> None:
    add(ready, "--id", "a", "true")
    result = invoke(ready, "cancel", "a", "nope", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {"id": "a", "ok": True, "state": "cancelled", "message": "cancelled a"},
        {"id": "nope", "ok": False, "error": "no job with id 'nope'"},
    ]
    assert result.stderr == "queuectl: error: cannot cancel nope: no job with id 'nope'\n"
    assert where(ready, "a") == ["cancelled"]


def _dead(home: Path, job_id: str) -> None:
    add(home, "--id", job_id, "--max-retries", "0", "false")
    assert run_cli(home, "worker", "start", "--burst").returncode == 0
    assert where(home, job_id) == ["dead"]


def test_dlq_retry_json(ready: Path) -> None:
    _dead(ready, "d1")
    result = invoke(ready, "dlq", "retry", "d1", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"id": "d1", "ok": True, "state": "pending", "message": "retried d1 (pending)"}
    ]


def test_dlq_purge_json(ready: Path) -> None:
    _dead(ready, "d1")
    result = invoke(ready, "dlq", "purge", "d1", "gone", "--yes", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["purged"] == ["d1"]
    assert [entry["id"] for entry in data["not_purged"]] == ["gone"]
    assert "cannot purge gone" in result.stderr
    assert where(ready, "d1") == []


def test_config_get_json(ready: Path) -> None:
    assert json.loads(ok(invoke(ready, "config", "get", "max_retries", "--json"))) == {
        "key": "max-retries",
        "value": 3,
    }


def test_fsck_json_clean_and_dirty(ready: Path) -> None:
    assert json.loads(ok(invoke(ready, "fsck", "--json"))) == {
        "clean": True,
        "repair": False,
        "findings": [],
    }
    (ready / "pending" / "junk.json").write_text("{not json")
    result = invoke(ready, "fsck", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["clean"] is False
    assert data["findings"] and {"kind", "message", "repaired"} <= set(data["findings"][0])


def test_hold_release_restart_json(ready: Path) -> None:
    add(ready, "--id", "h", "true")
    assert json.loads(ok(invoke(ready, "hold", "h", "--json")))[0]["state"] == "held"
    assert json.loads(ok(invoke(ready, "release", "h", "--json")))[0]["state"] == "pending"
    result = invoke(ready, "restart", "h", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)[0]["ok"] is False


def test_worker_stop_json(ready: Path, procs: Procs, tmp_path: Path) -> None:
    worker = procs.worker(ready, log=tmp_path / "worker.log")
    wait_until(lambda: bool(live_worker_info(ready)))
    result = run_cli(ready, "worker", "stop", "--json", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["running"] == [] and data["stopped"] == data["asked"] and len(data["asked"]) == 1
    assert worker.wait(timeout=60) == 0


# ------------------------------------------------------------------ confirmations


def test_purge_without_yes_and_without_a_terminal_refuses_at_once(ready: Path) -> None:
    _dead(ready, "d1")
    result = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(ready), "dlq", "purge", "--all"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no terminal: add --yes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert where(ready, "d1") == ["dead"]


# ------------------------------------------------------------------ help


def _commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found: list[tuple[list[str], click.Command]] = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None
        found.append(([*path, name], command))
        if isinstance(command, click.Group):
            found += _commands(command, [*path, name])
    return found


def test_every_command_and_option_has_help() -> None:
    for path, command in _commands(cli, []):
        assert command.help, path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (path, param.opts)


def test_top_level_help_is_not_cut_off(ready: Path) -> None:
    text = ok(invoke(ready, "--help"))
    commands = text.split("Commands:")[1]
    assert not [line for line in commands.splitlines() if line.rstrip().endswith("...")]
    for name in ("schedule", "restart", "dashboard", "worker"):
        assert f"  {name} " in text


def test_config_help_names_every_key(ready: Path) -> None:
    text = " ".join(ok(invoke(ready, "config", "--help")).split())
    listed = ok(invoke(ready, "config", "list"))
    for key in KEYS:
        assert key in text
        assert key in listed


# ------------------------------------------------------------------ times, sorting, status


def test_list_sorts_ids_naturally_and_says_how(ready: Path) -> None:
    for job_id in ("build-10", "build-2", "build-1"):
        add(ready, "--id", job_id, "true")
    data = json.loads(ok(invoke(ready, "list", "--sort", "id", "--json")))
    assert [j["id"] for j in data] == ["build-1", "build-2", "build-10"]
    assert "--sort" in ok(invoke(ready, "list", "--help"))


def test_list_default_order_follows_the_updated_time_it_shows(ready: Path) -> None:
    for job_id in ("c", "a", "b"):
        add(ready, "--id", job_id, "true")
    ok(invoke(ready, "edit", "c", "--priority", "5"))  # c changes last
    data = json.loads(ok(invoke(ready, "list", "--json")))
    assert [j["id"] for j in data] == ["a", "b", "c"]
    stamps = [j["updated_at"] for j in data]
    assert stamps == sorted(stamps)
    by_priority = json.loads(ok(invoke(ready, "list", "--sort", "priority", "--json")))
    assert by_priority[0]["id"] == "c"


def test_list_table_shows_relative_times_and_json_iso(ready: Path) -> None:
    add(ready, "--id", "later", "--run-at", "2999-01-01T00:00:00Z", "true")
    add(ready, "--id", "now", "true")
    table = ok(invoke(ready, "list"))
    assert "starts in" in table
    assert "ago" in table or " now" in table
    data = json.loads(ok(invoke(ready, "list", "--json")))
    assert all(j["updated_at"].endswith("Z") and "T" in j["updated_at"] for j in data)


def test_status_shows_what_runs_now(ready: Path, procs: Procs, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    add(ready, "--id", "long-one", f"touch {marker}; sleep 60")
    procs.worker(ready, log=tmp_path / "worker.log")
    wait_until(marker.exists)

    def listed() -> bool:
        return "long-one" in run_cli(ready, "status").stdout

    wait_until(listed)
    table = run_cli(ready, "status").stdout
    line = next(line for line in table.splitlines() if line.startswith("long-one"))
    assert "default" in line and "touch" in line
    data = json.loads(run_cli(ready, "status", "--json").stdout)
    (entry,) = data["running"]
    assert entry["id"] == "long-one" and entry["queue"] == "default"
    assert "sleep 60" in entry["command"]
    assert entry["worker"]["id"] and entry["started_at"].endswith("Z")


# ------------------------------------------------------------------ error style


def test_per_id_errors_say_what_could_not_be_done(ready: Path) -> None:
    for args, verb in ((("hold", "nope"), "hold"), (("restart", "nope"), "restart")):
        line = assert_one_line_error(invoke(ready, *args), 1)
        assert line.startswith(f"queuectl: error: cannot {verb} nope: "), line


def test_a_refused_new_job_is_named_as_the_user_knows_it(tmp_path: Path) -> None:
    """A job without an id of its own was named by the id it would have been given, which the
    user never saw; it is "the job" (or its place in a batch), an explicit id is kept."""
    home = tmp_path / "h"
    ok(invoke(home, "config", "set", "gpus", "0,1"))
    line = assert_one_line_error(invoke(home, "add", "--gpus", "3", "--", "true"), 2, "the job")
    assert "'" not in line
    assert_one_line_error(invoke(home, "add", "--id", "g1", "--gpus", "3", "--", "true"), 2, "'g1'")
    batch = '{"command": "true"}\n{"command": "true", "gpus": 3}\n'
    assert_one_line_error(invoke(home, "enqueue", "-", input=batch), 2, "job 2 of 2")
    assert sorted(os.listdir(home / "pending")) == []
