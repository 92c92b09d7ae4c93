"""Figures, their targets, and the one table (or JSON) they end in."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Figure", "Results"]


@dataclass
class Figure:
    section: str
    key: str
    label: str
    value: float
    fmt: str
    """How ``value`` is printed, e.g. ``"{:.2f}x"``."""
    detail: str = ""
    """What it was measured against and the numbers behind it."""
    op: str | None = None
    target: float | None = None

    @property
    def ok(self) -> bool | None:
        if self.op is None or self.target is None:
            return None
        return {
            ">=": self.value >= self.target,
            ">": self.value > self.target,
            "<=": self.value <= self.target,
            "<": self.value < self.target,
        }[self.op]

    def row(self) -> list[str]:
        target = f"{self.op} {self.target:g}" if self.op else ""
        verdict = {None: "", True: "ok", False: "MISSED"}[self.ok]
        return [self.section, self.label, self.fmt.format(self.value), target, verdict, self.detail]


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    """Every number behind the figures (every pair, every sample), for ``--json``."""

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def note(self, line: str) -> None:
        self.notes.append(line)

    def table(self) -> str:
        from tabulate import tabulate

        rows = [f.row() for f in self.figures]
        text = tabulate(
            rows, headers=["section", "figure", "measured", "target", "", "against / detail"]
        )
        if self.notes:
            text += "\n\n" + "\n".join(f"note: {n}" for n in self.notes)
        return text

    def json(self) -> str:
        figures = []
        for f in self.figures:
            entry = asdict(f)
            entry["ok"] = f.ok
            figures.append(entry)
        values = {f.key: f.value for f in self.figures}
        return json.dumps(
            {"values": values, "figures": figures, "notes": self.notes, "raw": self.raw},
            indent=2,
        )
