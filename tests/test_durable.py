"""Durable file primitives: no-replace renames, tmp files that never linger, fsync errors."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from queuectl.errors import StorageError
from queuectl.storage import durable
from queuectl.storage.durable import (
    FILE_MODE,
    fsync_dir,
    fsync_fd,
    rename_noreplace,
    sync_all,
    tmp_name,
    write_tmp,
)


@pytest.fixture(params=["renameat2", "link fallback"])
def rename_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run rename tests with RENAME_NOREPLACE and with the link()+unlink() fallback."""
    if request.param == "renameat2":
        if durable._libc_function("renameat2") is None:
            pytest.skip("libc has no renameat2")
    else:
        monkeypatch.setitem(durable._LIBC, "renameat2", None)
    return str(request.param)


# ------------------------------------------------------------------ rename_noreplace


def test_rename_noreplace_moves_when_free(tmp_path: Path, rename_impl: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"payload")
    inode = src.stat().st_ino
    assert rename_noreplace(src, dst) is True
    assert not src.exists()
    assert dst.read_bytes() == b"payload"
    assert dst.stat().st_ino == inode
    assert dst.stat().st_nlink == 1


def test_rename_noreplace_refuses_to_replace(tmp_path: Path, rename_impl: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    assert rename_noreplace(src, dst) is False
    assert src.read_bytes() == b"new"
    assert dst.read_bytes() == b"old"
    assert src.stat().st_nlink == 1 and dst.stat().st_nlink == 1


def test_rename_noreplace_refuses_to_replace_a_dangling_symlink(
    tmp_path: Path, rename_impl: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.symlink_to(tmp_path / "nowhere")
    assert rename_noreplace(src, dst) is False
    assert dst.is_symlink()
    assert src.read_bytes() == b"new"


def test_rename_noreplace_missing_source(tmp_path: Path, rename_impl: str) -> None:
    with pytest.raises(FileNotFoundError):
        rename_noreplace(tmp_path / "absent", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_rename_noreplace_missing_source_even_if_target_exists(
    tmp_path: Path, rename_impl: str
) -> None:
    (tmp_path / "dst").write_bytes(b"keep")
    with pytest.raises(FileNotFoundError) as info:
        rename_noreplace(tmp_path / "absent", tmp_path / "dst")
    assert info.value.errno == errno.ENOENT
    assert (tmp_path / "dst").read_bytes() == b"keep"


def test_rename_noreplace_moves_symlinks_themselves(tmp_path: Path, rename_impl: str) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"t")
    src = tmp_path / "link"
    src.symlink_to(target)
    dst = tmp_path / "moved"  # link() of a symlink links the symlink itself on Linux
    assert rename_noreplace(src, dst) is True
    assert dst.is_symlink()
    assert os.readlink(dst) == str(target)
    assert target.read_bytes() == b"t"


def test_rename_noreplace_has_exactly_one_winner(tmp_path: Path, rename_impl: str) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    results = []
    for n in range(3):
        try:
            results.append(rename_noreplace(src, tmp_path / f"dst{n}"))
        except FileNotFoundError:
            results.append(None)
    assert results == [True, None, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst0"]


# ------------------------------------------------------------------ write_tmp


def test_write_tmp_writes_a_private_uniquely_named_file(tmp_path: Path) -> None:
    path, fd = write_tmp(tmp_path, "job-1", b"data" * 1000)
    try:
        assert path.parent == tmp_path
        assert re.fullmatch(rf"job-1\.{os.getpid()}\.[0-9a-f]+\.tmp", path.name)
        assert path.read_bytes() == b"data" * 1000
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
        assert os.fstat(fd).st_ino == path.stat().st_ino
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    other, fd2 = write_tmp(tmp_path, "job-1", b"")
    os.close(fd2)
    assert other != path
    assert other.read_bytes() == b""


def test_tmp_names_are_unique(tmp_path: Path) -> None:
    assert len({tmp_name(tmp_path, "x") for _ in range(2000)}) == 2000


def test_write_tmp_failure_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls: list[int] = []

    def short_then_full(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))  # a short write first
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fds_before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(StorageError, match=r"cannot write .*No space left on device"):
        write_tmp(tmp_path, "job-1", b"x" * 100)
    monkeypatch.undo()
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # the fd was closed


def test_write_tmp_loops_over_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def three_bytes(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data[:3]))

    monkeypatch.setattr(os, "write", three_bytes)
    path, fd = write_tmp(tmp_path, "short", b"0123456789")
    monkeypatch.undo()
    os.close(fd)
    assert path.read_bytes() == b"0123456789"


def test_write_tmp_into_a_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot create"):
        write_tmp(tmp_path / "absent", "job", b"x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ syncing


@pytest.mark.parametrize("count", [1, 3, 20])
def test_sync_all_handles_small_and_large_batches(tmp_path: Path, count: int) -> None:
    opened = [write_tmp(tmp_path, f"f{n}", b"x") for n in range(count)]
    try:
        sync_all([fd for _, fd in opened], [p for p, _ in opened])
    finally:
        for _, fd in opened:
            os.close(fd)
    assert len(list(tmp_path.iterdir())) == count


def test_fsync_error_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, fd = write_tmp(tmp_path, "f", b"x")

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    try:
        with pytest.raises(StorageError, match=rf"cannot fsync {re.escape(str(path))}"):
            fsync_fd(fd, path)
        with pytest.raises(StorageError, match="fsync"):
            sync_all([fd], [path])
        with pytest.raises(StorageError, match="fsync"):
            fsync_dir(tmp_path)
    finally:
        os.close(fd)


def test_fsync_dir_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open directory"):
        fsync_dir(tmp_path / "absent")
    fsync_dir(tmp_path)  # an existing one is fine


def test_unlink_all_ignores_missing_files(tmp_path: Path) -> None:
    present = tmp_path / "a"
    present.write_bytes(b"")
    durable.unlink_all([tmp_path / "missing", present])
    assert not present.exists()
