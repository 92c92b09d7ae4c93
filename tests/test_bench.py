"""``python tools/bench.py`` runs end to end: a smoke test at ``--tiny`` sizes that every
section produces figures and the report is well formed. No timing is asserted (the figures
of a tiny run are noise); task-spooler rows appear only when ``tsp`` is installed (``.ci/run``
installs it), and the test never installs anything (``--no-install``)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench.py"
SECTIONS = ("drains", "tsp", "latency", "percall", "enqueue", "depth", "readers", "workflows")


@pytest.mark.slow
def test_the_bench_runs_every_section_and_reports_well_formed(tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    homes = tmp_path / "homes"
    command = [sys.executable, str(BENCH), "--tiny", "--no-install", "--dir", str(homes)]
    done = subprocess.run(
        [*command, "--save", str(saved)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(saved.read_text())
    assert not [n for n in report["notes"] if "failed" in n], report["notes"]
    assert any("bytecode" in n for n in report["notes"])  # says how queuectl was run

    figures = report["figures"]
    assert {f["section"] for f in figures} >= set(SECTIONS) - {"tsp"}
    for figure in figures:
        assert isinstance(figure["value"], (int, float)) and math.isfinite(figure["value"])
        assert figure["ok"] in (True, False, None)
        assert (figure["op"] is None) == (figure["target"] is None)
    keys = {f["key"] for f in figures}
    for wanted in (
        "drain_c1_ratio",
        "drain_c4_ratio",
        "drain_c16_ratio",
        "drain_p4_ratio",
        "add_single_ratio",
        "enqueue_single_ratio",
        "status_single_ratio",
        "add_nopyc_single_ratio",
        "latency_start_p50_ms",
        "status_s",
        "list_s",
    ):
        assert wanted in keys

    tsp = shutil.which("tsp") is not None
    assert ("vs tsp" in {f["section"] for f in figures}) == tsp
    sides = report["side_by_side"]
    assert sides, "the side-by-side table is empty"
    assert all((s["tsp"] is not None) == tsp for s in sides)

    table = done.stdout  # the same run's table on stdout
    assert "side by side (same run)" in table.splitlines()[0]
    assert "queuectl vs tsp" in table
    for section in set(SECTIONS) - {"tsp"}:
        assert any(line.startswith(section) for line in table.splitlines()), section
    assert "note: queuectl ran with bytecode" in table
    assert "jobs/s" in table


@pytest.mark.slow
def test_the_bench_runs_the_dask_comparison_with_executor_dask() -> None:
    """``--executor dask`` hands the run to tools/bench_dask.py (tiny sizes: no figure is
    judged, only that both sides ran and the report is well formed)."""
    pytest.importorskip("distributed")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--executor", "dask", "--jobs", "8", "--rounds", "1",
         "--count", "4", "--workers", "1", "--nthreads", "2", "--latency", "3", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert len(report["raw_per_s"]) == len(report["queuectl_per_s"]) == 2  # ABBA
    assert report["ratio_median"] > 0
    for side in ("latency_raw_ms", "latency_queuectl_ms"):
        assert set(report[side]) == {"p50", "p99"}
