"""``queuectl dashboard``: the HTTP side of the dashboard (standard library ``http.server``).

Routes: the page at ``/``, ``/jobs``, ``/jobs/<id>``, ``/queues``, ``/workers`` and
``/schedules`` (one document; the script in it draws the view its address names, so every
view has an address that survives a reload and can be shared), its script and style under
``/assets/``, the JSON API under ``/api/`` and ``/metrics``.

Safety:

- it binds to loopback unless told otherwise, and a non-loopback address needs both an
  explicit ``--allow-remote`` and a ``--token`` (``check_bind``);
- with a token, every request must carry it: ``Authorization: Bearer``, ``?token=``, or
  the cookie the page sets when it is first opened with ``?token=`` (HttpOnly,
  SameSite=Strict, holding a digest of the token, not the token), so that the addresses
  of views can be reloaded and shared without the token in them;
- without a token only loopback ``Host`` names are served (DNS rebinding);
- with ``--read-only`` every POST is refused (403) and the page draws no buttons;
- every POST must carry the page's random CSRF token in ``X-Queuectl-CSRF`` and, when the
  browser sends one, an ``Origin`` of this server;
- the page puts job text on screen only as text (``textContent``), and the Content
  Security Policy allows no inline script at all, so a command containing ``<script>``
  shows as text even if a bug somewhere tried to insert it as markup.

Errors are JSON ``{"error": message}``: 400 for a request that cannot be served as asked,
404 for an unknown job, queue or schedule, 409 when the store refuses a change, 503 while
the first read of the home lasts, and 500 (the details on the server's stderr) for a bug.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from queuectl.errors import NotFound, QueueError, UsageError, describe
from queuectl.job import ID_PATTERN, JobState
from queuectl.storage.store import Store
from queuectl.web import params
from queuectl.web.actions import JOB_ACTIONS, QUEUE_ACTIONS, SCHEDULE_ACTIONS
from queuectl.web.app import Dashboard, Warming
from queuectl.web.assets import ASSETS, page
from queuectl.web.joblist import PAGE_SIZE, SORTS, JobQuery
from queuectl.web.output import STREAMS
from queuectl.web.series import RANGES

__all__ = ["PAGE_SIZE", "Dashboard", "check_bind", "serve"]

LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE: Final = "queuectl_auth"
VIEWS: Final = frozenset({"", "jobs", "queues", "workers", "schedules"})
STATE_NAMES: Final = tuple(state.value for state in JobState)
MAX_PAGE: Final = 10_000_000
MAX_SEARCH: Final = 200
MAX_OFFSET: Final = 1 << 40
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def check_bind(host: str, token: str | None, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless explicitly allowed and protected by a token."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not (allow_remote and token):
        raise UsageError(f"{host} is not a loopback address: pass --allow-remote and --token")


def _digest(token: str) -> str:
    return hashlib.sha256(b"queuectl-dashboard\0" + token.encode()).hexdigest()


# -------------------------------------------------------------------- routes


def _jobs_query(values: dict[str, str]) -> JobQuery:
    state = values.get("state")
    states = None
    if state is not None and state != "all":
        params.choice(state, "state", (*STATE_NAMES, "all"), "all")
        states = frozenset({state})
    return JobQuery(
        states=states,
        queue=params.name(values.get("queue"), "queue"),
        label=params.text(values.get("label"), "label", 128),
        text=params.text(values.get("q"), "q", MAX_SEARCH),
        sort=params.choice(values.get("sort"), "sort", tuple(SORTS), "id"),
        descending=params.choice(values.get("order"), "order", ("asc", "desc"), "asc") == "desc",
        page=params.whole(values.get("page"), "page", 0, MAX_PAGE, default=0),
    )


def _get_api(app: Dashboard, parts: list[str], query: dict[str, list[str]]) -> Any:
    """The answer to ``GET /api/<parts>``; NotFound for no such endpoint."""
    match parts:
        case ["status"]:
            params.single_values(query, ())
            return app.status()
        case ["overview"]:
            values = params.single_values(query, ("range",))
            return app.overview(params.choice(values.get("range"), "range", tuple(RANGES), "1h"))
        case ["jobs"]:
            values = params.single_values(
                query, ("state", "queue", "label", "q", "sort", "order", "page")
            )
            return app.jobs(_jobs_query(values))
        case ["jobs", job_id] if ID_PATTERN.fullmatch(job_id):
            params.single_values(query, ())
            return app.job(job_id)
        case ["jobs", job_id, "output"] if ID_PATTERN.fullmatch(job_id):
            values = params.single_values(query, ("run", "stream", "offset"))
            run = params.whole(values.get("run"), "run", 1, 1 << 31)
            stream = params.choice(values.get("stream"), "stream", STREAMS, "out")
            offset = values.get("offset")
            start = None if offset is None else params.whole(offset, "offset", 0, MAX_OFFSET)
            return app.output(job_id, run, stream, start)
        case ["queues"]:
            params.single_values(query, ())
            return app.queues()
        case ["workers"]:
            params.single_values(query, ())
            return app.workers()
        case ["schedules"]:
            params.single_values(query, ())
            return app.schedules()
    raise NotFound("no such endpoint")


def _post_api(app: Dashboard, parts: list[str], body: dict[str, Any]) -> Any:
    match parts:
        case ["jobs", job_id, action] if ID_PATTERN.fullmatch(job_id) and action in JOB_ACTIONS:
            return app.job_action(job_id, action, body)
        case ["queues", name, action] if ID_PATTERN.fullmatch(name) and action in QUEUE_ACTIONS:
            return app.queue_action(name, action, body)
        case ["schedules", name, action] if (
            ID_PATTERN.fullmatch(name) and action in SCHEDULE_ACTIONS
        ):
            return app.schedule_action(name, action, body)
    raise NotFound("no such action")


def _is_view(path: str) -> bool:
    parts = path.strip("/").split("/")
    if len(parts) == 1:
        return parts[0] in VIEWS
    return len(parts) == 2 and parts[0] == "jobs" and ID_PATTERN.fullmatch(parts[1]) is not None


# -------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    app: Dashboard
    server_version = "queuectl"
    _set_cookie = False
    """Whether this request proved the token itself (then the page sets the cookie)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the dashboard is for looking, its access log is noise

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path, query = self._route()
        try:
            if path.startswith("/api/"):
                self._json(lambda: _get_api(self.app, path[5:].strip("/").split("/"), query))
            elif path == "/metrics":
                self._send(HTTPStatus.OK, self.app.metrics(), "text/plain; version=0.0.4")
            elif path.startswith("/assets/") and path[8:] in ASSETS:
                kind, text = ASSETS[path[8:]]
                self._send(HTTPStatus.OK, text, kind)
            elif _is_view(path):
                html = page(self.app.csrf, self.app.read_only)
                self._send(HTTPStatus.OK, html, "text/html; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, "not found\n", "text/plain; charset=utf-8")
        except Exception as exc:
            self._fail(exc)

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.app.read_only:
            self._send(HTTPStatus.FORBIDDEN, {"error": "this dashboard is read-only"})
            return
        if not self._same_origin_with_csrf():
            self._send(HTTPStatus.FORBIDDEN, {"error": "missing CSRF token or foreign origin"})
            return
        path, _ = self._route()
        try:
            body = self._body()
            if body is None:
                return
            parts = path.strip("/").split("/")
            if parts[0] != "api":
                self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            self._json(lambda: _post_api(self.app, parts[1:], body))
        except Exception as exc:
            self._fail(exc)

    # ---------------------------------------------------------------- plumbing

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        split = urlsplit(self.path)
        return split.path, parse_qs(split.query)

    def _authorized(self) -> bool:
        self._set_cookie = False
        token = self.app.token
        if not token:
            # Without a token only loopback names are served: a foreign Host header means a
            # page on another site reached us through DNS rebinding.
            host = urlsplit("//" + self.headers.get("Host", "")).hostname or ""
            if host in LOOPBACK_NAMES:
                return True
            self._send(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unexpected Host header"})
            return False
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or self._route()[1].get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), token.encode()):
            self._set_cookie = True
            return True
        if hmac.compare_digest(self._cookie().encode(), _digest(token).encode()):
            return True
        self._send(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"})
        return False

    def _cookie(self) -> str:
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return ""
        morsel = jar.get(COOKIE)
        return morsel.value if morsel is not None else ""

    def _same_origin_with_csrf(self) -> bool:
        sent = self.headers.get("X-Queuectl-CSRF", "")
        if not hmac.compare_digest(sent.encode(), self.app.csrf.encode()):
            return False
        origin = self.headers.get("Origin")
        if origin is None:
            return True  # not a browser, or a same-origin request that omits it
        host = self.headers.get("Host", "")
        return urlsplit(origin).netloc == host

    def _body(self) -> dict[str, Any] | None:
        length = self.headers.get("Content-Length", "0") or "0"
        if not (length.isascii() and length.isdigit()):
            self._send(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        if int(length) > params.MAX_BODY_BYTES:
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request body too large"})
            return None
        try:
            return params.json_body(self.rfile.read(int(length)))
        except params.BadRequest as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return None

    def _json(self, produce: Callable[[], Any]) -> None:
        try:
            self._send(HTTPStatus.OK, produce())
        except Warming as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc), "warming": exc.progress})
        except NotFound as exc:
            self._send(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except UsageError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except QueueError as exc:
            self._send(HTTPStatus.CONFLICT, {"error": str(exc)})

    def _fail(self, exc: Exception) -> None:
        """A bug: one line (a traceback with QUEUECTL_DEBUG) on stderr, 500 to the client."""
        print(
            f"queuectl dashboard: {self.command} {self._route()[0]}: {describe(exc)}",
            file=sys.stderr,
        )
        try:
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"internal error ({type(exc).__name__}); see the dashboard's log"},
            )
        except OSError:
            pass  # the client went away

    def _send(self, status: HTTPStatus, body: Any, kind: str = "application/json") -> None:
        text = json.dumps(body) if kind == "application/json" else body
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        if self._set_cookie and self.app.token and kind.startswith("text/html"):
            self.send_header(
                "Set-Cookie",
                f"{COOKIE}={_digest(self.app.token)}; HttpOnly; SameSite=Strict; Path=/",
            )
        self.end_headers()
        self.wfile.write(data)


def serve(
    store: Store, host: str, port: int, token: str | None, read_only: bool = False
) -> ThreadingHTTPServer:
    """A server bound and ready (``serve_forever`` it, or run it in a thread in tests); the
    first read of the home starts in the background at once."""
    app = Dashboard(store, token, read_only)
    handler = type("Handler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=app.warm, name="dashboard-warm", daemon=True).start()
    return server
