"""The invite screen, end to end over real sockets: ``tmi-cluster dashboard`` for a real cluster
(``tmi-cluster run`` processes on the simulator, real Redis, SQLite, the Database channel
manager), the simulator's OAuth server playing Twitch. The same flow in a real browser is in
``test_browser.py``."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tmi_cluster.config import load_settings
from tmi_cluster.errors import ConfigError
from tmi_cluster.grants import Cipher, GrantKeyError, Grants
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.store import Store

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import Foreground, free_port, run, until
from .test_cli import SCRIPT

STREAMER = "streamer1"
GRANT_KEY = "k" * 20 + "-invite-test-key-0123456789"
SESSION = "tmi_cluster_invite"
CHANNELS = ["alpha", STREAMER, "streamer2"]

pytestmark = pytest.mark.timeout(120)


def invite_settings(sim: ChatSimulator, port: int, **changed: str) -> dict[str, str]:
    """The variables of a cluster whose invite screen signs in with ``sim``'s OAuth and is
    served on ``port``."""
    oauth = f"http://{sim.host}:{sim.control_port}"
    return {
        "TMI_CLUSTER_CHANNEL_MANAGER__USE": "database",
        "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
        "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
        "TMI_CLUSTER_TWITCH__REDIRECT_URL": (
            f"http://127.0.0.1:{port}/tmi-cluster/invite/callback"
        ),
        "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{oauth}/oauth2",
        "TMI_CLUSTER_TWITCH__API_URL": f"{oauth}/helix",
        "TMI_CLUSTER_TWITCH__GRANT_KEY": GRANT_KEY,
        "TMI_CLUSTER_WEB__PASSWORD": "invite-test-password",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "1",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "1",
        **IDENTITY,
        **changed,
    }


def asgi_environ(folder: Path, **changed: str) -> dict[str, str]:
    """The variables of an app served through its ASGI interface (host ``web``): SQLite in
    ``folder``, a Redis that does not answer, the Database manager, the simulator's client."""
    return {
        "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{folder / 'cluster.db'}",
        "TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0",
        "TMI_CLUSTER_CHANNEL_MANAGER__USE": "database",
        "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
        "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
        "TMI_CLUSTER_TWITCH__REDIRECT_URL": "http://web/tmi-cluster/invite/callback",
        "TMI_CLUSTER_TWITCH__GRANT_KEY": GRANT_KEY,
        **changed,
    }


@dataclass
class Site:
    sim: ChatSimulator
    cluster: ProcessCluster
    #: ``http://127.0.0.1:PORT/tmi-cluster/invite``
    invite: str
    dashboard: Foreground


@contextlib.asynccontextmanager
async def invite_site(
    tmp_path: Path,
    redis_server: str,
    redis_prefix: str,
    *,
    start: bool = True,
    eventsub: bool = False,
    **changed: str,
) -> AsyncIterator[Site]:
    """A cluster (one supervisor, unless not ``start``) and ``tmi-cluster dashboard`` serving
    its invite screen; with ``eventsub``, the simulator's EventSub server too."""
    async with ChatSimulator(
        channels=CHANNELS, control_port=0, eventsub_port=0 if eventsub else None
    ) as sim:
        sim.add_account(BOT, TOKEN)
        port = free_port()
        if eventsub:
            url = f"ws://{sim.host}:{sim.eventsub_port}/ws"
            changed = {"TMI_CLUSTER_TMI__TRANSPORT__EVENTSUB_URL": url, **changed}
        extra = invite_settings(sim, port, **changed)
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **extra)
        try:
            if start:
                cluster.start("sup-a")
                await cluster.until(_running(cluster), 30, "a running worker")
            else:
                done = subprocess.run(
                    [SCRIPT, "install"],
                    cwd=tmp_path,
                    env=cluster.env,
                    capture_output=True,
                    check=False,
                )
                assert done.returncode == 0, done.stderr
            argv = [SCRIPT, "dashboard", "--port", str(port)]
            with Foreground(argv, tmp_path, cluster.env) as dashboard:
                first = dashboard.line()
                assert f"http://127.0.0.1:{port}/tmi-cluster/" in first, first
                yield Site(sim, cluster, f"http://127.0.0.1:{port}/tmi-cluster/invite", dashboard)
        finally:
            await cluster.stop()


def _running(cluster: ProcessCluster) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(s.state == "running" for s in (await cluster.workers()).values())

    return check


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def flash_of(page: str) -> str:
    match = re.search(r'id="flash">([^<]*)<', page)
    return match.group(1) if match else ""


async def consent(
    client: httpx.AsyncClient, authorize_url: str, login: str, decision: str = "authorize"
) -> str:
    """What the streamer does on Twitch's page: the callback URL Twitch sends them back to."""
    page = await client.get(authorize_url)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    answer = await client.post(
        authorize_url.split("?", maxsplit=1)[0],
        data={**fields, "login": login, "decision": decision},
    )
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def sign_in(client: httpx.AsyncClient, site: Site, login: str = STREAMER) -> str:
    """The whole sign-in; the invite page after it."""
    start = await client.get(f"{site.invite}/login")
    assert start.status_code == 303
    callback = await consent(client, start.headers["location"], login)
    back = await client.get(callback)
    assert back.status_code == 303, back.text
    page = await client.get(f"{site.invite}/")
    assert page.status_code == 200
    return page.text


def stored_rows(cluster: ProcessCluster) -> list[tuple[str, ...]]:
    path = cluster.db.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return list(db.execute("SELECT * FROM tmi_cluster_grants"))


@run
async def test_a_streamer_authorizes_then_revokes_the_bot(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with (
        invite_site(tmp_path, redis_server, redis_prefix) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        assert site.dashboard.line() == f"the invite screen: {site.invite}/\n"
        page = await client.get(f"{site.invite}/")
        assert page.status_code == 200
        assert f"{BOT} is a chat bot, invited to 0 channels." in page.text
        assert "Sign in with Twitch" in page.text
        # the sign-in starts on the redirect URL's site, where Twitch sends the browser back
        assert f'href="{site.invite}/login"' in page.text
        # the page sets no cookie until a sign-in starts; the security headers are there
        assert "set-cookie" not in page.headers
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers.get_list("x-frame-options") == ["DENY"]  # once, not once per layer

        start = await client.get(f"{site.invite}/login")
        cookie = start.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Path=/tmi-cluster/invite" in cookie
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["scope"] == ["channel:bot"]
        assert query["redirect_uri"] == [f"{site.invite}/callback"]
        callback = await consent(client, start.headers["location"], STREAMER)
        back = await client.get(callback)
        assert back.status_code == 303
        page = await client.get(f"{site.invite}/")
        assert "Signed in as <b>Streamer1</b> (twitch.tv/streamer1)" in page.text
        assert f"{BOT} is not in your chat" in page.text
        assert stored_rows(site.cluster) == []  # nothing stored before the streamer agrees

        added = await client.post(f"{site.invite}/authorize", data={"csrf": csrf_of(page.text)})
        assert added.status_code == 303
        page = await client.get(f"{site.invite}/")
        assert flash_of(page.text) == f"{BOT} is in your chat now."
        assert f"{BOT} is in your chat." in page.text
        assert "invited to 1 channel." in page.text
        assert site.sim.joined(STREAMER)  # the bot is in the chat now

        # the grant is stored, its tokens encrypted: no token in clear in the database
        rows = stored_rows(site.cluster)
        assert len(rows) == 1
        assert rows[0][1] == STREAMER
        with Store(site.cluster.db) as store:
            sealed = store.grants()
        assert len(sealed) == 1
        grant = Grants(GRANT_KEY).open(sealed[0])
        assert grant.access_token not in repr(rows)
        assert grant.refresh_token not in repr(rows)
        assert grant.scopes == ("channel:bot",)
        assert site.sim.oauth.validate(grant.access_token)["login"] == STREAMER
        with pytest.raises(GrantKeyError):
            Grants("another key of at least thirty-two characters").open(sealed[0])
        assert grant.access_token not in repr(grant)

        # signed out and in again: the stored grant is renewed, the old token withdrawn
        out = await client.post(f"{site.invite}/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert site.sim.oauth.live_tokens(STREAMER) == 1  # the stored grant's stays
        page_text = await sign_in(client, site)
        assert f"{BOT} is in your chat." in page_text
        with Store(site.cluster.db) as store:
            renewed = Grants(GRANT_KEY).open(store.grants()[0])
        assert renewed.access_token != grant.access_token
        assert site.sim.oauth.live_tokens(STREAMER) == 1
        assert site.sim.oauth.validate(renewed.access_token)["login"] == STREAMER
        grant = renewed

        # the operator parts the channel: the page says so, and the streamer adds the bot
        # again (no new sign-in: the bot has their grant)
        parted = subprocess.run(
            [SCRIPT, "part", STREAMER],
            cwd=tmp_path,
            env=site.cluster.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert parted.returncode == 0, parted.stderr
        await until(lambda: not site.sim.joined(STREAMER), 15, "the bot parted")
        page = await client.get(f"{site.invite}/")
        assert f"{BOT} may join your chat, but is not in it now." in page.text
        again = await client.post(f"{site.invite}/authorize", data={"csrf": csrf_of(page.text)})
        assert again.status_code == 303
        page = await client.get(f"{site.invite}/")
        assert flash_of(page.text) == f"{BOT} is in your chat now."
        assert site.sim.joined(STREAMER)

        removed = await client.post(f"{site.invite}/revoke", data={"csrf": csrf_of(page.text)})
        assert removed.status_code == 303
        page = await client.get(f"{site.invite}/")
        assert "left your chat" in flash_of(page.text)
        assert f"{BOT} is not in your chat" in page.text
        await until(lambda: not site.sim.joined(STREAMER), 15, "the bot parted")
        assert stored_rows(site.cluster) == []
        assert site.sim.oauth.live_tokens(STREAMER) == 0  # withdrawn at Twitch too

        # a copy of a session whose grant was used and removed cannot add the bot back
        page_text = await sign_in(client, site)
        copied, copied_csrf = dict(client.cookies), csrf_of(page_text)
        await client.post(f"{site.invite}/authorize", data={"csrf": copied_csrf})
        await client.post(f"{site.invite}/revoke", data={"csrf": copied_csrf})
        await until(lambda: not site.sim.joined(STREAMER), 15, "the bot parted again")
        async with httpx.AsyncClient(timeout=20, cookies=copied) as thief:
            replayed = await thief.post(f"{site.invite}/authorize", data={"csrf": copied_csrf})
            assert replayed.status_code == 401
            assert "no longer accepts this sign-in" in replayed.text
            assert stored_rows(site.cluster) == []
            assert not site.sim.joined(STREAMER)
            # signed out: no copy of the session is accepted any more, on any host
            signed_out = await client.post(f"{site.invite}/logout", data={"csrf": copied_csrf})
            assert signed_out.status_code == 303
            page = await client.get(f"{site.invite}/")
            assert "Sign in with Twitch" in page.text
            stale = await thief.post(f"{site.invite}/revoke", data={"csrf": copied_csrf})
            assert stale.status_code == 403
            assert "Sign in with Twitch" in (await thief.get(f"{site.invite}/")).text
        code, err = site.dashboard.stop()
    assert code == 0, err
    # no token, code or secret in what the dashboard wrote
    for secret in (grant.access_token, grant.refresh_token, CLIENT_SECRET, GRANT_KEY):
        assert secret not in err
    # the dashboard logs what streamers do (and only that: no token)
    assert "the invite screen: #streamer1 authorized the bot" in err
    assert "the invite screen: #streamer1 revoked the bot" in err
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert grant.access_token not in logs


@run
async def test_forged_replayed_and_refused_callbacks_change_nothing(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with (
        invite_site(tmp_path, redis_server, redis_prefix, start=False) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        # a callback with no sign-in started in this browser
        fresh = await client.get(f"{site.invite}/callback?code=abc&state=xyz")
        assert fresh.status_code == 400
        assert "not started in this browser" in fresh.text

        # a forged state: the code is not even exchanged
        start = await client.get(f"{site.invite}/login")
        callback = await consent(client, start.headers["location"], STREAMER)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        forged = await client.get(f"{site.invite}/callback?code={code}&state=forged")
        assert forged.status_code == 400
        assert "does not match" in forged.text
        assert "Nothing was changed" in forged.text
        # ... the sign-in this browser started still comes back (a forged link does not use
        # it up), once
        assert (await client.get(callback)).status_code == 303
        late = await client.get(callback)
        assert late.status_code == 400
        assert "used already" in late.text
        # two tabs: both sign-ins come back
        first = await client.get(f"{site.invite}/login")
        second = await client.get(f"{site.invite}/login")
        back_one = await consent(client, first.headers["location"], STREAMER)
        back_two = await consent(client, second.headers["location"], STREAMER)
        assert (await client.get(back_two)).status_code == 303
        assert (await client.get(back_one)).status_code == 303
        # every earlier sign-in's grant, never used, was withdrawn at Twitch: one is left
        assert site.sim.oauth.live_tokens(STREAMER) == 1

        # a real sign-in, then its callback replayed
        start = await client.get(f"{site.invite}/login")
        callback = await consent(client, start.headers["location"], STREAMER)
        assert (await client.get(callback)).status_code == 303
        replay = await client.get(callback)
        assert replay.status_code == 400
        assert "used already" in replay.text
        page = await client.get(f"{site.invite}/")
        assert "Signed in as" in page.text  # the replay did not sign anyone out or in

        # the streamer cancels on Twitch's page
        start = await client.get(f"{site.invite}/login")
        cancelled = await consent(client, start.headers["location"], STREAMER, "cancel")
        denied = await client.get(cancelled)
        assert denied.status_code == 400
        assert "Twitch did not grant access: The user denied you access" in denied.text

        # no code
        start = await client.get(f"{site.invite}/login")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        no_code = await client.get(f"{site.invite}/callback?state={state}")
        assert no_code.status_code == 400
        assert "sent no code" in no_code.text

        # a code that Twitch refuses (made up)
        start = await client.get(f"{site.invite}/login")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        bad = await client.get(f"{site.invite}/callback?code=made-up&state={state}")
        assert bad.status_code == 502
        assert "Invalid authorization code" in bad.text

        # a state or a CSRF token that is not ASCII, a body that is not UTF-8: refused in words
        start = await client.get(f"{site.invite}/login")
        odd = await client.get(f"{site.invite}/callback?state=%C3%A9&code=x")
        assert odd.status_code == 400
        assert "does not match" in odd.text
        for body in (b"csrf=%C3%A9", b"csrf=\xff\xfe"):
            refused = await client.post(
                f"{site.invite}/authorize",
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert refused.status_code == 403, refused.text

        # a POST without the session's CSRF token: refused, nothing authorized
        page = await client.get(f"{site.invite}/")
        forged_post = await client.post(f"{site.invite}/authorize", data={"csrf": "guess"})
        assert forged_post.status_code == 403
        assert "CSRF" in forged_post.text
        other = httpx.AsyncClient(timeout=20)
        async with other:
            no_session = await other.post(
                f"{site.invite}/authorize", data={"csrf": csrf_of(page.text)}
            )
        assert no_session.status_code == 403
        assert stored_rows(site.cluster) == []
        with Store(site.cluster.db) as store:
            assert store.authorized_count() == 0


@run
async def test_the_invite_screen_says_why_it_is_closed(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    (tmp_path / "dummy").mkdir()
    async with (
        invite_site(
            tmp_path / "dummy",
            redis_server,
            redis_prefix,
            start=False,
            TMI_CLUSTER_CHANNEL_MANAGER__USE="dummy",
        ) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        moved = await client.get(site.invite)  # the screen's address without its slash
        assert moved.status_code == 307
        assert moved.headers["location"] == "/tmi-cluster/invite/"
        for path in ("/", "/login", "/callback?code=x&state=y"):
            answer = await client.get(site.invite + path)
            assert answer.status_code == 409, path
            assert "lets the bot into every channel" in answer.text
            assert "Back to the invite screen" not in answer.text
        assert (await client.post(f"{site.invite}/authorize", data={})).status_code == 409

    (tmp_path / "unset").mkdir()
    async with (
        invite_site(
            tmp_path / "unset",
            redis_server,
            redis_prefix,
            start=False,
            TMI_CLUSTER_TWITCH__CLIENT_ID="",
            TMI_CLUSTER_TWITCH__GRANT_KEY="",
        ) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        answer = await client.get(f"{site.invite}/")
        assert answer.status_code == 503
        assert "not set up yet" in answer.text
        assert "For the bot's operator: It needs the settings twitch.client_id, " in answer.text
        assert CLIENT_SECRET not in answer.text
        code, err = site.dashboard.stop()
        assert code == 0, err
        assert "the invite screen: off. The invite screen of this bot is not set up yet." in err


@run
async def test_twitch_not_answering_or_refusing_the_secret_is_a_clear_page(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    (tmp_path / "secret").mkdir()
    async with (
        invite_site(
            tmp_path / "secret",
            redis_server,
            redis_prefix,
            start=False,
            TMI_CLUSTER_TWITCH__CLIENT_SECRET="not-the-secret",
        ) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        start = await client.get(f"{site.invite}/login")
        callback = await consent(client, start.headers["location"], STREAMER)
        answer = await client.get(callback)
        assert answer.status_code == 502
        assert "Twitch refused the sign-in (403: invalid client secret)" in answer.text
        assert "not-the-secret" not in answer.text
        code = parse_qs(urlsplit(callback).query)["code"][0]
        assert code not in answer.text
        assert stored_rows(site.cluster) == []

    (tmp_path / "down").mkdir()
    async with (
        invite_site(tmp_path / "down", redis_server, redis_prefix, start=False) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        page = await sign_in(client, site)
        added = await client.post(f"{site.invite}/authorize", data={"csrf": csrf_of(page)})
        assert added.status_code == 303
        page = (await client.get(f"{site.invite}/")).text
        # no cluster runs: authorized, joined once it runs
        assert flash_of(page) == (
            f"{BOT} may join your chat now, and joins it as soon as it can (it cannot be "
            "reached right now)."
        )
        start = await client.get(f"{site.invite}/login")
        callback = await consent(client, start.headers["location"], STREAMER)
        # the OAuth server goes away between the consent and the callback
        await site.sim.aclose()
        answer = await client.get(callback)
        assert answer.status_code == 502
        assert "Twitch did not answer. Nothing was changed. Try again in a minute." in answer.text
        assert str(site.sim.control_port) not in answer.text  # the address stays in the log
        # removed while Twitch does not answer: removed, and the streamer is told the rest
        removed = await client.post(f"{site.invite}/revoke", data={"csrf": csrf_of(page)})
        assert removed.status_code == 303
        page = (await client.get(f"{site.invite}/")).text
        assert "could not be withdrawn at Twitch: remove it under Connections" in flash_of(page)
        assert 'class="flash warning"' in page
        assert stored_rows(site.cluster) == []


@run
async def test_two_browsers_and_a_revoke_from_the_command_line(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with (
        invite_site(tmp_path, redis_server, redis_prefix, start=False) as site,
        httpx.AsyncClient(timeout=20) as first,
        httpx.AsyncClient(timeout=20) as second,
    ):
        one = await sign_in(first, site)
        two = await sign_in(second, site)
        await first.post(f"{site.invite}/authorize", data={"csrf": csrf_of(one)})
        with Store(site.cluster.db) as store:
            first_token = Grants(GRANT_KEY).open(store.grants()[0]).access_token
        # the second browser still offers to add the bot: its grant replaces the first's,
        # which is withdrawn at Twitch (no token left alive behind the bot's back)
        assert 'id="authorize"' in two
        await second.post(f"{site.invite}/authorize", data={"csrf": csrf_of(two)})
        with Store(site.cluster.db) as store:
            second_token = Grants(GRANT_KEY).open(store.grants()[0]).access_token
        assert second_token != first_token
        assert site.sim.oauth.live_tokens(STREAMER) == 1
        assert site.sim.oauth.validate(second_token)["login"] == STREAMER

        # the operator revokes the channel from the command line: the grant goes with it
        done = subprocess.run(
            [SCRIPT, "authorize", STREAMER, "--revoke"],
            cwd=tmp_path,
            env=site.cluster.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert stored_rows(site.cluster) == []
        # ... and the streamer can add the bot again with a new sign-in
        page = await sign_in(first, site)
        assert 'id="authorize"' in page
        added = await first.post(f"{site.invite}/authorize", data={"csrf": csrf_of(page)})
        assert added.status_code == 303
        assert len(stored_rows(site.cluster)) == 1


def test_bad_twitch_settings_are_refused_in_words(tmp_path: Path) -> None:
    cases = {
        "TMI_CLUSTER_TWITCH__REDIRECT_URL": ("https://bot.example/callback", "invite/callback"),
        "TMI_CLUSTER_TWITCH__OAUTH_URL": ("ftp://id.twitch.tv", "http:// or https://"),
        "TMI_CLUSTER_TWITCH__SCOPES": ('["channel bot"]', "scopes such as"),
        "TMI_CLUSTER_TWITCH__API_URL": ("https://api.twitch.tv/helix?x=1", "without a query"),
        "TMI_CLUSTER_TWITCH__GRANT_KEY": ("short", "at least 32 printable characters"),
    }
    for name, (value, expected) in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={name: value}, cwd=tmp_path)
        assert expected in str(caught.value), (name, str(caught.value))
    for name, value, expected in [
        ("TMI_CLUSTER_TWITCH__REDIRECT_URL", "https://b.example/invite/callback/", "callback"),
        ("TMI_CLUSTER_TWITCH__SCOPES", "[]", "at least one scope"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={name: value}, cwd=tmp_path)
        assert expected in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"TMI_CLUSTER_TWITCH__GRANT_KEY": "hunter2"}, cwd=tmp_path)
    assert "value hidden" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_ciphers_keep_their_purposes_apart() -> None:
    grants, sessions = Cipher.for_grants(GRANT_KEY), Cipher.for_sessions(GRANT_KEY)
    sealed = grants.seal("a token")
    assert "a token" not in sealed
    assert grants.open(sealed) == "a token"
    with pytest.raises(GrantKeyError):
        sessions.open(sealed)
    with pytest.raises(GrantKeyError):
        grants.open(sealed[:-4] + "AAAA")
    with pytest.raises(ConfigError):
        Cipher.for_grants("")


@run
async def test_a_database_that_does_not_answer_is_a_page_not_a_crash(tmp_path: Path) -> None:
    from tmi_cluster.web import create_app  # noqa: PLC0415

    environ = asgi_environ(
        tmp_path, TMI_CLUSTER_DATABASE__URL="postgresql://tmi:dbp4ss@127.0.0.1:1/nowhere"
    )
    app = create_app(load_settings(environ=environ, cwd=tmp_path))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            answer = await client.get("/invite/")
            assert answer.status_code == 503
            assert "database does not answer right now; nothing was changed" in answer.text
            assert "dbp4ss" not in answer.text
            assert "127.0.0.1:1" not in answer.text
            # the sign-in itself needs no database: it starts, and says so when it comes back
            start = await client.get("/invite/login")
            assert start.status_code == 303
    finally:
        await app.state.invite.aclose()
        await app.state.view.aclose()


MANAGER = '''
class Failing:
    """Authorizes nothing, and fails to grant."""

    invite_screen = True

    async def authorize(self, channels, *, reconnect=False):
        raise RuntimeError("the manager's own database is down")

    async def revoke(self, channels):
        return None

    async def authorized(self, channels):
        return set()

    async def acknowledged(self, channels):
        return None

    async def stale(self, channels):
        return set()
'''


@run
async def test_a_manager_that_fails_is_a_page_and_leaves_no_grant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "failing_manager.py").write_text(MANAGER)
    monkeypatch.syspath_prepend(str(tmp_path))
    environ = asgi_environ(tmp_path, TMI_CLUSTER_CHANNEL_MANAGER__USE="failing_manager:Failing")
    async with ChatSimulator(control_port=0) as sim:
        oauth = f"http://{sim.host}:{sim.control_port}"
        environ["TMI_CLUSTER_TWITCH__OAUTH_URL"] = f"{oauth}/oauth2"
        environ["TMI_CLUSTER_TWITCH__API_URL"] = f"{oauth}/helix"
        redirect = environ["TMI_CLUSTER_TWITCH__REDIRECT_URL"]
        code = sim.oauth.issue_code(CLIENT_ID, redirect, STREAMER, ("channel:bot",))
        tokens = sim.oauth.token(
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect,
            }
        )
        await _fail_to_authorize(tmp_path, environ, tokens["access_token"], caplog)


async def _fail_to_authorize(
    tmp_path: Path, environ: dict[str, str], access: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tmi_cluster.simulator.peers import user_id  # noqa: PLC0415
    from tmi_cluster.web import create_app  # noqa: PLC0415

    settings = load_settings(environ=environ, cwd=tmp_path)
    with Store.from_settings(settings) as store:
        store.migrate()
    # a signed-in session, as the callback leaves it
    session = {
        "csrf": "the-csrf-token",
        "user": {"id": user_id(STREAMER), "login": STREAMER, "name": "Streamer1"},
        "tokens": {"access": access, "refresh": "r3fr35h", "scopes": ["channel:bot"]},
    }
    cookie = Cipher.for_sessions(GRANT_KEY).seal(json.dumps(session))
    app = create_app(settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://web", cookies={SESSION: cookie}
        ) as client:
            page = await client.get("/invite/")
            assert "Signed in as <b>Streamer1</b>" in page.text
            answer = await client.post("/invite/authorize", data={"csrf": "the-csrf-token"})
            assert answer.status_code == 500
            assert "log says why" in answer.text
            assert "manager's own database" not in answer.text
    finally:
        await app.state.invite.aclose()
        await app.state.view.aclose()
    assert "the manager's own database is down" in caplog.text
    assert access not in caplog.text
    with Store.from_settings(settings) as store:
        assert store.grants() == []  # the grant went with the failed authorization


@run
async def test_the_simulator_plays_twitchs_oauth() -> None:
    async with (
        ChatSimulator(control_port=0) as sim,
        httpx.AsyncClient(base_url=f"http://{sim.host}:{sim.control_port}", timeout=10) as http,
    ):
        back = "https://bot.example/tmi-cluster/invite/callback"
        made = await http.post(
            "/apps", json={"client_id": "app2", "client_secret": "s2", "redirect_uris": [back]}
        )
        assert made.status_code == 200
        for body in (b"[1]", b"null", b"{", b'{"client_id": "x"}'):
            bad = await http.post("/apps", content=body)
            assert bad.status_code == 400, body
        query = {"client_id": "app2", "response_type": "code", "scope": "channel:bot"}
        elsewhere = await http.get(
            "/oauth2/authorize", params={**query, "redirect_uri": "https://evil.example/x"}
        )
        assert elsewhere.status_code == 400
        assert "redirect_uri does not match" in elsewhere.json()["message"]
        page = await http.get("/oauth2/authorize", params={**query, "redirect_uri": back})
        assert page.status_code == 200
        assert 'id="login"' in page.text
        unknown = await http.get("/oauth2/authorize", params={**query, "client_id": "nobody"})
        assert unknown.json() == {"status": 400, "message": "invalid client"}
        # the consent: back to the redirect URI with a code and the state
        answer = await http.post(
            "/oauth2/authorize",
            data={
                **query,
                "redirect_uri": back,
                "state": "s1",
                "login": "Alice",
                "decision": "authorize",
            },
        )
        assert answer.status_code == 302
        location = parse_qs(urlsplit(answer.headers["location"]).query)
        assert location["state"] == ["s1"]
        code = location["code"][0]
        exchange = {
            "client_id": "app2",
            "client_secret": "s2",
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": back,
        }
        wrong = await http.post("/oauth2/token", data={**exchange, "client_secret": "nope"})
        assert wrong.status_code == 403
        tokens = (await http.post("/oauth2/token", data=exchange)).json()
        assert tokens["scope"] == ["channel:bot"]
        again = await http.post("/oauth2/token", data=exchange)  # a code is used once
        assert again.json() == {"status": 400, "message": "Invalid authorization code"}
        token = tokens["access_token"]
        valid = await http.get("/oauth2/validate", headers={"Authorization": f"OAuth {token}"})
        assert valid.json()["login"] == "alice"
        assert valid.json()["client_id"] == "app2"
        users = await http.get(
            "/helix/users", headers={"Authorization": f"Bearer {token}", "Client-Id": "app2"}
        )
        [alice] = users.json()["data"]
        assert alice["login"] == "alice"
        assert alice["id"] == valid.json()["user_id"]
        mismatch = await http.get(
            "/helix/users", headers={"Authorization": f"Bearer {token}", "Client-Id": "other"}
        )
        assert mismatch.status_code == 401
        refreshed = await http.post(
            "/oauth2/token",
            data={
                "client_id": "app2",
                "client_secret": "s2",
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
            },
        )
        new = refreshed.json()["access_token"]
        assert new != token
        old = await http.get("/oauth2/validate", headers={"Authorization": f"OAuth {token}"})
        assert old.status_code == 401  # the refresh replaced it
        revoked = await http.post("/oauth2/revoke", data={"client_id": "app2", "token": new})
        assert revoked.status_code == 200
        assert sim.oauth.live_tokens("alice") == 0
        cancelled = await http.post(
            "/oauth2/authorize",
            data={**query, "redirect_uri": back, "state": "s2", "decision": "cancel"},
        )
        assert "error=access_denied" in cancelled.headers["location"]
        bad_login = await http.post(
            "/oauth2/authorize",
            data={**query, "redirect_uri": back, "login": "no spaces", "decision": "authorize"},
        )
        assert bad_login.status_code == 400
        assert "invalid channel name" in bad_login.text


@run
async def test_a_grant_sealed_with_another_key_is_said_not_hidden(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tmi_cluster.grants import TokenGrant  # noqa: PLC0415
    from tmi_cluster.simulator.peers import user_id  # noqa: PLC0415
    from tmi_cluster.web import create_app  # noqa: PLC0415

    old_key, new_key = GRANT_KEY, "a new grant key of at least thirty-two characters"
    async with ChatSimulator(control_port=0) as sim:
        oauth = f"http://{sim.host}:{sim.control_port}"
        environ = asgi_environ(
            tmp_path,
            TMI_CLUSTER_TWITCH__OAUTH_URL=f"{oauth}/oauth2",
            TMI_CLUSTER_TWITCH__API_URL=f"{oauth}/helix",
            TMI_CLUSTER_TWITCH__GRANT_KEY=new_key,
        )
        settings = load_settings(environ=environ, cwd=tmp_path)
        redirect = settings.twitch.redirect_url
        code = sim.oauth.issue_code(CLIENT_ID, redirect, STREAMER, ("channel:bot",))
        form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code}
        tokens = sim.oauth.token(
            {**form, "grant_type": "authorization_code", "redirect_uri": redirect}
        )
        uid = user_id(STREAMER)
        with Store.from_settings(settings) as store:
            store.migrate()
            store.authorize([STREAMER], reconnect=True)
            sealed = Grants(old_key).seal(  # stored before the key changed
                TokenGrant(
                    user_id=uid,
                    login=STREAMER,
                    scopes=("channel:bot",),
                    access_token=tokens["access_token"],
                    refresh_token=tokens["refresh_token"],
                )
            )
            store.save_grant(sealed)
        session = {"csrf": "t0k", "sid": "s1", "user": {"id": uid, "login": STREAMER, "name": "S"}}
        cookie = Cipher.for_sessions(new_key).seal(json.dumps(session))
        app = create_app(settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
                removed = await client.post(
                    "/invite/revoke",
                    data={"csrf": "t0k"},
                    headers={"cookie": f"{SESSION}={cookie}"},
                )
                assert removed.status_code == 303
                after = removed.cookies[SESSION]
                page = (await client.get("/invite/", headers={"cookie": f"{SESSION}={after}"})).text
        finally:
            await app.state.invite.aclose()
            await app.state.view.aclose()
        assert "could not be withdrawn at Twitch: remove it under Connections" in flash_of(page)
        assert "cannot be read with this twitch.grant_key" in caplog.text
        assert sim.oauth.live_tokens(STREAMER) == 1  # what the streamer is told to remove
        with Store.from_settings(settings) as store:
            assert store.grants() == []
            assert store.authorized_count() == 0
