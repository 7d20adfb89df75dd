"""The EventSub route in a running cluster: a channel whose broadcaster granted ``channel:bot``
is read through the conduit's shards (held by the worker processes) and answered through Helix
with the Chat Bot badge, the others through IRC, with no change to the handler; ``channels``
says each channel's route and why; a grant revoked moves the channel back to IRC."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tmi_cluster import Connection, ConnectionOptions
from tmi_cluster.bus.routes import EventSubRoutes
from tmi_cluster.events import Event, MessageEvent
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.routes import BOT_SCOPES
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id
from tmi_cluster.store import Store

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import until
from .test_cli import SCRIPT
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


def store_grant(cluster: ProcessCluster, sim: ChatSimulator, login: str, *scopes: str) -> None:
    """``login`` grants ``scopes`` at the simulator's Twitch, stored as the invite screen
    stores it."""
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


def channels_json(cluster: ProcessCluster) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [SCRIPT, "channels", "--json"],
        cwd=cluster.folder,
        env=cluster.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
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
    tmp_path: Path, redis_server: str, redis_prefix: str, channels: list[str], **changed: str
) -> AsyncIterator[tuple[ChatSimulator, ProcessCluster]]:
    async with ChatSimulator(channels=channels, control_port=0, eventsub_port=0) as sim:
        sim.add_account(BOT, TOKEN)
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
        store_grant(cluster, sim, "alpha", "channel:bot")
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
        logs = cluster.logs()
        assert logs.count("PONG alpha written") == 1, logs  # once: read once, answered once
        assert logs.count("PONG beta written") == 1, logs
