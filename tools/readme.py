"""Run the README's examples and write their real output into it (or check that it matches).

An example is a ``console`` block between two markers::

    <!-- example: quickstart -->
    ```console
    $ queuectl add --id hello -- echo hello
    hello
    ```
    <!-- /example -->

Each example runs as one bash script in a fresh, empty ``$HOME`` (so ``~/.queuectl``, the
default home, is new), in ``$HOME/work``, with ``TZ=UTC``; its commands' stdout and stderr
are written under each ``$ `` line. ``--check`` compares instead of writing, after masking
what differs from run to run (times, generated ids, worker ids, pids, durations, column
widths): ``tests/test_readme.py`` runs it, so a README that no longer matches what the
commands print fails the suite.

    python tools/readme.py            # rewrite README.md's examples from a real run
    python tools/readme.py --check    # exit 1 and show the differences if it is stale
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

BLOCK = re.compile(
    r"(?P<head><!-- example: (?P<name>[\w.-]+) -->\n```console\n)"
    r"(?P<body>.*?)(?P<tail>```\n<!-- /example -->)",
    re.DOTALL,
)
MARK = "@@queuectl-readme@@"
TIMEOUT_SECONDS = 120
PARALLEL = 4
"""Examples run side by side, each in a home of its own, so they cannot meet; most of their
time is spent waiting for fsync, not on a CPU."""

MASKS = [
    (re.compile(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{6}"), "<id>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\b\d{8}T\d{6}(?:\.\d{3})?Z\b"), "<stamp>"),
    (re.compile(r"\b[A-Za-z0-9.-]+-\d+-[0-9a-f]{6}\b"), "<worker>"),
    (re.compile(r"\[\d+\]"), "[<pid>]"),
    (re.compile(r"\bpid \d+"), "pid <pid>"),
    (
        re.compile(
            r"(?:in )?\d+(?:\.\d+)? (?:ms|s|min|h|d)\b(?: \d+ (?:s|min|h)\b)?(?: ago)?|\bnow\b"
        ),
        "<when>",
    ),
    (re.compile(r"\b\d+\.\d+s\b"), "<secs>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\(\d+ bytes\)"), "(<n> bytes)"),  # a gzip of timestamps
    (re.compile(r'"(generation|pid|offset|started|finished)": \d+'), r'"\1": <n>'),
    (re.compile(r"\b\d+\.\d+\b"), "<num>"),
    (re.compile(r'"host": "[^"]*"'), '"host": "<host>"'),
    (re.compile(r"^(<worker>)\s+\d+\s+(\d+\s+.*?<when>)\s+\S+\s*$"), r"\1 <pid> \2 <host>"),
    (re.compile(r"[-─]{3,}"), "---"),
]
"""What may differ between two runs of the same example."""


@dataclass
class Example:
    name: str
    commands: list[str]
    span: tuple[int, int]
    """Where the block's body is in the README text."""


def examples(text: str) -> list[Example]:
    found = []
    for match in BLOCK.finditer(text):
        commands: list[str] = []
        pending = ""
        for line in match.group("body").splitlines():
            if pending:
                pending += "\n" + line
            elif line.startswith("$ "):
                pending = line[2:]
            else:
                continue
            if not pending.endswith("\\"):
                commands.append(pending)
                pending = ""
        found.append(Example(match.group("name"), commands, match.span("body")))
    return found


def run(example: Example) -> str:
    """The block's body from a real run: each command, then what it printed."""
    with tempfile.TemporaryDirectory(prefix="queuectl-readme-") as scratch:
        home = Path(scratch)
        (home / "work").mkdir()
        script = ['cd "$HOME/work"']
        for number, command in enumerate(example.commands):
            script.append(f"printf '%s\\n' '{MARK} {number}'")
            script.append(f"{{\n{command}\n}} 2>&1")
        script.append(f"printf '%s\\n' '{MARK} end'")
        script.append("wait")
        env = {
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "TZ": "UTC",
            "LANG": "C.UTF-8",
            "COLUMNS": "100",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        }
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        output = done.stdout.replace(str(home), "~")
    parts = re.split(rf"^{re.escape(MARK)} (\d+|end)\n", output, flags=re.MULTILINE)
    outputs = {
        int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i] != "end"
    }
    body = []
    for number, command in enumerate(example.commands):
        body.append(f"$ {command}\n")
        body.append(outputs.get(number, ""))
    return "".join(body)


def masked(text: str) -> list[str]:
    """The lines that must match, after masking. A worker's log lines (``<time> [<pid>]
    ...``) are compared as a set within each run of them: threads and the committer log in
    whatever order they get there."""
    lines: list[str] = []
    run: list[str] = []
    for line in text.splitlines():
        for pattern, replacement in MASKS:
            line = pattern.sub(replacement, line)
        line = " ".join(line.split())
        if line.startswith("<time> [<pid>] "):
            run.append(line)
            continue
        lines += sorted(run)
        run = []
        if line:
            lines.append(line)
    return lines + sorted(run)


def refresh(text: str) -> tuple[str, dict[str, list[str]]]:
    """(README text with every example's real output, differences by example name)."""
    differences: dict[str, list[str]] = {}
    pieces = []
    position = 0
    found = examples(text)
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:  # each example has its own $HOME
        outputs = list(pool.map(run, found))
    for example, fresh in zip(found, outputs, strict=True):
        start, end = example.span
        old = text[start:end]
        if masked(old) != masked(fresh):
            differences[example.name] = list(
                difflib.unified_diff(masked(old), masked(fresh), "README", "real run", lineterm="")
            )
        pieces += [text[position:start], fresh]
        position = end
    pieces.append(text[position:])
    return "".join(pieces), differences


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the README's examples.")
    parser.add_argument("--check", action="store_true", help="Compare; change nothing.")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    text = args.readme.read_text()
    updated, differences = refresh(text)
    for name, diff in differences.items():
        print(f"example {name} differs:")
        print("\n".join(diff))
    if args.check:
        return 1 if differences else 0
    if updated != text:
        args.readme.write_text(updated)
    print(f"{len(examples(text))} examples run, {len(differences)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
