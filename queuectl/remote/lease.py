"""The lease: the fence that replaces the kernel lock for commands on other hosts.

Per (head, Dask worker) pair. Every ``renew_every`` seconds the head sends each worker a
renewal carrying the token that worker gave it on the previous round; the worker's token is
``(nonce, t0)``, ``t0`` being the worker's CLOCK_MONOTONIC when it *answered*. Echoed back,
it sets ``deadline = max(deadline, t0 + lease)``. Because ``t0`` was read before the head
received it, no delayed, duplicated or replayed message can extend a lease past
``(when the head last heard from that worker) + lease``: no synchronised clocks are needed,
only clocks that run at about the same rate (``margin`` covers the difference).

Between renewals a worker holds between ``lease - 2 r`` and ``lease - r``; commands get
SIGTERM when ``lease_grace`` is left and SIGKILL at the deadline, so one round of slack is
needed before a late renewal would TERM anything: ``lease >= 3 r + lease_grace``.

This module is pure (no Dask, no I/O) so the arithmetic can be tested on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "MARGIN_SECONDS",
    "HeadLease",
    "LeaseTiming",
    "fence_until",
    "orphan_safe_at",
]

DEFAULT_LEASE_SECONDS: Final = 10.0
MARGIN_SECONDS: Final = 1.0
"""Added to every fence: the kill itself, and clock *rate* differences (1 s per 10 s lease is
far more than any NTP-disciplined, or even free-running, clock drifts)."""

MIN_LEASE_SECONDS: Final = 2.0
MAX_LEASE_SECONDS: Final = 3600.0


@dataclass(frozen=True)
class LeaseTiming:
    """The timings derived from one lease length (see the module docstring)."""

    lease: float = DEFAULT_LEASE_SECONDS
    kill_grace: float = 5.0
    margin: float = MARGIN_SECONDS

    def __post_init__(self) -> None:
        if not MIN_LEASE_SECONDS <= self.lease <= MAX_LEASE_SECONDS:
            raise ValueError(
                f"the lease must be between {MIN_LEASE_SECONDS:g}s and {MAX_LEASE_SECONDS:g}s"
            )
        if self.lease < 3 * self.renew_every + self.lease_grace:
            raise ValueError(
                f"a lease of {self.lease:g}s is too short: it needs three renewal rounds "
                f"({self.renew_every:g}s each) and the {self.lease_grace:g}s TERM grace"
            )

    @property
    def renew_every(self) -> float:
        """A renewal round every ``lease / 5`` seconds, between 0.4 and 2 s."""
        return max(0.4, min(2.0, self.lease / 5))

    @property
    def lease_grace(self) -> float:
        """SIGTERM this long before the lease ends, SIGKILL at its end."""
        return min(self.kill_grace, self.lease / 5)

    @property
    def lease_wait(self) -> float:
        """How long a task waits for a lease of its head (a worker that just joined gets one
        within two rounds) before it reports ``worker_lost`` without starting."""
        return 2 * self.renew_every + 2.0


def fence_until(now: float, last_reply: float | None, lease: float, margin: float) -> float:
    """When the command of a given-up attempt is surely dead, on the head's monotonic clock:
    its worker's lease ends at most ``lease`` after the last renewal reply the head got from
    it (later tokens only go out in rounds whose live set drops the attempt). Unknown worker:
    count from now."""
    base = now if last_reply is None else min(now, last_reply)
    return max(now, base + lease + margin)


def orphan_safe_at(observed: float, lease: float, margin: float = MARGIN_SECONDS) -> float:
    """When a job whose remote attempt was orphaned by a dead head may run again.

    ``observed`` is when a recovering process first found the job's lock free (the old head
    died at or before that); ``lease`` is the *old* head's lease, recorded in the job. Every
    lease that head granted ends at most ``lease`` after its death."""
    return observed + lease + margin


@dataclass
class HeadLease:
    """What one Dask worker knows about one head: its deadline (worker clock), the last
    round seen, and which of its attempts it still wants."""

    deadline: float = 0.0
    round: int = 0
    max_seq: int = -1
    live: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    seen: float = field(default_factory=time.monotonic)

    def commit(
        self, token_nonce: str, token_t0: float, nonce: str, lease: float, now: float
    ) -> bool:
        """Apply an echoed token; True when the deadline moved (the warden must hear)."""
        if token_nonce != nonce or token_t0 > now:
            return False  # another worker life's token, or a clock that went backwards
        deadline = token_t0 + lease
        if deadline <= self.deadline:
            return False
        self.deadline = deadline
        return True

    def abandoned(self, key: str, seq: int) -> bool:
        """The head no longer wants this attempt (settled, given up or cancelled): its
        sequence number is covered by a round whose live set lacks it."""
        return key in self.cancelled or (seq <= self.max_seq and key not in self.live)
