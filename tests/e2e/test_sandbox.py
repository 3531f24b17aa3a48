"""The live sandbox (``/sandbox``) in headless Chromium, against a real ``concord dev``.

Each test opens the page in a fresh browser profile, so it signs up a fresh sandbox user
with two devices (laptop A, phone B) sharing its personal space, and drives the page as
a person would: the offline, slow-link and token-expiry switches, the task forms, the
conflict "keep" buttons, the guided scenarios. What the devices show is checked against
the server's own answers over HTTP, with the user's token taken from the page. Console
errors and page errors fail the test. Screenshots (1280x800) go to
``tests/e2e/screenshots/`` (gitignored).

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package, never
``playwright install``: without chromium these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Locator, Page, async_playwright

from core.settings import Settings, with_overrides
from tests.conftest import (
    TEST_ADMIN_TOKEN,
    Services,
    create_database,
    drop_database,
    own_prefix,
)
from tests.e2e.conftest import GatewayProcess
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
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).with_name("screenshots")
T = TypeVar("T")


@pytest.fixture(scope="module")
async def dev_server(settings: Settings, services: Services) -> AsyncIterator[ServerProcess]:
    """``concord dev`` (gateway, projector, scheduler; the sandbox on by default) on a
    database of its own."""
    dsn = await create_database(services.server_dsn)
    local = with_overrides(settings, database_url=dsn, nats_prefix=own_prefix(settings, "sb"))
    server = ServerProcess(local, env={"CONCORD_SCHEDULER_SWEEP_INTERVAL": "5"}, command="dev")
    try:
        await asyncio.to_thread(server.start, 120)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        await drop_database(services.server_dsn, dsn)


class Sandbox:
    """The page, its console, and the steps the tests repeat."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        self.watch(page)

    def watch(self, page: Page) -> None:
        """Collect ``page``'s errors: uncaught exceptions and console errors."""
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.problems.append(f"console: {msg.text}")

    def device(self, key: str) -> Locator:
        return self.page.locator(f'[data-device="{key}"]')

    async def switch(self, key: str, name: str, on: bool) -> None:
        await self.device(key).locator(f'[data-control="{name}"]').set_checked(on)

    async def add_task(self, key: str, title: str) -> None:
        form = self.device(key).locator("form.new-task")
        await form.locator('input[name="title"]').fill(title)
        await form.locator('button[type="submit"]').click()

    async def titles(self, key: str) -> list[str]:
        return await self.device(key).locator('li.task [data-field="title"]').all_text_contents()

    async def figure(self, key: str, name: str) -> str:
        text = await self.device(key).locator(f'[data-figure="{name}"]').text_content()
        return text or ""

    async def task_id(self, key: str, title: str) -> str:
        row = self.device(key).locator("li.task", has_text=title).first
        task = await row.get_attribute("data-task")
        assert task is not None
        return task

    async def edit(self, key: str, task: str, field: str, value: str) -> None:
        box = self.device(key).locator(f'li[data-task="{task}"] [data-edit="{field}"]')
        await box.fill(value)
        await box.press("Tab")  # commit: the input's change event writes the op

    async def js(self, expression: str) -> Any:
        """Evaluate in the page (DevTools protocol: not subject to the page's CSP)."""
        return await self.page.evaluate(expression)

    async def token(self) -> str:
        token: str = await self.js("() => sandbox.a.token()")
        return token

    async def http(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            answer = await client.get(
                path, params=params, headers={"authorization": f"Bearer {await self.token()}"}
            )
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def assert_clean(self) -> None:
        assert not self.problems, self.problems


async def eventually(check: Callable[[], Awaitable[T]], within: float = 20, what: str = "") -> T:
    """The first truthy result of ``check``, polled every 0.2 s; AssertionError after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what or check}")
        await asyncio.sleep(0.2)


def _require_chromium() -> None:
    """Fail (never skip) without Debian's chromium: CI installs it (.ci/run)."""
    assert Path(CHROMIUM).is_file(), "needs Debian chromium (apt-get install -y chromium)"


@pytest.fixture
async def sandbox(dev_server: ServerProcess, tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The page in a fresh Chromium profile: a fresh sandbox user, ready."""
    _require_chromium()
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            box = Sandbox(page, dev_server.url)
            await page.goto(f"{dev_server.url}/sandbox")
            await page.wait_for_selector('body[data-ready="true"]', timeout=30_000)
            for key in ("a", "b"):
                await eventually(partial(_figure_is, box, key, "status", "online"), what="online")
            yield box
        finally:
            await context.close()


@pytest.mark.timeout(180)
async def test_tasks_written_offline_show_up_on_the_other_device(sandbox: Sandbox) -> None:
    await sandbox.switch("b", "offline", True)
    await eventually(lambda: _equals(sandbox.figure("b", "status"), "offline"), what="B offline")
    laptop = ["Buy milk", "Book the train", "Call the bank"]
    for title in laptop:
        await sandbox.add_task("a", title)
    await sandbox.add_task("b", "Water the plants")
    await eventually(lambda: _equals(sandbox.figure("a", "pending"), "0"), what="A drained")
    # Offline, B shows its own task only, queued (title and position), nothing of A's.
    await eventually(lambda: _equals(sandbox.titles("b"), ["Water the plants"]), what="B's own")
    await eventually(partial(_figure_is, sandbox, "b", "pending", "2"), what="B's queue")
    assert await sandbox.titles("b") == ["Water the plants"]
    await sandbox.shot("sandbox-offline")

    await sandbox.switch("b", "offline", False)
    everything = sorted([*laptop, "Water the plants"])
    for key in ("a", "b"):
        await eventually(partial(_titles_are, sandbox, key, everything), what=f"{key} shows all")
    assert await sandbox.figure("b", "pending") == "0"
    listing = await sandbox.http(f"/v1/spaces/{await sandbox.js('() => sandbox.spaceId')}/entities")
    assert sorted(e["fields"]["title"]["value"] for e in listing["entities"]) == everything
    sandbox.assert_clean()


@pytest.mark.timeout(180)
async def test_a_conflict_reads_the_same_on_both_devices_and_the_server(sandbox: Sandbox) -> None:
    await sandbox.add_task("a", "Plan the offsite")
    await eventually(lambda: _equals(sandbox.titles("b"), ["Plan the offsite"]), what="B has it")
    task = await sandbox.task_id("a", "Plan the offsite")
    for key in ("a", "b"):
        await sandbox.switch(key, "offline", True)
        await sandbox.device(key).locator(f'li[data-task="{task}"] button.expand').click()
    await sandbox.edit("a", task, "title", "Offsite in Lisbon")
    await sandbox.edit("b", task, "title", "Offsite in Porto")
    await sandbox.edit("a", task, "assignee", "ana")
    await sandbox.edit("b", task, "assignee", "ben")
    for key in ("a", "b"):
        await sandbox.switch(key, "offline", False)
    for key in ("a", "b"):
        for field in ("title", "assignee"):
            heads = sandbox.device(key).locator(f'[data-conflict="{field}"] [data-head]')
            await eventually(partial(_count_is, heads, 2), what=f"{key} {field} heads")
    await eventually(lambda: _queues_empty(sandbox), what="queues drained")
    conflicts = sandbox.page.locator('#figures [data-figure="conflicts"]')
    await eventually(partial(_int_above, conflicts, 1), what="the figures column saw them")
    await sandbox.shot("sandbox-conflict")

    space = await sandbox.js("() => sandbox.spaceId")
    shown = await sandbox.js(
        f"() => [sandbox.a.state('{space}', 'task', '{task}'),"
        f" sandbox.b.state('{space}', 'task', '{task}')]"
    )
    listing = await sandbox.http(f"/v1/spaces/{space}/entities", type="task")
    server = next(e for e in listing["entities"] if e["entity_id"] == task)
    assert shown[0]["fields"] == shown[1]["fields"] == server["fields"]
    assert server["fields"]["title"]["conflicted"] is True
    assert len(server["fields"]["title"]["heads"]) == 2
    assert sorted(server["fields"]["assignee"]["value"]) == ["ana", "ben"]
    title = server["fields"]["title"]
    assert title["value"] == title["heads"][0]["value"]  # lww: the greatest order key shows

    # Resolve the assignee on the laptop: one value everywhere, the server included.
    keep = sandbox.device("a").locator('[data-conflict="assignee"] [data-head]', has_text="ben")
    await keep.locator("button.keep").click()
    for key in ("a", "b"):
        gone = sandbox.device(key).locator('[data-conflict="assignee"]')
        await eventually(partial(_count_is, gone, 0), what=f"{key} resolved")
    resolved = await sandbox.http(f"/v1/spaces/{space}/entities/task/{task}")
    assert resolved["fields"]["assignee"]["value"] == ["ben"]
    assert resolved["fields"]["assignee"]["conflicted"] is False
    sandbox.assert_clean()


@pytest.mark.timeout(180)
async def test_a_queue_drains_once_after_its_token_expired(sandbox: Sandbox) -> None:
    await sandbox.switch("a", "slow", True)  # 2 ops a push, 0.5 s apart
    await sandbox.switch("a", "offline", True)
    for i in range(8):
        await sandbox.add_task("a", f"Expense report {i}")
    await eventually(partial(_figure_is, sandbox, "a", "pending", "16"), what="16 ops queued")
    queued: list[str] = await sandbox.js("() => sandbox.a.pending().map(op => op.op_id)")
    assert len(queued) == 16  # 8 pushes of 2, 0.5 s apart: the 2 s token expires under them
    ttl = sandbox.device("a").locator('[data-control="ttl"]')
    await ttl.fill("2")
    await sandbox.device("a").locator('[data-control="expiry"] button').click()
    await eventually(
        lambda: _contains(sandbox.figure("a", "notice"), "at next connect"), what="expiry armed"
    )
    await sandbox.switch("a", "offline", False)
    await eventually(lambda: _equals(sandbox.figure("a", "pending"), "0"), within=60, what="drain")

    stats = await sandbox.js("() => sandbox.a.stats")
    assert stats["results"].get("auth_expired", 0) > 0, stats  # the token expired mid-queue
    assert stats["mixedPushes"] == 0, stats  # no push half applied
    assert stats["results"].get("rejected", 0) == 0, stats
    figures = sandbox.page.locator("#figures")
    await eventually(
        lambda: _int_above(figures.locator('[data-figure="auth-expired"]'), 0), what="figure"
    )
    await eventually(
        lambda: _int_above(figures.locator('[data-figure="renewals"]'), 0), what="renewal"
    )
    space = await sandbox.js("() => sandbox.spaceId")
    pulled = await sandbox.http("/v1/sync/pull", space_id=space, after=0, limit=1000)
    stored = [e["op_id"] for e in pulled["events"]]
    assert all(stored.count(op_id) == 1 for op_id in queued), "each op stored exactly once"
    await sandbox.shot("sandbox-expiry")
    sandbox.assert_clean()


SCENARIOS = {
    "offline-replay": "duplicates",
    "conflict": "conflicts",
    "expiry": "auth-expired",
    "missed-reminder": "reminders-fired",
}


@pytest.mark.timeout(300)
async def test_each_guided_scenario_moves_its_figure(
    sandbox: Sandbox, dev_server: ServerProcess
) -> None:
    story = sandbox.page.locator("#story")
    for scenario, figure in SCENARIOS.items():
        await sandbox.page.click(f'button[data-scenario="{scenario}"]')
        await sandbox.page.wait_for_selector(
            f'#story[data-scenario="{scenario}"][data-state="done"], #story[data-state="failed"]',
            timeout=90_000,
        )
        text = await story.text_content() or ""
        assert await story.get_attribute("data-state") == "done", text
        assert await story.get_attribute("data-figure-key") == figure
        before = float(await story.get_attribute("data-before") or "nan")
        after = float(await story.get_attribute("data-after") or "nan")
        assert after > before, (scenario, before, after, text)
        explanation = await story.locator("p.explain").text_content() or ""
        assert "Figure:" in explanation, explanation
        shown = sandbox.page.locator(f'#figures [data-figure="{figure}"]')
        await eventually(partial(_int_at_least, shown, after), what=f"{figure} shown")
    assert await sandbox.page.locator("#figures .charts svg").count() == 6
    drawn = await sandbox.page.eval_on_selector_all(
        "#figures .charts > div", "els => els.map(e => Number(e.dataset.points))"
    )
    assert all(n > 0 for n in drawn), drawn
    await sandbox.shot("sandbox-scenarios")
    sandbox.assert_clean()

    # The admin side saw the same: every failure mode moved in the process's series (it
    # samples every 2 s, so the last firing may take a sample to show), and the
    # diagnostics page draws it.
    await eventually(partial(_series_moved, dev_server.url), within=15, what="series moved")
    page = await sandbox.page.context.new_page()
    sandbox.watch(page)
    await page.goto(f"{dev_server.url}/diagnostics?token={TEST_ADMIN_TOKEN}")
    await page.wait_for_selector('[data-charts="background"] svg', timeout=20_000)
    points = await page.eval_on_selector_all(
        "[data-charts] > div", "els => els.map(e => Number(e.dataset.points))"
    )
    assert len(points) == 6, points
    assert all(n > 0 for n in points), points
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "diagnostics-charts.png"))
    sandbox.assert_clean()


async def test_short_tokens_and_own_figures_over_http(dev_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=30) as http:
        users = []
        for _ in range(2):
            r = await http.post(
                "/v1/auth/register",
                json={
                    "email": f"sb-{secrets.token_hex(5)}@example.com",
                    "password": "correct horse battery",
                    "device_name": "d",
                },
            )
            assert r.status_code == 201, r.text
            users.append(r.json())
        first, other = users
        bearer = {"authorization": f"Bearer {first['access_token']}"}
        assert (await http.post("/v1/sandbox/token", json={"ttl_seconds": 2})).status_code == 401
        for bad in (0, 301):
            r = await http.post("/v1/sandbox/token", json={"ttl_seconds": bad}, headers=bearer)
            assert r.status_code == 400, r.text
        r = await http.post("/v1/sandbox/token", json={"ttl_seconds": 2}, headers=bearer)
        assert r.status_code == 200, r.text
        short = {"authorization": f"Bearer {r.json()['access_token']}"}
        expires = r.json()["access_expires_at"]
        assert (await http.get("/v1/spaces", headers=short)).status_code == 200
        # Never longer than the token presented.
        again = await http.post("/v1/sandbox/token", json={"ttl_seconds": 300}, headers=short)
        assert again.json()["access_expires_at"] == expires
        await asyncio.sleep(2.5)
        expired = await http.get("/v1/spaces", headers=short)
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "auth_expired"
        assert (await http.get("/v1/spaces", headers=bearer)).status_code == 200  # untouched

        space = first["personal_space_id"]
        op = {
            "op_id": "0b0e0c8e-3a0c-4d1e-9a55-2f0d7b8e1c01",
            "space_id": space,
            "entity_type": "task",
            "entity_id": "t-1",
            "kind": "set",
            "field": "title",
            "value": "x",
            "lamport": 1,
        }
        pushed = await http.post(
            "/v1/sync/push", json={"batch_id": "b", "ops": [op]}, headers=bearer
        )
        assert pushed.status_code == 200, pushed.text
        mine = (await http.get("/v1/sandbox/figures", headers=bearer)).json()
        assert mine["client_ops"] == 1
        assert mine["ops_by_device"] == {first["device_id"]: 1}
        assert mine["server_events"] == {"member_added": 1}
        theirs = await http.get(
            "/v1/sandbox/figures", headers={"authorization": f"Bearer {other['access_token']}"}
        )
        assert theirs.json()["client_ops"] == 0  # their own spaces only
        assert (await http.get("/v1/sandbox/figures")).status_code == 401


async def test_the_sandbox_is_off_in_a_plain_gateway(gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        for path in ("/sandbox", "/sandbox/js/concord.js", "/sandbox/assets/main.js"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/v1/sandbox/token", json={"ttl_seconds": 5})).status_code == 404
        assert (await http.get("/v1/sandbox/figures")).status_code == 404


async def test_the_page_and_its_modules_are_served(dev_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=30) as http:
        page = await http.get("/sandbox")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        scripts = page.text.count("<script")
        assert scripts == page.text.count('<script type="module"') == 1  # modules only
        for path in ("/sandbox/js/concord.js", "/sandbox/js/src/idb-store.js"):
            module = await http.get(path)
            assert module.status_code == 200, path
            assert module.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/sandbox/assets/charts.js")).status_code == 200
        for missing in ("/sandbox/js/src/nope.js", "/sandbox/assets/secrets.json"):
            assert (await http.get(missing)).status_code == 404, missing


async def _series_moved(base: str) -> bool:
    """Every failure mode moved in ``/v1/diagnostics/series`` (admin token)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        answer = await http.get(
            "/v1/diagnostics/series", headers={"authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
        )
    series = answer.json()
    rates = series["rates"]
    moved = ("ops_applied", "ops_duplicate", "conflicts", "auth_expired", "auth_renewals")
    late = [v for v in series["reminder_lateness_seconds"] if v is not None]
    return all(max(rates[name]) > 0 for name in moved) and any(v > 1 for v in late)


async def _figure_is(sandbox: Sandbox, key: str, name: str, expected: str) -> bool:
    return await sandbox.figure(key, name) == expected


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _titles_are(sandbox: Sandbox, key: str, expected: list[str]) -> bool:
    return sorted(await sandbox.titles(key)) == expected


async def _contains(value: Awaitable[str], part: str) -> bool:
    return part in await value


async def _count_is(locator: Locator, n: int) -> bool:
    return await locator.count() == n


async def _int_above(locator: Locator, n: int) -> bool:
    text = await locator.text_content() or ""
    return text.isdigit() and int(text) > n


async def _int_at_least(locator: Locator, n: float) -> bool:
    text = await locator.text_content() or ""
    return text.isdigit() and int(text) >= n


async def _queues_empty(sandbox: Sandbox) -> bool:
    return all([await sandbox.figure(k, "pending") == "0" for k in ("a", "b")])
