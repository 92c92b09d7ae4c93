"""``config export``, ``config import`` and ``config reset``: every setting as one JSON object,
imported as a whole (one bad value changes nothing), and put back to its default."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from queuectl.config import DEFAULTS

from .conftest import run_cli


def one_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("queuectl: error:"), result.stderr
    return lines[0]


def settings(home: Path) -> dict:
    result = run_cli(home, "config", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_export_prints_every_setting_with_its_default(cli_home: Path) -> None:
    cli_home.mkdir(mode=0o700)
    result = run_cli(cli_home, "config", "export")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == DEFAULTS


def test_export_then_import_carries_every_setting_to_another_home(
    cli_home: Path, tmp_path: Path
) -> None:
    assert run_cli(cli_home, "config", "set", "max-retries", "7").returncode == 0
    assert run_cli(cli_home, "config", "set", "journal-retention", "12h").returncode == 0
    exported = tmp_path / "settings.json"
    result = run_cli(cli_home, "config", "export", str(exported))
    assert result.returncode == 0, result.stderr
    assert json.loads(exported.read_text()) == settings(cli_home)
    other = tmp_path / "other"
    imported = run_cli(other, "config", "import", str(exported))
    assert imported.returncode == 0, imported.stderr
    assert "max-retries = 7" in imported.stdout
    assert settings(other) == settings(cli_home)
    assert settings(other)["journal-retention"] == 43200


def test_import_reads_stdin_and_leaves_unnamed_settings_alone(cli_home: Path) -> None:
    assert run_cli(cli_home, "config", "set", "job-timeout", "30").returncode == 0
    result = run_cli(cli_home, "config", "import", "-", input='{"backoff_base": 3}')
    assert result.returncode == 0, result.stderr
    assert settings(cli_home)["backoff-base"] == 3
    assert settings(cli_home)["job-timeout"] == 30


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"max-retries": 4, "backoff-base": 0}', "backoff-base"),
        ('{"max-retries": "lots"}', "max-retries"),
        ('{"max-retries": true}', "max-retries"),
        ('{"max-retries": 4, "max_retries": 5}', "given twice"),
        ('{"journal-retention": "forever"}', "journal-retention"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_one_bad_value_changes_nothing(
    cli_home: Path, tmp_path: Path, text: str, words: str
) -> None:
    assert run_cli(cli_home, "config", "set", "job-timeout", "30").returncode == 0
    before = (cli_home / "config.json").read_bytes()
    source = tmp_path / "bad.json"
    source.write_text(text)
    message = one_error(run_cli(cli_home, "config", "import", str(source)))
    assert words in message
    assert (cli_home / "config.json").read_bytes() == before


def test_a_bad_import_into_a_home_without_settings_creates_no_file(
    cli_home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "bad.json"
    source.write_text('{"max-retries": 3, "backoff-jitter": 2}')
    one_error(run_cli(cli_home, "config", "import", str(source)))
    assert not (cli_home / "config.json").exists()


def test_unknown_keys_are_a_warning_and_the_rest_is_imported(
    cli_home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "settings.json"
    source.write_text('{"max-retries": 9, "gpu-slots": 4}')
    result = run_cli(cli_home, "config", "import", str(source))
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "gpu-slots" in result.stderr
    assert "error" not in result.stderr
    assert settings(cli_home)["max-retries"] == 9
    assert "gpu-slots" not in json.loads((cli_home / "config.json").read_text())


def test_import_refuses_files_it_must_not_read(cli_home: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_error(run_cli(cli_home, "config", "import", str(fifo), timeout=10))
    big = tmp_path / "big.json"
    big.write_text('{"max-retries": 3, "pad": "' + "x" * (70 << 10) + '"}')
    assert "larger than" in one_error(run_cli(cli_home, "config", "import", str(big)))
    assert "cannot read" in one_error(
        run_cli(cli_home, "config", "import", str(tmp_path / "missing.json"))
    )


def test_import_never_replaces_a_config_file_it_cannot_read(cli_home: Path, tmp_path: Path) -> None:
    cli_home.mkdir(mode=0o700)  # an empty folder: a new home
    assert run_cli(cli_home, "status").returncode == 0
    (cli_home / "config.json").write_text('{"max-retries": 2,')
    source = tmp_path / "settings.json"
    source.write_text('{"max-retries": 5}')
    message = one_error(run_cli(cli_home, "config", "import", str(source)))
    assert "config.json" in message
    assert (cli_home / "config.json").read_text() == '{"max-retries": 2,'


def test_reset_one_key_and_then_every_key(cli_home: Path) -> None:
    for key, value in (("max-retries", "8"), ("backoff-base", "5"), ("job-timeout", "60")):
        assert run_cli(cli_home, "config", "set", key, value).returncode == 0
    one = run_cli(cli_home, "config", "reset", "max_retries")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "max-retries = 3 (default)"
    assert settings(cli_home) == {**DEFAULTS, "backoff-base": 5, "job-timeout": 60}
    every = run_cli(cli_home, "config", "reset")
    assert every.returncode == 0, every.stderr
    assert len(every.stdout.splitlines()) == len(DEFAULTS)
    assert settings(cli_home) == DEFAULTS
    assert json.loads((cli_home / "config.json").read_text()) == {}


def test_reset_keeps_keys_of_a_newer_version(cli_home: Path) -> None:
    cli_home.mkdir(mode=0o700)  # an empty folder: a new home
    assert run_cli(cli_home, "status").returncode == 0
    (cli_home / "config.json").write_text('{"max-retries": 6, "gpu-slots": 2}\n')
    result = run_cli(cli_home, "config", "reset")
    assert result.returncode == 0, result.stderr
    assert json.loads((cli_home / "config.json").read_text()) == {"gpu-slots": 2}


def test_reset_of_an_unknown_key_is_a_usage_error(cli_home: Path) -> None:
    assert "unknown config key" in one_error(run_cli(cli_home, "config", "reset", "nope"))


def test_export_to_a_folder_that_does_not_exist_is_one_line(cli_home: Path, tmp_path: Path) -> None:
    cli_home.mkdir(mode=0o700)
    one_error(run_cli(cli_home, "config", "export", str(tmp_path / "no" / "x.json")), code=1)


def test_export_and_reset_never_create_a_home_but_import_does(
    cli_home: Path, tmp_path: Path
) -> None:
    """Reading settings, or putting a home that does not exist back to its defaults, is a
    mistyped --home; importing settings puts something in the home, like config set."""
    for args in (("config", "export"), ("config", "reset"), ("config", "reset", "max-retries")):
        message = one_error(run_cli(cli_home, *args))
        assert "no such folder" in message, args
        assert not cli_home.exists(), args
    source = tmp_path / "settings.json"
    source.write_text('{"max-retries": 4}')
    result = run_cli(cli_home, "config", "import", str(source))
    assert result.returncode == 0, result.stderr
    assert settings(cli_home)["max-retries"] == 4


@pytest.mark.parametrize(
    "value",
    [True, None, [3], {"n": 3}],
    ids=["bool", "null", "list", "object"],
)
def test_import_refuses_json_values_of_the_wrong_type(
    cli_home: Path, tmp_path: Path, value: object
) -> None:
    cli_home.mkdir(mode=0o700)
    source = tmp_path / "settings.json"
    source.write_text(json.dumps({"max-retries": value, "backoff-base": 3}))
    message = one_error(run_cli(cli_home, "config", "import", str(source)))
    assert "nothing imported" in message and "max-retries" in message
    assert settings(cli_home) == DEFAULTS


def test_import_refuses_a_number_for_a_text_setting(cli_home: Path, tmp_path: Path) -> None:
    cli_home.mkdir(mode=0o700)
    source = tmp_path / "settings.json"
    source.write_text('{"on-finish": 5}')
    assert "on-finish" in one_error(run_cli(cli_home, "config", "import", str(source)))
    assert settings(cli_home) == DEFAULTS


def test_importing_a_hook_starts_hooks_from_now_on(cli_home: Path, tmp_path: Path) -> None:
    """As with config set on-finish: the hook cursor is created at the journal's end, so
    jobs that finished before the import get no hook and none after is missed."""
    source = tmp_path / "settings.json"
    source.write_text(json.dumps({"on-finish": "true"}))
    assert run_cli(cli_home, "config", "import", str(source)).returncode == 0
    assert (cli_home / "hooks" / "cursor.json").is_file()
