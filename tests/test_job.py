"""Job record validation, generated ids and the lenient read / strict accept split."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl.errors import InvalidJob, UsageError
from queuectl.job import (
    ACCEPTED_FIELDS,
    ID_PATTERN,
    MAX_COMMAND_BYTES,
    Job,
    JobState,
    format_time,
    job_from_input,
    new_job_id,
    parse_time,
    validate_id,
)

NOW = datetime(2026, 11, 23, 12, 30, 0, 123456, tzinfo=UTC)


def accept(raw: bytes | str | dict[str, Any], **kwargs: Any) -> Job:
    kwargs.setdefault("default_max_retries", 3)
    return job_from_input(raw, **kwargs)


# ------------------------------------------------------------------ ids


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a/b",
        "/abs",
        ".",
        "..",
        ".hidden",
        "-leading-dash",
        "_leading_underscore",
        "",
        "a" * 129,
        "a\x00b",
        "a b",
        "a\n",
        "caf\u00e9",
        "\u0661",  # an Arabic-Indic digit: not ASCII
    ],
)
def test_validate_id_rejects_unsafe_ids(bad: str) -> None:
    with pytest.raises(InvalidJob, match="invalid id"):
        validate_id(bad)


@pytest.mark.parametrize("good", ["a", "0", "job-1", "a.b_c-d", "A" * 128, "x.json"])
def test_validate_id_accepts_safe_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize("value", [None, 1, 1.5, ["a"], {"a": 1}, b"abc", True])
def test_validate_id_requires_a_string(value: object) -> None:
    with pytest.raises(InvalidJob, match="'id' must be a string"):
        validate_id(value)


@pytest.mark.parametrize("bad", ["../x", "a/b", ".", "", "a" * 129, "a\x00b"])
def test_user_supplied_bad_id_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidJob):
        accept({"id": bad, "command": "true"})


def test_invalid_job_is_a_usage_error_with_exit_code_2() -> None:
    with pytest.raises(UsageError) as info:
        accept({"id": "a/b", "command": "true"})
    assert info.value.exit_code == 2


def test_generated_ids_are_unique_and_match_the_pattern() -> None:
    ids = [new_job_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        assert ID_PATTERN.fullmatch(job_id), job_id
        assert validate_id(job_id) == job_id


def test_generated_ids_sort_by_creation_time() -> None:
    moments = [NOW + timedelta(microseconds=n * 7919) for n in range(200)]
    ids = [new_job_id(moment) for moment in moments]
    assert sorted(ids) == ids
    assert ids[0].startswith("20261123-123000-123456-")


def test_job_without_id_gets_a_generated_one() -> None:
    job = accept({"command": "true"}, now=NOW)
    assert ID_PATTERN.fullmatch(job.id)
    assert job.id.startswith("20261123-123000-123456-")


def test_fallback_id_is_used_only_when_json_has_no_id() -> None:
    assert accept({"command": "true"}, fallback_id="from-name").id == "from-name"
    assert accept({"id": "from-json", "command": "true"}, fallback_id="x").id == "from-json"
    with pytest.raises(InvalidJob, match="invalid id"):
        accept({"command": "true"}, fallback_id="../escape")


# ------------------------------------------------------------------ commands


@pytest.mark.parametrize("value", [None, 1, 1.0, True, ["echo"], {"sh": "echo"}])
def test_command_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidJob, match="'command' must be a string"):
        accept({"command": value})


@pytest.mark.parametrize("value", ["", " ", "\t\n  "])
def test_command_must_not_be_empty(value: str) -> None:
    with pytest.raises(InvalidJob, match="must not be empty"):
        accept({"command": value})


def test_command_must_not_contain_nul() -> None:
    with pytest.raises(InvalidJob, match="NUL"):
        accept({"command": "echo a\x00b"})
    with pytest.raises(InvalidJob, match="NUL"):
        accept('{"command": "echo a\\u0000b"}')


def test_command_length_limit_is_in_utf8_bytes() -> None:
    exact = "x" * MAX_COMMAND_BYTES
    assert accept({"command": exact}).command == exact
    with pytest.raises(InvalidJob, match=f"longer than {MAX_COMMAND_BYTES} bytes"):
        accept({"command": exact + "x"})
    # 65,536 characters, but 131,072 bytes in UTF-8: one byte too many.
    with pytest.raises(InvalidJob, match="longer than"):
        accept({"command": "\u00e9" * 65536})
    # 65,535 two-byte characters plus one ASCII byte fit exactly.
    fits = "\u00e9" * 65535 + "x"
    assert len(fits.encode()) == MAX_COMMAND_BYTES
    assert accept({"command": fits}).command == fits


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "echo \\udc80 tail"])
def test_command_with_lone_surrogate_is_rejected(escape: str) -> None:
    with pytest.raises(InvalidJob, match="not valid Unicode"):
        accept('{"command": "' + escape + '"}')


@pytest.mark.parametrize(
    "field", ['"env": {"A": "\\ud800"}', '"cwd": "/tmp/\\udc80"'], ids=["env", "cwd"]
)
def test_env_and_cwd_with_lone_surrogates_are_rejected(field: str) -> None:
    """They once reached the file encoder and crashed enqueue with a traceback."""
    with pytest.raises(InvalidJob, match="not valid Unicode"):
        accept('{"command": "true", ' + field + "}")


def test_a_stored_surrogate_in_free_text_is_written_back_as_its_escape() -> None:
    job = accept({"command": "true"})
    job.last_error = "bad \ud800 byte"
    text = job.to_json()
    assert b"\\ud800" in text
    assert Job.from_json(text).last_error == "bad \ud800 byte"


def test_command_with_surrogate_pair_is_valid_text() -> None:
    job = accept('{"command": "echo \\ud83d\\ude00"}')
    assert job.command == "echo \U0001f600"


def test_command_is_kept_verbatim() -> None:
    command = "  printf '%s\\n' \"$HOME\" | tr a-z A-Z ; exit 3  "
    assert accept({"command": command}).command == command


# ------------------------------------------------------------------ max_retries


@pytest.mark.parametrize("value", [0, 1, 999, 1000])
def test_max_retries_in_bounds(value: int) -> None:
    assert accept({"command": "true", "max_retries": value}).max_retries == value


@pytest.mark.parametrize("value", [-1, 1001, 1 << 40, -(1 << 40)])
def test_max_retries_out_of_bounds(value: int) -> None:
    with pytest.raises(InvalidJob, match="between 0 and 1000"):
        accept({"command": "true", "max_retries": value})


@pytest.mark.parametrize("value", [True, False])
def test_max_retries_rejects_bools(value: bool) -> None:
    with pytest.raises(InvalidJob, match="must be an integer"):
        accept({"command": "true", "max_retries": value})


@pytest.mark.parametrize("value", [1.5, 0.1, float("nan"), float("inf"), float("-inf")])
def test_max_retries_rejects_non_integral_floats(value: float) -> None:
    with pytest.raises(InvalidJob, match="must be an integer"):
        accept({"command": "true", "max_retries": value})


def test_max_retries_rejects_non_finite_json_numbers() -> None:
    for text in ('{"command": "true", "max_retries": 1e400}', '{"command":"t","max_retries":NaN}'):
        with pytest.raises(InvalidJob, match="must be an integer"):
            accept(text)


def test_max_retries_integral_float_becomes_int() -> None:
    job = accept({"command": "true", "max_retries": 2.0})
    assert job.max_retries == 2
    assert type(job.max_retries) is int
    with pytest.raises(InvalidJob, match="between"):
        accept({"command": "true", "max_retries": 1e300})


@pytest.mark.parametrize("value", ["3", None, [3], {"n": 3}])
def test_max_retries_rejects_other_types(value: object) -> None:
    with pytest.raises(InvalidJob, match="must be an integer"):
        accept({"command": "true", "max_retries": value})


def test_default_max_retries_applies_when_absent() -> None:
    assert accept({"command": "true"}, default_max_retries=7).max_retries == 7
    assert accept({"command": "true", "max_retries": 0}, default_max_retries=7).max_retries == 0


# ------------------------------------------------------------------ fields and JSON


@pytest.mark.parametrize(
    "field", ["max_retry", "state", "attempts", "rev", "next_run_at", "Command", "extra"]
)
def test_unknown_fields_are_rejected(field: str) -> None:
    with pytest.raises(InvalidJob, match=f"unknown field '{field}'"):
        accept({"command": "true", field: 1})


def test_unknown_field_message_lists_accepted_fields() -> None:
    with pytest.raises(InvalidJob) as info:
        accept({"command": "true", "max_retry": 2})
    for name in ACCEPTED_FIELDS:
        assert name in str(info.value)


def test_missing_command_is_rejected() -> None:
    with pytest.raises(InvalidJob, match="missing field 'command'"):
        accept({"id": "x"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", r"invalid JSON: Expecting property name .* at line 1 column 2"),
        ('{"command": "a",}', r"invalid JSON: .* at line 1 column \d+"),
        ('{\n"command": oops}', r"invalid JSON: Expecting value at line 2 column 12"),
        ("", r"invalid JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe\xfd", r"invalid JSON: not UTF-8 text"),
        (b'{"command": "echo \xff"}', r"invalid JSON: not UTF-8 text"),
        ("[" * 100_000, r"invalid JSON: nested too deeply"),
        ("[]", r"a job must be a JSON object"),
        ('"echo hi"', r"a job must be a JSON object"),
        ("null", r"a job must be a JSON object"),
        ("3", r"a job must be a JSON object"),
    ],
)
def test_invalid_json_messages(raw: str | bytes, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        accept(raw)


def test_accepted_job_is_a_fresh_pending_job() -> None:
    job = accept('{"id": "j1", "command": "echo hi", "max_retries": 2}', source="drop", now=NOW)
    assert job.id == "j1"
    assert job.command == "echo hi"
    assert job.state is JobState.PENDING
    assert job.attempts == 0
    assert job.max_retries == 2
    assert job.rev == 1
    assert job.source == "drop"
    assert job.created_at == job.updated_at == "2026-11-23T12:30:00.123Z"
    assert job.next_run_at is None and job.last_error is None and job.worker is None


# ------------------------------------------------------------------ round trip


def stored_job(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "job-1",
        "command": "echo hi",
        "state": "failed",
        "attempts": 2,
        "runs": 2,
        "max_retries": 5,
        "created_at": "2026-11-23T12:30:00.000Z",
        "updated_at": "2026-11-23T12:31:00.000Z",
        "next_run_at": "2026-11-23T12:31:04.000Z",
        "last_exit_code": 3,
        "last_error": "exit code 3",
        "started_at": "2026-11-23T12:30:59.000Z",
        "finished_at": "2026-11-23T12:31:00.000Z",
        "worker": "host:1:1",
        "source": "cli",
        "queued_at": None,
        "rev": 4,
        "generation": 0,
        "priority": 0,
        "run_at": None,
        "timeout": None,
        "cwd": None,
        "env": {},
        "queue": "default",
        "labels": [],
        "after": [],
        "after_any": [],
        "unique_key": None,
        "unique_for": None,
        "gpus": 0,
        "on_finish": None,
        "schedule": None,
        "history": [],
    }
    data.update(overrides)
    return data


def test_round_trip_keeps_every_field() -> None:
    data = stored_job()
    job = Job.from_dict(data)
    assert job.state is JobState.FAILED
    assert job.extra == {}
    assert job.to_dict() == data
    assert Job.from_json(job.to_json()) == job


def test_round_trip_keeps_unknown_keys() -> None:
    data = stored_job(owner=7, tags={"team": "a"}, extra=[1, 2])
    job = Job.from_dict(data)
    assert job.extra == {"owner": 7, "tags": {"team": "a"}, "extra": [1, 2]}
    again = job.to_dict()
    assert again == data
    reread = Job.from_json(job.to_json())
    assert reread.to_dict() == data
    assert reread == job


def test_unknown_keys_never_override_known_fields() -> None:
    job = Job.from_dict(stored_job())
    job.extra["state"] = "completed"
    job.extra["rev"] = 99
    data = job.to_dict()
    assert data["state"] == "failed"
    assert data["rev"] == 4


def test_to_json_is_indented_utf8_with_trailing_newline() -> None:
    job = Job.from_dict(stored_job(command="echo caf\u00e9"))
    raw = job.to_json()
    assert raw.endswith(b"}\n")
    assert "caf\u00e9".encode() in raw
    assert b'\n  "id": "job-1"' in raw
    assert json.loads(raw)["command"] == "echo caf\u00e9"


def test_rev_defaults_to_one_when_absent() -> None:
    data = stored_job()
    del data["rev"]
    assert Job.from_dict(data).rev == 1


@pytest.mark.parametrize("missing", ["id", "command", "state", "attempts", "max_retries"])
def test_stored_job_missing_required_field(missing: str) -> None:
    data = stored_job()
    del data[missing]
    with pytest.raises(InvalidJob, match=f"missing field '{missing}'"):
        Job.from_dict(data)


@pytest.mark.parametrize(
    "override",
    [
        {"id": "../x"},
        {"state": "running"},
        {"attempts": -1},
        {"attempts": True},
        {"attempts": "2"},
        {"max_retries": 1001},
        {"command": ""},
        {"rev": -1},
    ],
)
def test_stored_job_with_bad_values_is_rejected(override: dict[str, Any]) -> None:
    with pytest.raises(InvalidJob):
        Job.from_dict(stored_job(**override))


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(InvalidJob, match="JSON object"):
        Job.from_json(b"[1]")
    with pytest.raises(InvalidJob, match="invalid JSON"):
        Job.from_json(b'{"id": ')


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in Job.__dataclass_fields__),
        _json_values,
        max_size=4,
    ),
    attempts=st.integers(0, 1 << 31),
    max_retries=st.integers(0, 1000),
    state=st.sampled_from(list(JobState)),
    command=st.text(min_size=1, max_size=50).filter(lambda c: c.strip() != "" and "\x00" not in c),
)
def test_round_trip_property(
    extra: dict[str, Any], attempts: int, max_retries: int, state: JobState, command: str
) -> None:
    try:
        command.encode()
    except UnicodeEncodeError:
        return
    data = stored_job(
        attempts=attempts, max_retries=max_retries, state=state.value, command=command, **extra
    )
    job = Job.from_dict(data)
    assert job.to_dict() == data
    assert Job.from_json(job.to_json()) == job


# ------------------------------------------------------------------ times


def test_format_time_is_utc_with_milliseconds() -> None:
    assert format_time(NOW) == "2026-11-23T12:30:00.123Z"
    east = NOW.astimezone(timezone(timedelta(hours=5)))
    assert format_time(east) == "2026-11-23T12:30:00.123Z"


def test_parse_time_reads_format_time_and_assumes_utc() -> None:
    assert parse_time(format_time(NOW)) == NOW.replace(microsecond=123000)
    assert parse_time("2026-11-23T12:30:00") == datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
