"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright), served
by ``tmi-cluster dashboard`` for a real cluster on the simulator.

Skipped when Chromium is not installed, except in CI (``.ci/run`` installs it), where that is a
failure. ``TMI_CLUSTER_TEST_SCREENSHOT=FILE`` also saves the screenshot of the dashboard under
load there (the README's is made so).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tmi_cluster import Cluster
from tmi_cluster.simulator import ChatSimulator

from .clusterproc import ProcessCluster
from .conftest import IN_CI
from .helpers import Foreground, run, until
from .test_cli import SCRIPT

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-test-password"
CHANNELS = [f"room{i}" for i in range(12)]
#: Chromium on a closed network: no background connections, no sandbox (root).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _chromium() -> None:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")


@contextlib.contextmanager
def dashboard(cluster: ProcessCluster) -> Iterator[str]:
    """``tmi-cluster dashboard`` for ``cluster`` on a free port; its URL."""
    env = {**cluster.env, "TMI_CLUSTER_WEB__PASSWORD": PASSWORD}
    with Foreground([SCRIPT, "dashboard", "--port", "0"], cluster.folder, env) as dashboard:
        first = dashboard.line()
        match = re.match(r"the dashboard: (http://\S+)", first)
        assert match, first
        yield match.group(1)


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - only where it runs

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@run
async def test_the_dashboard_in_a_browser(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    limits = {
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "1",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "1",
        # a frozen supervisor stays alive for the test's look at a killed worker
        "TMI_CLUSTER_SUPERVISOR__STALE": "60",
    }
    async with ChatSimulator(channels=CHANNELS, rate=300, seed=5) as sim:
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **limits)
        try:
            cluster.start("sup-a")
            await cluster.until(lambda: _running(cluster), 30, "a running worker")
            with dashboard(cluster) as url:
                async with browser() as chromium:
                    await _check(chromium, url, cluster, tmp_path)
        finally:
            await cluster.stop()


async def _running(cluster: ProcessCluster) -> bool:
    return any(s.state == "running" for s in (await cluster.workers()).values())


async def _check(chromium: object, url: str, cluster: ProcessCluster, tmp_path: Path) -> None:
    from playwright.async_api import Browser, expect  # noqa: PLC0415
    from playwright.async_api import Error as PlaywrightError  # noqa: PLC0415

    assert isinstance(chromium, Browser)
    # without credentials: 401 (headless Chromium cannot ask for them: it aborts the page)
    anonymous = await chromium.new_context()
    answer = await anonymous.request.get(url)
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Basic")
    page = await anonymous.new_page()
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        await page.goto(url)
    await anonymous.close()

    context = await chromium.new_context(
        http_credentials={"username": "admin", "password": PASSWORD},
        viewport={"width": 1200, "height": 1000},
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(url.split("/tmi-cluster", maxsplit=1)[0])
            else outside.append(request.url)
        ),
    )
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    status = page.get_by_test_id("status")
    await expect(status).to_have_text("operational", timeout=20_000)
    await expect(page.get_by_test_id("joined")).to_have_text("0")
    await expect(page.get_by_test_id("processes")).to_have_text("1")
    # the supervisor's change of size, in the auto-scaling history
    await expect(page.get_by_test_id("scaled")).to_contain_text("below_minimum")
    await expect(page.get_by_test_id("scaled")).to_contain_text("0 → 1")

    # the numbers follow the cluster: channels joined through the API appear
    async with Cluster(cluster.settings()) as app:
        joined = await app.join(CHANNELS, timeout_s=30)
    assert all(j.ok for j in joined.values()), joined
    await expect(page.get_by_test_id("joined")).to_have_text(str(len(CHANNELS)), timeout=20_000)

    # the search finds a channel and shows its owner process
    [owner] = await cluster.workers()
    await page.fill("#search", "room7")
    rows = page.locator("#channels tbody tr")
    await expect(rows).to_have_count(1, timeout=10_000)
    await expect(rows.first).to_contain_text("room7")
    await expect(rows.first).to_contain_text(owner)
    await expect(rows.first).to_contain_text("joined")
    route = rows.first.locator("td.route")
    await expect(route).to_have_text("irc")
    assert await route.get_attribute("title")  # why: the route's reason, on hover
    await page.fill("#search", "")
    await expect(rows).to_have_count(len(CHANNELS), timeout=10_000)

    # under load: messages per second shown, the chart drawn; the screenshot
    await expect(page.locator("#messages_per_s")).not_to_have_text("0.0", timeout=20_000)
    await page.wait_for_timeout(4_000)  # a few points on the chart
    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("TMI_CLUSTER_TEST_SCREENSHOT"):
        shutil.copy(shot, target)

    # a killed worker: degraded, with the reason; then operational again. Its supervisor is
    # frozen meanwhile (it would replace the worker within a second, between two polls).
    supervisor = cluster.running["sup-a"]
    pid = (await cluster.worker_pids())[owner]
    supervisor.send_signal(signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        try:
            await expect(status).to_have_text("degraded", timeout=30_000)
        except AssertionError:
            reason = await page.get_by_test_id("reason").text_content()
            raise AssertionError(f"not degraded: {await status.text_content()}: {reason}") from None
        await expect(page.get_by_test_id("reason")).to_contain_text("sup-a")
    finally:
        supervisor.send_signal(signal.SIGCONT)
    await expect(status).to_have_text("operational", timeout=60_000)
    await expect(page.get_by_test_id("joined")).to_have_text(str(len(CHANNELS)), timeout=30_000)

    # on a phone: nothing wider than the screen
    phone = await chromium.new_context(
        http_credentials={"username": "admin", "password": PASSWORD},
        viewport={"width": 375, "height": 812},
        is_mobile=True,
    )
    small = await phone.new_page()
    await small.goto(url)
    await expect(small.get_by_test_id("status")).to_have_text("operational", timeout=20_000)
    overflow = await small.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than a phone's screen"
    await phone.close()
    await asyncio.sleep(0)
    assert not errors, errors
    assert not outside, f"requests outside the dashboard: {outside}"
    await context.close()


@run
async def test_the_invite_screen_in_a_browser(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    from playwright.async_api import Browser, expect  # noqa: PLC0415

    from .test_invite import STREAMER, invite_site, stored_rows  # noqa: PLC0415

    async with invite_site(tmp_path, redis_server, redis_prefix) as site, browser() as chromium:
        invite = f"{site.invite}/"
        assert isinstance(chromium, Browser)
        context = await chromium.new_context(viewport={"width": 375, "height": 812})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        # an OAuth error: the streamer cancels on Twitch's page
        await page.goto(invite)
        await page.click("#sign-in")
        await page.wait_for_selector("#login")
        await page.click("#cancel")
        await expect(page.locator("#error")).to_contain_text("Twitch did not grant access")
        await expect(page.locator("#error")).to_contain_text("Nothing was changed")

        # a forged state: Twitch's page is left for a callback with another state
        await page.goto(invite)
        await page.click("#sign-in")
        await page.wait_for_selector("#login")
        answer = await page.goto(f"{site.invite}/callback?code=forged&state=forged")
        assert answer is not None
        assert answer.status == 400
        await expect(page.locator("#error")).to_contain_text("does not match")

        # a replayed callback, and one without a code
        await page.goto(invite)
        await page.click("#sign-in")
        await page.fill("#login", STREAMER)
        await page.click("#authorize")
        await expect(page.locator("#user")).to_contain_text("Streamer1")
        signed_in = page.url
        assert signed_in == invite
        await page.click("#sign-out")
        await expect(page.locator("#sign-in")).to_be_visible()
        await page.click("#sign-in")
        await page.wait_for_selector("#login")
        state = page.url.split("state=", 1)[1].split("&", 1)[0]
        answer = await page.goto(f"{site.invite}/callback?state={state}")
        assert answer is not None
        assert answer.status == 400
        await expect(page.locator("#error")).to_contain_text("sent no code")
        answer = await page.goto(f"{site.invite}/callback?code=x&state={state}")
        assert answer is not None
        assert answer.status == 400
        await expect(page.locator("#error")).to_contain_text("used already")
        assert stored_rows(site.cluster) == []  # nothing changed by any of them
        assert not site.sim.joined(STREAMER)

        # sign in, authorize: the bot joins; revoke: it parts
        await page.goto(invite)
        await page.click("#sign-in")
        await page.fill("#login", STREAMER)
        await page.click("#authorize")
        await expect(page.locator("#user")).to_contain_text("Signed in as Streamer1")
        await page.click("#authorize")
        await expect(page.locator("#flash")).to_contain_text("is in your chat now")
        assert site.sim.joined(STREAMER)
        assert len(stored_rows(site.cluster)) == 1
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the invite screen is {overflow} px wider than a phone's screen"
        await page.click("#revoke")
        await expect(page.locator("#flash")).to_contain_text("left your chat")
        await until(lambda: not site.sim.joined(STREAMER), 15, "the bot parted")
        assert stored_rows(site.cluster) == []
        # its grant is spent: adding the bot again takes a new sign-in
        await expect(page.locator("#sign-in")).to_contain_text("Sign in with Twitch again")
        shot = tmp_path / "invite.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 5_000
        await context.close()
        assert not errors, errors
