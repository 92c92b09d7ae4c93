"""The command line through click's CliRunner: every command's happy and error paths."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from queuectl import __version__
from queuectl.cli.main import cli
from queuectl.job import Job, JobState, job_from_input, utcnow
from queuectl.storage.home import Home
from queuectl.storage.journal import scan
from queuectl.storage.store import Change, Store, with_state

STATES = ("pending", "processing", "completed", "failed", "dead")


def invoke(home: Path, *args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], input=input, catch_exceptions=False
    )


def listing(home: Path) -> dict[str, bytes | None]:
    """Every entry under the home: file contents, None for folders."""
    out: dict[str, bytes | None] = {}
    for path in sorted(home.rglob("*")):
        key = str(path.relative_to(home))
        out[key] = None if path.is_dir() else path.read_bytes()
    return out


def journal_records(home: Path) -> list[dict[str, Any]]:
    return [r.data for r in scan(home / "journal").records]


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("queuectl: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def store_for(home: Path) -> Store:
    return Store(Home(home).ensure())


def put(home: Path, job_id: str, state: JobState, **changes: object) -> Job:
    """Place a job directly in a state folder (as a worker would have left it)."""
    store = store_for(home)
    job = job_from_input({"id": job_id, "command": f"echo {job_id}"}, default_max_retries=3)
    store.enqueue([job])
    if state is JobState.PENDING:
        return job
    moved = with_state(job, state, utcnow(), **changes)
    store.commits.commit([Change(moved, state.value, remove=home / "pending" / f"{job_id}.json")])
    return moved


@pytest.fixture
def ready_home(cli_home: Path) -> Path:
    """A home that exists already, so listings before/after compare only the command."""
    cli_home.mkdir()  # an empty folder is a new home, set up by any command
    assert invoke(cli_home, "status").exit_code == 0
    return cli_home


# ------------------------------------------------------------------ top level


def test_version(cli_home: Path) -> None:
    result = invoke(cli_home, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"queuectl, version {__version__}"
    assert not cli_home.exists()  # --version does not create a home


def test_python_dash_m_help_works(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QUEUECTL_HOME"}
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: queuectl" in done.stdout
    for command in ("enqueue", "worker", "status", "list", "show", "dlq", "config"):
        assert command in done.stdout
    assert done.stderr == ""


def test_real_entry_point_errors_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "h"
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), "enqueue", "{bad"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("queuectl: error: invalid JSON")
    assert len(done.stderr.splitlines()) == 1
    assert not (home / "pending").exists() or list((home / "pending").iterdir()) == []


def test_home_is_created_private(cli_home: Path) -> None:
    assert not cli_home.exists()
    assert invoke(cli_home, "add", "true").exit_code == 0
    assert stat.S_IMODE(cli_home.stat().st_mode) == 0o700
    for name in (*STATES, "tmp", "rejected", "journal", "logs", "workers", "locks"):
        assert stat.S_IMODE((cli_home / name).stat().st_mode) == 0o700, name


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702])
def test_group_or_world_writable_home_is_refused(cli_home: Path, mode: int) -> None:
    cli_home.mkdir()
    os.chmod(cli_home, mode)
    result = invoke(cli_home, "list")
    assert_one_line_error(result, 2, "writable by group or others", str(cli_home))
    assert list(cli_home.iterdir()) == []  # nothing was created inside


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    assert_one_line_error(invoke(path, "status"), 2, "not a directory")


def test_unknown_command_is_a_usage_error(ready_home: Path) -> None:
    result = invoke(ready_home, "frobnicate")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "frobnicate" in result.stderr


# ------------------------------------------------------------------ enqueue


def test_enqueue_json_argument(ready_home: Path) -> None:
    text = '{"id": "job-1", "command": "echo hi", "max_retries": 2}'
    result = invoke(ready_home, "enqueue", text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "job-1\n"
    stored = json.loads((ready_home / "pending" / "job-1.json").read_text())
    assert stored["command"] == "echo hi"
    assert stored["max_retries"] == 2
    assert stored["state"] == "pending" and stored["attempts"] == 0
    assert stat.S_IMODE((ready_home / "pending" / "job-1.json").stat().st_mode) == 0o600
    records = journal_records(ready_home)
    assert [(r["event"], r["job"]["id"]) for r in records] == [("enqueued", "job-1")]


def test_enqueue_generates_an_id(ready_home: Path) -> None:
    result = invoke(ready_home, "enqueue", '{"command": "true"}')
    assert result.exit_code == 0
    job_id = result.stdout.strip()
    assert (ready_home / "pending" / f"{job_id}.json").exists()
    assert journal_records(ready_home)[0]["job"]["id"] == job_id


def test_enqueue_from_file(ready_home: Path, tmp_path: Path) -> None:
    source = tmp_path / "job.json"
    source.write_text('{\n  "id": "from-file",\n  "command": "printf \'%s\\\\n\' caf\u00e9"\n}\n')
    result = invoke(ready_home, "enqueue", f"@{source}")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "from-file\n"
    stored = Job.from_json((ready_home / "pending" / "from-file.json").read_bytes())
    assert stored.command == "printf '%s\\n' caf\u00e9"


def test_enqueue_batch_from_stdin(ready_home: Path) -> None:
    lines = [
        '{"id": "b1", "command": "echo 1"}',
        "",
        '{"command": "echo 2"}',
        "   ",
        '{"id": "b3", "command": "echo 3", "max_retries": 0}',
    ]
    result = invoke(ready_home, "enqueue", "-", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    ids = result.stdout.splitlines()
    assert len(ids) == 3
    assert ids[0] == "b1" and ids[2] == "b3"
    assert sorted(p.stem for p in (ready_home / "pending").iterdir()) == sorted(ids)
    records = journal_records(ready_home)
    assert [r["event"] for r in records] == ["enqueued"] * 3
    assert [r["job"]["id"] for r in records] == ids
    assert json.loads((ready_home / "pending" / "b3.json").read_text())["max_retries"] == 0


def test_enqueue_uses_the_configured_default_retries(ready_home: Path) -> None:
    assert invoke(ready_home, "config", "set", "max-retries", "7").exit_code == 0
    assert invoke(ready_home, "enqueue", '{"id": "r", "command": "true"}').exit_code == 0
    assert json.loads((ready_home / "pending" / "r.json").read_text())["max_retries"] == 7


@pytest.mark.parametrize(
    ("args", "stdin", "fragments"),
    [
        (["{not json"], None, ["invalid JSON"]),
        (['{"command": "true", "max_retry": 2}'], None, ["unknown field 'max_retry'"]),
        (['{"command": "   "}'], None, ["must not be empty"]),
        (['{"id": "../x", "command": "true"}'], None, ["invalid id"]),
        (['{"id": "a/b", "command": "true"}'], None, ["invalid id"]),
        (['{"command": "echo \\ud800"}'], None, ["not valid Unicode"]),
        (['{"command": "x", "max_retries": -1}'], None, ["max_retries"]),
        (['{"command": "x", "max_retries": true}'], None, ["max_retries"]),
        (['["echo"]'], None, ["JSON object"]),
        (['{"id": "x"}'], None, ["missing field 'command'"]),
        (["@/nonexistent/job.json"], None, ["cannot read /nonexistent/job.json"]),
        (["-"], "", ["no jobs given"]),
        (["-"], "\n  \n", ["no jobs given"]),
        (["-"], '{"command": "a"}\n{"command": "b", "oops": 1}\n', ["line 2:", "'oops'"]),
        (["-"], '{"command": "a"}\n\n{bad\n', ["line 3:", "invalid JSON"]),
    ],
)
def test_enqueue_errors_exit_2_and_write_nothing(
    ready_home: Path, args: list[str], stdin: str | None, fragments: list[str]
) -> None:
    before = listing(ready_home)
    result = invoke(ready_home, "enqueue", *args, input=stdin)
    assert_one_line_error(result, 2, *fragments)
    assert listing(ready_home) == before


def test_enqueue_too_long_command_exits_2(ready_home: Path) -> None:
    before = listing(ready_home)
    result = invoke(ready_home, "enqueue", json.dumps({"command": "x" * 131_072}))
    assert_one_line_error(result, 2, "longer than 131071 bytes")
    assert listing(ready_home) == before


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_enqueue_refuses_bytes_that_are_not_utf8(
    ready_home: Path, tmp_path: Path, via: str
) -> None:
    raw = b'{"id": "latin1", "command": "echo caf\xe9"}\n'
    before = listing(ready_home)
    if via == "file":
        source = tmp_path / "job.json"
        source.write_bytes(raw)
        result = invoke(ready_home, "enqueue", f"@{source}")
    else:
        result = invoke(ready_home, "enqueue", "-", input=raw)
    assert_one_line_error(result, 2, "not UTF-8")
    assert listing(ready_home) == before


def test_enqueue_duplicate_id_exits_1(ready_home: Path) -> None:
    assert invoke(ready_home, "enqueue", '{"id": "dup", "command": "echo a"}').exit_code == 0
    before = listing(ready_home)
    result = invoke(ready_home, "enqueue", '{"id": "dup", "command": "echo b"}')
    assert_one_line_error(result, 1, "already exists", "'dup'")
    assert listing(ready_home) == before


def test_enqueue_duplicate_id_in_another_state_exits_1(cli_home: Path) -> None:
    put(cli_home, "gone", JobState.DEAD, attempts=4)
    before = listing(cli_home)
    result = invoke(cli_home, "enqueue", '{"id": "gone", "command": "true"}')
    assert_one_line_error(result, 1, "already exists")
    assert listing(cli_home) == before


def test_enqueue_batch_with_a_duplicate_writes_nothing(ready_home: Path) -> None:
    before = listing(ready_home)
    batch = "".join(
        json.dumps({"id": i, "command": c}) + "\n" for i, c in (("d", "a"), ("e", "b"), ("d", "c"))
    )
    result = invoke(ready_home, "enqueue", "-", input=batch)
    assert_one_line_error(result, 1, "already exists")
    assert listing(ready_home) == before


# ------------------------------------------------------------------ list and show


@pytest.fixture
def populated(cli_home: Path) -> Path:
    put(cli_home, "p1", JobState.PENDING)
    put(cli_home, "p2", JobState.PENDING)
    put(cli_home, "c1", JobState.COMPLETED, attempts=1)
    put(cli_home, "f1", JobState.FAILED, attempts=1, last_error="exit code 1")
    put(cli_home, "d1", JobState.DEAD, attempts=4, last_error="exit code 2")
    return cli_home


def test_list_json_is_only_an_indented_array(populated: Path) -> None:
    result = invoke(populated, "list", "--json")
    assert result.exit_code == 0
    jobs = json.loads(result.stdout)
    assert isinstance(jobs, list)
    assert result.stdout == json.dumps(jobs, indent=2, ensure_ascii=False) + "\n"
    assert sorted(j["id"] for j in jobs) == ["c1", "d1", "f1", "p1", "p2"]
    by_id = {j["id"]: j for j in jobs}
    assert by_id["d1"]["state"] == "dead" and by_id["d1"]["attempts"] == 4
    assert by_id["f1"]["last_error"] == "exit code 1"
    # grouped by state in the documented order
    order = [j["state"] for j in jobs]
    assert order == sorted(order, key=STATES.index)


def test_list_json_empty_is_an_empty_array(ready_home: Path) -> None:
    result = invoke(ready_home, "list", "--json")
    assert result.exit_code == 0
    assert result.stdout == "[]\n"
    result = invoke(ready_home, "list", "--state", "dead", "--json")
    assert result.stdout == "[]\n"


def test_list_state_filter(populated: Path) -> None:
    result = invoke(populated, "list", "--state", "pending", "--json")
    assert sorted(j["id"] for j in json.loads(result.stdout)) == ["p1", "p2"]
    result = invoke(populated, "list", "--state", "dead", "--json")
    assert [j["id"] for j in json.loads(result.stdout)] == ["d1"]


def test_list_limit(populated: Path) -> None:
    assert len(json.loads(invoke(populated, "list", "--limit", "2", "--json").stdout)) == 2
    assert len(json.loads(invoke(populated, "list", "--limit", "0", "--json").stdout)) == 5
    assert len(json.loads(invoke(populated, "list", "--limit", "99", "--json").stdout)) == 5
    one = json.loads(
        invoke(populated, "list", "--state", "pending", "--limit", "1", "--json").stdout
    )
    assert len(one) == 1 and one[0]["state"] == "pending"


@pytest.mark.parametrize("args", [["--state", "bogus"], ["--limit", "-1"], ["--limit", "x"]])
def test_list_bad_options_exit_2(ready_home: Path, args: list[str]) -> None:
    result = invoke(ready_home, "list", *args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_list_table(populated: Path) -> None:
    result = invoke(populated, "list")
    assert result.exit_code == 0
    for job_id in ("p1", "p2", "c1", "f1", "d1"):
        assert job_id in result.stdout
    assert "exit code 2" in result.stdout


def test_list_table_when_empty(ready_home: Path) -> None:
    result = invoke(ready_home, "list")
    assert result.exit_code == 0
    assert result.stdout == "no jobs\n"


def test_show_json(populated: Path) -> None:
    result = invoke(populated, "show", "f1", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data.pop("running") is None  # only a job in processing/ runs
    assert data.pop("hook") is None  # no completion hook configured
    assert data == json.loads((populated / "failed" / "f1.json").read_text())
    assert data["state"] == "failed"


def test_show_table(populated: Path) -> None:
    result = invoke(populated, "show", "d1")
    assert result.exit_code == 0
    assert "d1" in result.stdout and "dead" in result.stdout and "exit code 2" in result.stdout


@pytest.mark.parametrize("job_id", ["nope", "../p1", "p1.json"])
def test_show_unknown_id_exits_1(populated: Path, job_id: str) -> None:
    assert_one_line_error(invoke(populated, "show", job_id), 1, "no job with id")


# ------------------------------------------------------------------ status


def test_status_json_shape(populated: Path) -> None:
    result = invoke(populated, "status", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["jobs"] == {
        "pending": 2,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "dead": 1,
        "cancelled": 0,
        "blocked": 0,
        "held": 0,
    }
    assert data["workers"] == []
    assert result.stdout == json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def test_status_json_of_an_empty_home(cli_home: Path) -> None:
    cli_home.mkdir()
    data = json.loads(invoke(cli_home, "status", "--json").stdout)
    assert data["jobs"] == dict.fromkeys([*STATES, "cancelled", "blocked", "held"], 0)
    assert data["workers"] == []


def test_status_table(populated: Path) -> None:
    result = invoke(populated, "status")
    assert result.exit_code == 0
    assert "pending" in result.stdout and "no workers running" in result.stdout


# ------------------------------------------------------------------ dlq


def test_dlq_list(populated: Path) -> None:
    result = invoke(populated, "dlq", "list", "--json")
    assert result.exit_code == 0
    assert [j["id"] for j in json.loads(result.stdout)] == ["d1"]
    table = invoke(populated, "dlq", "list")
    assert "d1" in table.stdout and "p1" not in table.stdout


def test_dlq_list_empty(ready_home: Path) -> None:
    assert invoke(ready_home, "dlq", "list", "--json").stdout == "[]\n"
    assert invoke(ready_home, "dlq", "list").stdout == "no jobs\n"


def test_dlq_retry_moves_to_pending_with_attempts_reset(populated: Path) -> None:
    result = invoke(populated, "dlq", "retry", "d1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "retried d1 (pending)\n"
    assert not (populated / "dead" / "d1.json").exists()
    stored = json.loads((populated / "pending" / "d1.json").read_text())
    assert stored["attempts"] == 0 and stored["state"] == "pending"
    assert journal_records(populated)[-1]["event"] == "retried"


@pytest.mark.parametrize("job_id", ["p1", "c1", "nope", "../d1"])
def test_dlq_retry_of_a_job_that_is_not_dead_exits_1(populated: Path, job_id: str) -> None:
    before = listing(populated)
    result = invoke(populated, "dlq", "retry", job_id)
    assert_one_line_error(result, 1, "not in the dead letter queue")
    assert listing(populated) == before


def test_dlq_retry_several_reports_each_and_fails_if_any_failed(populated: Path) -> None:
    result = invoke(populated, "dlq", "retry", "nope", "d1")
    assert result.exit_code == 1
    assert result.stdout == "retried d1 (pending)\n"
    assert result.stderr.count("queuectl: error:") == 1
    assert (populated / "pending" / "d1.json").exists()


def test_dlq_retry_needs_an_id(ready_home: Path) -> None:
    assert invoke(ready_home, "dlq", "retry").exit_code == 2


# ------------------------------------------------------------------ config


def test_config_get_defaults(ready_home: Path) -> None:
    assert invoke(ready_home, "config", "get", "max-retries").stdout == "3\n"
    assert invoke(ready_home, "config", "get", "backoff_base").stdout == "2\n"
    assert invoke(ready_home, "config", "get", "JOB_TIMEOUT").stdout == "0\n"


def test_config_set_persists(ready_home: Path) -> None:
    result = invoke(ready_home, "config", "set", "max_retries", "5")
    assert result.exit_code == 0
    assert result.stdout == "max-retries = 5\n"
    assert json.loads((ready_home / "config.json").read_text())["max-retries"] == 5
    assert invoke(ready_home, "config", "get", "max-retries").stdout == "5\n"
    result = invoke(ready_home, "config", "set", "backoff-base", "1.5")
    assert result.stdout == "backoff-base = 1.5\n"
    stored = json.loads((ready_home / "config.json").read_text())
    assert stored["max-retries"] == 5 and stored["backoff-base"] == 1.5
    assert stat.S_IMODE((ready_home / "config.json").stat().st_mode) == 0o600


def test_config_list(ready_home: Path) -> None:
    invoke(ready_home, "config", "set", "job-timeout", "30")
    result = invoke(ready_home, "config", "list", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["max-retries"] == 3 and data["backoff-base"] == 2 and data["job-timeout"] == 30
    assert result.stdout == json.dumps(data, indent=2) + "\n"
    table = invoke(ready_home, "config", "list")
    assert table.exit_code == 0
    for key in ("max-retries", "backoff-base", "job-timeout"):
        assert key in table.stdout


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max-retries", "-1"),
        ("max-retries", "lots"),
        ("backoff-base", "0.5"),
        ("job-timeout", "-3"),
        ("backoff_base", "nan"),
    ],
)
def test_config_set_bad_value_exits_2(ready_home: Path, key: str, value: str) -> None:
    before = listing(ready_home)
    result = invoke(ready_home, "config", "set", key, "--", value)
    assert_one_line_error(result, 2, "invalid value")
    assert listing(ready_home) == before
    assert not (ready_home / "config.json").exists()


@pytest.mark.parametrize("args", [["get", "max-retry"], ["set", "colour", "blue"]])
def test_config_unknown_key_exits_2(ready_home: Path, args: list[str]) -> None:
    before = listing(ready_home)
    assert_one_line_error(invoke(ready_home, "config", *args), 2, "unknown config key")
    assert listing(ready_home) == before


# ------------------------------------------------------------------ worker stop


def test_worker_stop_without_workers_exits_1(ready_home: Path) -> None:
    assert_one_line_error(invoke(ready_home, "worker", "stop"), 1, "no workers")


def test_worker_stop_cleans_a_dead_workers_registration(ready_home: Path) -> None:
    stale = ready_home / "workers" / "999999.json"
    stale.write_text(json.dumps({"pid": 999999, "threads": 1}))
    assert_one_line_error(invoke(ready_home, "worker", "stop"), 1, "no workers")
    assert not stale.exists()
    assert json.loads(invoke(ready_home, "status", "--json").stdout)["workers"] == []
