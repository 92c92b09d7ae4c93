"""The jobs view's query: filter, sort and page the catalog's summaries.

Sorting 100,000 summaries from scratch costs ~0.1 s here, too much for every request while
a worker drains. Each order is therefore kept between requests and repaired: summaries
that changed since it was built are dropped and their new versions appended, and Python's
sort (Timsort) merges that short unsorted tail into the long sorted run in about linear
time. Filtering is one pass over the ordered list; the last few filtered results are kept
for as long as nothing changes, so a page polled every 2 s on a quiet queue costs nothing.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from queuectl.web.catalog import Catalog
from queuectl.web.summary import Summary

__all__ = ["PAGE_SIZE", "SORTS", "JobLists", "JobQuery"]

PAGE_SIZE: Final = 50

SORTS: Final = {
    "id": "by_id",
    "updated": "by_updated",
    "created": "by_created",
    "priority": "by_priority",
}
"""Sort name -> the summary's precomputed key (natural id order breaks ties)."""

FILTERED_KEPT: Final = 8


@dataclass(frozen=True)
class JobQuery:
    states: frozenset[str] | None = None
    """None: every state."""
    queue: str | None = None
    label: str | None = None
    text: str | None = None
    """Case-insensitive substring of the id or the command."""
    sort: str = "id"
    descending: bool = False
    page: int = 0
    page_size: int = PAGE_SIZE

    def filter_key(self) -> tuple[object, ...]:
        return (self.states, self.queue, self.label, self.text, self.sort)


@dataclass(frozen=True)
class Selection:
    total: int
    rows: list[Summary]


class JobLists:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._orders: dict[str, tuple[int, list[Summary]]] = {}
        self._filtered: OrderedDict[tuple[object, ...], tuple[int, list[Summary]]] = OrderedDict()

    def ordered(self, sort: str) -> list[Summary]:
        """Every current summary in ascending ``sort`` order."""
        catalog = self.catalog
        key = operator.attrgetter(SORTS[sort])
        cached = self._orders.get(sort)
        if cached is not None and cached[0] == catalog.version:
            return cached[1]
        changed = catalog.changes_since(cached[0]) if cached is not None else None
        if cached is None or changed is None:
            items = sorted(catalog.jobs.values(), key=key)
        else:
            jobs = catalog.jobs
            items = [s for s in cached[1] if s.id not in changed and jobs.get(s.id) is s]
            items.extend(jobs[i] for i in changed if i in jobs)
            items.sort(key=key)
        self._orders[sort] = (catalog.version, items)
        return items

    def select(self, query: JobQuery) -> Selection:
        matching = self._matching(query)
        total = len(matching)
        size = query.page_size
        if query.descending:
            end = max(0, total - query.page * size)
            rows = matching[max(0, end - size) : end][::-1]
        else:
            rows = matching[query.page * size : (query.page + 1) * size]
        return Selection(total, rows)

    def _matching(self, query: JobQuery) -> list[Summary]:
        version = self.catalog.version
        key = query.filter_key()
        kept = self._filtered.get(key)
        if kept is not None and kept[0] == version:
            self._filtered.move_to_end(key)
            return kept[1]
        items = self.ordered(query.sort)
        for test in _tests(query):
            items = [s for s in items if test(s)]
        self._filtered[key] = (version, items)
        self._filtered.move_to_end(key)
        while len(self._filtered) > FILTERED_KEPT:
            self._filtered.popitem(last=False)
        return items


def _tests(query: JobQuery) -> list[Callable[[Summary], bool]]:
    """One predicate per filter in use, the cheapest first."""
    tests: list[Callable[[Summary], bool]] = []
    states, queue, label, text = query.states, query.queue, query.label, query.text
    if states is not None:
        tests.append(lambda s: s.state in states)
    if queue is not None:
        tests.append(lambda s: s.queue == queue)
    if label is not None:
        tests.append(lambda s: label in s.labels)
    if text:
        needle = text.casefold()
        tests.append(lambda s: needle in s.haystack)
    return tests
