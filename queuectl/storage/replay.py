"""The replay rule: which journal record decides a job's state.

Per job id, the record with the highest (generation, rev) wins, whatever order processes
appended in. Two refinements:

- a life of an id that was never published (its enqueue was ``withdrawn``) does not exist:
  all its records are ignored, so an earlier life keeps its state;
- a winning ``deleted`` record means the id is free: the job does not exist (a later life of
  the id has a higher generation, so it wins over its predecessor's deletion).

Fed from index lines (``journal_index``), so replaying 200,000 records keeps one small tuple
per job and life, never a parsed record.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from queuectl.storage.events import GONE_EVENTS, Event
from queuectl.storage.journal_index import (
    EVENT,
    GENERATION,
    ID,
    LENGTH,
    OFFSET,
    REV,
    STATE,
    TS,
)

__all__ = ["Replay", "Winner"]


class Winner(NamedTuple):
    """The record that decides a job's state, located by the index."""

    generation: int
    rev: int
    event: str
    state: str
    source: Path
    offset: int
    length: int
    ts: str

    @property
    def gone(self) -> bool:
        return self.event in GONE_EVENTS


class Replay:
    """Feed index lines in journal order; ``winners()`` applies the rule. Keeps one
    ``Winner`` per id (a dict of them only for an id with several lives)."""

    def __init__(self) -> None:
        self._best: dict[str, Winner | dict[int, Winner]] = {}
        self._withdrawn: set[tuple[str, int]] = set()

    def add(self, fields: list[str], source: Path) -> None:
        job_id = fields[ID]
        if job_id == "-" or len(fields) <= TS:
            return
        try:
            candidate = Winner(
                int(fields[GENERATION]),
                int(fields[REV]),
                fields[EVENT],
                fields[STATE],
                source,
                int(fields[OFFSET]),
                int(fields[LENGTH]),
                fields[TS],
            )
        except ValueError:
            return
        if candidate.event == Event.WITHDRAWN:
            self._withdrawn.add((job_id, candidate.generation))
        known = self._best.get(job_id)
        if known is None:
            self._best[job_id] = candidate
        elif isinstance(known, Winner):
            if known.generation == candidate.generation:
                if candidate.rev >= known.rev:
                    self._best[job_id] = candidate
            else:
                self._best[job_id] = {known.generation: known, candidate.generation: candidate}
        else:
            same = known.get(candidate.generation)
            if same is None or candidate.rev >= same.rev:
                known[candidate.generation] = candidate

    def winners(self) -> dict[str, Winner]:
        """The winning record of every id the journal knows."""
        out: dict[str, Winner] = {}
        for job_id, known in self._best.items():
            lives = {known.generation: known} if isinstance(known, Winner) else known
            kept = [g for g in lives if (job_id, g) not in self._withdrawn]
            if kept:
                out[job_id] = lives[max(kept)]
        return out
