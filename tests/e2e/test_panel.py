"""The diagnostics page in headless Chromium, against a real ``concord dev`` server.

The page is opened with ``?token=``; every panel must render figures (no error, none
empty); then two lab scenarios run against the same server and the figures the panels
show must change accordingly (replays, conflicts). A wrong token must land on the
sign-in box with an error. A screenshot is saved to a temporary directory and its path
printed. Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright``
package; never ``playwright install``.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from core.settings import Settings, with_overrides
from lab.runner import run_lab
from tests.conftest import (
    TEST_ADMIN_TOKEN,
    Services,
    create_database,
    drop_database,
    own_prefix,
)
from tests.e2e.harness import ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PANELS = ("offline-replay", "conflicts", "auth", "background", "events", "jobs")

#: Skipped where Debian's chromium is missing, except under CI, where that is a failure.
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="needs Debian chromium (apt-get install -y chromium)",
)


@pytest.fixture(scope="module")
async def dev_server(settings: Settings, services: Services) -> AsyncIterator[ServerProcess]:
    """``concord dev`` (gateway, projector, scheduler) on a database of its own."""
    dsn = await create_database(services.server_dsn)
    local = with_overrides(settings, database_url=dsn, nats_prefix=own_prefix(settings, "pn"))
    env = {"CONCORD_ACCESS_TOKEN_TTL": "5", "CONCORD_SCHEDULER_SWEEP_INTERVAL": "5"}
    server = ServerProcess(local, env=env, command="dev")
    try:
        await asyncio.to_thread(server.start, 120)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        await drop_database(services.server_dsn, dsn)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def figures(page: Page) -> dict[str, str]:
    found: dict[str, str] = await page.eval_on_selector_all(
        "[data-figure]",
        "els => Object.fromEntries(els.map(e => [e.dataset.figure, e.textContent]))",
    )
    return found


async def check_panels(page: Page) -> None:
    """Every panel rendered: state ok, figures or rows present, no error text."""
    status = await page.text_content("#status") or ""
    assert not status.startswith("error"), status
    for name in PANELS:
        section = page.locator(f'[data-panel="{name}"]')
        assert await section.get_attribute("data-state") == "ok", name
        cells = await section.locator("dd, tbody td").count()
        assert cells > 0, f"panel {name} is empty"


async def wait_for(
    page: Page, check: Callable[[dict[str, str]], bool], within: float
) -> dict[str, str]:
    deadline = time.monotonic() + within
    while True:
        shown = await figures(page)
        if check(shown) or time.monotonic() > deadline:
            return shown
        await asyncio.sleep(0.5)


@pytest.mark.timeout(400)
async def test_panels_show_live_figures(dev_server: ServerProcess, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 1400, "height": 1600})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    await page.goto(f"{dev_server.url}/diagnostics?token={TEST_ADMIN_TOKEN}")
    await page.wait_for_selector('[data-panel="events"][data-state="ok"]', timeout=20_000)
    assert "token=" not in page.url  # dropped from the address bar
    await check_panels(page)
    before = await figures(page)
    for key in (
        "ops-duplicate",
        "conflicts-total",
        "auth-expired",
        "reminders-fired",
        "job-runs",
        "projector-quarantined",
    ):
        assert before[key].replace(".", "").isdigit(), (key, before[key])
    quarantine = page.locator('[data-panel="events"] table.quarantine tbody td')
    assert await quarantine.first.text_content() == "no quarantined events"

    out = io.StringIO()
    outcomes = await run_lab(
        ["offline-replay", "multi-device-conflict"],
        against=dev_server.url,
        admin_token=TEST_ADMIN_TOKEN,
        out=out,
    )
    assert [o.status for o in outcomes] == ["PASS", "PASS"], out.getvalue()

    def moved(now: dict[str, str]) -> bool:
        return (
            int(now["ops-duplicate"]) > int(before["ops-duplicate"])
            and int(now["conflicts-total"]) >= int(before["conflicts-total"]) + 20
            and int(now["ops-applied"]) >= int(before["ops-applied"]) + 400
        )

    after = await wait_for(page, moved, within=20)
    assert moved(after), (before, after)
    await check_panels(page)
    events = await page.locator('[data-panel="events"] tbody tr').count()
    assert events >= 10, "latest events not listed"
    shots = Path(tempfile.mkdtemp(prefix="concord-panel-"))
    shot = shots / "diagnostics.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"diagnostics screenshot: {shot}")
    assert not problems, problems


async def test_wrong_token_shows_the_sign_in_box(
    dev_server: ServerProcess, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(f"{dev_server.url}/diagnostics?token=not-the-admin-token")
    await page.wait_for_selector("#signin-error:not([hidden])", timeout=20_000)
    assert "refused" in (await page.text_content("#signin-error") or "")
    assert await page.locator("#panels").is_hidden()
    await page.fill("#token", TEST_ADMIN_TOKEN)
    await page.click("#signin button")
    await page.wait_for_selector('[data-panel="auth"][data-state="ok"]', timeout=20_000)
    await check_panels(page)


async def test_the_page_is_behind_the_admin_token(dev_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=30) as http:
        plain = await http.get("/diagnostics")
        assert plain.status_code == 401
        assert plain.json()["error"]["code"] == "unauthenticated"
        browser = await http.get("/diagnostics", headers={"accept": "text/html"})
        assert browser.status_code == 401  # the sign-in box, no figures
        assert 'id="signin"' in browser.text
        assert "default-src 'none'" in browser.headers["content-security-policy"]
        shown = await http.get("/diagnostics", params={"token": TEST_ADMIN_TOKEN})
        assert shown.status_code == 200
        bearer = {"authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
        assert (await http.get("/diagnostics", headers=bearer)).status_code == 200
        assert (await http.get("/v1/diagnostics/activity")).status_code == 401
        activity = await http.get("/v1/diagnostics/activity", headers=bearer)
        assert set(activity.json()) == {
            "latest_events",
            "latest_job_runs",
            "reminders_by_status",
            "dead_reminders",
            "due_backlog",
        }
        assert (await http.get("/diagnostics/assets/diagnostics.js")).status_code == 200
        assert (await http.get("/diagnostics/assets/secrets.json")).status_code == 404
