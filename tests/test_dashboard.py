"""The dashboard's first API and its safety rules, /metrics and `queuectl metrics`, and the
`dashboard` command; the helpers here serve the other test_dashboard_* files too (the views'
API, the catalog behind it, the page in a real browser)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from queuectl.cli.main import cli
from queuectl.storage.home import Home
from queuectl.storage.store import Store
from queuectl.web.server import check_bind, serve

from .conftest import run_cli


def invoke(home: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def prepared_home(tmp_path: Path) -> Path:
    home = tmp_path / "h"
    jobs = [
        {"id": "ok", "command": "echo fine"},
        {"id": "xss", "command": "echo '<script>alert(1)</script>'; exit 1", "max_retries": 0},
        {"id": "bad", "command": "exit 3", "max_retries": 0},
    ]
    lines = "".join(json.dumps(j) + "\n" for j in jobs)
    assert invoke(home, "enqueue", "-", input=lines).exit_code == 0
    assert run_cli(home, "worker", "start", "--burst", timeout=120).returncode == 0
    for i in range(120):
        assert (
            invoke(
                home,
                "enqueue",
                json.dumps(
                    {"id": f"p{i:03d}", "command": "true", "run_at": "2030-01-01T00:00:00Z"}
                ),
            ).exit_code
            == 0
        )
    return home


@contextlib.contextmanager
def running_server(
    home: Path, token: str | None = None, read_only: bool = False
) -> Iterator[tuple[str, Any]]:
    """A dashboard for ``home`` on a free loopback port: (base URL, the server)."""
    httpd = serve(Store(Home(home).ensure()), "127.0.0.1", 0, token, read_only)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, Any]]:
    home = prepared_home(tmp_path)
    with running_server(home) as (base, httpd):
        yield base, home, httpd


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, body
    return json.loads(body)


def post(url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, str]:
    request = urllib.request.Request(url, method="POST", headers=headers, data=body)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def csrf_of(httpd: Any) -> str:
    return str(httpd.RequestHandlerClass.app.csrf)


def test_api_status_paging_and_job_page(server: tuple[str, Path, Any]) -> None:
    base, _, _ = server
    status, body = get(base + "/api/status")
    assert status == 200
    assert json.loads(body)["jobs"] == {
        "pending": 120,
        "processing": 0,
        "completed": 1,
        "failed": 0,
        "dead": 2,
        "cancelled": 0,
        "blocked": 0,
        "held": 0,
    }
    first = json.loads(get(base + "/api/jobs?state=pending&page=0")[1])
    third = json.loads(get(base + "/api/jobs?state=pending&page=2")[1])
    assert first["total"] == 120 and len(first["jobs"]) == 50 and len(third["jobs"]) == 20
    assert first["jobs"][0]["id"] == "p000" and third["jobs"][-1]["id"] == "p119"
    job = json.loads(get(base + "/api/jobs/bad")[1])
    assert job["job"]["state"] == "dead"
    assert [a["exit_code"] for a in job["attempts"]] == [3]
    assert get(base + "/api/jobs/nope")[0] == 404
    assert get(base + "/api/jobs?state=bogus")[0] == 400


def test_job_text_is_never_served_as_html(server: tuple[str, Path, Any]) -> None:
    base, _, _ = server
    _, page = get(base + "/")
    assert "<script>alert(1)</script>" not in page
    status, body = get(base + "/api/jobs/xss")
    assert status == 200
    assert json.loads(body)["job"]["command"].startswith("echo '<script>")


def test_post_needs_the_csrf_token_and_our_origin(server: tuple[str, Path, Any]) -> None:
    base, home, httpd = server
    csrf = httpd.RequestHandlerClass.app.csrf
    url = base + "/api/jobs/bad/retry"
    assert post(url, {})[0] == 403
    assert post(url, {"X-Queuectl-CSRF": "wrong"})[0] == 403
    assert post(url, {"X-Queuectl-CSRF": csrf, "Origin": "http://evil.example"})[0] == 403
    assert (home / "dead" / "bad.json").exists()
    status, _ = post(url, {"X-Queuectl-CSRF": csrf, "Origin": base})
    assert status == 200
    assert (home / "pending" / "bad.json").exists() and not (home / "dead" / "bad.json").exists()
    status, _ = post(base + "/api/jobs/xss/purge", {"X-Queuectl-CSRF": csrf})
    assert status == 200 and not (home / "dead" / "xss.json").exists()


def test_token_is_required_when_set(tmp_path: Path) -> None:
    home = tmp_path / "h"
    httpd = serve(Store(Home(home).ensure()), "127.0.0.1", 0, "s3cret")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert get(base + "/api/status")[0] == 401
        assert get(base + "/api/status?token=nope")[0] == 401
        assert get(base + "/api/status?token=s3cret")[0] == 200
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_only_loopback_without_an_explicit_flag_and_token() -> None:
    check_bind("127.0.0.1", None, False)
    check_bind("::1", None, False)
    for token, allow in ((None, False), ("t", False), (None, True)):
        with pytest.raises(Exception, match="not a loopback"):
            check_bind("0.0.0.0", token, allow)
    check_bind("0.0.0.0", "t", True)
    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_text_counts_and_cumulative_histograms(server: tuple[str, Path, Any]) -> None:
    base, home, _ = server
    status, text = get(base + "/metrics")
    assert status == 200
    assert invoke(home, "metrics").output == text  # the CLI prints the same thing
    samples = parse_metrics(text)
    assert samples['queuectl_jobs{state="pending"}'] == 120
    assert samples['queuectl_jobs{state="dead"}'] == 2
    assert samples['queuectl_attempts_total{outcome="completed"}'] == 1
    assert samples['queuectl_attempts_total{outcome="dead"}'] == 2
    buckets = [v for k, v in samples.items() if k.startswith("queuectl_run_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == samples["queuectl_run_seconds_count"] == 3
    assert "# TYPE queuectl_queue_wait_seconds histogram" in text


def test_dashboard_command_serves_until_interrupted(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)  # an empty folder: a new home (the dashboard creates none)
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("queuectl dashboard on http://127.0.0.1:")
        url = line.split()[3]
        assert get(url + "api/status")[0] == 200
    finally:
        proc.send_signal(2)
        assert proc.wait(timeout=30) == 0


def test_a_foreign_host_header_is_refused_without_a_token(server: tuple[str, Path, Any]) -> None:
    """DNS rebinding: a page on another site that resolves its name to 127.0.0.1 sends its own
    Host header; without a token only loopback names are served."""
    base, _, _ = server
    request = urllib.request.Request(base + "/", headers={"Host": "evil.example:8787"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a foreign Host was served")
    except urllib.error.HTTPError as exc:
        assert exc.code == 421
    assert get(base.replace("127.0.0.1", "localhost") + "/api/status")[0] == 200
