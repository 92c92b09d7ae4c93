#!/usr/bin/env python3
"""Run the benchmark in tools/bench/: ``python tools/bench.py [--quick] [--only ...] [--json]``.

The code lives in the package next to this file (``bench/``; its docstring describes every
section); this file keeps the command every earlier round and the README use.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench/ package beside us

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
