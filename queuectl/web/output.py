"""A job's captured output for the job page: a window of bytes at an offset, so the page can
tail a running attempt by asking again from where the last answer ended.

A running attempt writes into ``tmp/``, in the files its worker names in
``workers/<id>.jobs`` (``observe.logs.live_outputs``); when it ends, its worker moves them
to ``logs/<id>/<run>.out|.err`` (the same bytes, so an offset stays valid; a stream over
10 MiB is cut to its end then, and an offset past the new size starts over). An attempt
that printed nothing keeps no file at all, and its empty pair is reused for another job:
so the live file is looked up again on every call and never remembered.

Everything under the home is untrusted: nothing here follows a symlink, and only regular
files are read.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Final

from queuectl.job import JobState
from queuectl.observe.logs import live_outputs
from queuectl.storage.store import Store

__all__ = ["MAX_CHUNK", "STREAMS", "read_output", "run_files"]

MAX_CHUNK: Final = 64 << 10
"""Bytes per answer; the page asks again for the rest."""

STREAMS: Final = ("out", "err")

_OPEN: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_output(
    store: Store, job_id: str, run: int, stream: str, offset: int | None
) -> dict[str, Any]:
    """Bytes of one stream of one run from ``offset`` (None: its last ``MAX_CHUNK``).

    ``live`` says the attempt is still running (ask again from ``next``); ``exists`` is
    false when the run kept no such file (it printed nothing, or cleanup removed it)."""
    live = dict(live_outputs(store, job_id)).get(f"{run}.{stream}")
    found = _read(str(live), None, offset) if live is not None else None
    is_live = found is not None
    if found is None:
        found = _read_logged(store, job_id, f"{run}.{stream}", offset)
    state = store.folders.locate(job_id)
    running = state is not None and state[0] is JobState.PROCESSING
    answer: dict[str, Any] = {"run": run, "stream": stream, "live": is_live}
    if found is None:
        # Not there yet (the attempt is starting, or its files are being moved) or never.
        return {
            **answer,
            "exists": False,
            "offset": offset or 0,
            "next": offset or 0,
            "size": 0,
            "text": "",
            "reset": False,
            "running": running,
        }
    start, data, size, reset = found
    return {
        **answer,
        "exists": True,
        "offset": start,
        "next": start + len(data),
        "size": size,
        "text": data.decode("utf-8", "replace"),
        "reset": reset,
        "running": running,
    }


def run_files(store: Store, job_id: str) -> dict[str, dict[str, int]]:
    """Run number -> {stream: size} of the output files a job's finished runs kept."""
    folder = _open_logs(store, job_id)
    if folder is None:
        return {}
    runs: dict[str, dict[str, int]] = {}
    try:
        for name in os.listdir(folder):
            run, _, stream = name.partition(".")
            if not (run.isascii() and run.isdigit()) or stream not in STREAMS:
                continue
            try:
                st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                runs.setdefault(run, {})[stream] = st.st_size
    except OSError:
        return {}
    finally:
        os.close(folder)
    return runs


def _open_logs(store: Store, job_id: str) -> int | None:
    """A descriptor of ``logs/<id>`` if it is a real folder (a symlink planted there is
    not followed); the caller closes it."""
    try:
        return os.open(
            os.path.join(store.home.logs, job_id),
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
        )
    except OSError:
        return None


def _read_logged(
    store: Store, job_id: str, name: str, offset: int | None
) -> tuple[int, bytes, int, bool] | None:
    folder = _open_logs(store, job_id)
    if folder is None:
        return None
    try:
        return _read(name, folder, offset)
    finally:
        os.close(folder)


def _read(name: str, folder: int | None, offset: int | None) -> tuple[int, bytes, int, bool] | None:
    """(start, bytes, file size, whether the offset was past the end) or None if missing;
    ``name`` is opened in the folder ``folder`` (a descriptor) or as a path."""
    try:
        fd = os.open(name, _OPEN, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        reset = offset is not None and offset > size
        start = max(0, size - MAX_CHUNK) if offset is None or reset else offset
        data = os.pread(fd, min(MAX_CHUNK, size - start), start) if size > start else b""
    finally:
        os.close(fd)
    if offset is None and start > 0:
        cut = data.find(b"\n")  # a tail starts at a line
        if 0 <= cut < len(data) - 1:
            start, data = start + cut + 1, data[cut + 1 :]
    return start, _whole_characters(data), size, reset


def _whole_characters(data: bytes) -> bytes:
    """``data`` without a UTF-8 character cut at its end (the next read starts there)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data  # ASCII: complete
        if byte >= 0xC0:  # a lead byte: complete if the sequence fits
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if need <= back else data[:-back]
    return data
