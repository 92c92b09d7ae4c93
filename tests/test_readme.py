"""The README is true to a real run, and its command line reference is complete.

- Every ``<!-- example: NAME -->`` block is run by ``tools/readme.py`` in a new ``$HOME`` and
  must print what the README shows (after masking ids, times, pids and durations). Fix a
  failure with ``python tools/readme.py``, which rewrites the examples, and read the diff.
- Every command of the ``queuectl --help`` tree has a row in the reference table, naming each
  of its options.
- The test command at the top of the README installs the same extras as ``.ci/run``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest

from queuectl.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_tool", ROOT / "tools" / "readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_tool"] = module
    spec.loader.exec_module(module)
    return module


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _reference_rows() -> list[str]:
    text = README.read_text()
    start = text.index("## Command line reference")
    end = text.index("\n## ", start + 1)
    return [line for line in text[start:end].splitlines() if line.startswith("| `")]


def _options(command: click.Command) -> list[str]:
    return [
        name
        for param in command.params
        if isinstance(param, click.Option) and "--help" not in param.opts
        for name in param.opts
    ]


def test_readme_examples_match_a_real_run() -> None:
    tool = _tool()
    text = README.read_text()
    assert tool.examples(text), "the README has no examples"
    _, differences = tool.refresh(text)
    report = "\n".join(
        f"example {name} differs (run python tools/readme.py to update):\n" + "\n".join(diff)
        for name, diff in differences.items()
    )
    assert not differences, report


def test_every_example_starts_from_nothing_it_does_not_make() -> None:
    """No example relies on a folder the reader does not have: paths are under ~ or ./."""
    tool = _tool()
    for example in tool.examples(README.read_text()):
        for command in example.commands:
            assert "/tmp/" not in command, f"{example.name}: {command}"


def test_every_command_and_option_is_in_the_reference() -> None:
    rows = _reference_rows()
    add_options = set(_options(cli.get_command(click.Context(cli), "add")))  # type: ignore[arg-type]
    missing = []
    for path, command in _commands(cli):
        row = next((r for r in rows if f"`{path} " in r.split("|")[1] + " "), None)
        if row is None:
            row = next((r for r in rows if r.split("|")[1].strip() == f"`{path}`"), None)
        if row is None:
            missing.append(f"{path}: no row")
            continue
        inherited = add_options if "job options" in row else set()
        for option in _options(command):
            if option not in inherited and not re.search(rf"`[^`]*{re.escape(option)}\b", row):
                missing.append(f"{path}: {option}")
    assert not missing, "not in the README's reference table: " + ", ".join(missing)


def test_global_options_are_in_the_reference() -> None:
    text = README.read_text()
    section = text[text.index("## Command line reference") :]
    for option in ("--home", "--version", "QUEUECTL_HOME", "-h"):
        assert option in section


@pytest.mark.parametrize("needle", ["pip install -e '.[", "pytest -q"])
def test_the_readme_test_command_is_what_ci_runs(needle: str) -> None:
    readme = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(
        line
        for line in readme.splitlines()
        if line.startswith("python3 -m venv") and "pytest" in line
    )
    assert needle in test_line
    extras = re.search(r"pip install -e '(\.\[[^\]]*\])'", test_line)
    assert extras is not None, test_line
    assert f"pip install -q -e '{extras.group(1)}'" in ci, (
        "README and .ci/run install different extras"
    )
    assert re.search(r"^python -m pytest -q$", ci, re.MULTILINE)


def test_every_test_the_readme_names_exists() -> None:
    """``tests/<file>.py::<test>`` and the ``::<test>`` that follow it name real tests."""
    text = README.read_text()
    named = []
    current = None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?::(\w+)`", text):
        current = match.group(1) or current
        assert current is not None, match.group(0)
        named.append((current, match.group(2)))
    assert len(named) > 20
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert not missing, "the README names tests that do not exist: " + ", ".join(missing)
