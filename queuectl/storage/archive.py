"""Backup archives: one ``.tar.gz`` per backup, written and read under strict rules.

Writing (``ArchiveWriter``): a plain ustar stream (``tar tzf`` lists it), members added
from bytes or from the first bytes of an open file, into ``.<name>.<random>.tmp`` beside
the target; ``commit`` fsyncs it and renames it over the target, so an error or a crash
never leaves a half-written archive under the name the user gave (an older archive of
that name stays whole until the new one is).

Reading (``TarReader``): an archive is untrusted input, so it is parsed here, not by
``tarfile``, which keeps every member in memory, reads a pax header of any size into
memory, and will happily describe links and devices. This reader takes the gzip stream in
order, one 512-byte header at a time, and accepts only what ``ArchiveWriter`` writes:
ustar headers with a correct checksum, pax ``x`` headers of at most 64 KiB (for long
names), and regular files. Anything else (a link, a device, a FIFO, a folder, a GNU or
sparse extension, a bad checksum, data after the end, a truncated or corrupt gzip stream,
a gzip CRC that does not match) ends the read with ``BadArchive`` (exit 2).

Restoring (``Staging``): accepted members are written into ``<home>/.restore.<random>/``,
inside the target home, so nothing is ever written anywhere else; only when everything was
checked does ``install`` move the staged tree into place. ``discard`` removes the staging
folder after a failure.

Installing is all or nothing across a crash. The commit point is one rename: the synced
staging folder becomes ``.restore.<random>.commit/`` (holding ``.names``, the entries it
brings). Before it, the home is untouched (a plain ``.restore.<random>/`` left by a crash is
garbage: ``recover`` removes it). After it, the install is rolled forward by whoever gets
there first: the restore itself, or ``recover``, which ``Home.ensure`` calls when it sees a
``.commit`` folder, so no command ever works on a half-installed home. Rolling forward is
idempotent: every home entry that is not a lock folder, not a restore's own and not already
installed from the commit folder goes aside into ``.restore.<random>.old/``, then each entry
still in the commit folder is moved in, then both folders are removed. All of it runs under
a flock of the home folder itself (``restore_lock``: no lock file to create in a home that a
refused restore must leave as it was), so one process at a time restores or recovers it.
"""

from __future__ import annotations

import gzip
import io
import os
import secrets
import shutil
import stat
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from queuectl.errors import BadArchive, StorageError
from queuectl.storage.durable import FILE_MODE, fsync_dir, fsync_fd, syncfs_path

__all__ = [
    "MAX_MEMBER_BYTES",
    "STAGING_PREFIX",
    "ArchiveWriter",
    "Member",
    "Staging",
    "TarReader",
    "pending_install",
    "recover",
    "remove_empty_tree",
    "restore_lock",
]

MAX_MEMBER_BYTES: Final = 1 << 30
"""No member of a backup may be larger than 1 GiB uncompressed (a journal segment is at most
64 MiB, a log stream 10 MiB)."""

MAX_PAX_BYTES: Final = 64 << 10
MAX_NAME_CHARS: Final = 1024
MAX_TRAILER_BYTES: Final = 1 << 20
"""Zero padding accepted after the end-of-archive blocks (tar pads to 10 KiB records)."""

STAGING_PREFIX: Final = ".restore."
COMMITTED: Final = ".commit"
ASIDE: Final = ".old"
NAMES: Final = ".names"
KEEP: Final = ("locks",)
"""Kept when a home's contents are replaced: lock files are never deleted (filelock #27)."""
BLOCK: Final = 512
RECORD: Final = 20 * BLOCK
_CHUNK: Final = 1 << 20

_TYPE_NAMES: Final = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device file",
    b"4": "a block device file",
    b"5": "a folder",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"g": "a global pax header",
    b"L": "a GNU long name",
    b"K": "a GNU long link name",
    b"S": "a sparse file",
    b"V": "a volume label",
    b"M": "a multi-volume part",
}


# ---------------------------------------------------------------------- writing


class ArchiveWriter:
    """A ``.tar.gz`` being written to ``target`` (through a tmp file beside it): ustar
    headers, a pax ``x`` header before a member whose name does not fit in one (``tarfile``
    is not used: its header building costs more than everything else per small member)."""

    def __init__(self, target: Path, level: int = 1) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        self.members = 0
        self.bytes = 0
        self._written = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.tmp, flags, FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot create {self.tmp}: {exc.strerror}") from None
        self._raw = os.fdopen(fd, "wb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=level)

    def add_bytes(self, name: str, data: bytes, mtime: float) -> None:
        self._emit(_header(name, len(data), mtime) + data + _padding(len(data)))
        self.members += 1
        self.bytes += len(data)

    def add_file(
        self, name: str, fd: int, size: int, mtime: float, pad: bool = False, suffix: bytes = b""
    ) -> None:
        """The first ``size`` bytes of an open file, then ``suffix``. ``pad``: a file that
        shrank meanwhile is padded with zero bytes instead of failing the backup (logs)."""
        total = size + len(suffix)
        self._emit(_header(name, total, mtime))
        source = _Prefix(fd, size, pad, suffix)
        while chunk := source.read(_CHUNK):
            self._emit(chunk)
        self._emit(_padding(total))
        self.members += 1
        self.bytes += total

    def _emit(self, data: bytes) -> None:
        try:
            self._gzip.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write {self.target}: {exc.strerror or exc}") from None
        self._written += len(data)

    def commit(self) -> int:
        """Finish the archive durably and give it its name; returns its size in bytes."""
        end = 2 * BLOCK
        end += -(self._written + end) % RECORD
        try:
            self._emit(b"\0" * end)
            self._gzip.close()
            self._raw.flush()
            fsync_fd(self._raw.fileno(), self.tmp)
            size = os.fstat(self._raw.fileno()).st_size
            self._raw.close()
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write {self.target}: {exc.strerror or exc}") from None
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.target.parent)
        return size

    def abort(self) -> None:
        for closing in (self._gzip.close, self._raw.close):
            try:
                closing()
            except (OSError, ValueError):
                pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _header(name: str, size: int, mtime: float, kind: bytes = b"0") -> bytes:
    """One ustar header block (preceded by a pax header when the name needs one)."""
    raw = name.encode("utf-8")
    if len(raw) <= 100 and name.isascii():
        return _ustar(raw, size, int(mtime), kind)
    record = _pax_record("path", name)
    placeholder = raw[:90].decode("utf-8", "ignore").encode("ascii", "replace")
    pax = _ustar(b"PaxHeader/" + placeholder[:90], len(record), int(mtime), b"x")
    return pax + record + _padding(len(record)) + _ustar(placeholder, size, int(mtime), kind)


def _ustar(raw: bytes, size: int, mtime: int, kind: bytes) -> bytes:
    block = bytearray(BLOCK)
    block[0 : len(raw)] = raw
    block[100:108] = b"0000600\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % max(0, mtime)
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


class _Prefix(io.RawIOBase):
    """Reads the first ``size`` bytes of a descriptor (pread: no shared offset), then
    ``suffix``."""

    def __init__(self, fd: int, size: int, pad: bool, suffix: bytes) -> None:
        self._fd = fd
        self._left = size
        self._offset = 0
        self._pad = pad
        self._suffix = suffix

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if want <= 0:
            tail, self._suffix = self._suffix, b""
            return tail
        data = os.pread(self._fd, want, self._offset)
        if not data:
            if not self._pad:
                raise OSError(f"file shrank while being archived ({self._left} bytes short)")
            data = b"\0" * want
        self._offset += len(data)
        self._left -= len(data)
        return data


# ---------------------------------------------------------------------- reading


@dataclass
class Member:
    """A regular file of the archive; its data is read with ``read`` before the next
    member is asked for."""

    name: str
    size: int
    mtime: int
    _reader: TarReader

    def read(self, n: int = _CHUNK) -> bytes:
        return self._reader._member_data(n)


class TarReader:
    """The members of a ``.tar.gz``, in order, checked as untrusted input (module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise BadArchive(f"cannot open {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BadArchive(f"{path} is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        self.size = st.st_size
        self._raw = os.fdopen(fd, "rb")
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._left = 0
        self._padding = 0

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()

    def __enter__(self) -> TarReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def compressed_offset(self) -> int:
        """How far into the archive file the reader is (for a progress bar)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def members(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        while True:
            self._skip_rest()
            block = self._read_exact(BLOCK, "a member header")
            if block == b"\0" * BLOCK:
                self._finish()
                return
            kind, name, size, mtime = _parse_header(block, self.path)
            if kind == b"x":
                if pax:
                    raise self._bad("has two pax headers in a row")
                if size > MAX_PAX_BYTES:
                    raise self._bad(f"has a pax header of {size} bytes (at most {MAX_PAX_BYTES})")
                pax = _parse_pax(self._read_exact(_padded(size), "a pax header")[:size], self)
                continue
            if "path" in pax:
                name = pax["path"]
            if "size" in pax:
                size = _decimal(pax["size"], self)
            pax = {}
            if kind not in (b"0", b"\0"):
                what = _TYPE_NAMES.get(kind, f"of type {kind!r}")
                raise self._bad(
                    f"member {_show(name)} is {what}; a queuectl backup holds only regular files"
                )
            problem = _name_problem(name)
            if problem is not None:
                raise self._bad(f"member {_show(name)} {problem}")
            if size > MAX_MEMBER_BYTES:
                raise self._bad(
                    f"member {_show(name)} is {size} bytes uncompressed, more than the 1 GiB "
                    "a backup member may have"
                )
            self._left = size
            self._padding = _padded(size) - size
            yield Member(name, size, mtime, self)

    def _member_data(self, n: int) -> bytes:
        want = min(n, self._left)
        if want <= 0:
            return b""
        data = self._read_exact(want, "a member's data")
        self._left -= len(data)
        return data

    def _skip_rest(self) -> None:
        while self._left:
            self._member_data(_CHUNK)
        if self._padding:
            self._read_exact(self._padding, "a member's padding")
            self._padding = 0

    def _finish(self) -> None:
        """After the first zero block: the second one, zero padding, and the gzip end (whose
        CRC is checked only when the stream is read to its end)."""
        self._read_exact(BLOCK, "the end of the archive")
        seen = 0
        while True:
            data = self._read(65536)
            if not data:
                return
            seen += len(data)
            if data.count(0) != len(data):
                raise self._bad("has data after its end")
            if seen > MAX_TRAILER_BYTES:
                raise self._bad("has more than 1 MiB of padding after its end")

    def _read_exact(self, n: int, what: str) -> bytes:
        parts = []
        left = n
        while left:
            data = self._read(min(left, _CHUNK))
            if not data:
                raise self._bad(f"is truncated (it ends inside {what})")
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def _read(self, n: int) -> bytes:
        try:
            return self._gzip.read(n)
        except EOFError:
            raise self._bad("is truncated (the compressed stream ends early)") from None
        except gzip.BadGzipFile as exc:
            text = str(exc)
            if text.startswith("Not a gzipped file"):
                raise self._bad("is not a gzip file (a backup is a .tar.gz)") from None
            raise self._bad(f"is damaged ({text})") from None
        except zlib.error as exc:
            raise self._bad(f"is damaged ({exc})") from None
        except OSError as exc:
            raise BadArchive(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def _bad(self, problem: str) -> BadArchive:
        return BadArchive(f"{self.path} {problem}")


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _show(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:79] + "…")


def _octal(field: bytes, what: str, path: Path) -> int:
    if field[:1] and field[0] & 0x80:
        raise BadArchive(f"{path} has a binary {what} field (not written by queuectl)")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BadArchive(f"{path} has a damaged member header ({what})") from None


def _parse_header(block: bytes, path: Path) -> tuple[bytes, str, int, int]:
    """(type, name, size, mtime) of a ustar header, after its checksum is verified."""
    expected = _octal(block[148:156], "checksum", path)
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if expected != actual:
        raise BadArchive(f"{path} has a damaged member header (bad checksum): not a tar archive?")
    if block[257:263] not in (b"ustar\x00", b"ustar "):
        raise BadArchive(f"{path} has a member header that is not ustar (not written by queuectl)")
    kind = block[156:157]
    size = _octal(block[124:136], "size", path)
    mtime = _octal(block[136:148], "mtime", path)
    try:
        name = block[:100].split(b"\0", 1)[0].decode("utf-8")
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadArchive(f"{path} has a member whose name is not UTF-8") from None
    if prefix and block[257:263] == b"ustar\x00":
        name = f"{prefix}/{name}"
    return kind, name, size, mtime


def _parse_pax(data: bytes, reader: TarReader) -> dict[str, str]:
    """Records ``<length> <key>=<value>\\n``; only ``path`` and ``size`` are used, and any
    sparse-file key is refused."""
    found: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        try:
            length = int(data[position:space]) if space > position else 0
        except ValueError:
            length = 0
        record = data[position : position + length]
        if length <= space - position or len(record) != length or not record.endswith(b"\n"):
            raise reader._bad("has a damaged pax header")
        key, equals, value = record[space - position + 1 : -1].partition(b"=")
        if not equals:
            raise reader._bad("has a damaged pax header")
        try:
            found[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise reader._bad("has a pax header that is not UTF-8") from None
        position += length
    if any(key.startswith("GNU.sparse") for key in found):
        raise reader._bad("has a sparse file (not written by queuectl)")
    return found


def _decimal(text: str, reader: TarReader) -> int:
    if not text.isdigit() or len(text) > 20:
        raise reader._bad("has a damaged pax header (size)")
    return int(text)


def _name_problem(name: str) -> str | None:
    """Why a member name is not a plain relative path inside the archive."""
    if not name:
        return "has an empty name"
    if len(name) > MAX_NAME_CHARS:
        return "has a name that is too long"
    if name.startswith("/"):
        return "has an absolute path"
    if "\\" in name or "\0" in name or not name.isprintable():
        return "has a backslash or a control character in its name"
    parts = name.split("/")
    if ".." in parts:
        return "has '..' in its path (it would leave the home)"
    if any(part in ("", ".") for part in parts):
        return "is not a plain relative path"
    return None


# ---------------------------------------------------------------------- staging


class Staging:
    """``<home>/.restore.<random>/``: where a restore writes, inside the target home."""

    def __init__(self, home_root: Path) -> None:
        self.home_root = home_root
        self.root = home_root / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        try:
            os.mkdir(self.root, 0o700)
        except OSError as exc:
            raise StorageError(f"cannot create {self.root}: {exc.strerror}") from None
        self._folders: set[Path] = {self.root}

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def free_inodes(self) -> int | None:
        """Files that can still be created (None: the filesystem does not say, e.g. btrfs)."""
        st = os.statvfs(self.root)
        return st.f_favail if st.f_files else None

    def write(self, relative: str, member: Member, mtime: float | None = None) -> Path:
        """Copy a member's data to ``relative`` (a name the caller checked) in the staging
        folder, refusing one that does not fit in the free space."""
        free = self.free_bytes()
        if member.size > free:
            raise BadArchive(
                f"member {_show(member.name)} needs {member.size} bytes but only {free} "
                f"are free in {self.home_root}"
            )
        path, fd = self._create(relative)
        try:
            while chunk := member.read(_CHUNK):
                _write_all(fd, chunk, path)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return path

    def write_bytes(self, relative: str, data: bytes, mtime: float | None = None) -> Path:
        path, fd = self._create(relative)
        try:
            _write_all(fd, data, path)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
        return path

    def folder(self, relative: str) -> Path:
        """An (empty) folder of the staged tree."""
        path = self.root / relative
        self._mkdirs(path)
        return path

    def _create(self, relative: str) -> tuple[Path, int]:
        path = self.root / relative
        self._mkdirs(path.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return path, os.open(path, flags, FILE_MODE)
        except FileExistsError:
            raise BadArchive(f"the archive holds {relative!r} twice") from None
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror}") from None

    def _mkdirs(self, folder: Path) -> None:
        if folder in self._folders:
            return
        self._mkdirs(folder.parent)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise BadArchive(
                    f"the archive uses {folder.name!r} as a file and a folder"
                ) from None
        self._folders.add(folder)

    def sync(self) -> None:
        """Make every staged file durable at once (one syncfs, not one fsync per file)."""
        syncfs_path(self.root)

    def install(self) -> None:
        """Replace the home's contents by the staged tree (module docstring: the commit
        rename, then the roll-forward). Call under ``restore_lock``."""
        names = sorted(n for n in os.listdir(self.root) if not n.startswith("."))
        _write_all_file(self.root / NAMES, ("\n".join(names) + "\n").encode())
        fsync_dir(self.root)
        committed = self.root.with_name(self.root.name + COMMITTED)
        os.rename(self.root, committed)
        fsync_dir(self.home_root)
        self.root = committed
        _roll_forward(self.home_root, committed)

    def discard(self) -> None:
        """Remove the staged tree, unless it was committed: from then on the install is
        only ever rolled forward (``recover``), never undone."""
        if not self.root.name.endswith(COMMITTED):
            shutil.rmtree(self.root, ignore_errors=True)


def pending_install(names: Collection[str]) -> bool:
    """Whether a home's entries include an install that a crash interrupted."""
    return any(n.startswith(STAGING_PREFIX) and n.endswith(COMMITTED) for n in names)


def restore_lock(home_root: Path, wait: bool) -> int | None:
    """An open descriptor of the home folder, flock-ed (None: another process holds it and
    ``wait`` is false). Closing it releases the lock."""
    import fcntl

    fd = os.open(home_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def recover(home_root: Path, locked: bool = False, wait: bool = True) -> None:
    """Finish an install a crash interrupted and remove the staging folders of restores
    that died before their commit (module docstring). Takes ``restore_lock`` unless the
    caller holds it; without ``wait``, does nothing while a restore runs (its staging
    folder is no garbage)."""
    fd = None if locked else restore_lock(home_root, wait=wait)
    if fd is None and not locked:
        return
    try:
        entries = sorted(os.listdir(home_root))
        for name in entries:
            if name.startswith(STAGING_PREFIX) and name.endswith(COMMITTED):
                _roll_forward(home_root, home_root / name)
        for name in entries:
            path = home_root / name
            if name.startswith(STAGING_PREFIX) and not name.endswith(COMMITTED) and path.exists():
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if fd is not None:
            os.close(fd)


def _roll_forward(home_root: Path, committed: Path) -> None:
    base = committed.name[: -len(COMMITTED)]
    aside = home_root / (base + ASIDE)
    os.makedirs(aside, mode=0o700, exist_ok=True)
    try:
        bringing = set(_read_names(committed / NAMES))
    except FileNotFoundError:
        bringing = set()
    waiting = {n for n in os.listdir(committed) if not n.startswith(".")}
    installed = bringing - waiting
    for name in sorted(os.listdir(home_root)):
        if name in KEEP or name.startswith(STAGING_PREFIX) or name in installed:
            continue
        os.rename(home_root / name, aside / name)
    fsync_dir(aside)
    for name in sorted(waiting):
        os.rename(committed / name, home_root / name)
    fsync_dir(home_root)
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(committed, ignore_errors=True)
    fsync_dir(home_root)


def _read_names(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _write_all_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        _write_all(fd, data, path)
        fsync_fd(fd, path)
    finally:
        os.close(fd)


def remove_empty_tree(root: Path) -> None:
    """Remove folders a failed restore created (a new home, or the standard folders it
    added to an empty one): only while they are empty, so anything someone else put there
    meanwhile stays."""
    for folder, _dirs, _files in sorted(os.walk(root), key=lambda item: -len(item[0])):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _write_all(fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
