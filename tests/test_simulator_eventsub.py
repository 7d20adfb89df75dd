"""The simulator's EventSub (Helix conduits, shards, subscriptions; WebSocket sessions), spoken
to over real sockets: what the EventSub route of the cluster will be tested against."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tmi_cluster.events import MessageEvent
from tmi_cluster.events.build import from_message
from tmi_cluster.eventsub import decode, notification_events
from tmi_cluster.irc import Message, parse
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id

from .helpers import run, until

BOT = "tmibot"
pytestmark = pytest.mark.timeout(60)


def grant(sim: ChatSimulator, login: str, *scopes: str) -> str:
    """``login`` authorizes the simulator's application for ``scopes``; their token."""
    back = "http://127.0.0.1/cb"
    code = sim.oauth.issue_code(CLIENT_ID, back, login, scopes)
    tokens = sim.oauth.token(
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": back,
        }
    )
    return str(tokens["access_token"])


async def helix(sim: ChatSimulator) -> httpx.AsyncClient:
    """A Helix client of the simulator with an app access token."""
    base = f"http://{sim.host}:{sim.control_port}"
    async with httpx.AsyncClient(base_url=base) as plain:
        app = await plain.post(
            "/oauth2/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "grant_type": "client_credentials",
            },
        )
    token = app.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Client-Id": CLIENT_ID}
    return httpx.AsyncClient(base_url=base, headers=headers, timeout=10)


async def until_closed(socket: ClientConnection, timeout_s: float = 5) -> None:
    """Read until the server closes ``socket`` (ConnectionClosed), at most ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            await socket.recv()


async def receive(socket: ClientConnection, kind: str, timeout_s: float = 5) -> dict[str, Any]:
    """The next message of ``kind`` (keepalives skipped unless asked for)."""
    async with asyncio.timeout(timeout_s):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message["metadata"]["message_type"] == kind:
                return message


class ChatClient:
    """An anonymous IRC reader of the simulator's channels (to see what Helix said there)."""

    def __init__(self, sim: ChatSimulator) -> None:
        self.sim = sim

    async def __aenter__(self) -> ChatClient:
        self.reader, self.writer = await asyncio.open_connection(self.sim.host, self.sim.port)
        self.writer.write(b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK justinfan1\r\n")
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def join(self, *channels: str) -> None:
        for channel in channels:
            self.writer.write(f"JOIN #{channel}\r\n".encode())

        def joined() -> bool:
            return all(self.sim.joined(c) for c in channels)

        await until(joined, 5, f"joined {channels}")

    async def privmsg(self) -> Message:
        async with asyncio.timeout(5):
            while True:
                message = parse((await self.reader.readline()).decode().rstrip("\r\n"))
                if message.command == "PRIVMSG":
                    return message


def subscription(conduit: str, channel: str) -> dict[str, Any]:
    return {
        "type": "channel.chat.message",
        "version": "1",
        "condition": {"broadcaster_user_id": user_id(channel), "user_id": user_id(BOT)},
        "transport": {"method": "conduit", "conduit_id": conduit},
    }


@run
async def test_a_conduit_delivers_the_chat_of_its_subscriptions() -> None:
    async with ChatSimulator(
        channels=["alpha", "beta", "gamma"], control_port=0, eventsub_port=0
    ) as sim:
        grant(sim, BOT, "user:bot", "user:read:chat")
        grant(sim, "alpha", "channel:bot")
        broadcaster = grant(sim, "beta", "channel:bot")
        api = await helix(sim)
        async with api, connect(f"ws://{sim.host}:{sim.eventsub_port}/ws") as one:
            welcome = await receive(one, "session_welcome")
            session = welcome["payload"]["session"]
            assert session["keepalive_timeout_seconds"] == 10
            made = await api.post("/helix/eventsub/conduits", json={"shard_count": 1})
            conduit = made.json()["data"][0]["id"]
            bound = await api.patch(
                "/helix/eventsub/conduits/shards",
                json={
                    "conduit_id": conduit,
                    "shards": [
                        {
                            "id": "0",
                            "transport": {"method": "websocket", "session_id": session["id"]},
                        },
                        {
                            "id": "7",
                            "transport": {"method": "websocket", "session_id": session["id"]},
                        },
                    ],
                },
            )
            assert bound.status_code == 202
            assert bound.json()["data"][0]["status"] == "enabled"
            assert bound.json()["errors"][0]["id"] == "7"
            created = await api.post(
                "/helix/eventsub/subscriptions", json=subscription(conduit, "alpha")
            )
            assert created.status_code == 202, created.text
            again = await api.post(
                "/helix/eventsub/subscriptions", json=subscription(conduit, "alpha")
            )
            assert again.status_code == 409
            assert again.json()["id"] == created.json()["data"][0]["id"]
            refused = await api.post(
                "/helix/eventsub/subscriptions", json=subscription(conduit, "gamma")
            )
            assert refused.status_code == 403
            assert "channel:bot" in refused.json()["message"]
            assert (
                await api.post("/helix/eventsub/subscriptions", json=subscription(conduit, "beta"))
            ).status_code == 202
            listed = await api.get("/helix/eventsub/subscriptions", params={"conduit_id": conduit})
            assert listed.json()["total"] == 2

            # the chat of alpha, as notifications: the same events as its IRC lines
            lines = sim.generate(30, "alpha")
            expected = {
                e.dedupe_key
                for line in lines
                if line.command == "PRIVMSG"
                for e in from_message(parse(line.data.decode().rstrip()))
                if isinstance(e, MessageEvent)
            }
            got: set[str | None] = set()
            async with asyncio.timeout(10):
                while len(got) < len(expected):
                    raw = await one.recv()
                    envelope = decode(raw)
                    if envelope.metadata.message_type != "notification":
                        continue
                    for event in notification_events(envelope):
                        if isinstance(event, MessageEvent):
                            assert event.channel == "alpha"
                            got.add(event.dedupe_key)
            assert got == expected

            # the broadcaster's authorization ends: the subscription is revoked, and said
            await (await api.get("/helix/eventsub/conduits")).aread()
            async with httpx.AsyncClient(base_url=str(api.base_url)) as plain:
                await plain.post(
                    "/oauth2/revoke", data={"client_id": CLIENT_ID, "token": broadcaster}
                )
            revocation = await receive(one, "revocation")
            assert revocation["payload"]["subscription"]["status"] == "authorization_revoked"
            listed = await api.get("/helix/eventsub/subscriptions", params={"conduit_id": conduit})
            assert listed.json()["total"] == 1

        # the session went away: its shard says so
        async with await helix(sim) as api:
            shards = await api.get(
                "/helix/eventsub/conduits/shards", params={"conduit_id": conduit}
            )
            assert shards.json()["data"][0]["status"] == "websocket_disconnected"


@run
async def test_sessions_keep_alive_reconnect_and_close_when_unused() -> None:
    async with ChatSimulator(channels=["alpha"], control_port=0, eventsub_port=0) as sim:
        sim.conduits.keepalive_s = 1
        sim.conduits.unused_s = 1.5
        url = f"ws://{sim.host}:{sim.eventsub_port}/ws"
        async with connect(url) as idle:
            await receive(idle, "session_welcome")
            with pytest.raises(ConnectionClosed) as closed:
                await until_closed(idle)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4003

        async with await helix(sim) as api, connect(url) as old:
            first = (await receive(old, "session_welcome"))["payload"]["session"]["id"]
            conduit = (await api.post("/helix/eventsub/conduits", json={"shard_count": 1})).json()[
                "data"
            ][0]["id"]
            await api.patch(
                "/helix/eventsub/conduits/shards",
                json={
                    "conduit_id": conduit,
                    "shards": [
                        {"id": "0", "transport": {"method": "websocket", "session_id": first}}
                    ],
                },
            )
            await receive(old, "session_keepalive", timeout_s=3)  # nothing else to say
            assert await sim.conduits.reconnect(first)
            reconnect = await receive(old, "session_reconnect")
            new_url = reconnect["payload"]["session"]["reconnect_url"]
            async with connect(new_url) as new:
                second = (await receive(new, "session_welcome"))["payload"]["session"]["id"]
                with pytest.raises(ConnectionClosed):
                    await until_closed(old)
                shards = await api.get(
                    "/helix/eventsub/conduits/shards", params={"conduit_id": conduit}
                )
                [shard] = shards.json()["data"]
                assert shard["transport"]["session_id"] == second
                assert shard["status"] == "enabled"


@run
async def test_helix_refuses_in_twitchs_words() -> None:
    async with ChatSimulator(channels=["alpha"], control_port=0) as sim:
        base = f"http://{sim.host}:{sim.control_port}"
        async with httpx.AsyncClient(base_url=base) as plain:
            unauthenticated = await plain.get("/helix/eventsub/conduits")
            assert unauthenticated.status_code == 401
            user_token = grant(sim, "alpha", "channel:bot")
            as_user = await plain.get(
                "/helix/eventsub/conduits",
                headers={"Authorization": f"Bearer {user_token}", "Client-Id": CLIENT_ID},
            )
            assert as_user.status_code == 401
            assert "app access token" in as_user.json()["message"]
        async with await helix(sim) as api:
            for count in (0, 20_001, "2"):
                bad = await api.post("/helix/eventsub/conduits", json={"shard_count": count})
                assert bad.status_code == 400
            for _ in range(5):
                assert (
                    await api.post("/helix/eventsub/conduits", json={"shard_count": 1})
                ).status_code == 200
            sixth = await api.post("/helix/eventsub/conduits", json={"shard_count": 1})
            assert sixth.status_code == 429
            missing = await api.get(
                "/helix/eventsub/conduits/shards", params={"conduit_id": "nope"}
            )
            assert missing.status_code == 404
            not_json = await api.post("/helix/eventsub/subscriptions", content=b"{")
            assert not_json.status_code == 400


@run
async def test_send_chat_message_says_it_in_the_channel_with_the_badge() -> None:
    async with ChatSimulator(channels=["alpha", "beta"], control_port=0, eventsub_port=0) as sim:
        grant(sim, BOT, "user:bot", "user:write:chat")
        grant(sim, "alpha", "channel:bot")
        user = grant(sim, "viewer1", "user:write:chat")
        base = f"http://{sim.host}:{sim.control_port}"
        async with await helix(sim) as api, ChatClient(sim) as reader:
            await reader.join("alpha", "beta")
            body = {"broadcaster_id": user_id("alpha"), "sender_id": user_id(BOT), "message": "hi"}
            sent = await api.post("/helix/chat/messages", json=body)
            assert sent.status_code == 200, sent.text
            [result] = sent.json()["data"]
            assert result["is_sent"] is True
            line = await reader.privmsg()
            assert line.params == ["#alpha", "hi"]
            assert line.tags["id"] == result["message_id"]
            assert "bot-badge/1" in line.tags["badges"]  # app token, channel:bot: the badge
            # beta never granted channel:bot and the bot does not moderate it: not with an app
            # token; with the bot's own user token, said without the badge
            other = {**body, "broadcaster_id": user_id("beta"), "message": "hello beta"}
            refused = await api.post("/helix/chat/messages", json=other)
            assert refused.status_code == 403
            assert "channel:bot" in refused.json()["message"]
            own = grant(sim, BOT, "user:write:chat")
            async with httpx.AsyncClient(base_url=base) as plain:
                as_bot = await plain.post(
                    "/helix/chat/messages",
                    json=other,
                    headers={"Authorization": f"Bearer {own}", "Client-Id": CLIENT_ID},
                )
            assert as_bot.json()["data"][0]["is_sent"], as_bot.text
            line = await reader.privmsg()
            assert "bot-badge" not in line.tags["badges"]
            # Twitch's refusals: too quick, the same text, a ban; answered, not said
            again = await api.post("/helix/chat/messages", json=body)
            assert again.json()["data"][0]["drop_reason"]["code"] == "msg_ratelimit"
            await asyncio.sleep(sim.limits.channel_interval_s)
            duplicate = await api.post("/helix/chat/messages", json=body)
            assert duplicate.json()["data"][0]["drop_reason"]["code"] == "msg_duplicate"
            sim.ban(BOT, "alpha")
            banned = await api.post("/helix/chat/messages", json={**body, "message": "x"})
            assert banned.json()["data"][0]["drop_reason"]["code"] == "user_banned"
            # a user token of someone else, or bad bodies
            async with httpx.AsyncClient(base_url=base) as plain:
                as_viewer = await plain.post(
                    "/helix/chat/messages",
                    json=body,
                    headers={"Authorization": f"Bearer {user}", "Client-Id": CLIENT_ID},
                )
                assert as_viewer.status_code == 401
            for bad in ({}, {**body, "message": ""}, {**body, "message": "x" * 501}):
                assert (await api.post("/helix/chat/messages", json=bad)).status_code == 400
            unknown = await api.post("/helix/chat/messages", json={**body, "broadcaster_id": "1"})
            assert unknown.status_code == 404


@run
async def test_moderated_channels_stand_for_channel_bot() -> None:
    channels = ["alpha", "beta", "gamma"]
    async with ChatSimulator(channels=channels, control_port=0, eventsub_port=0) as sim:
        sim.add_account(BOT, "bottoken", moderator_in=["beta", "gamma"])
        token = grant(sim, BOT, "user:bot", "user:read:chat", "user:read:moderated_channels")
        base = f"http://{sim.host}:{sim.control_port}"
        headers = {"Authorization": f"Bearer {token}", "Client-Id": CLIENT_ID}
        async with httpx.AsyncClient(base_url=base, headers=headers) as plain:
            first = await plain.get(
                "/helix/moderation/channels", params={"user_id": user_id(BOT), "first": 1}
            )
            assert first.status_code == 200, first.text
            [row] = first.json()["data"]
            assert row == {
                "broadcaster_id": user_id("beta"),
                "broadcaster_login": "beta",
                "broadcaster_name": "beta",
            }
            cursor = first.json()["pagination"]["cursor"]
            rest = await plain.get(
                "/helix/moderation/channels",
                params={"user_id": user_id(BOT), "first": 1, "after": cursor},
            )
            assert [r["broadcaster_login"] for r in rest.json()["data"]] == ["gamma"]
            assert rest.json()["pagination"] == {}
            other = await plain.get("/helix/moderation/channels", params={"user_id": "1"})
            assert other.status_code == 401  # only one's own
        narrow = grant(sim, BOT, "user:bot")
        async with httpx.AsyncClient(base_url=base) as plain:
            lacking = await plain.get(
                "/helix/moderation/channels",
                params={"user_id": user_id(BOT)},
                headers={"Authorization": f"Bearer {narrow}", "Client-Id": CLIENT_ID},
            )
            assert lacking.status_code == 401
            assert "user:read:moderated_channels" in lacking.json()["message"]
        async with await helix(sim) as api:
            made = await api.post("/helix/eventsub/conduits", json={"shard_count": 1})
            conduit = made.json()["data"][0]["id"]

            async def subscribe(channel: str, kind: str = "channel.chat.message") -> int:
                condition = {"broadcaster_user_id": user_id(channel)}
                if not kind.startswith("channel.shared_chat."):
                    condition["user_id"] = user_id(BOT)
                body = {
                    "type": kind,
                    "version": "1",
                    "condition": condition,
                    "transport": {"method": "conduit", "conduit_id": conduit},
                }
                answer = await api.post("/helix/eventsub/subscriptions", json=body)
                return answer.status_code

            assert await subscribe("beta") == 202  # a moderator: no channel:bot needed
            assert await subscribe("alpha") == 403  # neither
            assert await subscribe("alpha", "channel.shared_chat.begin") == 202  # no grant needed
            assert await subscribe("alpha", "channel.shared_chat.begin") == 409
            # unmodded: the subscription its moderator status authorized is revoked
            assert await subscribe("gamma") == 202
            sim.moderate(BOT, "gamma", moderator=False)
            revoked = sim.conduits.subscriptions(CLIENT_ID, conduit, "channel.chat.message")
            assert [s["condition"]["broadcaster_user_id"] for s in revoked["data"]] == [
                user_id("beta")
            ]
        async with httpx.AsyncClient(base_url=base) as control:
            shown = (await control.get(f"/accounts/{BOT}")).json()
            assert shown["moderator_in"] == ["beta"]
            again = await control.post(
                "/channels/gamma/moderator", json={"login": BOT, "moderator": True}
            )
            assert again.status_code == 200, again.text
            assert sim.moderator_in(BOT) == ["beta", "gamma"]
            nobody = await control.post("/channels/gamma/moderator", json={"login": "nobody"})
            assert nobody.status_code == 400
            bad = await control.post(
                "/accounts", json={"login": BOT, "token": "t", "moderator_in": [5]}
            )
            assert bad.status_code == 400
            assert "list of channel names" in bad.json()["error"]
            cases = [
                ({"kind": "begin", "channels": []}, 400),
                ({"kind": "begin", "channels": ["alpha", "alpha"]}, 400),
                ({"kind": "begin", "channels": ["alpha", "beta"], "host": "gamma"}, 400),
                ({"kind": "begin", "channels": [1]}, 400),
                ({"kind": "later", "channels": ["alpha"]}, 400),
                ({"kind": "begin", "channels": ["nowhere"]}, 404),
                ({"kind": "begin", "channels": ["alpha", "beta"], "host": "beta"}, 200),
            ]
            for body, status in cases:
                answer = await control.post("/shared-chat", json=body)
                assert answer.status_code == status, (body, answer.text)
