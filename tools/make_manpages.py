"""Write the man pages (``queuectl/man/man1/*.1``) from the click definitions.

click-man (a dev tool: ``pip install click-man``) renders each command's help as a page;
the pages are committed and installed with the package (``share/man/man1``), and
``tests/test_manpages.py`` fails when they no longer match the commands. Run this after
changing a command's help, options or arguments:

    python tools/make_manpages.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "queuectl" / "man" / "man1"
DATE = "2026-12-01"
"""The date in each page's header: fixed, so regenerating unchanged help changes no file."""


def generate(target: Path) -> list[Path]:
    """Write every page into ``target`` (emptied first); the paths written."""
    from click_man.core import write_man_pages

    from queuectl import __version__
    from queuectl.cli.main import COMMANDS, cli

    context = click.Context(cli)
    for name in COMMANDS:  # the group loads commands lazily; click-man walks .commands
        command = cli.get_command(context, name)
        assert command is not None
        cli.add_command(command, name)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    write_man_pages("queuectl", cli, version=__version__, target_dir=str(target), date=DATE)
    return sorted(target.glob("*.1"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=TARGET)
    args = parser.parse_args()
    pages = generate(args.target)
    print(f"wrote {len(pages)} man pages to {args.target}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
