"""The dashboard application: requests in, JSON out; knows nothing of HTTP.

It owns the in-memory pictures that make a 100,000-job home cheap to look at: the job
catalog (``catalog``), its sorted orders (``joblist``) and the charts (``series``), all
brought up to date by one refresh that reads the journal's new index lines and lists only
folders that changed. A refresh runs at most every ``REFRESH_SECONDS`` however many
requests arrive (a page polls several endpoints at once), and right away after the
dashboard itself changed something, so a click is reflected in the next answer.

The first refresh reads every job file once (seconds at 100,000 jobs); it starts in the
background as soon as the server does, and until it is done the views that need it
answer 503 with its progress, which the page shows, while the job pages, the queues and
the workers are served at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Final

from queuectl.errors import QueueError, describe
from queuectl.job import JobState
from queuectl.observe.promtext import render, snapshot
from queuectl.storage.registry import live_workers
from queuectl.storage.store import Store
from queuectl.web import actions, views
from queuectl.web.catalog import Catalog
from queuectl.web.feed import JournalFeed
from queuectl.web.joblist import JobLists, JobQuery
from queuectl.web.output import read_output
from queuectl.web.series import Series

__all__ = ["REFRESH_SECONDS", "Dashboard", "Warming"]

REFRESH_SECONDS: Final = 0.5
WARM_WAIT_SECONDS: Final = 2.0
"""How long a request waits for the first refresh before it answers 503."""

MAX_FACET_LABELS: Final = 200


class Warming(QueueError):
    """The first read of the home is still going on (HTTP 503, with its progress)."""

    def __init__(self, message: str, progress: dict[str, int]) -> None:
        super().__init__(message)
        self.progress = progress


class Dashboard:
    def __init__(self, store: Store, token: str | None = None, read_only: bool = False) -> None:
        self.store = store
        self.token = token
        self.read_only = read_only
        """Serve the views, refuse every change (``dashboard --read-only``)."""
        self.csrf = secrets.token_urlsafe(24)
        self.series = Series()
        self.feed = JournalFeed(store.journal, self.series)
        self.catalog = Catalog(store.home)
        self.lists = JobLists(self.catalog)
        self._guard = threading.Lock()
        self._ready = threading.Event()
        self._next_refresh = 0.0
        self.warm_error: str | None = None

    # ---------------------------------------------------------------- keeping current

    def warm(self) -> None:
        """The first refresh (run in a thread by ``serve``)."""
        try:
            with self._guard:
                self._refresh()
        except Exception as exc:  # the next request tries again, and says why meanwhile
            self.warm_error = describe(exc)
        finally:
            self._ready.set()

    def _refresh(self) -> None:
        touched = self.feed.advance()
        self.catalog.refresh(touched)
        self._next_refresh = time.monotonic() + REFRESH_SECONDS

    def _current(self) -> Catalog:
        """The catalog, refreshed if it is older than ``REFRESH_SECONDS``; call with the
        guard held."""
        if time.monotonic() >= self._next_refresh:
            self._refresh()
        return self.catalog

    def _wait_ready(self) -> None:
        if self._ready.wait(WARM_WAIT_SECONDS):
            return
        progress = {"read": self.catalog.read_files, "files": self.catalog.listed_files}
        raise Warming(
            f"reading the home's job files ({progress['read']} of {progress['files']})",
            progress,
        )

    def changed(self) -> None:
        """Something was just changed through the dashboard: refresh on the next request."""
        self._next_refresh = 0.0

    def _catalog_if_ready(self) -> Catalog | None:
        """The current catalog without waiting for the first refresh (None meanwhile)."""
        if not self._ready.is_set():
            return None
        with self._guard:
            return self._current()

    # ---------------------------------------------------------------- views

    def status(self) -> dict[str, Any]:
        """``status --json``'s counts and workers (the API's first endpoint)."""
        catalog = self._catalog_if_ready()
        counts = (
            catalog.counts()
            if catalog is not None
            else {s.value: self.store.folders.count(s) for s in JobState}
        )
        return {
            "jobs": counts,
            "workers": live_workers(self.store.home.workers),
            "read_only": self.read_only,
        }

    def overview(self, range_name: str) -> dict[str, Any]:
        self._wait_ready()
        with self._guard:
            catalog = self._current()
            chart = self.series.chart(range_name, time.time())
            counts = catalog.counts()
            queues = views.queue_rows(self.store, catalog)
        workers = views.worker_rows(self.store)
        return {"counts": counts, "queues": queues, "workers": workers, "chart": chart}

    def jobs(self, query: JobQuery) -> dict[str, Any]:
        self._wait_ready()
        with self._guard:
            catalog = self._current()
            selection = self.lists.select(query)
            counts = catalog.counts()
            labels = sorted(catalog.labels, key=lambda name: -catalog.labels[name])
        rows = views.list_rows(self.store, selection.rows)
        states = sorted(query.states) if query.states else []
        return {
            "state": states[0] if len(states) == 1 else None,
            "page": query.page,
            "page_size": query.page_size,
            "total": selection.total,
            "jobs": rows,
            "facets": {
                "counts": counts,
                "queues": self.store.queues.names(),
                "labels": sorted(labels[:MAX_FACET_LABELS]),
            },
        }

    def job(self, job_id: str) -> dict[str, Any]:
        detail = views.job_detail(self.store, self._catalog_if_ready(), job_id)
        if self.read_only:
            detail["actions"] = []
        return detail

    def output(self, job_id: str, run: int, stream: str, offset: int | None) -> dict[str, Any]:
        self.store.folders.load(job_id)  # NotFound for an unknown id
        return read_output(self.store, job_id, run, stream, offset)

    def queues(self) -> dict[str, Any]:
        return {"queues": views.queue_rows(self.store, self._catalog_if_ready())}

    def workers(self) -> dict[str, Any]:
        return {"workers": views.worker_rows(self.store)}

    def schedules(self) -> dict[str, Any]:
        return {"schedules": views.schedule_rows(self.store)}

    def metrics(self) -> str:
        return render(snapshot(self.store))

    # ---------------------------------------------------------------- changes

    def job_action(self, job_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return actions.job_action(self.store, job_id, action, body)
        finally:
            self.changed()

    def queue_action(self, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return actions.queue_action(self.store, name, action, body)
        finally:
            self.changed()

    def schedule_action(self, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return actions.schedule_action(self.store, name, action, body)
        finally:
            self.changed()
