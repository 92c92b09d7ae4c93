"""GPU slots: devices shared between jobs without two runs landing on one card.

The setting ``gpus`` lists the devices (``0,1,2,3``, or ``auto``: what ``nvidia-smi -L``
lists, none without it) and ``gpu-jobs-per-device`` how many jobs may share one (default 1).
Place ``k`` of device ``d`` is one byte of ``locks/claims.lock`` (``locks.gpu_offset``). A
claim of a job asking for N devices takes one free place on each of N different devices, on
the job's run-lock description: the command inherits them with fd 3, so a device is free
again only when the job's command (and anything that kept fd 3) is gone, whatever happened
to the worker. The places are counted, never guessed from free memory (which is racy at
job start, the complaint about task-spooler's ``-G``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, Final

from queuectl.storage.locks import Holder, LockFile, gpu_offset

__all__ = ["DEVICE_NAME", "GPU_STALL", "Devices", "detect", "parse_gpus"]

GPU_STALL: Final = "@gpus"
"""The index's stall key for jobs waiting for devices (no queue can be called that)."""

DEVICE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,63}")
MAX_DEVICES: Final = 256
MAX_PLACES: Final = 1 << 16
"""Places per device in the lock file (``locks.gpu_offset``): the probes for jobs above a
lowered ``gpu-jobs-per-device`` cover them all, so no earlier value needs remembering."""


def parse_gpus(text: str) -> str:
    """Validate the ``gpus`` setting: empty, ``auto``, or a comma-separated device list."""
    value = text.strip()
    if value in ("", "auto"):
        return value
    names = [part.strip() for part in value.split(",")]
    if len(names) > MAX_DEVICES or not all(DEVICE_NAME.fullmatch(n) for n in names):
        raise ValueError("must be 'auto', empty, or device ids such as 0,1,2,3")
    if len(set(names)) != len(names):
        raise ValueError("lists a device twice")
    return ",".join(names)


def detect(run: Callable[[list[str]], str] | None = None) -> list[str]:
    """The devices ``nvidia-smi -L`` lists (``GPU 0: ...``), none when it is missing."""
    import shutil
    import subprocess

    if run is None:
        if shutil.which("nvidia-smi") is None:
            return []

        def run(argv: list[str]) -> str:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return done.stdout if done.returncode == 0 else ""

    try:
        listing = run(["nvidia-smi", "-L"])
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", listing, re.MULTILINE)]


class Devices:
    """The configured devices (re-read when the settings change) and their places."""

    def __init__(self, locks: LockFile, settings: Callable[[], dict[str, Any]]) -> None:
        self.locks = locks
        self.settings = settings
        self._guard = threading.Lock()
        self._auto: list[str] | None = None

    def current(self) -> tuple[list[str], int]:
        """(devices, jobs per device) as the settings say now."""
        values = self.settings()
        spec = str(values.get("gpus", "") or "")
        per = int(values.get("gpu-jobs-per-device", 1) or 1)
        if spec == "auto":
            with self._guard:
                if self._auto is None:
                    self._auto = detect()
                return list(self._auto), per
        return ([d for d in spec.split(",") if d] if spec else []), per

    @property
    def configured(self) -> bool:
        return bool(str(self.settings().get("gpus", "") or ""))

    def take(self, holder: Holder, count: int) -> list[str] | None:
        """Take one free place on each of ``count`` devices on ``holder``; None (and
        nothing held) when fewer are free. A device with a job in a place at or above
        ``gpu-jobs-per-device`` (the setting was lowered while it ran) takes no new job
        until those are gone, whatever the setting was before."""
        devices, per = self.current()
        got: list[tuple[str, int]] = []
        for device in devices:
            if len(got) == count:
                break
            if self._draining(device, per):
                continue
            for place in range(per):
                if holder.take(gpu_offset(device, place)):
                    got.append((device, place))
                    break
        if len(got) < count:
            for device, place in got:
                holder.drop(gpu_offset(device, place))
            return None
        return [device for device, _ in got]

    def _draining(self, device: str, per: int) -> bool:
        """Whether a job holds a place of ``device`` at or above ``per`` (one probe)."""
        return self.locks.first_held(gpu_offset(device, per), MAX_PLACES - per) is not None

    def _held(self, device: str) -> int:
        return self.locks.held_in(gpu_offset(device, 0), MAX_PLACES)

    def free(self) -> int:
        """How many devices could take a job now (a probe)."""
        devices, per = self.current()
        return sum(1 for d in devices if not self._draining(d, per) and self._held(d) < per)

    def in_use(self) -> dict[str, int]:
        """Device -> jobs using it now (every place, those above a lowered setting too)."""
        devices, _per = self.current()
        return {d: self._held(d) for d in devices}
