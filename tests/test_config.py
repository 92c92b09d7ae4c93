"""Settings: key spelling, value validation, the persisted file and its reload."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from queuectl.config import (
    DEFAULTS,
    KEYS,
    Config,
    ConfigError,
    canonical_key,
    parse_duration,
    parse_value,
)
from queuectl.errors import UsageError
from queuectl.storage.store import Store


def test_defaults() -> None:
    assert DEFAULTS["max-retries"] == 3
    assert DEFAULTS["backoff-base"] == 2
    assert DEFAULTS["job-timeout"] == 0
    assert set(DEFAULTS) == set(KEYS)
    for key in KEYS.values():
        assert key.parse(str(key.default)) == key.default  # defaults pass their own checks


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        ("max-retries", "max-retries"),
        ("max_retries", "max-retries"),
        ("MAX_RETRIES", "max-retries"),
        (" backoff_base ", "backoff-base"),
        ("job-timeout", "job-timeout"),
        ("Job_Timeout", "job-timeout"),
    ],
)
def test_canonical_key_accepts_underscores_and_case(spelling: str, key: str) -> None:
    assert canonical_key(spelling) == key


@pytest.mark.parametrize("bad", ["max-retry", "retries", "", "max--retries", "backoff"])
def test_unknown_key_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="unknown config key") as info:
        canonical_key(bad)
    assert info.value.exit_code == 2
    assert "max-retries" in str(info.value)  # the message lists the known keys


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("max-retries", "0", 0),
        ("max-retries", " 5 ", 5),
        ("max-retries", "1000", 1000),
        ("backoff-base", "1", 1),
        ("backoff-base", "2.5", 2.5),
        ("backoff-base", "3.0", 3),
        ("backoff-base", "1e3", 1000),
        ("job-timeout", "0", 0),
        ("job-timeout", "0.5", 0.5),
        ("job-timeout", "31536000", 31536000),
    ],
)
def test_parse_value_accepts(key: str, text: str, value: Any) -> None:
    parsed = parse_value(key, text)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("max-retries", "-1"),
        ("max-retries", "1001"),
        ("max-retries", "2.5"),
        ("max-retries", "3.0"),
        ("max-retries", "three"),
        ("max-retries", ""),
        ("backoff-base", "0.5"),
        ("backoff-base", "0"),
        ("backoff-base", "1001"),
        ("backoff-base", "nan"),
        ("backoff-base", "inf"),
        ("backoff-base", "two"),
        ("job-timeout", "-1"),
        ("job-timeout", "31536001"),
        ("job-timeout", "-inf"),
    ],
)
def test_parse_value_rejects(key: str, text: str) -> None:
    with pytest.raises(UsageError, match=f"invalid value .* for {key}") as info:
        parse_value(key, text)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1.5h", 5400),
        (" 30M ", 1800),
        ("0", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-5s", "ten", "5y", "nan", "inf", "1e400"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# ------------------------------------------------------------------ the file


def write_config(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config = Config(tmp_path / "config.json")
    assert config.values() == DEFAULTS
    assert config.get("max-retries") == 3


def test_values_are_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, {"max-retries": 7, "backoff-base": 1.5, "job-timeout": "30"})
    config = Config(path)
    assert config.get("max-retries") == 7
    assert config.get("backoff-base") == 1.5
    assert config.get("job-timeout") == 30


def test_a_bad_stored_value_is_an_error_naming_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, {"max-retries": -4, "job-timeout": 12})
    with pytest.raises(ConfigError) as caught:
        Config(path).values()
    assert str(path) in str(caught.value) and "max-retries" in str(caught.value)
    assert caught.value.exit_code == 2


def test_unknown_keys_are_kept_and_only_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, {"job-timeout": 12, "future-key": 1})
    warnings: list[str] = []
    config = Config(path, warn=warnings.append)
    assert config.get("job-timeout") == 12 and "future-key" not in config.values()
    assert config.stored()["future-key"] == 1
    assert len(warnings) == 1 and "future-key" in warnings[0]


@pytest.mark.parametrize("content", ["{oops", "[1, 2]", '"text"', "", "\xff"])
def test_unreadable_file_is_an_error_not_defaults(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config\.json"):
        Config(path).values()


def test_a_worker_keeps_its_last_good_settings_and_reports_once(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, {"job-timeout": 7})
    reports: list[str] = []
    config = Config(path)
    config.on_error = reports.append
    assert config.get("job-timeout") == 7
    path.write_text("{broken")
    for _ in range(3):
        assert config.get("job-timeout") == 7
    assert len(reports) == 1 and "keeping the last good settings" in reports[0]


def test_change_is_picked_up_without_a_new_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, {"max-retries": 3})
    config = Config(path)
    assert config.get("max-retries") == 3
    write_config(path, {"max-retries": 10})  # a different size
    assert config.get("max-retries") == 10
    write_config(path, {"max-retries": 11})  # same size: a different mtime tells
    later = os.stat(path).st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))
    assert config.get("max-retries") == 11
    path.unlink()
    assert config.get("max-retries") == 3


def test_same_size_replacement_within_one_clock_tick_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, {"max-retries": 3})
    config = Config(path)
    assert config.get("max-retries") == 3
    stamp = os.stat(path).st_mtime_ns
    replacement = tmp_path / "config.json.new"
    write_config(replacement, {"max-retries": 5})
    os.utime(replacement, ns=(stamp, stamp))  # what a coarse clock produces
    os.replace(replacement, path)
    assert config.get("max-retries") == 5


def test_set_config_persists_atomically_and_privately(store: Store) -> None:
    store.set_config("max-retries", 6)
    store.set_config("backoff-base", 1.5)
    path = store.home.config_file
    stored = json.loads(path.read_text())
    assert stored["max-retries"] == 6
    assert stored["backoff-base"] == 1.5
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(store.home.tmp.iterdir()) == []
    fresh = Config(path)
    assert fresh.get("max-retries") == 6
    assert fresh.get("backoff-base") == 1.5
    assert fresh.get("job-timeout") == 0
