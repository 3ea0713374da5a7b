"""The board in a real browser: headless Debian Chromium driven by Playwright, against the whole stack.

The API under gunicorn, a prefork worker and the Tebra simulator over HTTP (tests/conftest.py). One browser
context clicks "Sync now" and waits for the day's patients; a second context moves a patient, and the first
must show it within a second, over /ws. The test writes docs/board.png (the board after the sync).
Chromium comes from the system (``apt-get install chromium``, as .ci/run does): no browser download.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tasks import flow

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("worker")]

CHROMIUM = shutil.which("chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "board.png"
LAUNCH_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARRIVAL_BUDGET_MS = 1000
PLACEHOLDER = "\u2013"  # what the page shows before a fact is known (an en dash)


def clinic_weekday() -> str:
    """A weekday (the simulated clinic is closed at weekends) a few weeks out, clear of other suites' days."""
    day = datetime.now(ZoneInfo("America/Chicago")).date() + timedelta(days=40)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


@pytest.fixture(scope="module")
def api_server(stack_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    """The API as `make run` starts it (APP_ENV=development, loopback): the page takes its token from
    /dev/token, which exists in development only."""
    import requests

    from tests.support.processes import BIN, free_port, spawn, stop, wait_until

    port = free_port()
    log = logs_dir / "api-development.log"
    command = [
        str(BIN / "gunicorn"),
        "-c",
        "app/gunicorn_conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "app.wsgi:app",
    ]
    proc = spawn(command, {**stack_env, "APP_ENV": "development"}, log)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{base}/health", timeout=1).ok, 30, "api", proc, log)
    yield base
    stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's), launched once for the module."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS)
        yield launched
        launched.close()


def open_board(browser: Any, base: str, day: str | None = None) -> Any:
    """A fresh context (its own storage, its own socket) showing the board; waits until it is live."""
    context = browser.new_context(viewport={"width": 1900, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors, except the browser's own log of a 4xx the page expects (no sync yet: 404).
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.errors = errors
    page.goto(f"{base}/" + (f"?date={day}" if day else ""))
    page.wait_for_selector("body[data-ready='true'][data-ws='live']", timeout=15000)
    return page


def test_sync_then_a_change_in_another_context_arrives_live(
    browser: Any, api_server: str, simulator: Any, redis_client: Any
) -> None:
    day = clinic_weekday()
    expected = simulator.appointments(day)
    patients = {str(appt["patient_id"]) for appt in expected}
    assert patients, f"the simulator has appointments on weekday {day}"

    board = open_board(browser, api_server)
    today = datetime.now(ZoneInfo("America/Chicago")).date().isoformat()
    assert board.input_value("#day") == today  # the clinic's today by default
    board.fill("#day", day)  # the date picker moves the board (and its subscriptions) to the day
    board.wait_for_selector(f"#board[data-date='{day}'][data-count='0']")

    started = time.monotonic()
    board.click("#sync-now")
    board.wait_for_selector(f"#board[data-date='{day}'][data-count='{len(patients)}']", timeout=20000)
    synced_s = time.monotonic() - started
    assert board.locator(".card").count() == len(patients)
    assert board.text_content("#last-sync") not in {PLACEHOLDER, "never"}
    SCREENSHOT.parent.mkdir(exist_ok=True)
    board.screenshot(path=str(SCREENSHOT), full_page=True)

    # A second context (another nurse's browser) moves the first patient who can move.
    other = open_board(browser, api_server, day)
    other.wait_for_selector(f"#board[data-count='{len(patients)}']")
    card = other.locator(".card:has(.move:not([hidden]))").first
    hpid = card.get_attribute("data-hpid")
    current = card.get_attribute("data-status")
    assert hpid and current
    target = flow.allowed_next(current)[0]
    moved = f"section[data-column='{target}'] .card[data-hpid='{hpid}'][data-status='{target}']"

    clicked = time.monotonic()
    card.locator("select.next").select_option(target)
    board.wait_for_selector(moved, timeout=ARRIVAL_BUDGET_MS)
    seen_ms = (time.monotonic() - clicked) * 1000
    other.wait_for_selector(moved, timeout=ARRIVAL_BUDGET_MS)

    assert seen_ms < ARRIVAL_BUDGET_MS
    assert board.locator(f".card[data-hpid='{hpid}']").count() == 1
    assert board.text_content("#breaker") != PLACEHOLDER
    print(
        f"\nboard: sync shown after {synced_s:.2f}s; change seen in the other context after {seen_ms:.0f} ms"
    )
    for page in (board, other):
        assert page.errors == [], page.errors
        page.context.close()


def test_the_page_is_served_under_a_strict_policy(api_server: str) -> None:
    import requests

    response = requests.get(f"{api_server}/", timeout=5)
    assert response.status_code == 200 and "text/html" in response.headers["Content-Type"]
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in response.text and "style=" not in response.text
    token = requests.get(f"{api_server}/dev/token", timeout=5)
    assert (
        token.status_code == 200 and token.headers["Cache-Control"] == "no-store"
    )  # APP_ENV=development, dev auth
    assert date.fromisoformat(requests.get(f"{api_server}/board/config", timeout=5).json()["today"])
