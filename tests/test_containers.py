"""End to end in real containers: deploy/compose.yaml with two worker containers, a dashboard
and run-once CLI containers on one queue-home volume and one shared work volume.

Needs a Docker engine, a Compose implementation and the image built by ``deploy/build.sh``
(``.ci/docker.sh`` does all three); skips with the reason otherwise. Every run uses its own
Compose project (its own containers, network and volumes) and removes it with ``down -v``.

Jobs record what they did themselves, with ``date +%s.%N`` timestamps appended to a file on the
work volume, so "exactly once" and "never two runs at once" are checked from the commands'
point of view, not from queuectl's own records. Containers share the host's kernel clock, so
their timestamps and the test's ``time.time()`` are comparable.

Environment: QUEUECTL_TEST_IMAGE (default queuectl:local), QUEUECTL_COMPOSE ("docker compose"
or "docker-compose"; default: v2 if the plugin is there, else docker-compose),
QUEUECTL_CONTAINER_REPORT (a path: the measurements are also written there as JSON).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
COMPOSE_FILE: Final = ROOT / "deploy" / "compose.yaml"
IMAGE: Final = os.environ.get("QUEUECTL_TEST_IMAGE", "queuectl:local")
WORKERS: Final = 2
THREADS: Final = 2
STOP_GRACE: Final = 30.0  # the stack's stop_grace_period; a warm stop of an idle worker is ~1 s
T = TypeVar("T")


# ------------------------------------------------------------------ skipping without Docker


def _ok(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _compose_command() -> list[str] | None:
    chosen = os.environ.get("QUEUECTL_COMPOSE")
    candidates = [shlex.split(chosen)] if chosen else [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]) and _ok(*cmd, "version"):
            return cmd
    return None


def _why_no_compose() -> str | None:
    if not shutil.which("docker") and not shutil.which("docker-compose"):
        return "no docker client on PATH (.ci/docker.sh installs docker.io and docker-compose)"
    if _compose_command() is None:
        return "neither `docker compose` nor `docker-compose` works"
    return None


def _why_no_containers() -> str | None:
    if not shutil.which("docker"):
        return "no docker client on PATH (.ci/docker.sh installs docker.io)"
    if not _ok("docker", "info"):
        return "no Docker engine answers `docker info` (.ci/docker.sh starts dockerd)"
    if _compose_command() is None:
        return "neither `docker compose` nor `docker-compose` works"
    if not _ok("docker", "image", "inspect", IMAGE):
        return f"image {IMAGE} not found: build it with deploy/build-base.sh && deploy/build.sh"
    return None


_NO_COMPOSE = _why_no_compose()
_NO_CONTAINERS = _NO_COMPOSE or _why_no_containers()
needs_compose = pytest.mark.skipif(_NO_COMPOSE is not None, reason=_NO_COMPOSE or "")
needs_containers = pytest.mark.skipif(_NO_CONTAINERS is not None, reason=_NO_CONTAINERS or "")


# ------------------------------------------------------------------ helpers


def poll(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``probe`` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r.stdout


def docker_logs(container: str) -> str:
    """A container's output: queuectl logs to stderr, which `docker logs` passes on as such."""
    r = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    """One run of a job as its command recorded it: start, heartbeats, end (None if killed)."""

    job: str
    run: int
    host: str
    start: float
    beats: list[float] = field(default_factory=list)
    end: float | None = None

    @property
    def last_seen(self) -> float:
        return max([self.start, *self.beats, *([self.end] if self.end else [])])


def parse_runs(text: str) -> list[Run]:
    """Lines ``start ID RUN TS HOST``, ``beat ID RUN TS``, ``end ID RUN TS``."""
    runs: dict[tuple[str, int], Run] = {}
    for line in text.splitlines():
        kind, job, run, ts, *rest = line.split()
        key = (job, int(run))
        if kind == "start":
            assert key not in runs, f"run {key} started twice:\n{text}"
            runs[key] = Run(job, int(run), rest[0], float(ts))
        elif kind == "beat":
            runs[key].beats.append(float(ts))
        elif kind == "end":
            assert runs[key].end is None, f"run {key} ended twice:\n{text}"
            runs[key].end = float(ts)
    return sorted(runs.values(), key=lambda r: (r.job, r.run))


def recording_command(log: str, seconds: float, beat: float | None = None) -> str:
    """A job that appends its start, optional heartbeats and its end to ``/work/<log>``."""
    stamp = '"$QUEUECTL_JOB_ID" "$QUEUECTL_RUN" "$(date +%s.%N)"'
    out = f">> /work/{log}"
    start = f"printf 'start %s %s %s %s\\n' {stamp} \"$(cat /etc/hostname)\" {out}"
    end = f"printf 'end %s %s %s\\n' {stamp} {out}"
    if beat is None:
        return f"{start}; sleep {seconds}; {end}"
    count = round(seconds / beat)
    loop = (
        f"for i in $(seq {count}); do printf 'beat %s %s %s\\n' {stamp} {out}; sleep {beat}; done"
    )
    return f"{start}; {loop}; {end}"


def assert_never_concurrent(runs: list[Run]) -> None:
    by_job: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_job[r.job].append(r)
    for job, its in by_job.items():
        its.sort(key=lambda r: r.start)
        for a, b in itertools.pairwise(its):
            assert a.last_seen < b.start, (
                f"{job}: run {b.run} on {b.host} started at {b.start:.3f} while run {a.run} "
                f"on {a.host} was still alive at {a.last_seen:.3f}"
            )


# ------------------------------------------------------------------ the compose project


@dataclass
class Stack:
    """One Compose project of deploy/compose.yaml, named uniquely for this test run."""

    compose: list[str]
    project: str
    env: dict[str, str]
    token: str
    port: int
    report: dict[str, Any]
    env_file: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        # An empty --env-file: a developer's deploy/.env must not change the test's settings
        # (docker-compose 1.29 refuses /dev/null: "not a file").
        env_file = str(self.env_file)
        cmd = [*self.compose, "--env-file", env_file, "-p", self.project, "-f", str(COMPOSE_FILE)]
        r = subprocess.run(
            [*cmd, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
            )
        return r

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``compose run --rm -T queuectl ARGS``: the CLI in a new, one-off container."""
        return self.run("run", "--rm", "-T", "queuectl", *args, input=input, check=check)

    def up(self) -> float:
        start = time.monotonic()
        self.run("up", "-d")
        return time.monotonic() - start

    def containers(self, service: str) -> list[str]:
        """Ids of the service's containers, running or not (one-off CLI containers excluded)."""
        out = docker(
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        )
        return sorted(out.split())

    def state(self, container: str) -> dict[str, Any]:
        return json.loads(docker("inspect", "--format", "{{json .State}}", container))

    def hostname(self, container: str) -> str:
        return docker("inspect", "--format", "{{.Config.Hostname}}", container).strip()

    def read_work(self, name: str) -> str:
        """A file of the work volume, read through the running dashboard container."""
        dash = self.containers("dashboard")[0]
        r = subprocess.run(
            ["docker", "exec", dash, "cat", f"/work/{name}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return r.stdout if r.returncode == 0 else ""

    def api(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """GET the dashboard on the host's loopback with ``token`` (the stack's by default)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token != "":
            request.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def api_ready(self) -> dict[str, Any] | None:
        try:
            code, body = self.api("/api/status")
        except OSError:  # not listening yet, or the connection was reset while it starts
            return None
        return body if code == 200 else None

    def job(self, job_id: str) -> dict[str, Any] | None:
        try:
            code, body = self.api(f"/api/jobs/{job_id}")
        except OSError:
            return None
        return body if code == 200 else None

    def diagnostics(self) -> str:
        """Container states, the CLI's status and the workers' logs, for failure messages."""
        parts = []
        for c in self.containers("worker"):
            s = self.state(c)
            parts.append(f"worker {c[:12]}: {s['Status']} exit {s['ExitCode']}")
        parts.append(self.cli("status", "--json", check=False).stdout)
        parts.append(self.run("logs", "--no-color", "--tail", "30", "worker", check=False).stdout)
        return "\n".join(parts)


@pytest.fixture(scope="module")
def stack(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    compose = _compose_command()
    assert compose is not None
    user = docker("image", "inspect", "--format", "{{.Config.User}}", IMAGE).strip()
    uid, _, gid = user.partition(":")
    token = secrets.token_urlsafe(18)
    port = free_port()
    env = {
        **os.environ,
        "QUEUECTL_IMAGE": IMAGE,
        "QUEUECTL_UID": uid or "1000",
        "QUEUECTL_GID": gid or uid or "1000",
        "QUEUECTL_WORKERS": str(WORKERS),
        "QUEUECTL_THREADS": str(THREADS),
        "QUEUECTL_TOKEN": token,
        "QUEUECTL_DASHBOARD_ADDR": "127.0.0.1",
        "QUEUECTL_DASHBOARD_PORT": str(port),
        "QUEUECTL_STOP_GRACE": f"{STOP_GRACE:g}s",
        "QUEUECTL_RESTART": "on-failure",
        "QUEUECTL_WORKDIR": "/work",
    }
    project = f"qctest{os.getpid()}{secrets.token_hex(3)}"
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE))
    revision = docker(
        "image",
        "inspect",
        "--format",
        '{{index .Config.Labels "org.opencontainers.image.revision"}}',
        IMAGE,
    ).strip()
    version = subprocess.run([*compose, "version"], capture_output=True, text=True).stdout
    report: dict[str, Any] = {
        "image": IMAGE,
        "image_revision": revision,
        "image_size_mb": round(size / 1e6, 1),
        "compose": " ".join(compose),
        "compose_version": version.splitlines()[0] if version else "",
        "project": project,
    }
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    s = Stack(compose, project, env, token, port, report, env_file)
    started = time.monotonic()
    try:
        yield s
    finally:
        s.run("down", "-v", "--remove-orphans", "-t", "5", check=False)
        report["module_seconds"] = round(time.monotonic() - started, 1)
        _report(pytestconfig, report)


def _report(pytestconfig: pytest.Config, report: dict[str, Any]) -> None:
    """Print the measurements past pytest's output capture (they are the point of a run that
    passes), and write them to QUEUECTL_CONTAINER_REPORT as JSON if that is set."""
    text = "containers: " + ", ".join(f"{k}={v}" for k, v in report.items())
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{text}", flush=True)
    else:
        print(text)
    path = os.environ.get("QUEUECTL_CONTAINER_REPORT")
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n")


@dataclass
class Fifty:
    ids: list[str]
    runs: list[Run]
    workers: list[str]


@pytest.fixture(scope="module")
def fifty(stack: Stack) -> Fifty:
    """50 jobs enqueued from a CLI container before the workers exist, then `up`, then drained.

    Also measures the time from `compose up` to the first job done, by the job's own clock.
    """
    ids = [f"fifty-{n:02d}" for n in range(50)]
    command = recording_command("fifty.log", 0.2)
    lines = "".join(json.dumps({"id": i, "command": command}) + "\n" for i in ids)
    enqueued = stack.cli("enqueue", "-", input=lines).stdout.split()
    assert enqueued == ids
    up_at = time.time()
    stack.report["up_seconds"] = round(stack.up(), 2)

    def drained() -> bool:
        status = stack.api_ready()
        return bool(status) and status["jobs"]["completed"] == len(ids)

    poll(drained, 90, "50 jobs completed")
    runs = parse_runs(stack.read_work("fifty.log"))
    first_end = min(r.end for r in runs if r.end is not None)
    stack.report["up_to_first_job_done_s"] = round(first_end - up_at, 2)
    stack.report["fifty_jobs_drained_s"] = round(max(r.last_seen for r in runs) - up_at, 2)
    return Fifty(ids, runs, stack.containers("worker"))


# ------------------------------------------------------------------ the tests


@needs_compose
def test_compose_files_are_read_by_every_compose_implementation_here(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "QUEUECTL_TOKEN": "t",
        "QUEUECTL_HOST_HOME": str(tmp_path / "home"),
        "QUEUECTL_WORKDIR": str(tmp_path / "work"),
    }
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    host_file = COMPOSE_FILE.with_name("compose.host.yaml")
    tried = []
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not (shutil.which(cmd[0]) and _ok(*cmd, "version")):
            continue
        tried.append(" ".join(cmd))
        for files in ([COMPOSE_FILE], [COMPOSE_FILE, host_file]):
            args = [a for f in files for a in ("-f", str(f))]
            r = subprocess.run(
                [*cmd, "--env-file", str(env_file), *args, "config", "-q"],
                capture_output=True,
                text=True,
                env=env,
            )
            assert r.returncode == 0, f"{' '.join(cmd)} {' '.join(args)} config: {r.stderr}"
    assert tried


@needs_containers
def test_fifty_jobs_complete_exactly_once(stack: Stack, fifty: Fifty) -> None:
    assert sorted(r.job for r in fifty.runs) == fifty.ids, "each job started exactly once"
    for r in fifty.runs:
        assert r.run == 1 and r.end is not None and r.end > r.start, r
    assert_never_concurrent(fifty.runs)
    jobs = json.loads(stack.cli("list", "--json").stdout)
    assert sorted(j["id"] for j in jobs) == fifty.ids
    assert {(j["state"], j["attempts"]) for j in jobs} == {("completed", 1)}


@needs_containers
def test_jobs_ran_in_both_worker_containers(stack: Stack, fifty: Fifty) -> None:
    hosts = {stack.hostname(c) for c in fifty.workers}
    assert len(hosts) == WORKERS
    used = defaultdict(int)
    for r in fifty.runs:
        used[r.host] += 1
    assert set(used) == hosts, f"jobs per worker container: {dict(used)}; workers {hosts}"


@needs_containers
def test_status_lists_both_workers(stack: Stack, fifty: Fifty) -> None:
    hosts = {stack.hostname(c) for c in fifty.workers}

    def both_listed() -> bool:
        status = stack.api_ready()
        return bool(status) and len(status["workers"]) == WORKERS

    try:
        poll(both_listed, 10, f"{WORKERS} workers in /api/status")
    except AssertionError:
        pass  # the CLI's answer below is what the test asserts, with its output
    status = json.loads(stack.cli("status", "--json").stdout)
    listed = status["workers"]
    assert len(listed) == WORKERS, f"status --json workers: {listed}; containers: {hosts}"
    assert {w["host"] for w in listed} == hosts
    if all("id" in w for w in listed):
        assert len({w["id"] for w in listed}) == WORKERS


@needs_containers
def test_two_workers_with_the_same_pid_are_both_listed(stack: Stack, fifty: Fifty) -> None:
    """Without an init every worker is PID 1 of its container; with compose's `init: true` it
    is whatever pid tini's child gets (6, 7 or 8 here, so two containers often agree). Two
    PID-1 workers make that collision certain: both must still be listed."""
    user = f"{stack.env['QUEUECTL_UID']}:{stack.env['QUEUECTL_GID']}"
    names = [f"{stack.project}-pid1-{n}" for n in range(2)]
    try:
        for name in names:
            docker(
                "run", "-d", "--name", name, "--user", user,
                "-v", f"{stack.project}_home:/var/lib/queuectl",
                "-v", f"{stack.project}_work:/work",
                IMAGE, "worker", "start", "--count", "1",
            )  # fmt: skip
        for name in names:
            assert "queuectl" in docker("exec", name, "cat", "/proc/1/cmdline"), "PID 1 is it"
        hosts = {stack.hostname(name) for name in names}

        def both_listed() -> bool:
            status = stack.api_ready()
            return bool(status) and hosts <= {w.get("host") for w in status["workers"]}

        try:
            poll(both_listed, 10, "both PID-1 workers in /api/status")
        except AssertionError:
            pass  # asserted below on the CLI's answer, with the evidence
        listed = json.loads(stack.cli("status", "--json").stdout)["workers"]
        found = {w.get("host") for w in listed} & hosts
        logs = {n: docker_logs(n) for n in names}
        assert found == hosts, f"PID-1 workers {hosts}; status lists {listed}; logs {logs}"
    finally:
        docker("rm", "-f", *names, check=False)


@needs_containers
def test_dashboard_answers_on_loopback_with_the_token_only(stack: Stack, fifty: Fifty) -> None:
    dash = stack.containers("dashboard")[0]
    published = docker("port", dash, "8787/tcp").split()
    assert published == [f"127.0.0.1:{stack.port}"], published
    code, body = stack.api("/api/status")
    assert code == 200 and body["jobs"]["completed"] >= len(fifty.ids), body
    assert stack.api("/api/status", token="")[0] == 401
    assert stack.api("/api/status", token="wrong-" + stack.token)[0] == 401
    assert stack.api("/metrics", token="")[0] == 401


@needs_containers
def test_sigkilled_worker_container_job_runs_again_never_twice_at_once(stack: Stack) -> None:
    stack.up()
    job = f"kill-{secrets.token_hex(3)}"
    command = recording_command("kill.log", 3.0, beat=0.1)
    stack.cli("enqueue", json.dumps({"id": job, "command": command}))

    def first_run_host() -> str | None:
        runs = [r for r in parse_runs(stack.read_work("kill.log")) if r.job == job]
        return runs[0].host if runs and runs[0].beats else None

    host = poll(first_run_host, 60, f"{job} to start")
    victim = next(c for c in stack.containers("worker") if stack.hostname(c) == host)
    killed_at = time.time()
    docker("kill", victim)  # SIGKILL to the container's init: the job's command dies with it
    poll(lambda: not stack.state(victim)["Running"], 30, "the killed container to stop")
    stack.up()

    def completed() -> dict[str, Any] | None:
        body = stack.job(job)
        return body if body and body["job"]["state"] == "completed" else None

    body = poll(completed, 60, f"{job} to complete after the kill")
    runs = [r for r in parse_runs(stack.read_work("kill.log")) if r.job == job]
    assert len(runs) >= 2 and runs[0].end is None, runs
    assert runs[0].last_seen >= killed_at - 1, "the first run was alive until about the kill"
    assert [r.end is not None for r in runs].count(True) == 1, runs
    assert runs[-1].end is not None
    assert_never_concurrent(runs)
    errors = [a.get("error") or "" for a in body["attempts"]]
    assert any("worker lost" in e for e in errors), body["attempts"]


@needs_containers
def test_worker_stop_from_a_cli_container_stops_both_worker_containers(stack: Stack) -> None:
    stack.up()
    workers = stack.containers("worker")
    assert len(workers) == WORKERS
    job = f"warm-{secrets.token_hex(3)}"
    stack.cli("enqueue", json.dumps({"id": job, "command": recording_command("stop.log", 2)}))
    poll(lambda: job in stack.read_work("stop.log"), 60, f"{job} to start")

    started = time.monotonic()
    r = stack.cli("worker", "stop", "--timeout", f"{STOP_GRACE:g}", check=False)
    assert r.returncode == 0, (
        f"worker stop exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}\n"
        + stack.diagnostics()
    )

    def all_exited() -> bool:
        return not any(stack.state(c)["Running"] for c in workers)

    try:
        poll(all_exited, STOP_GRACE, "both worker containers to exit")
    except AssertionError as exc:
        said = f"worker stop said: {r.stdout.strip()!r}"
        raise AssertionError(f"{exc}\n{said}\n{stack.diagnostics()}") from None
    stack.report["worker_stop_to_exit_s"] = round(time.monotonic() - started, 2)
    codes = [stack.state(c)["ExitCode"] for c in workers]
    assert codes == [0] * WORKERS, f"exit codes {codes} (0 is a warm stop)"
    runs = [r for r in parse_runs(stack.read_work("stop.log")) if r.job == job]
    assert len(runs) == 1 and runs[0].end is not None, f"the running job finished first: {runs}"
