"""The journal's line format: ``<crc32 of the JSON, 8 hex digits> <one compact JSON object>\\n``.

JSON never contains a raw newline, so a line is complete exactly when it ends in ``\\n`` and
its checksum matches. Kept apart from ``journal`` (which appends and reads segments) so that
``events`` can build lines without importing the appender.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

__all__ = ["checksum_ok", "decode_line", "encode_record", "frame_payload"]


def encode_record(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate (from a \ud800 escape in a stored file) cannot be encoded as UTF-8;
    # backslashreplace writes it back as that same JSON escape.
    return frame_payload(text.encode("utf-8", "backslashreplace"))


def frame_payload(payload: bytes) -> bytes:
    """One journal line for an already encoded JSON object (which has no raw newline)."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def checksum_ok(line: bytes) -> bool:
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        return False
    try:
        return int(line[:8], 16) == zlib.crc32(line[9:-1])
    except ValueError:
        return False


def decode_line(line: bytes) -> dict[str, Any] | None:
    """One journal line's record; None for a damaged or torn line."""
    if not checksum_ok(line):
        return None
    try:
        record = json.loads(line[9:-1])
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None
