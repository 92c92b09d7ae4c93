"""The dashboard in a real browser (selenium + Debian's headless Chromium) against a real
``queuectl dashboard`` process: every view loads, filters and search change the address and
the rows, back and forward restore a view, the job page tails a running command, cancel /
retry / restart / hold / pause change the files on disk, the keyboard alone reaches and
triggers an action, a 390 px window needs no sideways scrolling, the dark theme follows the
system, and hostile job text stays text.

One browser and one home serve the module (each test uses its own jobs), so the whole file
costs a few seconds beyond Chromium's start. Every wait is a WebDriverWait on a condition;
nothing sleeps, nothing asserts on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import start_worker, wait_exit

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NEVER = "2099-01-01T00:00:00Z"
HOSTILE_COMMAND = (
    "echo '<img src=x onerror=window.pwned=1>'; echo '\x1b[31mred\rcr\x07'"
    "  # <script>window.pwned=2</script>"
)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed",
)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

GONE = (NoSuchElementException, StaleElementReferenceException)


def cli(home: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def enqueue(home: Path, *jobs: dict[str, Any]) -> None:
    cli(home, "enqueue", "-", stdin="".join(json.dumps(j) + "\n" for j in jobs))


def where(home: Path, job_id: str) -> list[str]:
    return sorted(p.parent.name for p in home.glob(f"*/{job_id}.json"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser") / "h"
    path.mkdir()
    cli(path, "queue", "add", "gpu")
    cli(path, "queue", "add", "live")
    enqueue(
        path,
        *({"id": f"build-{i}", "command": f"echo part{i}"} for i in (1, 2, 10, 11)),
        {"id": "broken", "command": "echo oops >&2; exit 4", "max_retries": 0},
        {"id": "broken-gpu", "command": "exit 5", "max_retries": 0, "queue": "gpu"},
        {"id": "finished", "command": "echo done"},
        {"id": "hostile", "command": HOSTILE_COMMAND, "labels": ["x"]},
    )
    assert wait_exit(start_worker(path, "--burst")) == 0
    enqueue(
        path,
        {"id": "waiting", "command": "true", "run_at": NEVER},
        {"id": "keyboard", "command": "true", "run_at": NEVER},
        {"id": "backup-db", "command": "pg_dump shop", "run_at": NEVER, "labels": ["nightly"]},
    )
    return path


@pytest.fixture(scope="module")
def base(home: Path) -> Iterator[str]:
    """A real ``queuectl dashboard`` on a free port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "--home", str(home), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        yield line.split()[3].rstrip("/")
    finally:
        proc.terminate()
        wait_exit(proc)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(driver: Any) -> Iterator[Any]:
    """The module's browser, back at desktop size and the light theme after each test."""
    yield driver
    driver.set_window_size(1200, 900)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def until(driver: Any, condition: Callable[[], object], message: str) -> Any:
    """Wait for ``condition`` (elements re-rendered meanwhile count as not yet)."""

    def check(_driver: Any) -> object:
        try:
            return condition()
        except GONE:
            return False

    return WebDriverWait(driver, 60, poll_frequency=0.05).until(check, message)


def text(driver: Any, css: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except GONE:
        return ""


def row_ids(driver: Any) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    return [r.get_attribute("data-id") for r in rows]


def click(driver: Any, css: str) -> None:
    """Click the element now matching ``css``; a refresh may replace it between the find
    and the click, and then the click is tried again."""

    def attempt() -> bool:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True

    until(driver, attempt, f"a click on {css}")


def confirm(driver: Any) -> None:
    until(driver, lambda: driver.find_element(By.ID, "dialog-confirm").is_displayed(), "dialog")
    click(driver, "#dialog-confirm")


def heading(driver: Any) -> str:
    return text(driver, "main h1")


# ------------------------------------------------------------------ views and addresses


def test_every_view_loads_and_back_forward_restore_it(page: Any, base: str) -> None:
    page.get(base + "/")
    until(page, lambda: text(page, "#count-completed .tile-count") == "6", "the overview's counts")
    assert text(page, "#count-dead .tile-count") == "2"
    until(page, lambda: page.find_elements(By.CSS_SELECTOR, "svg.chart"), "the charts")
    views = [("Jobs", "/jobs"), ("Queues", "/queues"), ("Workers", "/workers"),
             ("Schedules", "/schedules")]  # fmt: skip
    for name, path in views:
        click(page, f'header nav a[href="{path}"]')
        until(page, lambda name=name: heading(page) == name, f"the {name} view")
        assert page.current_url == base + path
        assert page.find_element(By.CSS_SELECTOR, "[aria-current=page]").text == name
    page.back()
    until(page, lambda: heading(page) == "Workers", "back to workers")
    page.back()
    until(page, lambda: heading(page) == "Queues", "back to queues")
    assert page.current_url == base + "/queues"
    until(page, lambda: "gpu" in text(page, "main"), "the queues' rows")
    page.forward()
    until(page, lambda: heading(page) == "Workers", "forward to workers")
    page.get(base + "/jobs/finished")  # an address typed or shared
    until(page, lambda: text(page, "#job-title") == "finished", "the job page")
    page.get(base + "/nowhere")
    assert "not found" in page.page_source.lower()


def test_filters_search_and_sort_change_the_address_and_the_rows(page: Any, base: str) -> None:
    page.get(base + "/jobs?sort=id&order=asc")
    until(page, lambda: "build-1" in row_ids(page), "the rows")
    builds = [i for i in row_ids(page) if i.startswith("build-")]
    assert builds == ["build-1", "build-2", "build-10", "build-11"]  # natural order
    state = page.find_element(By.ID, "filter-state")
    Select(state).select_by_value("dead")
    until(page, lambda: "state=dead" in page.current_url, "state in the address")
    until(page, lambda: row_ids(page) == ["broken", "broken-gpu"], "only the dead rows")
    queue = page.find_element(By.ID, "filter-queue")
    Select(queue).select_by_value("gpu")
    until(page, lambda: row_ids(page) == ["broken-gpu"], "only gpu's dead row")
    assert "queue=gpu" in page.current_url and "state=dead" in page.current_url
    page.back()
    until(page, lambda: row_ids(page) == ["broken", "broken-gpu"], "back: both dead rows")
    assert "queue=gpu" not in page.current_url
    page.get(base + "/jobs")
    until(page, lambda: row_ids(page), "the rows")
    page.find_element(By.TAG_NAME, "body").send_keys("/")  # the key that jumps to search
    until(page, lambda: page.switch_to.active_element.get_attribute("id") == "search", "focus")
    page.switch_to.active_element.send_keys("PG_DUMP")  # command text, any case
    until(page, lambda: "q=PG_DUMP" in page.current_url, "the search in the address")
    until(page, lambda: row_ids(page) == ["backup-db"], "the matching row")
    page.refresh()  # the address alone gives the same view
    until(page, lambda: row_ids(page) == ["backup-db"], "the same row after a reload")
    assert page.find_element(By.ID, "search").get_attribute("value") == "PG_DUMP"
    page.get(base + "/jobs?label=nightly")
    until(page, lambda: row_ids(page) == ["backup-db"], "the label filter")


# ------------------------------------------------------------------ the job page


def test_the_job_page_tails_a_running_commands_output(page: Any, base: str, home: Path) -> None:
    step, end = home.parent / "step", home.parent / "end"
    command = (
        f"echo first-line; while [ ! -e {step} ]; do sleep 0.02; done; echo second-line; "
        f"while [ ! -e {end} ]; do sleep 0.02; done"
    )
    enqueue(home, {"id": "tail", "command": command, "queue": "live"})
    worker = start_worker(home, "--queue", "live")
    try:
        page.get(base + "/jobs/tail")
        until(page, lambda: "first-line" in text(page, "#output-text"), "the first line")
        assert "live" in text(page, "#output-title").lower()
        assert "second-line" not in text(page, "#output-text")
        step.touch()
        until(page, lambda: "second-line" in text(page, "#output-text"), "the second line, live")
        assert where(home, "tail") == ["processing"]  # it appeared while the job ran
        end.touch()
        until(page, lambda: "completed" in text(page, ".job-title .badge"), "the end")
        assert "first-line\nsecond-line" in text(page, "#output-text")
    finally:
        step.touch()
        end.touch()
        worker.terminate()
        wait_exit(worker)


def test_actions_are_confirmed_and_change_the_files(page: Any, base: str, home: Path) -> None:
    page.get(base + "/jobs/waiting")
    click(page, "#action-cancel")
    click(page, "#dialog-cancel")  # Back: nothing happens
    until(page, lambda: not page.find_elements(By.CSS_SELECTOR, "dialog"), "the dialog closed")
    assert where(home, "waiting") == ["pending"]
    click(page, "#action-cancel")
    confirm(page)
    until(page, lambda: where(home, "waiting") == ["cancelled"], "waiting in cancelled/")
    until(page, lambda: "cancelled" in text(page, ".job-title .badge"), "the new state shown")
    page.get(base + "/jobs/broken")
    click(page, "#action-retry")
    confirm(page)
    until(page, lambda: where(home, "broken") == ["pending"], "broken back in pending/")
    page.get(base + "/jobs/finished")
    click(page, "#action-restart")
    confirm(page)
    until(page, lambda: where(home, "finished") == ["pending"], "finished run again")
    page.get(base + "/queues")
    click(page, "#pause-gpu")
    confirm(page)
    queue_file = home / "queues" / "gpu.json"
    until(page, lambda: json.loads(queue_file.read_text())["paused"] is True, "gpu paused")
    click(page, "#resume-gpu")
    confirm(page)
    until(page, lambda: json.loads(queue_file.read_text())["paused"] is False, "gpu resumed")


def test_phone_width_and_the_keyboard_alone(page: Any, base: str, home: Path) -> None:
    page.set_window_size(390, 844)
    for path in ("/", "/jobs", "/jobs/hostile", "/queues", "/workers"):
        page.get(base + path)
        until(page, lambda: heading(page) not in ("", "Loading…"), f"{path} drawn")
        until(page, lambda: not page.find_elements(By.CSS_SELECTOR, "main > p.muted"), "loaded")
        width = page.execute_script("return document.documentElement.scrollWidth")
        inner = page.execute_script("return window.innerWidth")
        assert width <= inner, f"{path} scrolls sideways at 390 px ({width} > {inner})"
    page.get(base + "/jobs/keyboard")
    until(page, lambda: page.find_elements(By.ID, "action-hold"), "the hold button")
    body = page.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the first stop is the skip link
    assert page.switch_to.active_element.get_attribute("class") == "skip"
    for _ in range(40):
        if page.switch_to.active_element.get_attribute("id") == "action-hold":
            break
        page.switch_to.active_element.send_keys(Keys.TAB)
    assert page.switch_to.active_element.get_attribute("id") == "action-hold"
    page.switch_to.active_element.send_keys(Keys.ENTER)
    until(page, lambda: page.switch_to.active_element.get_attribute("id") == "dialog-confirm",
          "the focus on the dialog's confirm button")  # fmt: skip
    page.switch_to.active_element.send_keys(Keys.ENTER)
    until(page, lambda: where(home, "keyboard") == ["held"], "keyboard held by the keyboard")


def test_the_dark_theme_follows_the_system(page: Any, base: str) -> None:
    def background() -> str:
        return str(page.execute_script("return getComputedStyle(document.body).backgroundColor"))

    page.get(base + "/")
    until(page, lambda: heading(page) == "Overview", "the overview")
    light = background()
    page.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    until(page, lambda: background() != light, "the dark background")
    red, green, blue = (int(c) for c in background()[4:-1].split(",")[:3])
    assert red + green + blue < 150, background()


def test_hostile_job_text_is_shown_as_text(page: Any, base: str) -> None:
    page.get(base + "/jobs?label=x")
    until(page, lambda: row_ids(page) == ["hostile"], "the hostile row")
    assert "<img src=x" in text(page, "#jobs tbody tr")
    page.get(base + "/jobs/hostile")
    until(page, lambda: "<script>" in text(page, "#job-command"), "the command as text")
    until(page, lambda: "<img src=x" in text(page, "#output-text"), "its output as text")
    # Control characters show as their escapes, as the CLI shows them.
    assert "'\\x1b[31mred\\rcr\\x07'" in text(page, "#job-command")
    assert "\\x1b[31mred\\rcr\\x07" in text(page, "#output-text")
    assert page.execute_script("return window.pwned === undefined")
    assert not page.find_elements(By.CSS_SELECTOR, "main img, main script")
