#!/usr/bin/env python3
"""Regenerate the dashboard screenshots in ``docs/`` with headless Chromium.

Usage: python tools/screenshots.py [--out docs] [--keep]

It builds a demo home in a temporary folder (queues, finished, dead, retrying, held and
blocked jobs, a job whose command holds markup, and one job running and printing), runs a
real ``queuectl dashboard`` on a free loopback port and saves, under ``--out``:

- ``dashboard-overview.png``, ``dashboard-jobs.png``, ``dashboard-job.png`` (light theme,
  1280 px wide), ``dashboard-dark.png`` (the job list with ``prefers-color-scheme: dark``)
  and ``dashboard-phone.png`` (the overview in a 390 px window).

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and ``selenium`` (in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUEUECTL = [sys.executable, "-m", "queuectl"]


def queuectl(home: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*QUEUECTL, "--home", str(home), *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"queuectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def enqueue(home: Path, *jobs: dict[str, Any]) -> None:
    queuectl(home, "enqueue", "-", stdin="".join(json.dumps(j) + "\n" for j in jobs))


def demo_home(home: Path, gate: Path) -> None:
    """Jobs in every state, through real workers, so the journal has real attempts."""
    home.mkdir()
    queuectl(home, "queue", "add", "gpu", "--parallel", "1")
    queuectl(home, "queue", "add", "reports")
    builds = [
        {"id": f"build-{i}", "command": f"echo compiling part {i}; sleep 0.0{i % 7}"}
        for i in range(1, 25)
    ]
    enqueue(
        home,
        *builds,
        {
            "id": "backup-db",
            "command": "echo dumping; exit 3",
            "max_retries": 1,
            "labels": ["nightly"],
        },
        {
            "id": "backup-files",
            "command": "rsync -a /srv/ /backup/srv/ 2>&1 | tail -1; true",
            "labels": ["nightly"],
        },
        {"id": "lint", "command": "echo '<script>alert(1)</script>'; printf 'bell\\a\\n'"},
        {
            "id": "eval-7",
            "command": "python eval.py --model m7 || exit 2",
            "queue": "gpu",
            "max_retries": 0,
        },
    )
    burst = subprocess.run(
        [*QUEUECTL, "--home", str(home), "worker", "start", "--burst", "--count", "4"],
        capture_output=True,
        timeout=300,
    )
    if burst.returncode != 0:
        raise SystemExit(f"the demo worker failed: {burst.stderr.decode()[-500:]}")
    queuectl(home, "pause", "reports")
    queuectl(home, "config", "set", "backoff-base", "600")  # a retry waits in failed/
    enqueue(
        home,
        {
            "id": "report-weekly",
            "command": "python report.py --week",
            "queue": "reports",
            "labels": ["weekly"],
        },
        {"id": "deploy", "command": "./deploy.sh production", "held": True, "priority": 5},
        {"id": "publish", "command": "./publish.sh", "after": ["deploy"]},
        {"id": "fetch-feeds", "command": "echo 'feed timed out' >&2; exit 1", "max_retries": 5},
    )
    train = (
        "for i in $(seq 1 12); do"
        ' echo "epoch $i/40 loss=0.$((90 - i * 3)) acc=0.$((50 + i * 2))"; done;'
        f" while [ ! -e {gate} ]; do sleep 0.1; done"
    )
    enqueue(home, {"id": "train-resnet", "command": train, "queue": "gpu", "labels": ["ml"]})


@contextmanager
def dashboard(home: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [*QUEUECTL, "--home", str(home), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()[3].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chrome(profile: Path, width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def wait_for(driver: Any, css: str, text: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d: Any) -> bool:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return bool(found) and (text is None or any(text in f.text for f in found))

    WebDriverWait(driver, 30, poll_frequency=0.05).until(ready)


def shoot(driver: Any, path: Path) -> None:
    """The whole page (the window grown to the document's height), then the window back."""
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], min(max(height, size["height"]), 1400))
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    driver.save_screenshot(str(path))
    driver.set_window_size(size["width"], size["height"])
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--keep", action="store_true", help="keep the demo home")
    args = parser.parse_args()
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        print("needs /usr/bin/chromium and /usr/bin/chromedriver", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="queuectl-shots-"))
    home, gate = scratch / "home", scratch / "gate"
    demo_home(home, gate)
    worker = subprocess.Popen(
        [*QUEUECTL, "--home", str(home), "worker", "start", "--count", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = None
    try:
        with dashboard(home) as base:
            driver = chrome(scratch / "profile", 1280, 900)
            driver.get(base + "/")
            wait_for(driver, "#count-processing .tile-count", "1")
            wait_for(driver, "svg.chart")
            shoot(driver, args.out / "dashboard-overview.png")
            driver.get(base + "/jobs")
            wait_for(driver, "#jobs tbody tr")
            shoot(driver, args.out / "dashboard-jobs.png")
            driver.get(base + "/jobs/train-resnet")
            wait_for(driver, "#output-text", "epoch 12/40")
            shoot(driver, args.out / "dashboard-job.png")
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
            driver.get(base + "/jobs?sort=id&order=asc")
            wait_for(driver, "#jobs tbody tr")
            shoot(driver, args.out / "dashboard-dark.png")
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
            driver.set_window_size(390, 844)
            driver.get(base + "/")
            wait_for(driver, "svg.chart")
            shoot(driver, args.out / "dashboard-phone.png")
    finally:
        if driver is not None:
            driver.quit()
        gate.touch()
        worker.terminate()
        worker.wait(timeout=60)
        if args.keep:
            print(f"demo home kept in {home}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
