"""Settings: documented defaults, the persisted ``<home>/config.json``, validation.

When a change takes effect:
- ``max-retries`` is copied into each job when it is enqueued, so changing it affects only
  jobs enqueued afterwards (a job's own ``max_retries`` is what counts).
- ``backoff-base`` and ``job-timeout`` are read by workers at the moment they decide, so a
  change applies to every later attempt, including jobs already queued; running workers pick
  it up without a restart.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from queuectl.errors import UsageError

__all__ = [
    "DEFAULTS",
    "KEYS",
    "Config",
    "ConfigError",
    "canonical_key",
    "parse_duration",
    "parse_settings",
    "parse_value",
]


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"must be a whole number between {low} and {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _number_in(low: float, high: float) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"must be a number between {low:g} and {high:g}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        return int(value) if value.is_integer() else value

    return parse


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

MAX_DURATION_SECONDS: Final = 100 * 365 * 86400
"""Longer durations are refused: added to a date they would leave the calendar."""


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds (at most 100 years)."""
    value = text.strip().lower()
    unit = 1
    if value and value[-1] in _UNITS:
        unit = _UNITS[value[-1]]
        value = value[:-1]
    try:
        seconds = float(value) * unit
    except ValueError:
        raise ValueError("must be a duration such as 90s, 15m, 12h or 7d") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a duration such as 90s, 15m, 12h or 7d")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError("must be at most 100 years")
    return seconds


def _gpus(text: str) -> str:
    from queuectl.storage.gpus import parse_gpus

    return parse_gpus(text)


def _command(text: str) -> str:
    if "\x00" in text or len(text.encode("utf-8", "surrogatepass")) > 131_071:
        raise ValueError("must be a shell command line (no NUL, at most 128 KiB)")
    return text


def _duration(text: str) -> int | float:
    seconds = parse_duration(text)
    return int(seconds) if seconds.is_integer() else seconds


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str


KEYS: Final[dict[str, Key]] = {
    key.name: key
    for key in (
        Key(
            "max-retries",
            3,
            _int_in(0, 1000),
            "retries after the first run before a job goes to the DLQ (per job: max_retries)",
        ),
        Key(
            "backoff-base",
            2,
            _number_in(1, 1000),
            "a failed job waits backoff-base ** attempts seconds before its next run",
        ),
        Key(
            "job-timeout",
            0,
            _number_in(0, 31_536_000),
            "seconds a command may run before its process group is killed; 0 means no limit",
        ),
        Key(
            "backoff-max",
            0,
            _number_in(0, 31_536_000),
            "longest backoff delay in seconds; 0 means no cap (base ** attempts)",
        ),
        Key(
            "backoff-jitter",
            0,
            _number_in(0, 1),
            "shorten each backoff by a random fraction up to this (0 = exact, 0.5 = up to half)",
        ),
        Key(
            "journal-retention",
            604800,
            _duration,
            "seconds of full journal history 'journal compact' keeps (7d, 12h, 30m accepted)",
        ),
        Key(
            "gpus",
            "",
            _gpus,
            "GPU devices jobs may ask for with --gpus: a list such as 0,1,2,3, or auto "
            "(what nvidia-smi -L lists); empty: none",
        ),
        Key(
            "gpu-jobs-per-device",
            1,
            _int_in(1, 64),
            "how many jobs may share one GPU device",
        ),
        Key(
            "on-finish",
            "",
            _command,
            "a shell command run after each job reaches a final state (completed, dead, "
            "cancelled), with QUEUECTL_JOB_ID, QUEUECTL_STATE, ... set; empty: none",
        ),
        Key(
            "on-finish-timeout",
            60,
            _number_in(1, 86400),
            "seconds a completion hook may run before its process group is killed",
        ),
    )
}

DEFAULTS: Final[dict[str, Any]] = {name: key.default for name, key in KEYS.items()}


def canonical_key(name: str) -> str:
    """Accept ``max_retries`` as well as ``max-retries``."""
    key = name.strip().lower().replace("_", "-")
    if key not in KEYS:
        raise UsageError(f"unknown config key {name!r} (known: {', '.join(KEYS)})")
    return key


def parse_value(key: str, text: str) -> Any:
    try:
        return KEYS[key].parse(text)
    except ValueError as exc:
        raise UsageError(f"invalid value {text!r} for {key}: {exc}") from None


def parse_settings(data: object, source: str) -> tuple[dict[str, Any], list[str]]:
    """A whole settings object, validated as one (``config import``): (the values by key,
    the names that are no setting). Any bad value raises ``UsageError`` naming every one,
    so that nothing is applied in part."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a JSON object of settings")
    values: dict[str, Any] = {}
    unknown: list[str] = []
    problems: list[str] = []
    for name, value in data.items():
        key = name.strip().lower().replace("_", "-")
        if key not in KEYS:
            unknown.append(name)
        elif key in values:
            problems.append(f"{key} is given twice")
        elif not _json_type_fits(KEYS[key], value):
            wanted = "text" if isinstance(KEYS[key].default, str) else "a number (or text)"
            problems.append(f"{key} = {json.dumps(value)[:40]} must be {wanted}")
        else:
            try:
                values[key] = KEYS[key].parse(str(value))
            except ValueError as exc:
                problems.append(f"{key} = {json.dumps(value)[:40]} {exc}")
    if problems:
        raise UsageError(f"nothing imported from {source}: {'; '.join(problems)}")
    return values, unknown


def _json_type_fits(key: Key, value: object) -> bool:
    """A JSON value of a type the setting can have: text for a text setting; a number or
    text (``"7d"``) for a numeric one. ``true``, ``null``, lists and objects never are (their
    ``str()`` would otherwise parse: ``True``, ``[3]``)."""
    if isinstance(key.default, str):
        return isinstance(value, str)
    return isinstance(value, int | float | str) and not isinstance(value, bool)


def backoff_policy(values: dict[str, Any]) -> Any:
    """The ``Backoff`` the settings describe (``scheduler`` imports ``job``, which this module
    does not need; importing it here lazily keeps ``queuectl config`` light)."""
    from queuectl.scheduler import Backoff

    return Backoff(
        base=float(values["backoff-base"]),
        cap=float(values["backoff-max"]),
        jitter=float(values["backoff-jitter"]),
    )


MAX_CONFIG_BYTES: Final = 64 << 10


class ConfigError(UsageError):
    """``config.json`` cannot be used: it names the file, the problem and the way out."""


class Config:
    """Reads ``config.json`` and re-reads it only when it changes.

    The file is untrusted input: a symlink, a FIFO or a file over 64 KiB is refused unread,
    JSON that is not an object or a value a key does not accept is an error naming the file
    (``ConfigError``, exit 2), and nothing overwrites such a file silently. Unknown keys (a
    newer version's) are kept and reported once as a warning.

    Workers set ``recheck`` to 0.5 s (a ``config set`` is seen within half a second without
    a stat per job) and ``on_error``: a worker whose file goes bad keeps its last good
    settings and reports the problem once, instead of failing every job.
    """

    def __init__(
        self,
        path: Path,
        recheck: float = 0.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.recheck = recheck
        self.warn = warn or _stderr_warning
        self.on_error: Callable[[str], None] | None = None
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._values: dict[str, Any] = dict(DEFAULTS)
        self._stored: dict[str, Any] = {}
        self._reported: str | None = None

    def values(self) -> dict[str, Any]:
        """Current settings; the file is looked at no more than every ``recheck`` seconds."""
        now = time.monotonic()
        if now < self._next_check:
            return self._values
        self._next_check = now + self.recheck
        try:
            self._refresh()
        except ConfigError as exc:
            if self.on_error is None:
                raise
            if str(exc) != self._reported:
                self._reported = str(exc)
                self.on_error(f"{exc}; keeping the last good settings")
        return self._values

    def get(self, key: str) -> Any:
        return self.values()[key]

    def stored(self) -> dict[str, Any]:
        """What the file holds now (known keys validated, unknown ones kept): the base for
        ``config set``, which must not silently replace a file it cannot read."""
        self._refresh()
        return dict(self._stored)

    def _refresh(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            self._stamp, self._values, self._stored = None, dict(DEFAULTS), {}
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # set_config always makes a new inode
        if stamp != self._stamp:
            stored = self._read()
            values = dict(DEFAULTS)
            values.update({k: v for k, v in stored.items() if k in KEYS})
            self._values, self._stored, self._stamp = values, stored, stamp

    def _read(self) -> dict[str, Any]:
        from queuectl.storage.durable import read_regular

        try:
            raw, _ = read_regular(self.path, MAX_CONFIG_BYTES)
        except OSError as exc:
            raise self._error(_read_problem(exc)) from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise self._error(f"it is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            stored = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._error("it is not valid JSON") from None
        if not isinstance(stored, dict):
            raise self._error("it is not a JSON object")
        checked: dict[str, Any] = {}
        unknown = []
        for key, value in stored.items():
            if key not in KEYS:
                unknown.append(str(key))
                checked[key] = value
                continue
            try:
                checked[key] = KEYS[key].parse(str(value))
            except ValueError as exc:
                raise self._error(f"{key} = {value!r} {exc}") from None
        if unknown and self._reported != f"unknown:{unknown}":
            self._reported = f"unknown:{unknown}"
            self.warn(
                f"warning: {self.path} has unknown key(s) {', '.join(unknown)} "
                "(from a newer queuectl?); they are kept and ignored"
            )
        return checked

    def _error(self, problem: str) -> ConfigError:
        return ConfigError(
            f"cannot use the settings in {self.path}: {problem}; fix the file or remove it "
            "(then 'queuectl config set' writes a new one)"
        )


def _read_problem(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "it is a symbolic link"
    if exc.errno in (errno.EINVAL, errno.ENXIO):
        return "it is not a regular file"
    if exc.errno == errno.EFBIG:
        return f"it is larger than {MAX_CONFIG_BYTES} bytes"
    return f"it cannot be read ({exc.strerror})"


def _stderr_warning(message: str) -> None:
    import sys

    print(f"queuectl: {message}", file=sys.stderr)
