"""Workflows: ``queuectl add`` (a shell command without JSON), the new job fields, and the
same flags on ``enqueue``.

Pure command-line shape is checked through CliRunner (no worker runs); what a command
really executes, and in which directory, through real worker processes.
"""

from __future__ import annotations

import json
import os
import shlex
from datetime import timedelta
from pathlib import Path

import pytest

from queuectl.job import parse_time, utcnow

from .conftest import Procs, journal_records, wait_exit
from .workflow_support import (
    add,
    assert_one_line_error,
    cli_ok,
    invoke,
    job_file,
    ok,
    run_in,
    where,
)


@pytest.fixture
def h(tmp_path: Path) -> Path:
    """A home that already exists (so listings before and after compare one command)."""
    path = tmp_path / "qhome"
    path.mkdir(mode=0o700)  # an empty folder: a new home, set up by the first command
    ok(invoke(path, "status"))
    return path


def _queue_q(home: Path) -> None:
    ok(invoke(home, "queue", "add", "q"))


def _listing(home: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(home)): None if p.is_dir() else p.read_bytes()
        for p in sorted(home.rglob("*"))
    }


def _add(home: Path, *args: str) -> str:
    out = ok(invoke(home, "add", *args))
    assert len(out.splitlines()) == 1, out
    return out.strip()


# ------------------------------------------------------------------ add: the command text


def test_add_prints_the_id_of_a_durable_journaled_pending_job(h: Path) -> None:
    job_id = _add(h, "echo hi")

    assert where(h, job_id) == ["pending"]
    stored = job_file(h, job_id)
    assert stored["command"] == "echo hi"
    assert (stored["attempts"], stored["queue"]) == (0, "default")
    enqueued = [r for r in journal_records(h) if r["event"] == "enqueued"]
    assert [r["job"]["id"] for r in enqueued] == [job_id]


def test_add_takes_one_argument_as_a_shell_command_line_as_it_is(h: Path) -> None:
    line = "echo a && echo 'b  c' | tr a-z A-Z; exit 0"
    job_id = _add(h, "--", line)
    assert job_file(h, job_id)["command"] == line


@pytest.mark.parametrize(
    "argv",
    [
        ["printf", "%s\n", "a b"],
        ["echo", "$HOME", "it's", ";", "rm -rf /"],
        ["ls", "-la"],
    ],
    ids=["printf", "metacharacters", "option-like"],
)
def test_add_joins_several_arguments_with_shlex_join(h: Path, argv: list[str]) -> None:
    job_id = _add(h, "--", *argv)
    assert job_file(h, job_id)["command"] == shlex.join(argv)


def test_add_options_after_the_command_belong_to_the_command(h: Path) -> None:
    """No ``--`` needed: the first argument that is not an option starts the command."""
    listing = _add(h, "ls", "-la")
    assert job_file(h, listing)["command"] == "ls -la"

    echoed = _add(h, "--priority", "3", "echo", "--priority", "5", "--queue", "nope")
    stored = job_file(h, echoed)
    assert stored["command"] == "echo --priority 5 --queue nope"
    assert (stored["priority"], stored["queue"]) == (3, "default")


def test_add_with_an_unknown_option_fails_with_exit_2_and_writes_nothing(h: Path) -> None:
    _add(h, "true")  # `add` exists
    before = _listing(h)
    result = invoke(h, "add", "--bogus", "ls")
    assert_one_line_error(result, 2, "no such option: --bogus")
    assert _listing(h) == before


def test_add_without_a_command_fails_with_exit_2(h: Path) -> None:
    _add(h, "true")
    before = _listing(h)
    for args in ([], ["--priority", "2"], ["--"]):
        result = invoke(h, "add", *args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert _listing(h) == before


# ------------------------------------------------------------------ add: the options


def test_add_options_set_the_job_fields(h: Path, tmp_path: Path) -> None:
    dep = _add(h, "--id", "dep", "true")
    _queue_q(h)
    later = utcnow() + timedelta(days=3650)
    job_id = _add(
        h,
        "--id", "full",
        "--queue", "q",
        "--priority", "7",
        "--run-at", later.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--max-retries", "5",
        "--timeout", "12",
        "--after-any", dep,
        "--label", "nightly",
        "--label", "db",
        "--unique-key", "report-1",
        "--unique-for", "1h",
        "--cwd", str(tmp_path),
        "--env", "A=1",
        "--env", "B=x=y",
        "--",
        "make", "report",
    )  # fmt: skip
    assert (dep, job_id) == ("dep", "full")

    stored = job_file(h, "full")
    assert stored["command"] == "make report"
    assert stored["queue"] == "q"
    assert stored["priority"] == 7
    assert abs(parse_time(stored["run_at"]) - later.replace(microsecond=0)) < timedelta(seconds=1)
    assert stored["max_retries"] == 5
    assert stored["timeout"] == 12
    assert stored["after_any"] == ["dep"]
    assert sorted(stored["labels"]) == ["db", "nightly"]
    assert stored["unique_key"] == "report-1"
    assert stored["unique_for"] == 3600
    assert Path(stored["cwd"]).resolve() == tmp_path.resolve()
    assert stored["env"] == {"A": "1", "B": "x=y"}


def test_add_delay_sets_run_at_that_far_ahead(h: Path) -> None:
    before = utcnow()
    job_id = _add(h, "--delay", "2h", "true")
    after = utcnow()
    run_at = parse_time(job_file(h, job_id)["run_at"])
    assert before + timedelta(hours=2) - timedelta(seconds=1) <= run_at
    assert run_at <= after + timedelta(hours=2) + timedelta(seconds=1)


def test_add_hold_after_and_queue_choose_the_folder(h: Path) -> None:
    first = _add(h, "--id", "first", "true")
    assert where(h, first) == ["pending"]
    assert where(h, _add(h, "--id", "held-one", "--hold", "true")) == ["held"]
    assert where(h, _add(h, "--id", "waits", "--after", first, "true")) == ["blocked"]
    assert job_file(h, "waits")["after"] == ["first"]
    _queue_q(h)
    assert job_file(h, _add(h, "--id", "in-q", "--queue", "q", "true"))["queue"] == "q"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--env", "NOEQUALS", "true"], "NOEQUALS"),
        (["--id", "../x", "true"], "invalid id"),
        (["--priority", "500", "true"], "priority"),
        (["--max-retries", "-1", "true"], "retries"),
        (["--delay", "soon", "true"], "soon"),
        (["--unique-for", "forever", "--unique-key", "k", "true"], "forever"),
    ],
    ids=["env", "id", "priority", "max-retries", "delay", "unique-for"],
)
def test_add_bad_option_values_exit_2_and_write_nothing(
    h: Path, args: list[str], fragment: str
) -> None:
    _add(h, "true")
    before = _listing(h)
    assert_one_line_error(invoke(h, "add", *args), 2, fragment)
    assert _listing(h) == before


def test_add_id_that_exists_exits_1(h: Path) -> None:
    _add(h, "--id", "twice", "true")
    before = _listing(h)
    assert_one_line_error(invoke(h, "add", "--id", "twice", "true"), 1, "already exists")
    assert _listing(h) == before


# ------------------------------------------------------------------ add: the directory


def test_add_records_the_callers_directory_and_cwd_overrides_it(h: Path, tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    plain = add(h, "pwd", cwd=here)
    chosen = add(h, "--cwd", str(there), "pwd", cwd=here)
    from_json = cli_ok(h, "enqueue", '{"command": "pwd"}', cwd=here).strip()

    plain_cwd = job_file(h, plain)["cwd"]
    assert os.path.isabs(plain_cwd)
    assert Path(plain_cwd).resolve() == here.resolve()
    assert Path(job_file(h, chosen)["cwd"]).resolve() == there.resolve()
    assert job_file(h, from_json)["cwd"] is None  # JSON: still the worker's directory


def test_add_runs_in_the_callers_directory_and_json_jobs_in_the_workers(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    caller, worker_dir, out = tmp_path / "caller", tmp_path / "worker", tmp_path / "out"
    for folder in (caller, worker_dir, out):
        folder.mkdir()
    add(qhome, "--id", "by-add", f"pwd -P > {shlex.quote(str(out / 'by-add'))}", cwd=caller)
    job = {"id": "by-json", "command": f"pwd -P > {shlex.quote(str(out / 'by-json'))}"}
    cli_ok(qhome, "enqueue", json.dumps(job), cwd=caller)

    # the worker runs in another directory than the caller
    done = run_in(qhome, "worker", "start", "--burst", cwd=worker_dir, timeout=120)
    assert done.returncode == 0, done.stderr

    assert Path((out / "by-add").read_text().strip()) == caller.resolve()
    assert Path((out / "by-json").read_text().strip()) == worker_dir.resolve()


def test_add_with_several_arguments_runs_exactly_that_argv(
    qhome: Path, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["printf", "%s\n", "a b", "$HOME", "it's"]
    add(qhome, "--id", "argv", "--", *argv)
    add(qhome, "--id", "line", f"echo a && echo b > {shlex.quote(str(out))}")

    assert wait_exit(procs.worker(qhome, "--burst")) == 0

    assert (qhome / "logs" / "argv" / "1.out").read_text() == "a b\n$HOME\nit's\n"
    assert (qhome / "logs" / "line" / "1.out").read_text() == "a\n"
    assert out.read_text() == "b\n"


# ------------------------------------------------------------------ enqueue: the same flags


def test_enqueue_scalar_flags_win_over_the_json_and_list_flags_add_to_it(
    h: Path, tmp_path: Path
) -> None:
    _add(h, "--id", "a0", "true")
    _add(h, "--id", "a1", "true")
    _queue_q(h)
    text = json.dumps(
        {
            "id": "from-json",
            "command": "true",
            "queue": "default",
            "max_retries": 1,
            "timeout": 3,
            "priority": 1,
            "cwd": "/",
            "labels": ["a"],
            "env": {"A": "1"},
            "after": ["a0"],
            "unique_key": "json-key",
        }
    )
    result = invoke(
        h,
        "enqueue",
        "--id", "from-flag",
        "--queue", "q",
        "--max-retries", "5",
        "--timeout", "9",
        "--priority", "4",
        "--cwd", str(tmp_path),
        "--unique-key", "flag-key",
        "--label", "b",
        "--env", "B=2",
        "--after", "a1",
        text,
    )  # fmt: skip
    assert ok(result) == "from-flag\n"
    assert where(h, "from-json") == []

    stored = job_file(h, "from-flag")
    assert stored["state"] == "blocked"
    assert (stored["queue"], stored["max_retries"], stored["timeout"]) == ("q", 5, 9)
    assert stored["priority"] == 4
    assert Path(stored["cwd"]).resolve() == tmp_path.resolve()
    assert stored["unique_key"] == "flag-key"
    assert sorted(stored["labels"]) == ["a", "b"]
    assert stored["env"] == {"A": "1", "B": "2"}
    assert sorted(stored["after"]) == ["a0", "a1"]


def test_enqueue_hold_flag_and_held_field(h: Path) -> None:
    ok(invoke(h, "enqueue", "--hold", '{"id": "by-flag", "command": "true"}'))
    ok(invoke(h, "enqueue", '{"id": "by-field", "command": "true", "held": true}'))
    assert where(h, "by-flag") == ["held"]
    assert where(h, "by-field") == ["held"]


def test_enqueue_flags_apply_to_each_line_of_stdin_but_id_is_refused_there(h: Path) -> None:
    assert ok(invoke(h, "enqueue", "--id", "solo", '{"command": "true"}')) == "solo\n"
    _queue_q(h)
    lines = '{"command": "echo 1"}\n{"command": "echo 2", "labels": ["x"]}\n'
    ids = ok(invoke(h, "enqueue", "--queue", "q", "--label", "batch", "-", input=lines))
    ids_list = ids.split()
    assert len(ids_list) == 2
    for job_id in ids_list:
        stored = job_file(h, job_id)
        assert stored["queue"] == "q"
        assert "batch" in stored["labels"]

    before = _listing(h)
    result = invoke(h, "enqueue", "--id", "many", "-", input=lines)
    line = assert_one_line_error(result, 2, "--id")
    assert "no such option" not in line.lower()
    assert _listing(h) == before


# ------------------------------------------------------------------ the job fields


def test_stored_files_carry_the_new_fields_with_defaults(h: Path) -> None:
    ok(invoke(h, "enqueue", '{"id": "plain", "command": "true"}'))
    stored = job_file(h, "plain")
    assert stored["queue"] == "default"
    for name in ("after", "after_any", "labels"):
        assert stored[name] in ([], None), (name, stored[name])
    assert stored["unique_key"] is None
    assert stored["unique_for"] is None


def test_json_accepts_every_new_field(h: Path) -> None:
    _add(h, "--id", "d1", "true")
    _queue_q(h)
    job = {
        "id": "all",
        "command": "true",
        "queue": "q",
        "after": ["d1"],
        "after_any": ["d1"],
        "labels": ["x", "y"],
        "unique_key": "u",
        "unique_for": 90,
        "held": False,
    }
    assert ok(invoke(h, "enqueue", json.dumps(job))) == "all\n"
    stored = job_file(h, "all")
    assert stored["state"] == "blocked"
    for name in ("queue", "after", "after_any", "labels", "unique_key", "unique_for"):
        assert stored[name] == job[name], name


@pytest.mark.parametrize(
    "fields",
    [
        {"labels": "x"},
        {"labels": [1]},
        {"after": "d1"},
        {"after_any": [7]},
        {"held": "yes"},
        {"unique_key": 5},
        {"unique_for": "10s"},
        {"unique_for": -1},
        {"queue": "../x"},
        {"queue": ""},
    ],
    ids=lambda f: "-".join(f"{k}={v!r}" for k, v in f.items()),
)
def test_json_new_fields_are_validated(h: Path, fields: dict) -> None:
    _add(h, "--id", "d1", "true")  # the new fields exist
    before = _listing(h)
    result = invoke(h, "enqueue", json.dumps({"command": "true", **fields}))
    assert_one_line_error(result, 2, next(iter(fields)))
    assert _listing(h) == before
