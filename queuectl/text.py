"""Text for people: one-line, clipped commands and errors, relative times and durations,
natural order of names (no I/O)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

__all__ = ["clip", "duration", "flat", "natural_key", "one_line", "relative"]

_DIGITS: Final = re.compile(r"(\d+)")


def flat(text: str) -> str:
    """All whitespace runs (newlines, tabs) as single spaces: one line of text."""
    return " ".join(text.split())


def one_line(text: str) -> str:
    """``text`` with every control or invisible character shown as its escape (``\\r``,
    ``\\x1b``): an error naming a hostile file name stays one line and cannot move the cursor."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clip(text: str, width: int) -> str:
    """``flat(text)`` with control characters escaped (``one_line``: a table cell cannot move
    the cursor), cut to ``width`` characters with an ellipsis when it was longer."""
    line = one_line(flat(text))
    return line if len(line) <= width else line[: width - 1] + "…"


def duration(seconds: float) -> str:
    """A span for a person: ``850 ms``, ``12 s``, ``4 min 05 s``, ``3 h 20 min``, ``2 d 4 h``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def relative(moment: datetime | None, now: datetime) -> str:
    """``3 min ago`` or ``in 12 s`` (rounded the way a person reads a clock), ``-`` for none."""
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    whole = abs(delta)
    if whole < 60:
        text = f"{whole:.0f} s"
    elif whole < 3600:
        text = f"{whole // 60:.0f} min"
    elif whole < 86400:
        text = f"{whole // 3600:.0f} h"
    else:
        text = f"{whole // 86400:.0f} d"
    return f"in {text}" if delta > 0 else f"{text} ago"


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digits as numbers: ``build-2`` before ``build-10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part
    )
