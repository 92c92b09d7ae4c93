"""The man pages in ``queuectl/man/man1`` are what ``tools/make_manpages.py`` makes from
today's click definitions: a changed option or help text without regenerated pages fails
here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "queuectl" / "man" / "man1"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:click_man")


def _tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_manpages", ROOT / "tools" / "make_manpages.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_manpages"] = module
    spec.loader.exec_module(module)
    return module


def test_man_pages_match_the_commands(tmp_path: Path) -> None:
    pytest.importorskip("click_man")
    fresh = {p.name: p.read_text() for p in _tool().generate(tmp_path / "man1")}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.1")}
    assert sorted(fresh) == sorted(committed), "run: python tools/make_manpages.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale man pages {stale}: run python tools/make_manpages.py"


def test_every_command_has_a_page() -> None:
    names = {p.stem for p in COMMITTED.glob("*.1")}
    for expected in ("queuectl", "queuectl-add", "queuectl-worker-start", "queuectl-schedule-add"):
        assert expected in names
