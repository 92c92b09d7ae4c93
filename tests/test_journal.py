"""The checksummed journal: round trip, group commit, torn tails, corruption, rotation."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from filelock import Timeout

from queuectl.errors import JournalCorrupt, StorageError
from queuectl.storage.journal import Journal, encode_record, scan, segment_numbers


def make_journal(root: Path, segment_bytes: int | None = None) -> Journal:
    directory = root / "journal"
    directory.mkdir(parents=True, exist_ok=True)
    (root / "locks").mkdir(exist_ok=True)
    if segment_bytes is None:
        return Journal(directory, root / "locks" / "journal.lock")
    return Journal(directory, root / "locks" / "journal.lock", segment_bytes=segment_bytes)


def rec(n: int, **more: Any) -> dict[str, Any]:
    return {"event": "enqueued", "n": n, "job": {"id": f"job-{n}", "command": "echo é"}, **more}


def datas(directory: Path) -> list[dict[str, Any]]:
    return [r.data for r in scan(directory).records]


def segments(directory: Path) -> list[Path]:
    return [directory / f"{n:08d}.log" for n in segment_numbers(directory)]


# ------------------------------------------------------------------ basics


def test_empty_journal_scans_clean(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    result = scan(journal.directory)
    assert result.records == []
    assert result.torn_tail is None


def test_append_and_scan_round_trip(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    journal.append([rec(1)])
    journal.append([rec(2), rec(3, note="line\nbreak \u2603")])
    journal.append([])
    result = scan(journal.directory)
    assert [r.data for r in result.records] == [rec(1), rec(2), rec(3, note="line\nbreak \u2603")]
    assert result.torn_tail is None
    path = journal.directory / "00000001.log"
    assert [r.segment for r in result.records] == [path] * 3
    raw = path.read_bytes()
    # offsets point at the start of each line
    lines = raw.splitlines(keepends=True)
    assert [r.offset for r in result.records] == [0, len(lines[0]), len(lines[0]) + len(lines[1])]
    assert lines[0] == encode_record(rec(1))
    assert raw.count(b"\n") == 3
    assert os.stat(path).st_mode & 0o777 == 0o600
    journal.close()


def test_encode_record_format() -> None:
    line = encode_record({"a": 1, "b": "x y"})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line[8:9] == b" "
    int(line[:8], 16)
    assert line[9:-1] == b'{"a":1,"b":"x y"}'


def test_group_commit_from_many_threads(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    threads_count, per_thread = 16, 40
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                journal.append([rec(t * 1000 + i, thread=t)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    result = scan(journal.directory)
    assert result.torn_tail is None
    counts = Counter(r.data["n"] for r in result.records)
    expected = {t * 1000 + i for t in range(threads_count) for i in range(per_thread)}
    assert set(counts) == expected
    assert all(c == 1 for c in counts.values())
    # each thread's own records stay in its order
    for t in range(threads_count):
        mine = [r.data["n"] for r in result.records if r.data["thread"] == t]
        assert mine == sorted(mine)


def test_multi_record_append_is_contiguous(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    barrier = threading.Barrier(4)

    def writer(t: int) -> None:
        barrier.wait()
        for i in range(20):
            journal.append([rec(i, thread=t, part=p) for p in range(3)])

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    records = datas(journal.directory)
    assert len(records) == 4 * 20 * 3
    for start in range(0, len(records), 3):
        group = records[start : start + 3]
        assert [g["part"] for g in group] == [0, 1, 2]
        assert len({(g["thread"], g["n"]) for g in group}) == 1


# ------------------------------------------------------------------ torn tails


def build_lines(tmp_path: Path, count: int) -> tuple[bytes, int]:
    """A journal of ``count`` records; returns its bytes and the offset of the last line."""
    journal = make_journal(tmp_path / "source")
    journal.append([rec(n) for n in range(count)])
    journal.close()
    raw = (journal.directory / "00000001.log").read_bytes()
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    return raw, last


def test_torn_tail_at_every_byte_offset_is_reported_and_repaired(tmp_path: Path) -> None:
    raw, last = build_lines(tmp_path, 4)
    assert last > 0
    expected_before = [rec(n) for n in range(3)]
    for cut in range(last + 1, len(raw)):
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        journal = make_journal(root)
        segment = journal.directory / "00000001.log"
        segment.write_bytes(raw[:cut])

        result = scan(journal.directory)
        assert [r.data for r in result.records] == expected_before, cut
        assert result.torn_tail == (segment, last), cut

        journal.append([rec(99)])
        journal.close()
        repaired = scan(journal.directory)
        assert repaired.torn_tail is None, cut
        assert [r.data for r in repaired.records] == [*expected_before, rec(99)], cut
        assert segment.read_bytes() == raw[:last] + encode_record(rec(99)), cut


def test_cut_exactly_at_a_record_boundary_is_not_torn(tmp_path: Path) -> None:
    raw, last = build_lines(tmp_path, 4)
    journal = make_journal(tmp_path)
    (journal.directory / "00000001.log").write_bytes(raw[:last])
    result = scan(journal.directory)
    assert result.torn_tail is None
    assert [r.data for r in result.records] == [rec(n) for n in range(3)]


def test_torn_only_record_is_cut_to_empty(tmp_path: Path) -> None:
    raw, last = build_lines(tmp_path, 1)
    assert last == 0
    for cut in range(1, len(raw)):
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        journal = make_journal(root)
        segment = journal.directory / "00000001.log"
        segment.write_bytes(raw[:cut])
        result = scan(journal.directory)
        assert result.records == [] and result.torn_tail == (segment, 0), cut
        journal.append([rec(5)])
        journal.close()
        assert segment.read_bytes() == encode_record(rec(5)), cut


def test_open_journal_repairs_a_tail_torn_by_another_writer(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    journal.append([rec(1)])
    segment = journal.directory / "00000001.log"
    with open(segment, "ab") as handle:  # a writer that died mid-append
        handle.write(encode_record(rec(2))[:17])
    journal.append([rec(3)])
    assert datas(journal.directory) == [rec(1), rec(3)]
    assert scan(journal.directory).torn_tail is None


def test_damaged_last_line_with_newline_is_repaired_by_append(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    journal.append([rec(1), rec(2)])
    segment = journal.directory / "00000001.log"
    raw = bytearray(segment.read_bytes())
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    raw[last + 20] ^= 0x01  # damage inside the last record; its newline survives
    segment.write_bytes(bytes(raw))
    before = scan(journal.directory)
    assert before.torn_tail == (segment, last)  # scan calls it a harmless torn tail
    journal.append([rec(3)])
    after = scan(journal.directory)  # raises JournalCorrupt today
    assert [r.data for r in after.records] == [rec(1), rec(3)]


# ------------------------------------------------------------------ corruption


def test_flipped_byte_in_an_earlier_record_is_corruption(tmp_path: Path) -> None:
    raw, _ = build_lines(tmp_path, 4)
    lines = raw.splitlines(keepends=True)
    start = len(lines[0])
    second = lines[1]
    for index in range(len(second)):
        root = tmp_path / f"flip{index}"
        root.mkdir()
        journal = make_journal(root)
        segment = journal.directory / "00000001.log"
        damaged = bytearray(raw)
        damaged[start + index] ^= 0x01
        segment.write_bytes(bytes(damaged))
        with pytest.raises(JournalCorrupt) as info:
            scan(journal.directory)
        message = str(info.value)
        assert str(segment) in message, index
        assert f"at byte {start}" in message, index
        assert info.value.path == segment and info.value.offset == start, index


def test_corruption_in_an_older_segment_names_that_segment(tmp_path: Path) -> None:
    journal = make_journal(tmp_path, segment_bytes=1)
    for n in range(3):
        journal.append([rec(n)])
    first, second, third = segments(journal.directory)
    raw = bytearray(second.read_bytes())
    raw[15] ^= 0x20
    second.write_bytes(bytes(raw))
    with pytest.raises(JournalCorrupt, match=rf"{second}.* at byte 0"):
        scan(journal.directory)
    assert first != third


def test_garbage_line_between_records_is_corruption(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    segment = journal.directory / "00000001.log"
    good = encode_record(rec(1))
    segment.write_bytes(good + b"not a record\n" + encode_record(rec(2)))
    with pytest.raises(JournalCorrupt, match=f"at byte {len(good)}"):
        scan(journal.directory)


# ------------------------------------------------------------------ rotation


def test_rotation_creates_segments_read_in_order(tmp_path: Path) -> None:
    journal = make_journal(tmp_path, segment_bytes=300)
    for n in range(40):
        journal.append([rec(n)])
    journal.close()
    paths = segments(journal.directory)
    assert len(paths) > 3
    assert paths[0].name == "00000001.log"
    assert [p.name for p in paths] == [f"{n:08d}.log" for n in range(1, len(paths) + 1)]
    result = scan(journal.directory)
    assert result.torn_tail is None
    assert [r.data["n"] for r in result.records] == list(range(40))
    # a segment is only left once it reached the limit
    for path in paths[:-1]:
        assert path.stat().st_size >= 300
    assert {r.segment for r in result.records} == set(paths)


def test_segments_order_numerically_not_by_name_length(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "00000010.log").write_bytes(encode_record(rec(10)))
    (directory / "00000009.log").write_bytes(encode_record(rec(9)))
    (directory / "notes.txt").write_bytes(b"ignored\n")
    (directory / "x.log").write_bytes(b"ignored\n")
    assert [r.data["n"] for r in scan(directory).records] == [9, 10]


def test_new_journal_object_continues_in_the_newest_segment(tmp_path: Path) -> None:
    journal = make_journal(tmp_path, segment_bytes=200)
    for n in range(10):
        journal.append([rec(n)])
    journal.close()
    count = len(segments(journal.directory))
    later = make_journal(tmp_path, segment_bytes=10**9)
    later.append([rec(100)])
    later.close()
    assert len(segments(journal.directory)) == count
    assert datas(journal.directory)[-1] == rec(100)
    assert [d["n"] for d in datas(journal.directory)] == [*range(10), 100]


# ------------------------------------------------------------------ several writers


@pytest.mark.parametrize("segment_bytes", [1 << 30, 400])
def test_two_journal_objects_interleave_without_damage(tmp_path: Path, segment_bytes: int) -> None:
    first = make_journal(tmp_path, segment_bytes=segment_bytes)
    second = make_journal(tmp_path, segment_bytes=segment_bytes)
    barrier = threading.Barrier(4)

    def writer(journal: Journal, name: str) -> None:
        barrier.wait()
        for i in range(60):
            journal.append([rec(i, writer=name)])

    threads = [
        threading.Thread(target=writer, args=(j, f"{tag}{k}"))
        for tag, j in (("a", first), ("b", second))
        for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.close()
    second.close()
    result = scan(tmp_path / "journal")
    assert result.torn_tail is None
    seen = Counter((r.data["writer"], r.data["n"]) for r in result.records)
    assert len(seen) == 4 * 60
    assert set(seen.values()) == {1}
    for name in ("a0", "a1", "b0", "b1"):
        mine = [r.data["n"] for r in result.records if r.data["writer"] == name]
        assert mine == list(range(60))
    if segment_bytes == 400:
        assert len(segments(tmp_path / "journal")) > 2


_CHILD = """
import sys
from pathlib import Path
from queuectl.storage.journal import Journal
root = Path(sys.argv[1])
journal = Journal(root / "journal", root / "locks" / "journal.lock", segment_bytes=2000)
for i in range(150):
    journal.append([{"writer": sys.argv[2], "n": i}])
"""


def test_two_processes_append_to_one_journal(tmp_path: Path) -> None:
    make_journal(tmp_path)
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), name]) for name in ("p", "q")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    result = scan(tmp_path / "journal")
    assert result.torn_tail is None
    for name in ("p", "q"):
        assert [r.data["n"] for r in result.records if r.data["writer"] == name] == list(range(150))
    assert len(result.records) == 300


# ------------------------------------------------------------------ write failures


def _fail_writes_into(
    directory: Path, monkeypatch: pytest.MonkeyPatch, partial: int = 0
) -> list[int]:
    """Make os.write into files of ``directory`` write ``partial`` bytes, then fail ENOSPC."""
    real_write = os.write
    hits: list[int] = []

    def fake_write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(directory)):
            hits.append(fd)
            if partial and len(hits) == 1:
                return real_write(fd, bytes(data[:partial]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)
    return hits


@pytest.mark.parametrize("partial", [0, 5, 60])
def test_failed_append_leaves_the_segment_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: int
) -> None:
    journal = make_journal(tmp_path)
    journal.append([rec(1)])
    segment = journal.directory / "00000001.log"
    before = segment.read_bytes()
    with monkeypatch.context() as patch:
        hits = _fail_writes_into(journal.directory, patch, partial=partial)
        with pytest.raises(StorageError, match="cannot append to the journal"):
            journal.append([rec(2), rec(3)])
        assert hits
    assert segment.read_bytes() == before
    journal.append([rec(4)])
    result = scan(journal.directory)
    assert result.torn_tail is None
    assert [r.data for r in result.records] == [rec(1), rec(4)]


def test_failed_append_error_reaches_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = make_journal(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="fsync"):
        journal.append([rec(1)])


@pytest.mark.parametrize("partial", [0, 10])
def test_failed_append_right_after_rotation_leaves_no_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: int
) -> None:
    journal = make_journal(tmp_path, segment_bytes=100)
    journal.append([rec(1, pad="x" * 120)])  # segment 1 is now past the limit
    first = journal.directory / "00000001.log"
    before = first.read_bytes()
    with monkeypatch.context() as patch:
        _fail_writes_into(journal.directory, patch, partial=partial)
        with pytest.raises(StorageError):
            journal.append([rec(2)])
    assert first.read_bytes() == before
    result = scan(journal.directory)
    assert result.torn_tail is None
    for path in segments(journal.directory)[1:]:
        assert path.read_bytes() == b"", f"{path.name} holds {path.stat().st_size} bytes"


def test_appends_and_maintenance_exclude_each_other_through_one_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends take locks/journal.lock with flock on a kept descriptor, maintenance (fsck,
    compact) through filelock: the README promises they are the same lock."""
    journal = make_journal(tmp_path)
    maintenance = journal.exclusive()
    seen_during_append: list[bool] = []
    real_write = os.write

    def write_and_probe(fd: int, data: Any) -> int:
        try:
            maintenance.acquire(timeout=0)
        except Timeout:
            seen_during_append.append(True)
        else:
            maintenance.release()
            seen_during_append.append(False)  # maintenance got in: not excluded
        return real_write(fd, data)

    monkeypatch.setattr("queuectl.storage.journal.os.write", write_and_probe)
    journal.append([rec(1)])
    monkeypatch.undo()
    assert seen_during_append and all(seen_during_append)  # the segment and its index

    with maintenance:  # and the other way round: a held filelock keeps appends out
        blocked = threading.Event()
        done = threading.Event()

        def append() -> None:
            blocked.set()
            journal.append([rec(2)])
            done.set()

        writer = threading.Thread(target=append)
        writer.start()
        blocked.wait()
        assert not done.wait(0.3)  # a bounded look: the append must still be waiting
        assert datas(journal.directory) == [rec(1)]
    writer.join(timeout=30)
    assert done.is_set()
    assert datas(journal.directory) == [rec(1), rec(2)]
