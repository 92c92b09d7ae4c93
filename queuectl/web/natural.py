"""Natural order for job ids: ``build-2`` before ``build-10``, as a person reads them.

The key is one string, not a tuple, so sorting 100,000 ids is a run of C string
comparisons: every run of ASCII digits is replaced by its significant length (three
digits) and the digits without leading zeros, so a shorter number always sorts first and
equal lengths compare digit by digit. Case is folded for the main comparison; the id
itself follows a NUL as the tie-break, so the order is total and stable across runs.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["natural_key"]

_DIGITS: Final = re.compile(r"[0-9]+")


def _number(found: re.Match[str]) -> str:
    digits = found.group().lstrip("0") or "0"
    return f"{len(digits):03d}{digits}"


def natural_key(text: str) -> str:
    """A string that sorts as ``text`` reads: ``natural_key("a9") < natural_key("a10")``."""
    return _DIGITS.sub(_number, text.casefold()) + "\x00" + text
