"""The EventSub route in a running cluster: a channel whose broadcaster granted ``channel:bot``
is read through the conduit's shards (held by the worker processes) and answered through Helix
with the Chat Bot badge, the others through IRC, with no change to the handler; ``channels``
says each channel's route and why; a grant revoked moves the channel back to IRC."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tmi_cluster import Cluster, Connection, ConnectionOptions
from tmi_cluster.bus.events import EventReader
from tmi_cluster.bus.routes import EventSubRoutes
from tmi_cluster.config.model import CHAT_TYPES, SHARED_CHAT_TYPES
from tmi_cluster.events import Event, MessageEvent, SharedChatBeginEvent, SharedChatEndEvent
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.routes import BOT_SCOPES, MODERATED_SCOPE
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id
from tmi_cluster.store import Store

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import streamed_keys, until
from .test_cli import SCRIPT
from .test_exactly_once import _HANDLER, _handled_counts, _ids, assert_once
from .test_invite import STREAMER, consent, csrf_of, flash_of, invite_site, sign_in
from .test_simulator_eventsub import grant

pytestmark = pytest.mark.timeout(120)

GRANT_KEY = "k" * 40
VIEWER, VIEWER_TOKEN = "viewer1", "viewertoken1"

PINGBOT = textwrap.dedent(
    """
    import tmi_cluster
    from tmi_cluster.events import MessageEvent


    class PingBot(tmi_cluster.Subscriber):
        def __init__(self):
            self.cluster = tmi_cluster.Cluster.from_config()

        def subscribe(self):
            return {MessageEvent: self.on_message}

        async def on_message(self, event):
            if event.text.startswith("!ping"):
                result = await self.cluster.send(
                    event.channel, "pong " + event.text, reply_to=event.message_id
                )
                print("PONG", event.channel, result.status, result.reason, result.detail,
                      flush=True)
    """
)


def route_settings(sim: ChatSimulator, **changed: str) -> dict[str, str]:
    """A cluster with the simulator's Twitch application and EventSub server."""
    base = f"http://{sim.host}:{sim.control_port}"
    return {
        "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
        "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
        "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{base}/oauth2",
        "TMI_CLUSTER_TWITCH__API_URL": f"{base}/helix",
        "TMI_CLUSTER_TWITCH__GRANT_KEY": GRANT_KEY,
        "TMI_CLUSTER_TMI__TRANSPORT__EVENTSUB_URL": f"ws://{sim.host}:{sim.eventsub_port}/ws",
        **IDENTITY,
        **changed,
    }


def store_grant(cluster: ProcessCluster, sim: ChatSimulator, login: str, *scopes: str) -> str:
    """``login`` grants ``scopes`` at the simulator's Twitch, stored as the invite screen
    stores it; the access token."""
    token = grant(sim, login, *scopes)
    sealed = Grants(GRANT_KEY).seal(
        TokenGrant(
            user_id=user_id(login),
            login=login,
            scopes=scopes,
            access_token=token,
            refresh_token="refresh-" + token,
        )
    )
    with Store(cluster.db) as store:
        store.save_grant(sealed)
    return token


def cli(cluster: ProcessCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``tmi-cluster ARGS`` for ``cluster`` (run it in a thread from a test whose loop serves
    the simulator, when the command needs it)."""
    return subprocess.run(
        [SCRIPT, *args],
        cwd=cluster.folder,
        env=cluster.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def channels_json(cluster: ProcessCluster) -> dict[str, dict[str, Any]]:
    done = cli(cluster, "channels", "--json")
    assert done.returncode == 0, done.stderr
    return {row["channel"]: row for row in json.loads(done.stdout)}


class Reader:
    """An anonymous connection of the test's own, collecting what is said in channels."""

    def __init__(self, sim: ChatSimulator) -> None:
        self.events: list[MessageEvent] = []
        options = ConnectionOptions(host=sim.host, port=sim.port, secure=False, name="reader")
        self.connection = Connection(options, on_event=self._on)

    def _on(self, event: Event) -> None:
        if isinstance(event, MessageEvent):
            self.events.append(event)

    def said_by(self, login: str, channel: str) -> list[MessageEvent]:
        return [e for e in self.events if e.user == login and e.channel == channel]


@asynccontextmanager
async def route_cluster(
    tmp_path: Path,
    redis_server: str,
    redis_prefix: str,
    channels: list[str],
    *,
    moderates: tuple[str, ...] = (),
    limits: Limits | None = None,
    **changed: str,
) -> AsyncIterator[tuple[ChatSimulator, ProcessCluster]]:
    async with ChatSimulator(
        channels=channels, control_port=0, eventsub_port=0, limits=limits
    ) as sim:
        sim.add_account(BOT, TOKEN, moderator_in=moderates)
        sim.add_account(VIEWER, VIEWER_TOKEN)
        (tmp_path / "pingbot.py").write_text(PINGBOT)
        extra = route_settings(
            sim,
            PYTHONPATH=str(tmp_path),
            TMI_CLUSTER_HANDLERS__MODULES='["pingbot"]',
            **changed,
        )
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **extra)
        try:
            yield sim, cluster
        finally:
            await cluster.stop()


async def say(sim: ChatSimulator, channel: str, text: str) -> None:
    """The viewer says ``text`` in ``channel`` through IRC, as a person would."""
    options = ConnectionOptions(
        host=sim.host,
        port=sim.port,
        secure=False,
        login=VIEWER,
        token=VIEWER_TOKEN,
        name="viewer",
    )
    async with Connection(options) as viewer:
        await viewer.start()
        await viewer.wait_connected()
        await viewer.send("PRIVMSG", [f"#{channel}", text])


def test_a_granted_channel_is_read_through_eventsub_and_answered_with_the_badge(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    asyncio.run(_granted_channel(tmp_path, redis_server, redis_prefix))


async def _granted_channel(tmp_path: Path, redis_server: str, redis_prefix: str) -> None:
    async with route_cluster(tmp_path, redis_server, redis_prefix, ["alpha", "beta"]) as (
        sim,
        cluster,
    ):
        cluster.start("sup-a")
        await cluster.until(cluster.workers, 30, "a running worker")
        await cluster.want(["alpha", "beta"])
        # no grants yet: both through IRC, and channels says why
        await cluster.until(
            lambda: all(sim.joined(c) for c in ("alpha", "beta")), 30, "both joined on IRC"
        )
        rows = channels_json(cluster)
        assert rows["alpha"]["route"] == "irc", rows["alpha"]
        assert "user:bot" in rows["alpha"]["route_reason"], rows["alpha"]  # the bot's grant
        # the bot signs in (user:bot ...), the broadcaster of alpha grants channel:bot
        store_grant(cluster, sim, BOT, *BOT_SCOPES)
        alpha_token = store_grant(cluster, sim, "alpha", "channel:bot")
        routes = EventSubRoutes(cluster.client, cluster.keys)
        await cluster.until(routes.routes, 30, "alpha routed through EventSub")
        assert await routes.routes() == {"alpha": user_id("alpha")}
        status = await routes.status()
        assert status.conduit_id
        assert status.shards >= 1
        assert status.bot_id == user_id(BOT)
        assert status.subscriptions == 6, status
        # IRC parts alpha (nothing of the cluster's holds it), keeps beta
        await cluster.until(lambda: not sim.joined("alpha"), 30, "alpha parted on IRC")
        assert sim.joined("beta")
        listed = cli(cluster, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        shown = json.loads(listed.stdout)["eventsub"]
        assert (shown["channels"], shown["subscriptions"], shown["bot_login"]) == (1, 6, BOT)
        rows = channels_json(cluster)
        assert rows["alpha"]["route"] == "eventsub", rows["alpha"]
        assert rows["alpha"]["route_reason"] == "the broadcaster granted channel:bot"
        assert rows["alpha"]["state"] == "joined", rows["alpha"]
        assert rows["beta"]["route"] == "irc"
        assert "has not granted channel:bot" in rows["beta"]["route_reason"], rows["beta"]

        reader = Reader(sim)
        async with reader.connection:
            await reader.connection.start()
            await reader.connection.join(["alpha", "beta"])
            await say(sim, "alpha", "!ping alpha")
            await say(sim, "beta", "!ping beta")
            await until(lambda: reader.said_by(BOT, "alpha"), 20, "the bot's pong in alpha")
            await until(lambda: reader.said_by(BOT, "beta"), 20, "the bot's pong in beta")
            [pong] = reader.said_by(BOT, "alpha")
            assert pong.text == "pong !ping alpha"
            assert "bot-badge" in pong.tags.get("badges", ""), pong.tags  # Helix, app token
            [other] = reader.said_by(BOT, "beta")
            assert other.text == "pong !ping beta"
            assert "bot-badge" not in other.tags.get("badges", ""), other.tags  # IRC
        await cluster.until(  # the handler prints its line once the send returned
            lambda: (
                "PONG alpha written" in cluster.logs() and "PONG beta written" in cluster.logs()
            ),
            10,
            "the handler's lines",
        )
        logs = cluster.logs()
        assert logs.count("PONG alpha written") == 1, logs  # once: read once, answered once
        assert logs.count("PONG beta written") == 1, logs
        # the broadcaster disconnects the application at Twitch: revocations reach the shards,
        # the grant ends, alpha goes back to IRC
        sim.oauth.revoke(CLIENT_ID, alpha_token)
        await cluster.until(lambda: _unrouted(routes, "alpha"), 30, "alpha's route gone")
        await cluster.until(lambda: sim.joined("alpha"), 30, "alpha joined on IRC again")
        with Store(cluster.db) as store:
            assert store.grants(["alpha"]) == []
        logs = cluster.logs()
        assert logs.count("Twitch revoked the grant of alpha: back to IRC") == 1, logs
        assert logs.count(f"revoked the subscriptions of broadcaster {user_id('alpha')}") == 1
        assert channels_json(cluster)["alpha"]["route"] == "irc"


def test_a_channel_the_bot_moderates_is_read_through_eventsub_without_a_grant(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    asyncio.run(_moderated_channel(tmp_path, redis_server, redis_prefix))


async def _moderated_channel(tmp_path: Path, redis_server: str, redis_prefix: str) -> None:
    kinds = json.dumps([*CHAT_TYPES, *SHARED_CHAT_TYPES])
    async with route_cluster(
        tmp_path,
        redis_server,
        redis_prefix,
        ["gamma", "delta"],
        moderates=("gamma",),
        TMI_CLUSTER_TMI__TRANSPORT__SUBSCRIPTIONS=kinds,
    ) as (sim, cluster):
        cluster.start("sup-a")
        await cluster.until(cluster.workers, 30, "a running worker")
        await cluster.want(["gamma", "delta"])
        # the bot grants the EventSub scopes and its moderated channels; no broadcaster does
        store_grant(cluster, sim, BOT, *BOT_SCOPES, MODERATED_SCOPE)
        routes = EventSubRoutes(cluster.client, cluster.keys)
        await cluster.until(routes.routes, 30, "gamma routed through EventSub")
        assert await routes.routes() == {"gamma": user_id("gamma")}
        await cluster.until(lambda: not sim.joined("gamma"), 30, "gamma parted on IRC")
        rows = channels_json(cluster)
        assert (rows["gamma"]["route"], rows["gamma"]["state"]) == ("eventsub", "joined")
        assert rows["gamma"]["route_reason"] == "the bot moderates the channel", rows["gamma"]
        assert rows["delta"]["route"] == "irc"
        assert "does not moderate" in rows["delta"]["route_reason"], rows["delta"]
        reader = Reader(sim)
        async with reader.connection:
            await reader.connection.start()
            await reader.connection.join(["gamma"])
            await say(sim, "gamma", "!ping gamma")
            await until(lambda: reader.said_by(BOT, "gamma"), 20, "the bot's pong in gamma")
            [pong] = reader.said_by(BOT, "gamma")
            assert "bot-badge" in pong.tags.get("badges", ""), pong.tags  # app token, as mod
        written = "PONG gamma written"  # the handler prints it once the send returned
        await cluster.until(lambda: written in cluster.logs(), 10, "the handler's line")
        assert cluster.logs().count(written) == 1
        # Shared Chat sessions, subscribed on request: their own events, each once
        assert (await routes.status()).subscriptions == 9
        stream = EventReader(
            cluster.client,
            cluster.keys,
            types=frozenset({"SharedChatBeginEvent", "SharedChatEndEvent"}),
        )
        await stream.start()
        try:
            assert sim.conduits.share_chat("begin", ["gamma", "delta"], "gamma") == 1
            begin = await asyncio.wait_for(stream.__anext__(), 20)
            assert isinstance(begin, SharedChatBeginEvent)
            assert (begin.channel, begin.participant_logins) == ("gamma", ["gamma", "delta"])
            told = sim.conduits.sent[-1]
            assert sim.conduits.retry(told) or sim.conduits.repeat(told)  # Twitch's retry
            assert sim.conduits.share_chat("end", ["gamma"], "gamma") == 1
            end = await asyncio.wait_for(stream.__anext__(), 20)
            assert isinstance(end, SharedChatEndEvent), end  # the retried begin: not again
        finally:
            await stream.aclose()
        # the bot unmodded: Twitch revokes the subscriptions, the channel goes back to IRC
        sim.moderate(BOT, "gamma", moderator=False)
        await cluster.until(lambda: _unrouted(routes, "gamma"), 30, "gamma's route gone")
        await cluster.until(lambda: sim.joined("gamma"), 30, "gamma joined on IRC again")
        assert "the bot no longer moderates #gamma: back to IRC" in cluster.logs()
        assert channels_json(cluster)["gamma"]["route"] == "irc"


def test_the_bot_sends_with_its_own_user_token_everywhere(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    asyncio.run(_user_token(tmp_path, redis_server, redis_prefix))


async def _user_token(tmp_path: Path, redis_server: str, redis_prefix: str) -> None:
    async with route_cluster(
        tmp_path,
        redis_server,
        redis_prefix,
        ["beta"],
        limits=Limits(channel_interval_s=0.0),  # the viewer pings twice within a second
        TMI_CLUSTER_TMI__TRANSPORT__SEND_WITH="user",
    ) as (sim, cluster):
        cluster.start("sup-a")
        await cluster.until(cluster.workers, 30, "a running worker")
        await cluster.want(["beta"])
        await cluster.until(lambda: sim.joined("beta"), 30, "beta joined on IRC")
        old = store_grant(cluster, sim, BOT, *BOT_SCOPES)
        logins = sim.account(BOT).authentications
        reader = Reader(sim)
        async with reader.connection:
            await reader.connection.start()
            await reader.connection.join(["beta"])
            await say(sim, "beta", "!ping one")
            await until(lambda: reader.said_by(BOT, "beta"), 20, "the bot's pong in beta")
            [pong] = reader.said_by(BOT, "beta")
            assert pong.text == "pong !ping one"
            assert "bot-badge" not in pong.tags.get("badges", ""), pong.tags  # a user token
            # Twitch's API, not an IRC connection: the bot logged in nowhere to send it
            assert sim.account(BOT).authentications == logins
            # the token is refreshed (stored anew) and the old one stops working: the worker
            # reads the grant again after Twitch's 401, and sends with the new token
            store_grant(cluster, sim, BOT, *BOT_SCOPES)
            sim.oauth.revoke(CLIENT_ID, old)
            await say(sim, "beta", "!ping two")
            await until(lambda: len(reader.said_by(BOT, "beta")) == 2, 20, "the second pong")
        await cluster.until(
            lambda: cluster.logs().count("PONG beta written") >= 2, 10, "the handler's lines"
        )
        logs = cluster.logs()
        assert logs.count("PONG beta written") == 2, logs
        assert old not in logs


#: Seconds before a kill within which the killed worker may have read a message and died.
IN_FLIGHT_S = 0.5
EVENTSUB_ROOMS = [f"es{i:04}" for i in range(1000)]
IRC_ROOMS = [f"irc{i:03}" for i in range(50)]


def store_grants(cluster: ProcessCluster, sim: ChatSimulator, logins: list[str]) -> None:
    """Each of ``logins`` grants channel:bot (in one store session)."""
    sealer = Grants(GRANT_KEY)
    with Store(cluster.db) as store:
        for login in logins:
            token = grant(sim, login, "channel:bot")
            store.save_grant(
                sealer.seal(
                    TokenGrant(
                        user_id=user_id(login),
                        login=login,
                        scopes=("channel:bot",),
                        access_token=token,
                        refresh_token="r" + token,
                    )
                )
            )


@pytest.mark.timeout(240)
def test_a_worker_killed_its_shards_and_channels_back_within_5_s_nothing_twice(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    asyncio.run(_failover(tmp_path, redis_server, redis_prefix))


async def _failover(tmp_path: Path, redis_server: str, redis_prefix: str) -> None:
    (tmp_path / "recorder.py").write_text(_HANDLER)
    (tmp_path / "ids").mkdir()
    rooms = EVENTSUB_ROOMS + IRC_ROOMS
    limits = Limits(anonymous_join_allow=500)
    async with ChatSimulator(channels=rooms, control_port=0, eventsub_port=0, limits=limits) as sim:
        sim.add_account(BOT, TOKEN)
        extra = route_settings(
            sim,
            PYTHONPATH=str(tmp_path),
            TEST_HANDLER_FOLDER=str(tmp_path / "ids"),
            TMI_CLUSTER_HANDLERS__MODULES='["recorder"]',
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="2",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="2",
            TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__CHANNELS="1000",
            TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW="500",
            TMI_CLUSTER_TMI__TRANSPORT__SUBSCRIBE_CONCURRENCY="32",
        )
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **extra)
        try:
            cluster.start("sup-a")
            await cluster.until(lambda: _running(cluster, 2), 60, "two workers")
            await asyncio.to_thread(store_grant, cluster, sim, BOT, *BOT_SCOPES)
            await asyncio.to_thread(store_grants, cluster, sim, EVENTSUB_ROOMS)
            await cluster.want(rooms)
            routes = EventSubRoutes(cluster.client, cluster.keys)

            async def settled() -> bool:
                routed = await routes.routes()
                held = await cluster.held()
                shards = {c for channels in held.values() for c in channels if c[0] == "~"}
                return (
                    len(routed) == len(EVENTSUB_ROOMS)
                    and all(len(sim.joined(r)) == 1 for r in IRC_ROOMS)
                    and not any(sim.joined(r) for r in EVENTSUB_ROOMS)
                    and len(shards) == 2
                )

            await cluster.until(settled, 90, "1,000 channels on EventSub, 50 on IRC, 2 shards")
            async with (
                Cluster(cluster.settings()) as app,
                streamed_keys(app) as streamed,
            ):
                sim.set_rate(300.0)
                await asyncio.sleep(2.0)
                pids = await cluster.worker_pids()
                held = await cluster.held()
                victim_id = next(p for p in sorted(pids) if any(c[0] == "~" for c in held[p]))
                victim_connections = {
                    c for r in held[victim_id] if r[0] != "~" for c in sim.joined(r)
                }
                killed_at = time.time()
                os.kill(pids[victim_id], signal.SIGKILL)
                await cluster.until(
                    lambda: _back(cluster, sim, victim_id), 30, "shards and IRC channels back"
                )
                back_s = time.time() - killed_at
                await asyncio.sleep(2.0)
                sim.set_rate(0.0)
                delivered = _delivered(sim, rooms)
                # what the killed worker had read and not yet handed on is lost with it: the
                # window opens a moment before the kill (Twitch does not resend to a dead socket)
                window = (killed_at - IN_FLIGHT_S, killed_at + back_s)
                expected = {
                    m
                    for m, (room, at, connections) in delivered.items()
                    if (room in IRC_ROOMS and connections - victim_connections)
                    or (room not in IRC_ROOMS and not window[0] <= at <= window[1])
                }

                def through() -> bool:
                    handled = _ids(_handled_counts(tmp_path))
                    return expected <= handled and expected <= _ids(streamed)

                try:
                    await until(through, 30, "the last events through")
                except AssertionError:
                    missing = expected - _ids(_handled_counts(tmp_path))
                    rooms_missing = collections.Counter(delivered[m][0][:2] for m in missing)
                    at = sorted(delivered[m][1] - killed_at for m in missing)
                    raise AssertionError(
                        f"{len(missing)} of {len(expected)} not handled ({rooms_missing}), "
                        f"at {at[:3]}..{at[-3:]} s after the kill (back after {back_s:.2f} s); "
                        f"{len(expected - _ids(streamed))} not streamed\n{cluster.logs()}"
                    ) from None
        finally:
            await cluster.stop()
    handled = _handled_counts(tmp_path)
    assert_once(handled, streamed)
    lost = set(delivered) - expected
    missed = len(lost - _ids(handled))
    print(
        f"\nfailover of a worker with a shard: back in {back_s:.2f} s; {len(delivered)} "
        f"messages, {missed} lost in the failover window"
    )
    assert back_s < 5.0, f"back after {back_s:.2f} s"


async def _running(cluster: ProcessCluster, count: int, exclude: str = "") -> bool:
    workers = await cluster.workers()
    return len([p for p, s in workers.items() if s.state == "running" and p != exclude]) == count


async def _back(cluster: ProcessCluster, sim: ChatSimulator, victim: str) -> bool:
    """Both shards held by live workers other than ``victim``, each IRC room joined once."""
    workers = await cluster.workers()
    held = await cluster.held()
    shards = {c for p, channels in held.items() if p != victim and p in workers for c in channels}
    return len({c for c in shards if c[0] == "~"}) == 2 and all(
        len(sim.joined(r)) == 1 and r in shards for r in IRC_ROOMS
    )


def _delivered(sim: ChatSimulator, rooms: list[str]) -> dict[str, tuple[str, float, set[int]]]:
    """Every line with an id the simulator sent: its room, when (wall clock) and the
    connections joined then."""
    offset = time.time() - time.monotonic()
    return {
        d.message_id: (room, d.at + offset, set(d.connections))
        for room in rooms
        for d in sim.deliveries(room)
    }


MOVING = [f"mv{i:02}" for i in range(20)]


@pytest.mark.timeout(180)
def test_channels_moving_between_routes_reach_the_application_once(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    asyncio.run(_moving(tmp_path, redis_server, redis_prefix))


async def _moving(tmp_path: Path, redis_server: str, redis_prefix: str) -> None:
    (tmp_path / "recorder.py").write_text(_HANDLER)
    (tmp_path / "ids").mkdir()
    async with ChatSimulator(channels=MOVING, control_port=0, eventsub_port=0) as sim:
        sim.add_account(BOT, TOKEN)
        extra = route_settings(
            sim,
            PYTHONPATH=str(tmp_path),
            TEST_HANDLER_FOLDER=str(tmp_path / "ids"),
            TMI_CLUSTER_HANDLERS__MODULES='["recorder"]',
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="2",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="2",
        )
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **extra)
        granted = MOVING[:10]
        try:
            cluster.start("sup-a")
            await cluster.until(lambda: _running(cluster, 2), 60, "two workers")
            await asyncio.to_thread(store_grant, cluster, sim, BOT, *BOT_SCOPES)
            await cluster.want(MOVING)
            await cluster.until(
                lambda: all(len(sim.joined(r)) == 1 for r in MOVING), 30, "all on IRC"
            )
            routes = EventSubRoutes(cluster.client, cluster.keys)
            async with (
                Cluster(cluster.settings()) as app,
                streamed_keys(app) as streamed,
            ):
                sim.set_rate(200.0)
                await asyncio.sleep(1.0)
                # ten broadcasters grant channel:bot: their channels move to EventSub
                marks = {"grant": time.time()}
                await asyncio.to_thread(store_grants, cluster, sim, granted)

                async def moved() -> bool:
                    return set(await routes.routes()) == set(granted) and not any(
                        sim.joined(r) for r in granted
                    )

                await cluster.until(moved, 30, "ten channels moved to EventSub")
                marks["moved"] = time.time()
                await asyncio.sleep(1.5)
                # their grants end: back to IRC
                marks["revoke"] = time.time()
                with Store(cluster.db) as store:
                    for login in granted:
                        store.delete_grant(user_id(login))

                async def back() -> bool:
                    routed, leaving = await routes.table()
                    return (
                        not routed and not leaving and all(len(sim.joined(r)) == 1 for r in MOVING)
                    )

                await cluster.until(back, 40, "the ten back on IRC")
                marks["back"] = time.time()
                await asyncio.sleep(1.5)
                sim.set_rate(0.0)
                delivered = _delivered(sim, MOVING)
                expected = set(delivered)

                def through() -> bool:
                    handled = _ids(_handled_counts(tmp_path))
                    return expected <= handled and expected <= _ids(streamed)

                try:
                    await until(through, 20, "every message through")
                except AssertionError:
                    missing = expected - _ids(_handled_counts(tmp_path))
                    base = marks["grant"]
                    lost = sorted((delivered[m][1] - base, delivered[m][0]) for m in missing)
                    phases = {k: round(v - base, 2) for k, v in marks.items()}
                    raise AssertionError(
                        f"{len(missing)} of {len(expected)} messages lost: {lost[:10]}, "
                        f"phases {phases}\n{cluster.logs()}"
                    ) from None
        finally:
            await cluster.stop()
    handled = _handled_counts(tmp_path)
    assert_once(handled, streamed)
    print(f"\n{len(delivered)} messages while 10 of 20 channels moved both ways, each once")


@pytest.mark.timeout(120)
def test_the_invite_screen_signs_the_bot_in_and_a_streamer_adds_it_to_eventsub(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    asyncio.run(_through_the_invite_screen(tmp_path, redis_server, redis_prefix))


async def _through_the_invite_screen(tmp_path: Path, redis_server: str, redis_prefix: str) -> None:
    (tmp_path / "pingbot.py").write_text(PINGBOT)
    async with (
        invite_site(
            tmp_path,
            redis_server,
            redis_prefix,
            eventsub=True,
            PYTHONPATH=str(tmp_path),
            TMI_CLUSTER_HANDLERS__MODULES='["pingbot"]',
        ) as site,
        httpx.AsyncClient(timeout=20) as client,
    ):
        sim, cluster = site.sim, site.cluster
        sim.add_account(VIEWER, VIEWER_TOKEN)
        # someone who is not the bot cannot sign in as it: refused, their grant withdrawn
        start = await client.get(f"{site.invite}/bot")
        assert start.status_code == 303, start.text
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["scope"] == [" ".join((*BOT_SCOPES, MODERATED_SCOPE))]
        refused = await client.get(await consent(client, start.headers["location"], "streamer2"))
        assert refused.status_code == 403, refused.text
        assert "not as the bot (tmibot)" in refused.text
        assert sim.oauth.live_tokens("streamer2") == 0
        # the bot signs in with its own account
        start = await client.get(f"{site.invite}/bot")
        back = await client.get(await consent(client, start.headers["location"], BOT))
        assert back.status_code == 303, back.text
        page = await client.get(f"{site.invite}/")
        assert flash_of(page.text).startswith(f"{BOT} is signed in"), page.text
        with Store(cluster.db) as store:
            [bot] = store.grants([BOT])
        assert bot.scopes == (*BOT_SCOPES, MODERATED_SCOPE)
        # a streamer adds the bot: joined through IRC at once, then read through EventSub
        page_text = await sign_in(client, site, STREAMER)
        added = await client.post(f"{site.invite}/authorize", data={"csrf": csrf_of(page_text)})
        assert added.status_code == 303
        routes = EventSubRoutes(cluster.client, cluster.keys)
        await cluster.until(
            lambda: _routed(routes, STREAMER), 30, "the streamer's channel on EventSub"
        )
        await cluster.until(lambda: not sim.joined(STREAMER), 30, "parted on IRC")
        page = await client.get(f"{site.invite}/")
        assert f"{BOT} is in your chat." in page.text  # whatever the route
        row = channels_json(cluster)[STREAMER]
        assert (row["route"], row["state"]) == ("eventsub", "joined"), row
        metrics = await client.get(
            site.invite.removesuffix("/invite") + "/metrics",
            auth=("admin", "invite-test-password"),
        )
        assert metrics.status_code == 200, metrics.text
        assert "tmi_cluster_eventsub_channels 1.0" in metrics.text
        assert "tmi_cluster_eventsub_problem 0.0" in metrics.text
        reader = Reader(sim)
        async with reader.connection:
            await reader.connection.start()
            await reader.connection.join([STREAMER])
            await say(sim, STREAMER, "!ping via the invite screen")
            await until(lambda: reader.said_by(BOT, STREAMER), 20, "the bot's answer")
        [pong] = reader.said_by(BOT, STREAMER)
        assert pong.text == "pong !ping via the invite screen"
        assert "bot-badge" in pong.tags.get("badges", ""), pong.tags
        # a channel the operator added by hand: its streamer can still grant channel:bot
        # (in a thread: the simulator, on this loop, answers the join meanwhile)
        joined = await asyncio.to_thread(cli, cluster, "join", "streamer2", "--authorize")
        assert joined.returncode == 0, joined.stderr
        async with httpx.AsyncClient(timeout=20) as other:
            page_text = await sign_in(other, site, "streamer2")
            assert 'id="grant"' in page_text, page_text
            granted = await other.post(
                f"{site.invite}/authorize", data={"csrf": csrf_of(page_text)}
            )
            assert granted.status_code == 303
        await cluster.until(lambda: _routed(routes, "streamer2"), 30, "streamer2 on EventSub")
        # the streamer removes it: no route, no channel
        page = await client.get(f"{site.invite}/")
        removed = await client.post(f"{site.invite}/revoke", data={"csrf": csrf_of(page.text)})
        assert removed.status_code == 303
        await cluster.until(lambda: _unrouted(routes, STREAMER), 30, "the route gone")
        assert not sim.joined(STREAMER)


async def _routed(routes: EventSubRoutes, channel: str) -> bool:
    return channel in await routes.routes()


async def _unrouted(routes: EventSubRoutes, channel: str) -> bool:
    routed, leaving = await routes.table()
    return channel not in routed and channel not in leaving
