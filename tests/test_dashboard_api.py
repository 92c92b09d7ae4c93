"""The dashboard's JSON API behind the views: the jobs view (natural order, filters, search,
paging), the job page (attempts, links, output from an offset, live output), the overview,
queues, workers and schedules, every action (and that it changes the files on disk and the
journal exactly as the CLI does), and the answers to requests it cannot serve."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from queuectl.storage.journal import scan

from .conftest import settled_in, start_worker, wait_exit, wait_until
from .test_dashboard import csrf_of, get, get_json, invoke, post, running_server

NEVER = "2099-01-01T00:00:00Z"


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.output)


def enqueue(home: Path, *jobs: dict[str, Any]) -> None:
    ok(invoke(home, "enqueue", "-", input="".join(json.dumps(j) + "\n" for j in jobs)))


def where(home: Path, job_id: str) -> list[str]:
    return sorted(p.parent.name for p in home.glob(f"*/{job_id}.json"))


def events_of(home: Path, job_id: str) -> list[str]:
    return [
        r.data["event"]
        for r in scan(home / "journal").records
        if isinstance(r.data.get("job"), dict) and r.data["job"].get("id") == job_id
    ]


def ids(base: str, **params: str) -> list[str]:
    query = urllib.parse.urlencode(params)
    return [j["id"] for j in get_json(f"{base}/api/jobs?{query}")["jobs"]]


def act(base: str, httpd: Any, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, text = post(
        base + path,
        {"X-Queuectl-CSRF": csrf_of(httpd), "Origin": base, "Content-Type": "application/json"},
        json.dumps(body or {}).encode(),
    )
    return status, json.loads(text)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "h"
    path.mkdir()  # an empty folder is a home; reading commands never create one
    ok(invoke(path, "status"))
    return path


# ------------------------------------------------------------------ the jobs view


def test_jobs_sort_naturally_filter_search_and_page(home: Path) -> None:
    ok(invoke(home, "queue", "add", "gpu"))
    enqueue(
        home,
        *(
            {"id": f"build-{i}", "command": f"make part{i}", "run_at": NEVER, "priority": i % 3}
            for i in (10, 2, 1, 11, 3)
        ),
        {"id": "Train-9", "command": "python TRAIN.py --epochs 9", "queue": "gpu", "run_at": NEVER},
        {"id": "tagged", "command": "true", "labels": ["nightly"], "held": True},
    )
    with running_server(home) as (base, _httpd):
        assert ids(base, sort="id") == [
            "build-1",
            "build-2",
            "build-3",
            "build-10",
            "build-11",
            "tagged",
            "Train-9",
        ]
        assert ids(base, sort="id", order="desc")[:2] == ["Train-9", "tagged"]
        top = ids(base, sort="priority", order="desc")
        assert top[:2] == ["build-11", "build-2"]  # priority 2, ties in natural id order, reversed
        assert ids(base, queue="gpu") == ["Train-9"]
        assert ids(base, label="nightly") == ["tagged"]
        assert ids(base, state="held") == ["tagged"]
        assert ids(base, q="train.PY") == ["Train-9"]  # the command, case-insensitive
        assert ids(base, q="build-1", sort="id") == ["build-1", "build-10", "build-11"]
        assert ids(base, state="dead") == []
        page = get_json(f"{base}/api/jobs?sort=id&page=0")
        assert page["total"] == 7 and page["page_size"] == 50 and page["state"] is None
        assert page["facets"]["counts"]["pending"] == 6 and page["facets"]["labels"] == ["nightly"]
        assert page["facets"]["queues"] == ["default", "gpu"]
        row = page["jobs"][0]
        assert row["attempts"] == 0 and row["max_retries"] == 3 and row["queue"] == "default"
        assert get_json(f"{base}/api/jobs?page=1")["jobs"] == []


def test_a_page_of_a_large_folder_is_the_right_slice(home: Path) -> None:
    enqueue(home, *({"id": f"j{i}", "command": "true", "run_at": NEVER} for i in range(120)))
    with running_server(home) as (base, _httpd):
        assert ids(base, sort="id", page="0")[:3] == ["j0", "j1", "j2"]
        assert ids(base, sort="id", page="2") == [f"j{i}" for i in range(100, 120)]
        assert ids(base, sort="id", order="desc", page="2") == [f"j{i}" for i in range(19, -1, -1)]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("stat=dead", "unknown parameter 'stat'"),
        ("state=dead&state=held", "given 2 times"),
        ("state=bogus", "state must be one of"),
        ("sort=size", "sort must be one of"),
        ("order=up", "order must be one of"),
        ("page=%C2%B2", "page must be a whole number"),
        ("page=" + "9" * 5000, "page must be a whole number"),
        ("page=-1", "page must be a whole number"),
        ("queue=..%2Fetc", "not a valid name"),
        ("q=" + "x" * 201, "longer than 200"),
        ("q=a%0Ab", "control characters"),
    ],
)
def test_a_bad_parameter_is_a_400_that_says_which(home: Path, query: str, words: str) -> None:
    with running_server(home) as (base, _httpd):
        status, body = get(f"{base}/api/jobs?{query}")
        assert status == 400, body
        message = json.loads(body)["error"]
        assert words in message and "Traceback" not in message


def test_other_endpoints_check_their_parameters_too(home: Path) -> None:
    enqueue(home, {"id": "one", "command": "true", "run_at": NEVER})
    with running_server(home) as (base, _httpd):
        for path, status in [
            ("/api/overview?range=1y", 400),
            ("/api/overview?range=6h", 200),
            ("/api/jobs/one/output", 400),  # run is required
            ("/api/jobs/one/output?run=0", 400),
            ("/api/jobs/one/output?run=1&stream=both", 400),
            ("/api/jobs/one/output?run=1&offset=-5", 400),
            ("/api/jobs/one/output?run=1", 200),
            ("/api/jobs/nope/output?run=1", 404),
            ("/api/jobs/nope", 404),
            ("/api/jobs/..%2F..%2Fetc%2Fpasswd", 404),
            ("/api/queues?x=1", 400),
            ("/api/nothing", 404),
            ("/jobs/not%20an%20id", 404),
            ("/elsewhere", 404),
        ]:
            assert get(base + path)[0] == status, path


# ------------------------------------------------------------------ keeping up with the home


def test_the_lists_follow_changes_made_by_the_cli(home: Path) -> None:
    enqueue(home, {"id": "a", "command": "true", "run_at": NEVER})
    with running_server(home) as (base, _httpd):

        def row(job_id: str) -> dict[str, Any] | None:
            found = [j for j in get_json(f"{base}/api/jobs")["jobs"] if j["id"] == job_id]
            return found[0] if found else None

        assert row("a") is not None and row("a")["priority"] == 0  # type: ignore[index]
        ok(invoke(home, "edit", "a", "--priority", "7"))  # rewritten in place, same folder
        wait_until(lambda: (row("a") or {}).get("priority") == 7, message="the edit")
        ok(invoke(home, "hold", "a"))
        wait_until(lambda: (row("a") or {}).get("state") == "held", message="the hold")
        enqueue(home, {"id": "b", "command": "true", "run_at": NEVER})
        wait_until(lambda: row("b") is not None, message="the new job")
        ok(invoke(home, "cancel", "b"))
        ok(invoke(home, "cleanup", "--older-than", "0s", "--state", "cancelled"))
        wait_until(lambda: row("b") is None, message="the deleted job to go")
        counts = get_json(f"{base}/api/status")["jobs"]
        assert counts["held"] == 1 and counts["cancelled"] == 0


# ------------------------------------------------------------------ the job page


def test_job_page_has_its_attempts_links_outputs_and_actions(home: Path) -> None:
    enqueue(
        home,
        {"id": "first", "command": "echo out-line; echo err-line >&2; exit 3", "max_retries": 1},
        {"id": "second", "command": "true", "after": ["first"], "labels": ["x"]},
        {"id": "quiet", "command": "true"},
    )
    proc = start_worker(home, "--burst")
    assert wait_exit(proc) == 0
    with running_server(home) as (base, _httpd):
        # Dependents come from the catalog: a job page served during the first read of the
        # home has none yet (the page's next refresh shows them).
        wait_until(lambda: get(f"{base}/api/jobs")[0] == 200, message="the first read")
        page = get_json(f"{base}/api/jobs/first")
        assert page["job"]["state"] == "dead"
        assert [(a["run"], a["exit_code"]) for a in page["attempts"]] == [(1, 3), (2, 3)]
        assert page["actions"] == ["retry", "purge"]
        assert page["outputs"][0]["run"] == 2 and page["outputs"][0]["streams"] == {
            "out": len("out-line\n"),
            "err": len("err-line\n"),
        }
        assert page["logs"]["2.out"] == "out-line\n"  # the API's first shape, for scripts
        assert page["dependents"] == [{"id": "second", "state": "dead"}]
        second = get_json(f"{base}/api/jobs/second")
        assert second["dependencies"] == [{"id": "first", "kind": "after", "state": "dead"}]
        assert second["job"]["last_error"] == "dependency first ended dead"
        quiet = get_json(f"{base}/api/jobs/quiet")
        assert quiet["outputs"] == [] and quiet["actions"] == ["restart"]
        gone = get_json(f"{base}/api/jobs/quiet/output?run=1&stream=out")
        assert gone["exists"] is False and gone["text"] == ""


def test_output_is_read_in_chunks_from_an_offset(home: Path) -> None:
    enqueue(home, {"id": "big", "command": "seq 1 30000; printf 'caf\\303\\251'"})
    assert wait_exit(start_worker(home, "--burst")) == 0
    text = "".join(f"{i}\n" for i in range(1, 30001)) + "café"
    size = len(text.encode())
    with running_server(home) as (base, _httpd):
        url = f"{base}/api/jobs/big/output?run=1&stream=out"
        tail = get_json(url)
        assert tail["size"] == size and tail["live"] is False and tail["next"] == size
        assert text.endswith(tail["text"])
        assert text[: -len(tail["text"])].endswith("\n")  # the tail starts at a line
        assert tail["offset"] == size - len(tail["text"].encode()) > 0
        read, offset = "", 0
        while offset < size:
            part = get_json(f"{url}&offset={offset}")
            assert part["offset"] == offset and part["next"] > offset
            read += part["text"]
            offset = part["next"]
        assert read == text  # no character was cut between two chunks
        past = get_json(f"{url}&offset={size + 10}")
        assert past["reset"] is True and past["offset"] > 0


def test_a_running_jobs_output_is_live_and_continues_in_its_log(home: Path) -> None:
    gate = home.parent / "go"
    command = f"echo first-line; while [ ! -e {gate} ]; do sleep 0.02; done; echo second-line"
    enqueue(home, {"id": "live", "command": command})
    proc = start_worker(home)
    try:
        with running_server(home) as (base, _httpd):
            url = f"{base}/api/jobs/live/output?run=1&stream=out"
            wait_until(lambda: get_json(url)["text"] == "first-line\n", message="first line")
            part = get_json(url)
            assert part["live"] is True and part["running"] is True
            page = get_json(f"{base}/api/jobs/live")
            assert page["running"]["run"] == 1 and page["actions"] == ["cancel"]
            assert page["outputs"][0]["live"] is True
            gate.touch()
            wait_until(lambda: settled_in(home, "completed", "live"), message="the job to end")
            wait_until(lambda: get_json(url)["live"] is False, message="the log in place")
            rest = get_json(f"{url}&offset={part['next']}")
            assert rest["text"] == "second-line\n" and rest["live"] is False
    finally:
        proc.terminate()
        wait_exit(proc)


# ------------------------------------------------------------------ actions


def test_job_actions_change_the_files_and_the_journal(home: Path) -> None:
    enqueue(
        home,
        {"id": "d", "command": "exit 1", "max_retries": 0},
        {"id": "c", "command": "true"},
        {"id": "p", "command": "exit 1", "max_retries": 0},
    )
    assert wait_exit(start_worker(home, "--burst")) == 0
    # After the burst: a burst worker waits for every pending job, delayed ones too.
    enqueue(
        home,
        {"id": "w", "command": "true", "run_at": NEVER},
        {"id": "h", "command": "true", "run_at": NEVER},
    )
    with running_server(home) as (base, httpd):
        assert act(base, httpd, "/api/jobs/w/cancel") == (
            200,
            {"id": "w", "action": "cancel", "message": "cancelled w", "state": "cancelled"},
        )
        assert where(home, "w") == ["cancelled"] and events_of(home, "w")[-1] == "cancelled"
        assert act(base, httpd, "/api/jobs/h/hold")[1]["state"] == "held"
        assert where(home, "h") == ["held"]
        status, body = act(base, httpd, "/api/jobs/h/priority", {"priority": 42})
        assert status == 200, body
        assert json.loads((home / "held" / "h.json").read_text())["priority"] == 42
        assert events_of(home, "h")[-2:] == ["held", "edited"]
        assert act(base, httpd, "/api/jobs/h/release")[1]["state"] == "pending"
        assert act(base, httpd, "/api/jobs/d/retry")[1]["state"] == "pending"
        assert events_of(home, "d")[-1] == "retried"
        assert act(base, httpd, "/api/jobs/c/restart")[1]["state"] == "pending"
        assert events_of(home, "c")[-1] == "restarted"
        assert act(base, httpd, "/api/jobs/p/purge")[0] == 200
        assert where(home, "p") == [] and events_of(home, "p")[-1] == "deleted"


def test_refused_actions_say_why_and_change_nothing(home: Path) -> None:
    enqueue(home, {"id": "w", "command": "true", "run_at": NEVER})
    with running_server(home) as (base, httpd):
        status, body = act(base, httpd, "/api/jobs/w/restart")
        assert status == 409 and "has not finished (pending)" in body["error"]
        status, body = act(base, httpd, "/api/jobs/w/retry")
        assert status == 404 and "dead letter queue" in body["error"]
        for bad in ({}, {"priority": 101}, {"priority": "5"}, {"priority": True}):
            status, body = act(base, httpd, "/api/jobs/w/priority", bad)
            assert status == 400 and "priority must be" in body["error"], bad
        assert act(base, httpd, "/api/jobs/nope/cancel")[0] == 404
        assert act(base, httpd, "/api/jobs/w/explode")[0] == 404
        status, text = post(
            base + "/api/jobs/w/hold", {"X-Queuectl-CSRF": csrf_of(httpd)}, b"[not json"
        )
        assert status == 400 and "not valid JSON" in text
        assert where(home, "w") == ["pending"]
        assert json.loads((home / "pending" / "w.json").read_text())["priority"] == 0
        assert events_of(home, "w") == ["enqueued"]


def test_cancel_stops_a_running_job_through_its_worker(home: Path) -> None:
    gate = home.parent / "never"
    enqueue(home, {"id": "run", "command": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    proc = start_worker(home)
    try:
        wait_until(lambda: where(home, "run") == ["processing"], message="the job to start")
        with running_server(home) as (base, httpd):
            status, body = act(base, httpd, "/api/jobs/run/cancel")
            assert status == 200 and body["message"] == "cancelled run (it was running)"
        assert where(home, "run") == ["cancelled"]
    finally:
        proc.terminate()
        wait_exit(proc)


def test_queue_and_schedule_actions(home: Path) -> None:
    ok(invoke(home, "queue", "add", "gpu", "--parallel", "2"))
    ok(invoke(home, "schedule", "add", "nightly", "--every", "1h", "true"))
    with running_server(home) as (base, httpd):
        assert act(base, httpd, "/api/queues/gpu/pause")[1]["message"] == "paused gpu"
        assert json.loads((home / "queues" / "gpu.json").read_text())["paused"] is True
        assert act(base, httpd, "/api/queues/gpu/pause")[1]["message"] == "gpu was already paused"
        queue = get_json(f"{base}/api/queues")["queues"][1]
        assert queue["name"] == "gpu" and queue["paused"] is True and queue["parallel"] == 2
        assert act(base, httpd, "/api/queues/gpu/resume")[0] == 200
        assert act(base, httpd, "/api/queues/gpu/limit", {"parallel": 5})[0] == 200
        stored = json.loads((home / "queues" / "gpu.json").read_text())
        assert stored["paused"] is False and stored["parallel"] == 5
        assert act(base, httpd, "/api/queues/gpu/limit", {"parallel": -1})[0] == 400
        assert act(base, httpd, "/api/queues/nope/pause")[0] == 404
        assert act(base, httpd, "/api/queues/default/pause")[0] == 200  # exists without a file
        assert json.loads((home / "queues" / "default.json").read_text())["paused"] is True
        assert act(base, httpd, "/api/schedules/nightly/pause")[0] == 200
        row = get_json(f"{base}/api/schedules")["schedules"][0]
        assert row["name"] == "nightly" and row["paused"] is True and row["next_due"] is None
        assert act(base, httpd, "/api/schedules/nightly/resume")[0] == 200
        assert get_json(f"{base}/api/schedules")["schedules"][0]["next_due"] is not None
        assert act(base, httpd, "/api/schedules/nope/pause")[0] == 404


def test_every_change_needs_the_csrf_token_and_our_origin(home: Path) -> None:
    enqueue(home, {"id": "w", "command": "true", "run_at": NEVER})
    ok(invoke(home, "schedule", "add", "s", "--every", "1h", "true"))
    with running_server(home) as (base, httpd):
        for path in (
            "/api/jobs/w/cancel",
            "/api/jobs/w/hold",
            "/api/jobs/w/priority",
            "/api/queues/default/pause",
            "/api/queues/default/limit",
            "/api/schedules/s/pause",
        ):
            assert post(base + path, {})[0] == 403, path
            assert post(base + path, {"X-Queuectl-CSRF": "guess"})[0] == 403, path
            foreign = {"X-Queuectl-CSRF": csrf_of(httpd), "Origin": "http://evil.example"}
            assert post(base + path, foreign)[0] == 403, path
        assert where(home, "w") == ["pending"] and not (home / "queues" / "default.json").exists()
        assert events_of(home, "w") == ["enqueued"]


# ------------------------------------------------------------------ the other views


def test_overview_counts_queues_workers_and_charts(home: Path) -> None:
    ok(invoke(home, "queue", "add", "gpu", "--parallel", "1"))
    enqueue(
        home,
        *({"id": f"ok{i}", "command": "true"} for i in range(4)),
        {"id": "bad", "command": "exit 1", "max_retries": 0, "queue": "gpu"},
    )
    assert wait_exit(start_worker(home, "--burst")) == 0
    enqueue(home, {"id": "later", "command": "true", "run_at": NEVER, "queue": "gpu"})
    with running_server(home) as (base, _httpd):
        data = get_json(f"{base}/api/overview")
        assert data["counts"]["completed"] == 4 and data["counts"]["dead"] == 1
        gpu = next(q for q in data["queues"] if q["name"] == "gpu")
        assert gpu["pending"] == 1 and gpu["parallel"] == 1 and gpu["waiting"] == 1
        chart = data["chart"]
        assert chart["range"] == "1h" and len(chart["steps"]) == 60
        assert chart["totals"]["finished"] == 5 and chart["totals"]["completed"] == 4
        assert chart["totals"]["dead"] == 1
        assert sum(s["completed"] for s in chart["steps"]) == 4
        assert chart["totals"]["run"]["p50"] is not None
        week = get_json(f"{base}/api/overview?range=7d")["chart"]
        assert len(week["steps"]) == 168 and week["step_seconds"] == 3600
        assert week["totals"]["finished"] == 5
        assert data["workers"] == []


def test_workers_view_shows_what_each_worker_runs(home: Path) -> None:
    ok(invoke(home, "queue", "add", "gpu"))
    gate = home.parent / "never"
    enqueue(home, {"id": "busy", "command": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    proc = start_worker(home, "--count", "3", "--queue", "default")
    try:
        with running_server(home) as (base, _httpd):

            def listed() -> list[dict[str, Any]]:
                return [w for w in get_json(f"{base}/api/workers")["workers"] if w["jobs"]]

            wait_until(lambda: bool(listed()), message="the worker and its job")
            worker = listed()[0]
            assert worker["pid"] == proc.pid and worker["threads"] == 3
            assert worker["queues"] == ["default"] and worker["started_at"]
            assert [(j["id"], j["run"]) for j in worker["jobs"]] == [("busy", 1)]
            # The jobs view's catalog is refreshed at most every 0.5 s: it may lag a claim.
            url = f"{base}/api/jobs?state=processing"
            wait_until(lambda: bool(get_json(url)["jobs"]), message="busy in the jobs view")
            running = get_json(url)["jobs"][0]
            assert running["id"] == "busy" and running["running"]["run"] == 1
            assert running["running"]["worker"]["pid"] == proc.pid
    finally:
        gate.touch()
        proc.terminate()
        wait_exit(proc)


# ------------------------------------------------------------------ untrusted input and errors


def test_hostile_files_are_listed_as_text_never_trusted(home: Path) -> None:
    script = "<img src=x onerror=alert(1)>"
    enqueue(home, {"id": "evil", "command": f"echo '{script}'", "run_at": NEVER})
    (home / "pending" / "<b>x\r.json").write_text('{"id": "<b>x\\r"}')
    os.symlink("/etc/passwd", home / "pending" / "link.json")
    (home / "dead" / "junk.json").write_bytes(b"\xff\xfe not json")
    with running_server(home) as (base, _httpd):
        rows = {j["id"]: j for j in get_json(f"{base}/api/jobs")["jobs"]}
        assert rows["evil"]["command"] == f"echo '{script}'" and rows["evil"]["invalid"] is None
        assert rows["<b>x\r"]["invalid"] and rows["<b>x\r"]["state"] == "pending"
        assert rows["link"]["invalid"] == "is a symbolic link"
        assert rows["junk"]["invalid"] and rows["junk"]["state"] == "dead"
        assert get(base + "/api/jobs/%3Cb%3Ex%0D")[0] == 404
        status, body = get(base + "/api/jobs/link")
        assert status == 409 and "symbolic link" in body
        _, page = get(base + "/jobs/evil")
        assert script not in page and '<script type="module"' in page  # only our script


def test_a_bug_is_a_500_with_one_line_not_a_traceback(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(home) as (base, httpd):
        app = httpd.RequestHandlerClass.app

        def broken(*_args: Any) -> dict[str, Any]:
            raise RuntimeError("boom")

        app.jobs = broken
        status, body = get(f"{base}/api/jobs")
        assert status == 500 and json.loads(body) == {
            "error": "internal error (RuntimeError); see the dashboard's log"
        }
        assert get(f"{base}/api/status")[0] == 200  # it still serves
    assert "GET /api/jobs: boom" in capsys.readouterr().err


def test_the_page_and_its_assets(home: Path) -> None:
    with running_server(home) as (base, _httpd):
        for path in ("/", "/jobs", "/jobs/some-id", "/queues", "/workers", "/schedules"):
            status, page = get(base + path)
            assert status == 200 and '<script type="module" src="/assets/app.js">' in page, path
        for name in ("app.js", "core.js", "router.js", "jobs.js", "job.js", "charts.js"):
            status, text = get(f"{base}/assets/{name}")
            assert status == 200 and ("import" in text or "export" in text), name
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
        assert get(f"{base}/assets/nothing.js")[0] == 404
        with_headers = __import__("urllib.request").request.urlopen(base + "/", timeout=30)
        policy = with_headers.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy


def test_the_token_cookie_lets_addresses_go_without_the_token(home: Path) -> None:
    import urllib.request

    with running_server(home, token="s3cret") as (base, _httpd):
        assert get(f"{base}/jobs")[0] == 401
        with urllib.request.urlopen(f"{base}/jobs?token=s3cret", timeout=30) as response:
            cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret" not in cookie
        value = cookie.split(";")[0]
        assert get(f"{base}/api/jobs", {"Cookie": value})[0] == 200
        assert get(f"{base}/assets/app.js", {"Cookie": value})[0] == 200
        assert get(f"{base}/api/jobs", {"Cookie": value[:-1] + "0"})[0] == 401
        assert get(f"{base}/api/jobs", {"Cookie": "queuectl_auth=s3cret"})[0] == 401
        assert get(f"{base}/api/jobs", {"Authorization": "Bearer s3cret"})[0] == 200


def test_a_read_only_dashboard_shows_everything_and_changes_nothing(home: Path) -> None:
    enqueue(home, {"id": "w", "command": "true", "run_at": NEVER})
    ok(invoke(home, "queue", "add", "gpu"))
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*.json"))
    with running_server(home, read_only=True) as (base, httpd):
        page = get_json(f"{base}/api/jobs/w")
        assert page["job"]["state"] == "pending" and page["actions"] == []
        assert get_json(f"{base}/api/status")["read_only"] is True
        for path in ("/api/jobs/w/cancel", "/api/jobs/w/hold", "/api/queues/gpu/pause"):
            status, body = act(base, httpd, path)
            assert (status, body) == (403, {"error": "this dashboard is read-only"}), path
        _, html = get(base + "/jobs/w")
        assert '<meta name="queuectl-mode" content="read-only">' in html
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*.json")) == before
    assert where(home, "w") == ["pending"]
    with running_server(home) as (base, _httpd):
        assert get_json(f"{base}/api/status")["read_only"] is False
        assert "cancel" in get_json(f"{base}/api/jobs/w")["actions"]


def test_the_job_page_shows_the_completion_hook_of_the_current_life(home: Path) -> None:
    enqueue(
        home,
        {"id": "hooked", "command": "true", "on_finish": "echo hook-ran >&2; exit 7"},
        {"id": "plain", "command": "true"},
    )
    proc = start_worker(home)  # hooks are run by a worker's leader thread
    try:
        with running_server(home) as (base, _httpd):
            url = f"{base}/api/jobs/hooked"
            wait_until(lambda: get_json(url)["hook"] is not None, message="the hook's result")
            assert get_json(url)["hook"]["exit_code"] == 7
            assert get_json(f"{base}/api/jobs/plain")["hook"] is None
    finally:
        proc.terminate()
        wait_exit(proc)
