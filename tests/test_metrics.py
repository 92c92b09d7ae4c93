"""The Prometheus text of ``queuectl metrics`` and ``/metrics`` (queuectl.observe.promtext).

``tests/test_dashboard.py`` checks the numbers end to end over HTTP; these tests pin down the
exposition format itself with a strict little parser (what a Prometheus scrape would reject),
the histogram edge cases, and that the journal cache really re-reads when the journal grows
and only then.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from queuectl.job import JobState
from queuectl.observe import promtext
from queuectl.storage.home import Home
from queuectl.storage.store import Store

from .conftest import run_cli

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


@dataclass
class Family:
    """One metric family as declared by its ``# TYPE`` line, with its samples in order."""

    kind: str
    help: str | None
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """Parse text format 0.0.4 strictly enough to catch what a scraper would refuse: a sample
    before its family's TYPE, a family declared twice, a bad label, a missing final newline."""
    assert text.endswith("\n"), "the format requires a final newline"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"HELP for {name} twice"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name not in families, f"TYPE for {name} twice"
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            families[name] = Family(kind, helps.get(name))
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            family = _family_of(name, families)
            family.samples.append((name, _labels(labels or ""), float(value)))
    return families


def _family_of(sample: str, families: dict[str, Family]) -> Family:
    if sample in families:
        return families[sample]
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and families.get(base, Family("", None)).kind == "histogram":
            return families[base]
    raise AssertionError(f"sample {sample} comes before (or without) its TYPE line")


def _labels(text: str) -> dict[str, str]:
    found = {}
    rest = text
    while rest:
        match = LABEL.match(rest)
        assert match, f"bad label syntax: {text!r}"
        found[match.group(1)] = re.sub(
            r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), match.group(2)
        )
        rest = rest[match.end() :]
    return found


def histogram(family: Family) -> tuple[list[tuple[float, float]], float, float]:
    """(le, cumulative count) pairs, the sum and the count of a histogram family."""
    assert family.kind == "histogram"
    buckets = [(float(labels["le"]), v) for n, labels, v in family.samples if n.endswith("_bucket")]
    total = next(v for n, _, v in family.samples if n.endswith("_sum"))
    count = next(v for n, _, v in family.samples if n.endswith("_count"))
    return buckets, total, count


def by_label(family: Family, key: str) -> dict[str, float]:
    """A family's samples keyed by one label's value."""
    return {labels[key]: value for _, labels, value in family.samples}


def figures(**overrides: Any) -> dict[str, Any]:
    """A hand-made ``snapshot``: render is a pure function of these numbers."""
    base: dict[str, Any] = {
        "jobs": {state.value: 0 for state in JobState},
        "workers": 0,
        "outcomes": {},
        "run_seconds": [],
        "wait_seconds": [],
    }
    return {**base, **overrides}


# ------------------------------------------------------------------ the format


def test_every_family_has_help_and_type_and_every_state_a_gauge() -> None:
    families = parse(promtext.render(figures(workers=3, outcomes={"completed": 2})))
    assert {name: f.kind for name, f in families.items()} == {
        "queuectl_jobs": "gauge",
        "queuectl_workers": "gauge",
        "queuectl_attempts_total": "counter",
        "queuectl_run_seconds": "histogram",
        "queuectl_queue_wait_seconds": "histogram",
    }
    assert all(f.help for f in families.values())
    states = [labels["state"] for _, labels, _ in families["queuectl_jobs"].samples]
    assert states == [state.value for state in JobState]
    assert families["queuectl_workers"].samples == [("queuectl_workers", {}, 3.0)]


def test_buckets_are_cumulative_inclusive_and_end_in_inf_equal_to_count() -> None:
    values = [0.01, 0.02, 5.0, 7200.0]  # on a bound, between bounds, above the last bound
    families = parse(promtext.render(figures(run_seconds=values, wait_seconds=[])))
    buckets, total, count = histogram(families["queuectl_run_seconds"])
    bounds = [le for le, _ in buckets]
    assert bounds == sorted(bounds) and math.isinf(bounds[-1])
    counts = dict(buckets)
    assert counts[0.01] == 1  # le means "less than or equal"
    assert counts[0.05] == 2 and counts[5.0] == 3 and counts[3600.0] == 3
    assert counts[math.inf] == count == 4
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)
    assert total == pytest.approx(sum(values), abs=1e-5)


def test_an_empty_home_still_exposes_every_bucket_at_zero() -> None:
    families = parse(promtext.render(figures()))
    for name in ("queuectl_run_seconds", "queuectl_queue_wait_seconds"):
        buckets, total, count = histogram(families[name])
        assert len(buckets) == len(promtext.BUCKETS) + 1
        assert {c for _, c in buckets} == {0.0} and total == 0 and count == 0
    assert families["queuectl_attempts_total"].samples == []


def test_label_values_are_escaped() -> None:
    odd = 'a"b\\c\nd'
    families = parse(promtext.render(figures(outcomes={odd: 1})))
    [(_, labels, value)] = families["queuectl_attempts_total"].samples
    assert labels == {"outcome": odd} and value == 1


# ------------------------------------------------------------------ from a real home


@pytest.fixture
def resets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fresh per-process tallies, and a record of each time they start over from nothing
    (a full read of the journal's index)."""
    counted: list[int] = []
    real = promtext._Followed._reset

    def counting(self: promtext._Followed) -> None:
        counted.append(1)
        real(self)

    monkeypatch.setattr(promtext, "_followed", {})
    monkeypatch.setattr(promtext._Followed, "_reset", counting)
    return counted


def test_snapshot_counts_states_and_outcomes_and_rereads_only_what_was_appended(
    tmp_path: Path, resets: list[int]
) -> None:
    home_path = tmp_path / "h"
    jobs = [
        {"id": "ok1", "command": "true"},
        {"id": "ok2", "command": "true"},
        {"id": "bad", "command": "exit 3", "max_retries": 1},
    ]
    lines = "".join(json.dumps(j) + "\n" for j in jobs)
    assert run_cli(home_path, "enqueue", "-", input=lines).returncode == 0
    assert run_cli(home_path, "config", "set", "backoff-max", "0.1").returncode == 0
    assert run_cli(home_path, "worker", "start", "--burst", timeout=120).returncode == 0
    store = Store(Home(home_path).ensure())

    first = parse(promtext.render(promtext.snapshot(store)))
    assert by_label(first["queuectl_jobs"], "state") == {
        **{s.value: 0 for s in JobState},
        "completed": 2,
        "dead": 1,
    }
    assert by_label(first["queuectl_attempts_total"], "outcome") == {
        "completed": 2,
        "failed": 1,
        "dead": 1,
    }
    _, _, runs = histogram(first["queuectl_run_seconds"])
    _, _, waits = histogram(first["queuectl_queue_wait_seconds"])
    assert runs == waits == 4  # one observation per attempt in both histograms
    assert len(resets) == 1

    assert run_cli(home_path, "enqueue", json.dumps({"command": "true"})).returncode == 0
    grown = parse(promtext.render(promtext.snapshot(store)))
    assert len(resets) == 1, "a grown journal was read whole, not from where it grew"
    assert by_label(grown["queuectl_jobs"], "state")["pending"] == 1
    assert by_label(grown["queuectl_attempts_total"], "outcome") == by_label(
        first["queuectl_attempts_total"], "outcome"
    )


def test_counters_never_go_down_when_the_journal_is_compacted(
    tmp_path: Path, resets: list[int]
) -> None:
    """Compaction folds the attempts away, its snapshot keeps their totals: a Prometheus
    counter must never decrease."""
    home_path = tmp_path / "h"
    jobs = "".join(
        json.dumps({"command": f"exit {n % 2}", "max_retries": 0}) + "\n" for n in range(6)
    )
    assert run_cli(home_path, "enqueue", "-", input=jobs).returncode == 0
    assert run_cli(home_path, "worker", "start", "--burst", timeout=120).returncode == 0
    store = Store(Home(home_path).ensure())
    before = parse(promtext.render(promtext.snapshot(store)))
    assert run_cli(home_path, "journal", "compact", "--retention", "0s").returncode == 0
    after = parse(promtext.render(promtext.snapshot(store)))
    assert len(resets) == 2  # compaction replaced the files: read again from nothing
    assert (
        by_label(after["queuectl_attempts_total"], "outcome")
        == by_label(before["queuectl_attempts_total"], "outcome")
        == {"completed": 3, "dead": 3}
    )
    for name in ("queuectl_run_seconds", "queuectl_queue_wait_seconds"):
        assert histogram(after[name]) == histogram(before[name])
    # a fresh process (queuectl metrics) agrees
    text = run_cli(home_path, "metrics").stdout
    assert by_label(parse(text)["queuectl_attempts_total"], "outcome") == {
        "completed": 3,
        "dead": 3,
    }


def test_the_follower_reads_appends_and_waits_for_a_torn_line(tmp_path: Path) -> None:
    from queuectl.storage.journal import Follower

    home_path = tmp_path / "h"
    assert run_cli(home_path, "enqueue", json.dumps({"id": "a", "command": "true"})).returncode == 0
    store = Store(Home(home_path).ensure())
    follower = Follower(store.journal)
    seen: list[str] = []
    started: list[int] = []
    follower.advance(lambda: started.append(1), lambda fields, _s: seen.append(fields[0]))
    assert seen == ["a"] and started == [1]
    assert run_cli(home_path, "enqueue", json.dumps({"id": "b", "command": "true"})).returncode == 0
    segment = home_path / "journal" / "00000001.log"
    index = home_path / "journal" / "00000001.log.idx"
    data, index_data = segment.read_bytes(), index.read_bytes()
    line_b = data.splitlines(keepends=True)[1]
    segment.write_bytes(data[: -len(line_b)] + line_b[:30])  # a writer caught mid-append
    index.write_bytes(index_data.splitlines(keepends=True)[0])
    follower.advance(lambda: started.append(1), lambda fields, _s: seen.append(fields[0]))
    assert seen == ["a"]
    segment.write_bytes(data)  # ... and done (its index line not written yet)
    follower.advance(lambda: started.append(1), lambda fields, _s: seen.append(fields[0]))
    assert seen == ["a", "b"]
    index.write_bytes(index_data)  # the index catches up: nothing is counted twice
    follower.advance(lambda: started.append(1), lambda fields, _s: seen.append(fields[0]))
    assert seen == ["a", "b"] and started == [1]


def test_tallies_never_mix_two_homes_with_equal_sizes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from queuectl.cli.main import cli

    stores = []
    for name, command in (("aaa", "true"), ("bbb", "exit 1")):
        home = tmp_path / name
        spec = json.dumps({"id": name, "command": command, "max_retries": 0})
        assert CliRunner().invoke(cli, ["--home", str(home), "enqueue", spec]).exit_code == 0
        assert run_cli(home, "worker", "start", "--burst", timeout=120).returncode == 0
        stores.append(Store(Home(home)))
    assert dict(promtext.tallies(stores[0]).outcomes) == {"completed": 1}
    assert dict(promtext.tallies(stores[1]).outcomes) == {"dead": 1}
