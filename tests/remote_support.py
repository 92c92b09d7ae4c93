"""Real Dask processes on loopback for the remote-executor tests, and commands that record
their own start and end.

A ``Cluster`` is one ``dask scheduler`` and N ``dask worker`` processes (each with its nanny),
each in its own working directory and environment (``HOME``, ``QUEUECTL_TEST_HOST``), standing
in for separate hosts; all preload ``queuectl.remote.preload`` as docs/remote.md recommends.
Everything started here is stopped by pid, group by group. Heads are real ``queuectl worker
start --executor dask`` processes, so a test can SIGKILL one.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import wait_until

VENV_BIN = Path(sys.executable).parent
LEASE = "5"
"""The shortest lease the CLI accepts: the fence waits below are ``lease + 1 s``."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dask_env(**more: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
    env["DASK_LOGGING__DISTRIBUTED"] = "warning"
    env.pop("QUEUECTL_HOME", None)
    env.update(more)
    return env


@dataclass
class Cluster:
    base: Path
    workers: int = 2
    nthreads: int = 5
    resources: str = "GPU=2"
    scheduler_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    scheduler: subprocess.Popen[bytes] | None = None
    nannies: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tls: Path | None = None
    """A folder made by ``make_certificates``: everything then talks ``tls://``."""

    @property
    def address(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://127.0.0.1:{self.port}"

    def _tls_args(self, role: str) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--tls-ca-file", str(self.tls / "ca.pem"), "--tls-cert", str(self.tls / f"{role}.pem"),
            "--tls-key", str(self.tls / f"{role}.key"),
        ]  # fmt: skip

    def head_tls_args(self) -> list[str]:
        """``worker start`` options for a head on this cluster."""
        if self.tls is None:
            return []
        return [
            "--tls-ca", str(self.tls / "ca.pem"), "--tls-cert", str(self.tls / "head.pem"),
            "--tls-key", str(self.tls / "head.key"),
        ]  # fmt: skip

    def _popen(
        self, args: list[str], cwd: Path, env: dict[str, str], log: str
    ) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        with open(self.base / log, "ab") as out:
            return subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self) -> Cluster:
        self.base.mkdir(parents=True, exist_ok=True)
        args = [
            str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--no-dashboard", "--preload", "queuectl.remote.preload",
            *(["--protocol", "tls", *self._tls_args("scheduler")] if self.tls else []),
        ]  # fmt: skip
        env = dask_env(**self.scheduler_env)
        self.scheduler = self._popen(args, self.base / "scheduler", env, "scheduler.log")
        wait_until(self._listening, timeout=60, message="the scheduler to listen")
        for i in range(self.workers):
            self.start_worker(f"w{i}")
        return self

    def kill_all(self) -> None:
        """SIGKILL the scheduler and every worker (nanny, worker, warden: each group)."""
        for proc in [*([self.scheduler] if self.scheduler else []), *self.nannies.values()]:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.nannies.clear()

    def _listening(self) -> bool:
        assert self.scheduler is not None
        if self.scheduler.poll() is not None:
            raise RuntimeError(f"the scheduler exited: {(self.base / 'scheduler.log').read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def start_worker(self, name: str) -> None:
        folder = self.base / name
        args = [
            str(VENV_BIN / "dask"), "worker", self.address, "--name", name,
            "--nthreads", str(self.nthreads), "--resources", self.resources,
            "--local-directory", str(folder / "local"), "--no-dashboard", "--host", "127.0.0.1",
            "--preload", "queuectl.remote.preload", *self._tls_args("worker"),
        ]  # fmt: skip
        env = dask_env(QUEUECTL_TEST_HOST=name, HOME=str(folder))
        self.nannies[name] = self._popen(args, folder, env, f"{name}.log")

    def client(self):  # type: ignore[no-untyped-def]
        from distributed import Client

        security = None
        if self.tls is not None:
            from distributed.security import Security

            security = Security(
                tls_ca_file=str(self.tls / "ca.pem"),
                tls_client_cert=str(self.tls / "head.pem"),
                tls_client_key=str(self.tls / "head.key"),
                require_encryption=True,
            )
        return Client(self.address, timeout=30, set_as_default=False, security=security)

    def wait_workers(self, n: int | None = None) -> None:
        n = self.workers if n is None else n
        with self.client() as client:
            client.wait_for_workers(n, timeout=90)

    def stop(self) -> None:
        procs = [*self.nannies.values(), *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def make_certificates(folder: Path) -> Path:
    """A CA and a certificate for each of scheduler, worker and head, made with ``openssl``
    exactly as docs/remote.md tells users to."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=queuectl-ca")  # fmt: skip
    ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    for role in ("scheduler", "worker", "head"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}.key", "-out",
                f"{role}.csr", "-subj", f"/CN={role}")  # fmt: skip
        (folder / f"{role}.ext").write_text(ext)
        openssl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{role}.pem", "-days", "2",
                "-extfile", f"{role}.ext")  # fmt: skip
    return folder


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass


def head(
    home: Path, cluster: Cluster, *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A ``worker start --executor dask`` process (its own session, so a test can kill it)."""
    argv = [sys.executable, "-m", "queuectl", "--home", str(home), "worker", "start"]
    argv += ["--executor", "dask", "--scheduler", cluster.address, "--lease", LEASE]
    argv += [*cluster.head_tls_args(), *args]
    with open(log, "ab") as err:
        return subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env or dask_env(),
            start_new_session=True,
        )


def recorded(record: Path, tag: str, body: str, *, trap: str = "record") -> str:
    """A command that appends ``start TAG PID TIME`` to ``record`` and ``end TAG PID TIME``
    when it ends; on SIGTERM it records ``end`` and exits (trap=record) or ignores the
    signal, its child too (trap=ignore). Times come from the command's own clock."""
    stamp = "$(date +%s.%N)"
    lines = [f'echo "start {tag} $$ {stamp} $QUEUECTL_TEST_HOST" >> {record}']
    if trap == "record":
        lines.append(f"trap 'echo \"end {tag} $$ {stamp}\" >> {record}; exit 143' TERM")
    else:
        lines.append("trap '' TERM")
    lines.append(f'{body} & echo "child {tag} $$ $! $PPID" >> {record}; wait')
    lines.append(f'echo "end {tag} $$ {stamp}" >> {record}')
    return "\n".join(lines)


def once_then(marker: Path, first: str, later: str) -> str:
    """Shell that runs ``first`` on the first run of a job and ``later`` on every other."""
    return f"if mkdir {marker} 2>/dev/null; then {first}; else {later}; fi"


@dataclass
class Run:
    tag: str
    pid: int
    start: float
    end: float | None = None
    child: int | None = None
    parent: int | None = None
    host: str = ""


def runs(record: Path) -> dict[str, list[Run]]:
    """tag -> its runs in start order (a run is a start line and the end line of that pid)."""
    out: dict[str, list[Run]] = {}
    by_pid: dict[int, Run] = {}
    if not record.exists():
        return out
    for line in record.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, tag, pid = parts[0], parts[1], int(parts[2])
        if kind == "start":
            run = Run(tag, pid, float(parts[3]), host=parts[4] if len(parts) > 4 else "")
            by_pid[pid] = run
            out.setdefault(tag, []).append(run)
        elif kind == "child" and pid in by_pid and len(parts) > 4:
            by_pid[pid].child, by_pid[pid].parent = int(parts[3]), int(parts[4])
        elif kind == "end" and pid in by_pid and len(parts) > 3:
            by_pid[pid].end = float(parts[3])
    for found in out.values():
        found.sort(key=lambda r: r.start)
    return out


def assert_never_overlapping(found: dict[str, list[Run]]) -> None:
    """Every run of a job ended (recorded its end) before the next run of it started."""
    for tag, its_runs in found.items():
        for earlier, later in itertools.pairwise(its_runs):
            assert earlier.end is not None, f"{tag}: run {earlier.pid} recorded no end"
            assert earlier.end <= later.start, f"{tag}: runs overlap: {its_runs}"


def stop_head(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def enqueue_all(home: Path, jobs: list[dict[str, object]]) -> list[str]:
    """``enqueue -`` with one JSON object per line: one process for the whole batch."""
    import json

    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), "enqueue", "-"],
        input="".join(json.dumps(job) + "\n" for job in jobs),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def wait_jobs(home: Path, ids: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``queuectl wait`` for the ids (an event the CLI awaits, not a sleep here)."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), "wait", *ids,
         "--timeout", str(timeout)],
        capture_output=True, text=True, timeout=timeout + 30,
    )  # fmt: skip
