"""Figures, their targets, and the one table (or JSON) they end in."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Figure", "Results", "Side"]


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
class Side:
    """One row of the side-by-side table: queuectl and task-spooler on the same figure, and
    the baseline both were measured against in the same run."""

    figure: str
    unit: str
    queuectl: float
    tsp: float | None
    baseline: float | None = None
    baseline_label: str = ""
    higher_is_better: bool = True
    tsp_ratio: float | None = None
    """tsp's own ratio to its baseline, when its rounds had their own (else tsp / baseline)."""
    versus: float | None = None
    """queuectl / tsp as the median of per-round ratios (else from the two values)."""

    def row(self) -> list[str]:
        def show(value: float | None) -> str:
            if value is None:
                return "-"
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"

        ours, theirs, base = self.queuectl, self.tsp, self.baseline
        if self.versus is not None:
            versus = f"{self.versus:.2f}x"
        elif theirs is None or not theirs or not ours:
            versus = "-"
        else:
            versus = f"{ours / theirs if self.higher_is_better else theirs / ours:.2f}x"
        if self.tsp_ratio is not None:
            tsp_base = f"{self.tsp_ratio:.2f}x"
        else:
            tsp_base = f"{theirs / base:.2f}x" if base and theirs is not None else "-"
        return [
            self.figure,
            self.unit,
            show(ours),
            show(theirs),
            f"{show(base)} ({self.baseline_label})" if base is not None else "-",
            f"{ours / base:.2f}x" if base else "-",
            tsp_base,
            versus,
        ]


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    """Every number behind the figures (every pair, every sample), for ``--json``."""
    sides: list[Side] = field(default_factory=list)
    """The side-by-side rows, printed first."""

    def side(self, *rows: Side) -> None:
        self.sides.extend(rows)

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def note(self, line: str) -> None:
        self.notes.append(line)

    def table(self) -> str:
        from tabulate import tabulate

        text = ""
        if self.sides:
            headers = [
                "side by side (same run)",
                "unit",
                "queuectl",
                "tsp",
                "baseline",
                "queuectl/base",
                "tsp/base",
                "queuectl vs tsp",
            ]
            text = tabulate([r.row() for r in self.sides], headers=headers, disable_numparse=True)
            text += (
                "\n(queuectl vs tsp: > 1 means queuectl is better; for drains the median of the"
                " rounds' ratios, and each rate that of its own median round. Every queuectl"
                " drain is durable, fsync per state change; tsp keeps its queue in memory)\n\n"
            )
        rows = [f.row() for f in self.figures]
        text += tabulate(
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
        sides = [asdict(r) for r in self.sides]
        return json.dumps(
            {
                "values": values,
                "figures": figures,
                "side_by_side": sides,
                "notes": self.notes,
                "raw": self.raw,
            },
            indent=2,
        )
