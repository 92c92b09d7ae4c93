"""``worker start --executor dask`` through the CLI: runs, output, retries, the errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import jobs_in, read_job, run_cli, settled_in, wait_until
from tests.remote_support import (
    Cluster,
    dask_env,
    enqueue_all,
    head,
    make_certificates,
    recorded,
    runs,
    stop_head,
    wait_jobs,
)


def enqueue(home: Path, **job: object) -> str:
    done = run_cli(home, "enqueue", json.dumps(job))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def burst(home: Path, cluster: Cluster, log: Path, *args: str) -> None:
    proc = head(home, cluster, "--burst", *args, log=log)
    assert proc.wait(120) == 0, log.read_text()


def test_commands_run_on_dask_workers_and_are_recorded_like_local_ones(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "config", "set", "backoff-base", "1").returncode == 0
    ok = enqueue(home, command="echo out $QUEUECTL_JOB_ID on $QUEUECTL_TEST_HOST; echo err >&2")
    bad = enqueue(home, command="echo broken >&2; exit 3", max_retries=1)
    there = enqueue(home, command="pwd", cwd=str(tmp_path))
    nowhere = enqueue(home, command="true", cwd="/nonexistent/dir", max_retries=0)
    burst(home, dask_cluster, tmp_path / "head.log", "--count", "4")
    assert jobs_in(home, "completed") == sorted([ok, there])
    assert jobs_in(home, "dead") == sorted([bad, nowhere])
    logs = run_cli(home, "logs", ok).stdout
    assert f"out {ok} on w" in logs and "err" in logs, logs
    assert str(tmp_path) in run_cli(home, "logs", there).stdout
    dead = read_job(home, "dead", bad)
    assert dead["attempts"] == 2 and "exit code 3: broken" in dead["last_error"], dead
    lost = read_job(home, "dead", nowhere)
    assert "does not exist on host" in lost["last_error"], lost
    assert not (home / "remote").exists() or not list((home / "remote").iterdir())


def test_output_streams_into_the_log_while_the_command_runs(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home = tmp_path / "home"
    gate = tmp_path / "gate"
    job = enqueue(
        home, command=f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"
    )
    proc = head(home, dask_cluster, "--burst", log=tmp_path / "head.log")
    try:
        follow = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "--home", str(home), "logs", "--follow", job],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert follow.stdout is not None
        assert "first" in follow.stdout.readline()  # arrives while the command still runs
        gate.touch()
        rest = follow.stdout.read()
        assert follow.wait(60) == 0 and "second" in rest, rest
    finally:
        assert proc.wait(60) == 0


def test_exactly_once_under_two_heads_and_two_workers(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    home = tmp_path / "home"
    record = tmp_path / "record"
    ids = enqueue_all(
        home,
        [
            {"id": f"job-{n}", "command": recorded(record, f"job-{n}", "sleep 0.2")}
            for n in range(40)
        ],
    )
    heads = [
        head(home, dask_cluster, "--count", "8", log=tmp_path / f"head{i}.log") for i in range(2)
    ]
    try:
        done = wait_jobs(home, ids)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        for proc in heads:
            assert stop_head(proc) == 0
    found = runs(record)
    assert sorted(found) == sorted(ids)
    assert all(len(r) == 1 and r[0].end is not None for r in found.values()), found
    assert len({r[0].host for r in found.values()}) == 2  # both workers took part


def test_gpu_requests_become_dask_resources_checked_against_the_cluster(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    """No local ``gpus`` setting: while a dask head runs, ``add --gpus`` is checked against
    the GPUs its cluster's workers advertise (GPU=2 here); a request no worker can satisfy
    that still got in (through the local setting) fails at once, says why in ``show``, and
    the head logs it once."""
    home = tmp_path / "home"
    log = tmp_path / "head.log"
    assert "configured" in run_cli(home, "add", "--gpus", "1", "true").stderr  # no head yet
    proc = head(home, dask_cluster, "--count", "3", log=log)
    try:
        wait_until(lambda: "dask executor:" in log.read_text(), timeout=60, message="the head")
        two = enqueue(home, command="echo gpus=$CUDA_VISIBLE_DEVICES", gpus=2)
        none = enqueue(home, command="echo gpus=[$CUDA_VISIBLE_DEVICES]")
        refused = run_cli(home, "add", "--gpus", "3", "true")
        assert refused.returncode != 0, refused.stdout
        assert "asks for 3 GPU device(s); 0 are configured" in refused.stderr
        assert wait_jobs(home, [two, none]).returncode == 0
        # the local setting lets a larger request in; no worker can ever run it
        assert run_cli(home, "config", "set", "gpus", "0,1,2").returncode == 0
        assert run_cli(home, "config", "set", "backoff-base", "1").returncode == 0
        too_many = enqueue(home, command="true", gpus=3, max_retries=1)
        wait_until(lambda: settled_in(home, "dead", too_many), timeout=60, message="dead")
    finally:
        assert stop_head(proc) == 0
    assert "gpus=0,1" in run_cli(home, "logs", two).stdout
    assert "gpus=[]" in run_cli(home, "logs", none).stdout
    shown = run_cli(home, "show", too_many).stdout
    assert "no Dask worker advertises GPU=3 (largest: GPU=2)" in shown, shown
    assert read_job(home, "dead", too_many)["attempts"] == 2
    assert log.read_text().count("attempts asking for it fail at once") == 1


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tcp://10.1.2.3:8786", "plain tcp:// is accepted on loopback only"),
        ("nowhere", "bad scheduler address"),
        ("http://127.0.0.1:1", "the scheme must be tls://"),
        ("tls://127.0.0.1:1", "a tls:// scheduler needs --tls-ca"),
    ],
)
def test_bad_addresses_are_one_line_errors(tmp_path: Path, address: str, expected: str) -> None:
    done = run_cli(
        tmp_path / "home", "worker", "start", "--executor", "dask", "--scheduler", address
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    from tests.remote_support import free_port

    env = dask_env(QUEUECTL_DASK_CONNECT_TIMEOUT="1")
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(tmp_path / "home"), "worker", "start",
         "--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot reach the Dask scheduler" in done.stderr and "Traceback" not in done.stderr


def test_without_the_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    probe = (
        "import sys, runpy; sys.modules['distributed'] = None; "
        "sys.argv = ['queuectl', *sys.argv[1:]]; runpy.run_module('queuectl', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--home", str(tmp_path / "home"), "worker", "start",
         "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'queuectl[dask]'" in done.stderr, done.stderr


def test_a_scheduler_that_would_rerun_commands_is_refused(tmp_path: Path) -> None:
    cluster = Cluster(
        tmp_path / "c",
        workers=0,
        scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"},
    )
    try:
        cluster.start()
        done = subprocess.run(
            [sys.executable, "-m", "queuectl", "--home", str(tmp_path / "home"), "worker",
             "start", "--executor", "dask", "--scheduler", cluster.address],
            capture_output=True, text=True, env=dask_env(), timeout=60,
        )  # fmt: skip
    finally:
        cluster.stop()
    assert done.returncode == 2, done.stderr
    assert "allowed-failures=3" in done.stderr and "ALLOWED_FAILURES=0" in done.stderr


def test_a_tls_cluster_runs_jobs_end_to_end(tmp_path: Path) -> None:
    """Certificates made with openssl as docs/remote.md says; scheduler and worker started with
    ``--protocol tls``; the head connects with --tls-ca/--tls-cert/--tls-key."""
    cluster = Cluster(
        tmp_path / "c", workers=1, nthreads=2, tls=make_certificates(tmp_path / "tls")
    )
    home = tmp_path / "home"
    try:
        cluster.start()
        cluster.wait_workers()
        job = enqueue(home, command="echo over tls on $QUEUECTL_TEST_HOST")
        burst(home, cluster, tmp_path / "head.log")
        assert cluster.address.startswith("tls://")
        assert jobs_in(home, "completed") == [job]
        assert "over tls on w0" in run_cli(home, "logs", job).stdout
        # the same cluster without the head's certificate: a clear one-line error
        done = run_cli(home, "worker", "start", "--executor", "dask", "--scheduler",
                       cluster.address)  # fmt: skip
        assert done.returncode == 2 and "a tls:// scheduler needs --tls-ca" in done.stderr
    finally:
        cluster.stop()
