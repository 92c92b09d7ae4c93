"""What travels between the head and a Dask worker: one attempt, and its report.

Both are plain objects pickled by reference to this module (queuectl is installed on every
worker). On purpose not dataclasses, tuples or dicts: Dask walks such task *arguments*
(replacing any string equal to an existing key by that key's result, rebuilding dataclasses
field by field), and serializes a dict or tuple *result* element by element (measured: a
12-field dict cost ~160 us and 14 frames, one opaque object ~28 us and 3 frames, which alone
was ~7 % of the throughput). No Dask import here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AttemptReport", "AttemptSpec"]


class AttemptSpec:
    """One attempt as ``run_attempt`` receives it."""

    __slots__ = (
        "command",
        "cwd",
        "env",
        "gpus",
        "grace",
        "head",
        "key",
        "lease_grace",
        "lease_wait",
        "output_cap",
        "seq",
        "timeout",
    )

    def __init__(
        self,
        key: str,
        head: str,
        seq: int,
        command: str,
        env: dict[str, str],
        cwd: str | None,
        timeout: float,
        gpus: int,
        grace: float,
        lease_wait: float,
        output_cap: int,
        lease_grace: float,
    ) -> None:
        self.key, self.head, self.seq, self.command = key, head, seq, command
        self.env, self.cwd, self.timeout, self.gpus = env, cwd, timeout, gpus
        self.grace, self.lease_wait, self.output_cap = grace, lease_wait, output_cap
        self.lease_grace = lease_grace

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (AttemptSpec, tuple(getattr(self, name) for name in _ORDER))


_ORDER = (
    "key",
    "head",
    "seq",
    "command",
    "env",
    "cwd",
    "timeout",
    "gpus",
    "grace",
    "lease_wait",
    "output_cap",
    "lease_grace",
)


class AttemptReport:
    """What ``run_attempt`` returns: ``data`` holds kind, exit_code, error, started,
    finished, worker, host, pid, gpus, and stdout/stderr (their last ``output_cap`` bytes)
    with their total sizes (omitted when empty: the common case is a quiet command)."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (AttemptReport, (self.data,))
