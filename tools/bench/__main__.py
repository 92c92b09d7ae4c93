"""``python tools/bench`` (and, through tools/bench.py, ``python tools/bench.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: make ``bench`` importable by name
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
