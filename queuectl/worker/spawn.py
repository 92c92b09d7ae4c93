"""Start a command as ``/bin/sh -c`` in a new session, without stopping the other threads.

``os.posix_spawn`` holds the GIL for the whole call, and glibc's posix_spawn suspends the
calling thread (vfork semantics) until the child has exec'd the shell. So every spawn froze
every other worker thread, the committer and the dispatcher for the length of an exec
(measured: a spawn blocked on a file action left a spinning thread 0.4% of its normal rate).
Calling glibc's posix_spawn through ctypes releases the GIL for exactly that wait; the cheap
calls that build the file actions go through ``PyDLL`` and keep the GIL, so they cannot hand
it to another thread in the middle of a spawn.

The child gets an empty signal mask and default dispositions for the signals CPython ignores
(SIGPIPE, SIGXFSZ): a job's ``cmd | head`` must see SIGPIPE like it would in a terminal.
Where glibc's functions cannot be loaded, ``os.posix_spawn`` does the same job with the GIL.

A remote attempt (``queuectl.remote``) spawns the same way on a Dask worker, with two
differences: it has a working directory (``posix_spawn_file_actions_addchdir_np``, glibc >=
2.29), and no lock descriptor (there is no local lock on a remote host: the lease replaces it).
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any, Final

__all__ = ["DEFAULT_SIGNALS", "Environment", "spawn_shell"]

DEFAULT_SIGNALS: Final = (signal.SIGPIPE, signal.SIGXFSZ)
"""Signals CPython sets to SIG_IGN at start-up; a child would inherit that through exec."""

_SHELL: Final = b"/bin/sh"
_POSIX_SPAWN_SETSIGDEF: Final = 0x04
_POSIX_SPAWN_SETSIGMASK: Final = 0x08
_POSIX_SPAWN_SETSID: Final = 0x80

_OpaqueBuffer = ctypes.c_uint64 * 128
"""Room for glibc's posix_spawnattr_t (336 bytes) or file actions (80 bytes) on any ABI."""


class _Libc:
    """The few glibc entry points we need, bound once."""

    def __init__(self) -> None:
        free_gil = ctypes.CDLL("libc.so.6", use_errno=True)  # releases the GIL per call
        keep_gil = ctypes.PyDLL("libc.so.6", use_errno=True)
        self.spawn = free_gil.posix_spawn
        self.spawn.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.spawn.restype = ctypes.c_int
        self.actions_init = keep_gil.posix_spawn_file_actions_init
        self.actions_destroy = keep_gil.posix_spawn_file_actions_destroy
        self.add_open = keep_gil.posix_spawn_file_actions_addopen
        self.add_open.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint,
        ]
        self.add_dup2 = keep_gil.posix_spawn_file_actions_adddup2
        self.add_dup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.add_chdir: Any = getattr(keep_gil, "posix_spawn_file_actions_addchdir_np", None)
        if self.add_chdir is not None:
            self.add_chdir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.attr = _OpaqueBuffer()
        self._check(keep_gil.posix_spawnattr_init(self.attr), "posix_spawnattr_init")
        empty, defaults = _OpaqueBuffer(), _OpaqueBuffer()
        keep_gil.sigemptyset(empty)
        keep_gil.sigemptyset(defaults)
        for signum in DEFAULT_SIGNALS:
            keep_gil.sigaddset(defaults, int(signum))
        flags = _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGMASK | _POSIX_SPAWN_SETSIGDEF
        set_flags = keep_gil.posix_spawnattr_setflags
        set_flags.argtypes = [ctypes.c_void_p, ctypes.c_short]
        self._check(set_flags(self.attr, flags), "posix_spawnattr_setflags")
        self._check(keep_gil.posix_spawnattr_setsigmask(self.attr, empty), "setsigmask")
        self._check(keep_gil.posix_spawnattr_setsigdefault(self.attr, defaults), "setsigdefault")

    @staticmethod
    def _check(code: int, what: str) -> None:
        if code != 0:
            raise OSError(code, f"{what}: {os.strerror(code)}")


def _load() -> _Libc | None:
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None  # not glibc: os.posix_spawn below


_LIBC: Final = _load()


class Environment:
    """The worker's environment, encoded once; a job's own variables are encoded per job.

    Encoding some thirty inherited variables for every spawn was a visible share of the
    Python work between one command's exit and the next one's start."""

    def __init__(self, base: dict[str, str]) -> None:
        self._encoded = {key: _assignment(key, value) for key, value in base.items()}

    def block(self, own: dict[str, str]) -> list[bytes]:
        """``KEY=VALUE`` entries: the base, overridden and extended by ``own``."""
        encoded = self._encoded.copy()
        for key, value in own.items():
            encoded[key] = _assignment(key, value)
        return list(encoded.values())


def _assignment(key: str, value: str) -> bytes:
    try:
        return os.fsencode(key) + b"=" + os.fsencode(value)
    except UnicodeEncodeError as exc:
        raise OSError(0, f"cannot encode the environment variable {key}: {exc.reason}") from None


def spawn_shell(
    command: str,
    env: list[bytes],
    stdout: int,
    stderr: int,
    lock: int | None,
    cwd: str | None = None,
) -> int:
    """Start ``/bin/sh -c command`` with stdin from /dev/null, the two output descriptors
    and the job's lock as fd 3 (none when ``lock`` is None); ``env`` holds ``KEY=VALUE``
    entries; ``cwd``, if given, is entered before the exec. Returns the pid; raises OSError
    when the command cannot start."""
    try:
        argv_bytes = [_SHELL, b"-c", os.fsencode(command)]
        cwd_bytes = os.fsencode(cwd) if cwd else None
    except UnicodeEncodeError as exc:
        raise OSError(0, f"cannot encode the command: {exc.reason}") from None
    descriptors = [stdout, stderr] + ([lock] if lock is not None else [])
    if min(descriptors) < 3:
        raise OSError(0, "a descriptor for the command is numbered below 3")
    if _LIBC is None or (cwd_bytes and _LIBC.add_chdir is None):
        return _spawn_with_gil(argv_bytes, env, stdout, stderr, lock, cwd_bytes)
    add_chdir = _LIBC.add_chdir
    argv = (ctypes.c_char_p * 4)(*argv_bytes, None)
    envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
    actions = _OpaqueBuffer()
    libc = _LIBC
    libc.actions_init(actions)
    try:
        failed = (
            libc.add_open(actions, 0, b"/dev/null", os.O_RDONLY, 0)
            or libc.add_dup2(actions, stdout, 1)
            or libc.add_dup2(actions, stderr, 2)
            or (lock is not None and libc.add_dup2(actions, lock, 3))
            or (cwd_bytes is not None and add_chdir is not None and add_chdir(actions, cwd_bytes))
        )
        if failed:  # these return the error number itself
            raise OSError(failed, f"cannot prepare the child's descriptors: {os.strerror(failed)}")
        pid = ctypes.c_int(0)
        code = libc.spawn(ctypes.byref(pid), _SHELL, actions, libc.attr, argv, envp)
    finally:
        libc.actions_destroy(actions)
    if code != 0:
        raise OSError(code, os.strerror(code))
    return pid.value


def _spawn_with_gil(
    argv: list[bytes],
    env: list[bytes],
    stdout: int,
    stderr: int,
    lock: int | None,
    cwd: bytes | None = None,
) -> int:
    if cwd is not None:  # os.posix_spawn has no chdir action: only Popen can (rare path)
        import subprocess

        return subprocess.Popen(
            argv,
            executable=_SHELL,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=() if lock is None else (lock,),
            cwd=cwd,
            env=dict(entry.split(b"=", 1) for entry in env),
            start_new_session=True,
            restore_signals=True,
        ).pid
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    if lock is not None:
        actions.append((os.POSIX_SPAWN_DUP2, lock, 3))
    return os.posix_spawn(
        _SHELL,
        argv,
        dict(entry.split(b"=", 1) for entry in env),
        file_actions=actions,
        setsid=True,
        setsigmask=(),
        setsigdef=DEFAULT_SIGNALS,
    )
