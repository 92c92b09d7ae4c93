"""Text for people: one-line, clipped renderings of commands and errors (no I/O)."""

from __future__ import annotations

__all__ = ["clip", "flat"]


def flat(text: str) -> str:
    """All whitespace runs (newlines, tabs) as single spaces: one line of text."""
    return " ".join(text.split())


def clip(text: str, width: int) -> str:
    """``flat(text)``, cut to ``width`` characters with an ellipsis when it was longer."""
    line = flat(text)
    return line if len(line) <= width else line[: width - 1] + "…"
