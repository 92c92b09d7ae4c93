"""Durable file primitives: the only code that creates, renames or fsyncs job files.

Every job file reaches its folder the Maildir way: written under ``tmp/`` with a unique name,
fsynced, renamed into place, and then the destination directory is fsynced, because on Linux a
rename is atomic at once but durable only after the directory itself is flushed (fsync(2)).

An fsync error is treated as final for the operation (PostgreSQL "fsyncgate"): the data may be
lost even if a retry "succeeds", so we raise ``StorageError`` and never retry.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from queuectl.errors import StorageError

__all__ = [
    "FILE_MODE",
    "fsync_dir",
    "fsync_fd",
    "read_regular",
    "read_regular_file",
    "rename_noreplace",
    "reuse_tmp",
    "sync_all",
    "syncfs_path",
    "tmp_name",
    "write_tmp",
]

FILE_MODE: Final = 0o600
"""Job files and journal segments are private to the worker's user."""

SYNCFS_MIN_FILES: Final = 8
"""From this many files on, one syncfs replaces one fsync per file: on ext4 each fsync is a
journal commit of its own, so a batch of N would pay N commits instead of one."""

_AT_FDCWD: Final = -100
_RENAME_NOREPLACE: Final = 1

_LIBC: dict[str, Any] = {}


def _libc_function(name: str) -> Any:
    """A C library function through ctypes, or None where the C library lacks it.

    Loaded on first use from the process's own symbols (``CDLL(None)``): no
    ``ctypes.util.find_library``, which runs ``/sbin/ldconfig -p`` in a child process and
    cost every CLI call milliseconds, and no import of ctypes for commands that never
    rename or sync.
    """
    if name not in _LIBC:
        import ctypes

        try:
            _LIBC[name] = getattr(ctypes.CDLL(None, use_errno=True), name, None)
        except OSError:
            _LIBC[name] = None
    return _LIBC[name]


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _storage_error(action: str, path: str | os.PathLike[str], exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    return StorageError(f"cannot {action} {os.fspath(path)}: {reason}")


def fsync_fd(fd: int, path: str | os.PathLike[str]) -> None:
    """fsync, converting failure into a final ``StorageError`` (never retried)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _storage_error("fsync", path, exc) from exc


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of a directory (renames, creations, unlinks) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise _storage_error("open directory", path, exc) from exc
    try:
        fsync_fd(fd, path)
    finally:
        os.close(fd)


_tmp_counter = itertools.count()
_tmp_salt = os.urandom(2).hex()


def tmp_name(tmp_dir: Path, stem: str, owner: str | None = None) -> Path:
    """A unique in-flight name ``<stem>.<owner>.<n>.tmp``; ``owner`` is the writer's process
    mark (``locks.ProcessMark``), which lets fsck tell whether the writer still runs.

    A per-process random salt plus a counter: unique without a getrandom call per file.
    """
    who = owner if owner is not None else str(os.getpid())
    return tmp_dir / f"{stem}.{who}.{_tmp_salt}{next(_tmp_counter):x}.tmp"


def write_tmp(tmp_dir: Path, stem: str, data: bytes, owner: str | None = None) -> tuple[Path, int]:
    """Write ``data`` to a fresh tmp file and return (path, open fd) without fsyncing.

    The caller decides how to make it durable (``fsync_fd`` for one, ``sync_all`` for a
    batch) and must close the fd. On any error the partial file is removed, so a full disk
    never leaves half-written files behind.
    """
    path = tmp_name(tmp_dir, stem, owner)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise _storage_error("create", path, exc) from exc
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(path)
        raise _storage_error("write", path, exc) from exc
    return path, fd


def reuse_tmp(blank: Path, data: bytes) -> tuple[Path, int] | None:
    """Like ``write_tmp`` but overwriting an old file instead of creating one; None on failure.

    Creating a file means allocating an inode, which on a busy ext4 block group costs up to
    a millisecond here, more than everything else a commit does. The blank keeps its hidden
    ``.blank.*.tmp`` name until it is published, so a crash before that leaves only scratch
    that fsck removes; the job is then recovered as if its worker died mid-run (it was not
    journaled yet), which is what a crash before the publish step means anyway.
    """
    try:
        fd = os.open(blank, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        _unlink_quietly(blank)
        return None
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
    except OSError:
        os.close(fd)
        _unlink_quietly(blank)
        return None
    return blank, fd


def sync_all(fds: list[int], paths: list[Path]) -> None:
    """Make every given file durable, with one syscall when the batch is large.

    ``syncfs`` flushes the whole filesystem holding the files: for a batch of many small
    files it costs about as much as one fsync, instead of one fsync each.
    """
    syncfs = _libc_function("syncfs") if len(fds) >= SYNCFS_MIN_FILES else None
    if syncfs is not None:
        if syncfs(fds[0]) != 0:
            err = _errno()
            raise _storage_error("syncfs", paths[0], OSError(err, os.strerror(err)))
        return
    for fd, path in zip(fds, paths, strict=True):
        fsync_fd(fd, path)


def syncfs_path(path: str | os.PathLike[str]) -> None:
    """Flush the whole filesystem holding ``path`` (a folder of many new files, written
    without an fsync each: one call instead of thousands). Falls back to ``os.sync``."""
    syncfs = _libc_function("syncfs")
    if syncfs is None:
        os.sync()
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _storage_error("open directory", path, exc) from exc
    try:
        if syncfs(fd) != 0:
            err = _errno()
            raise _storage_error("syncfs", path, OSError(err, os.strerror(err)))
    finally:
        os.close(fd)


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
    """Atomically move ``src`` to ``dst`` unless ``dst`` exists; False if it does.

    This is the claim primitive: of several processes renaming the same source, the kernel
    lets exactly one succeed (the others get ENOENT), and NOREPLACE guarantees we never
    silently overwrite a job that already sits at the destination.
    Raises FileNotFoundError when ``src`` is gone (somebody else moved it first).
    """
    renameat2 = _libc_function("renameat2")
    if renameat2 is not None:
        res = renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if res == 0:
            return True
        err = _errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), os.fspath(src))
    # Filesystems without RENAME_NOREPLACE: link() refuses to replace, then drop the source.
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    os.unlink(src)
    return True


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """``read_regular``, without the stat."""
    return read_regular(path, limit)[0]


def read_regular(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """Read a small regular file that may be hostile: no symlink is followed, a FIFO or
    socket is refused instead of blocking the reader forever, and nothing over ``limit``
    bytes is read. Returns the bytes and the file's stat. Raises OSError
    (FileNotFoundError when it is gone)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
        # st_size + 1, not limit + 1: pread allocates its whole buffer up front (4 MiB per
        # job file read, with the limit), and one extra byte shows a file still growing.
        return os.pread(fd, min(st.st_size, limit) + 1, 0)[:limit], st
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def unlink_all(paths: Iterable[Path]) -> None:
    """Remove leftovers after a failure; errors are ignored because we are already failing."""
    for path in paths:
        _unlink_quietly(path)
