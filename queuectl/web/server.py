"""``queuectl dashboard``: a small web page and JSON API over the same Store the CLI uses.

Standard library only (``http.server``). Read-only except two POST actions (retry and purge of
a dead job), which go through the same functions as ``dlq retry`` and ``dlq purge``. Nothing
here takes a lock a worker waits for, so an open dashboard does not slow workers down.

Safety: it binds to loopback unless told otherwise, and a non-loopback address needs both an
explicit ``--allow-remote`` and a ``--token`` that every request must carry. State-changing
requests are POSTs that must carry the page's random CSRF token in ``X-Queuectl-CSRF`` and, when
the browser sends one, an ``Origin`` of this server. The page puts job text on screen only with
``textContent``, so a command containing ``<script>`` shows as text.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from queuectl.admin.maintenance import purge
from queuectl.errors import NotFound, QueueError, UsageError
from queuectl.job import ID_PATTERN, JobState, utcnow
from queuectl.observe.attempts import job_attempts
from queuectl.observe.promtext import render, snapshot
from queuectl.storage.registry import live_workers
from queuectl.storage.store import Store

__all__ = ["PAGE_SIZE", "Dashboard", "check_bind"]

PAGE_SIZE: Final = 50
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
LOG_TAIL_BYTES: Final = 4096


def check_bind(host: str, token: str | None, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless explicitly allowed and protected by a token."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not (allow_remote and token):
        raise UsageError(f"{host} is not a loopback address: pass --allow-remote and --token")


class Dashboard:
    """The application: turns requests into Store calls and JSON; knows nothing of HTTP."""

    def __init__(self, store: Store, token: str | None = None) -> None:
        self.store = store
        self.token = token
        self.csrf = secrets.token_urlsafe(24)

    def status(self) -> dict[str, Any]:
        return {
            "jobs": {state.value: self.store.folders.count(state) for state in JobState},
            "workers": live_workers(self.store.home.workers),
        }

    def jobs(self, state: str, page: int) -> dict[str, Any]:
        """One page of a state folder: names are listed and sorted (cheap at 100,000 files);
        only the files on the page are read."""
        chosen = JobState(state)
        names = sorted(
            n
            for n in os.listdir(self.store.home.state_dir(chosen))
            if n.endswith(".json") and not n.startswith(".")
        )
        start = page * PAGE_SIZE
        rows = []
        for name in names[start : start + PAGE_SIZE]:
            try:
                job = self.store.folders.load(name[:-5])
            except QueueError:
                continue
            rows.append(
                {
                    "id": job.id,
                    "state": job.state.value,
                    "command": job.command,
                    "attempts": job.attempts,
                    "updated_at": job.updated_at,
                    "last_error": job.last_error,
                }
            )
        return {
            "state": state,
            "page": page,
            "page_size": PAGE_SIZE,
            "total": len(names),
            "jobs": rows,
        }

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.store.folders.load(job_id)
        return {
            "job": job.to_dict(),
            "attempts": job_attempts(self.store, job_id),
            "logs": self._log_tails(job_id),
        }

    def _log_tails(self, job_id: str) -> dict[str, str]:
        folder = self.store.home.logs / job_id
        tails = {}
        if folder.is_dir():
            for path in sorted(
                folder.iterdir(), key=lambda p: (p.stem.isdigit() and int(p.stem), p.suffix)
            ):
                with open(path, "rb") as handle:
                    size = handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, size - LOG_TAIL_BYTES))
                    tails[path.name] = handle.read().decode("utf-8", "replace")
        return tails

    def retry(self, job_id: str) -> dict[str, Any]:
        job = self.store.retry_dead(job_id, utcnow())
        return {"id": job.id, "state": job.state.value}

    def purge(self, job_id: str) -> dict[str, Any]:
        removed, missing = purge(self.store, [job_id], utcnow())
        if missing:
            raise NotFound(f"job {job_id!r} is not in the dead letter queue")
        return {"id": job_id, "purged": bool(removed)}

    def metrics(self) -> str:
        return render(snapshot(self.store))

    def page(self) -> str:
        return PAGE.replace("__CSRF__", self.csrf)


class _Handler(BaseHTTPRequestHandler):
    app: Dashboard
    server_version = "queuectl"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the dashboard is for looking, its access log is noise

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path, query = self._route()
        if path == "/":
            self._send(HTTPStatus.OK, self.app.page(), "text/html; charset=utf-8")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, self.app.metrics(), "text/plain; version=0.0.4")
        elif path == "/api/status":
            self._json(self.app.status)
        elif path == "/api/jobs":
            state = query.get("state", ["pending"])[0]
            page = query.get("page", ["0"])[0]
            if (
                state not in {s.value for s in JobState}
                or not (page.isascii() and page.isdigit())
                or len(page) > 9
            ):
                self._send(HTTPStatus.BAD_REQUEST, {"error": "bad state or page"})
                return
            self._json(lambda: self.app.jobs(state, int(page)))
        elif path.startswith("/api/jobs/") and ID_PATTERN.fullmatch(path[10:]):
            self._json(lambda: self.app.job(path[10:]))
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if not self._same_origin_with_csrf():
            self._send(HTTPStatus.FORBIDDEN, {"error": "missing CSRF token or foreign origin"})
            return
        path, _ = self._route()
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["api", "jobs"] and ID_PATTERN.fullmatch(parts[2]):
            action = {"retry": self.app.retry, "purge": self.app.purge}.get(parts[3])
            if action is not None:
                self._json(lambda: action(parts[2]))
                return
        self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

    # ---------------------------------------------------------------- plumbing

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        split = urlsplit(self.path)
        return split.path, parse_qs(split.query)

    def _authorized(self) -> bool:
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
        if hmac.compare_digest(given.encode(), token.encode()):
            return True
        self._send(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"})
        return False

    def _same_origin_with_csrf(self) -> bool:
        sent = self.headers.get("X-Queuectl-CSRF", "")
        if not hmac.compare_digest(sent.encode(), self.app.csrf.encode()):
            return False
        origin = self.headers.get("Origin")
        if origin is None:
            return True  # not a browser, or a same-origin request that omits it
        host = self.headers.get("Host", "")
        return urlsplit(origin).netloc == host

    def _json(self, produce: Any) -> None:
        try:
            self._send(HTTPStatus.OK, produce())
        except NotFound as exc:
            self._send(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except UsageError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except QueueError as exc:
            self._send(HTTPStatus.CONFLICT, {"error": str(exc)})

    def _send(self, status: HTTPStatus, body: Any, kind: str = "application/json") -> None:
        data = (json.dumps(body) if kind == "application/json" else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src "
            "'unsafe-inline'; frame-ancestors 'none'",
        )
        self.end_headers()
        self.wfile.write(data)


def serve(store: Store, host: str, port: int, token: str | None) -> ThreadingHTTPServer:
    """A server bound and ready (``serve_forever`` it, or run it in a thread in tests)."""
    handler = type("Handler", (_Handler,), {"app": Dashboard(store, token)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>queuectl</title>
<meta name="csrf" content="__CSRF__">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}#counts span{display:inline-block;margin-right:1em;padding:.3em .6em;
background:#eef;border-radius:4px;cursor:pointer}#counts span.sel{background:#ccf}
table{border-collapse:collapse;margin-top:.8em}td,th{border-bottom:1px solid #ddd;
padding:.25em .6em;text-align:left;vertical-align:top}pre{background:#f6f6f6;padding:.6em;
max-height:20em;overflow:auto}button{margin-right:.4em}.muted{color:#777}
</style></head><body>
<h1>queuectl</h1>
<div id="counts"></div><div id="workers" class="muted"></div>
<div id="list"></div><div id="detail"></div>
<script>
const csrf = document.querySelector('meta[name=csrf]').content;
const token = new URLSearchParams(location.search).get('token');
const q = (u) => token ? u + (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : u;
let state = 'pending', page = 0;
function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
async function getJSON(u) { const r = await fetch(q(u)); return r.json(); }
async function refresh() {
  const s = await getJSON('/api/status');
  const counts = document.getElementById('counts'); counts.replaceChildren();
  for (const [name, n] of Object.entries(s.jobs)) {
    const b = el('span', name + ': ' + n, {id: 'count-' + name});
    if (name === state) b.className = 'sel';
    b.onclick = () => { state = name; page = 0; refresh(); };
    counts.append(b);
  }
  document.getElementById('workers').textContent = s.workers.length + ' live worker(s): ' +
    s.workers.map(w => 'pid ' + w.pid + ' x' + w.threads).join(', ');
  const data = await getJSON('/api/jobs?state=' + state + '&page=' + page);
  const list = document.getElementById('list'); list.replaceChildren();
  const t = el('table', null, {id: 'jobs'});
  const head = el('tr'); ['id', 'command', 'attempts', 'updated', 'last error', ''].forEach(h => head.append(el('th', h)));
  t.append(head);
  for (const j of data.jobs) {
    const tr = el('tr', null, {'data-id': j.id});
    const link = el('a', j.id, {href: '#', class: 'open'});
    link.onclick = (ev) => { ev.preventDefault(); show(j.id); };
    const idCell = el('td'); idCell.append(link); tr.append(idCell);
    [j.command, j.attempts, j.updated_at, j.last_error || ''].forEach(v => tr.append(el('td', v)));
    const actions = el('td');
    if (state === 'dead') {
      actions.append(button('Retry', 'retry-' + j.id, () => act(j.id, 'retry')));
      actions.append(button('Purge', 'purge-' + j.id, () => act(j.id, 'purge')));
    }
    tr.append(actions); t.append(tr);
  }
  list.append(t);
  const pages = Math.max(1, Math.ceil(data.total / data.page_size));
  const nav = el('div', 'page ' + (page + 1) + ' of ' + pages + ' (' + data.total + ' jobs) ');
  if (page > 0) nav.append(button('Previous', 'prev', () => { page--; refresh(); }));
  if (page + 1 < pages) nav.append(button('Next', 'next', () => { page++; refresh(); }));
  list.append(nav);
}
function button(label, id, onclick) { const b = el('button', label, {id}); b.onclick = onclick; return b; }
async function act(id, what) {
  if (what === 'purge' && !confirm('Delete job ' + id + ' for good?')) return;
  const r = await fetch(q('/api/jobs/' + encodeURIComponent(id) + '/' + what),
                        {method: 'POST', headers: {'X-Queuectl-CSRF': csrf}});
  const body = await r.json();
  document.getElementById('detail').replaceChildren(el('p', r.ok ? what + ' ' + id + ': done' : body.error, {id: 'result'}));
  refresh();
}
async function show(id) {
  const d = await getJSON('/api/jobs/' + encodeURIComponent(id));
  const box = document.getElementById('detail'); box.replaceChildren();
  box.append(el('h2', 'job ' + id, {id: 'job-title'}));
  box.append(el('pre', d.job.command, {id: 'job-command'}));
  box.append(el('p', 'state ' + d.job.state + ', attempts ' + d.job.attempts + ', created ' + d.job.created_at));
  const t = el('table', null, {id: 'attempts'});
  const head = el('tr'); ['run', 'outcome', 'exit', 'started', 'finished', 'error'].forEach(h => head.append(el('th', h)));
  t.append(head);
  for (const a of d.attempts) {
    const tr = el('tr');
    [a.run, a.outcome, a.exit_code, a.started_at, a.finished_at, a.error || ''].forEach(v => tr.append(el('td', v)));
    t.append(tr);
  }
  box.append(t);
  for (const [name, text] of Object.entries(d.logs)) { box.append(el('h3', name)); box.append(el('pre', text)); }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
