"""Checking what a request asks for: query parameters and JSON bodies.

Every parameter is untrusted text. A value that cannot be used is a 400 whose message
says which parameter, what it must be, and (clipped) what was sent, never a traceback;
an unknown or repeated parameter is refused too, so a typo (``stat=dead``) is not
silently a different page. ``token`` is the server's business and is skipped here.
"""

from __future__ import annotations

import json
from typing import Any, Final

from queuectl.errors import UsageError
from queuectl.job import ID_PATTERN

__all__ = [
    "MAX_BODY_BYTES",
    "BadRequest",
    "choice",
    "json_body",
    "name",
    "single_values",
    "text",
    "whole",
]

MAX_BODY_BYTES: Final = 16 << 10
MAX_NUMBER_DIGITS: Final = 9


class BadRequest(UsageError):
    """A request the dashboard cannot serve as asked (HTTP 400)."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:39] + "…")


def single_values(query: dict[str, list[str]], allowed: tuple[str, ...]) -> dict[str, str]:
    """One value per known parameter (``parse_qs`` output); BadRequest otherwise."""
    values = {}
    for key, given in query.items():
        if key == "token":
            continue
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise BadRequest(f"unknown parameter {_shown(key)} (this takes: {takes})")
        if len(given) != 1:
            raise BadRequest(f"parameter {key!r} was given {len(given)} times; give it once")
        values[key] = given[0]
    return values


def whole(value: str | None, key: str, low: int, high: int, default: int | None = None) -> int:
    """A whole number written with ASCII digits (``²`` and 5,000-digit numbers are not)."""
    if value is None:
        if default is None:
            raise BadRequest(f"parameter {key!r} is required")
        return default
    digits = value[1:] if value.startswith("-") and low < 0 else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_NUMBER_DIGITS:
        raise BadRequest(f"{key} must be a whole number from {low} to {high}, not {_shown(value)}")
    number = int(value)
    if not low <= number <= high:
        raise BadRequest(f"{key} must be from {low} to {high}, not {number}")
    return number


def choice(value: str | None, key: str, options: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in options:
        raise BadRequest(f"{key} must be one of {', '.join(options)}, not {_shown(value)}")
    return value


def name(value: str | None, key: str) -> str | None:
    """A job, queue or schedule name as queuectl accepts them (None if not given)."""
    if value is None:
        return None
    if not ID_PATTERN.fullmatch(value):
        raise BadRequest(
            f"{key} {_shown(value)} is not a valid name (1-128 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit)"
        )
    return value


def text(value: str | None, key: str, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise BadRequest(f"{key} is longer than {limit} characters")
    if any(ord(c) < 32 for c in value):
        raise BadRequest(f"{key} must not contain control characters")
    return value


def json_body(raw: bytes) -> dict[str, Any]:
    """A POST body: empty, or one JSON object."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data
