"""A conduit shard's WebSocket session (:class:`ShardSession`) against the simulator's EventSub:
bound through Helix, the chat delivered once, kept across a ``session_reconnect`` and a
half-open socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from tmi_cluster.events import Event, MessageEvent
from tmi_cluster.events.build import from_message
from tmi_cluster.eventsub.shard import ShardSession
from tmi_cluster.irc import parse
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.traffic import GeneratedLine
from tmi_cluster.tasks import cancel_and_wait

from .helpers import run, until
from .test_simulator_eventsub import BOT, grant, helix, subscription

pytestmark = pytest.mark.timeout(60)


@dataclass
class Bench:
    sim: ChatSimulator
    api: httpx.AsyncClient
    conduit: str
    shard: ShardSession
    events: list[Event] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)


@asynccontextmanager
async def bench(channels: list[str]) -> AsyncIterator[Bench]:
    """A simulator, a conduit of one shard subscribed to ``channels``' chat, and a running
    ShardSession bound to it."""
    async with ChatSimulator(channels=channels, control_port=0, eventsub_port=0) as sim:
        grant(sim, BOT, "user:bot", "user:read:chat")
        for channel in channels:
            grant(sim, channel, "channel:bot")
        async with await helix(sim) as api:
            made = await api.post("/helix/eventsub/conduits", json={"shard_count": 1})
            conduit = made.json()["data"][0]["id"]
            for channel in channels:
                created = await api.post(
                    "/helix/eventsub/subscriptions", json=subscription(conduit, channel)
                )
                assert created.status_code == 202

            holder: list[Bench] = []
            delivered: list[Event] = []

            async def bind(session_id: str) -> None:
                holder[0].binds.append(session_id)
                shard = {"id": "0", "transport": {"method": "websocket", "session_id": session_id}}
                answer = await api.patch(
                    "/helix/eventsub/conduits/shards",
                    json={"conduit_id": conduit, "shards": [shard]},
                )
                assert not answer.json()["errors"], answer.text

            shard = ShardSession(
                f"ws://{sim.host}:{sim.eventsub_port}/ws",
                bind=bind,
                deliver=delivered.extend,
            )
            state = Bench(sim, api, conduit, shard, events=delivered)
            holder.append(state)
            task = asyncio.create_task(shard.run())
            try:
                await until(lambda: shard.state == "open", 10, "the shard bound")
                yield state
            finally:
                await cancel_and_wait(task)


def message_keys(events: list[Event]) -> list[str | None]:
    return [e.dedupe_key for e in events if isinstance(e, MessageEvent)]


def irc_keys(lines: list[GeneratedLine]) -> list[str | None]:
    keys: list[str | None] = []
    for line in lines:
        for event in from_message(parse(line.data.decode().rstrip())):
            if isinstance(event, MessageEvent):
                keys.append(event.dedupe_key)
    return keys


@run
async def test_the_chat_arrives_once_across_repeats_and_a_reconnect() -> None:
    async with bench(["alpha", "beta"]) as b:
        lines = b.sim.generate(20, "alpha") + b.sim.generate(20, "beta")
        expected = irc_keys(lines)
        await until(lambda: len(message_keys(b.events)) >= len(expected), 10, "the chat")
        assert sorted(map(str, message_keys(b.events))) == sorted(map(str, expected))

        # Twitch delivers at least once: a notification sent again is dropped
        sent = [m for m in b.sim.conduits.sent if m["metadata"]["message_type"] == "notification"]
        assert b.sim.conduits.repeat(sent[0])
        await until(lambda: b.shard.duplicates == 1, 5, "the duplicate seen")

        # session_reconnect: make-before-break, the shard stays bound, nothing lost or twice
        first = b.shard.session_id
        assert first is not None
        assert await b.sim.conduits.reconnect(first)
        await until(lambda: b.shard.sessions == 2, 10, "the new session")
        assert b.shard.session_id != first
        more = b.sim.generate(20, "alpha")
        expected += irc_keys(more)
        await until(lambda: len(message_keys(b.events)) >= len(expected), 10, "more chat")
        keys = message_keys(b.events)
        assert len(keys) == len(set(keys)) == len(expected)
        assert b.binds == [first]  # Twitch moved the shard: not bound again
        assert b.shard.state == "open"


@run
async def test_a_silent_socket_is_replaced_and_bound_again() -> None:
    async with bench(["alpha"]) as b:
        b.sim.conduits.keepalive_s = 1
        b.shard.grace_s = 0.5
        # the session's keepalive timeout is what the welcome said (10 s): reconnect once to
        # learn the shorter one, then go silent
        first = b.shard.session_id
        assert first is not None
        assert await b.sim.conduits.reconnect(first)
        await until(lambda: b.shard.sessions == 2, 10, "the session with 1 s keepalives")
        quiet = b.shard.session_id
        assert quiet is not None
        b.sim.conduits.silence(quiet)
        await until(lambda: len(b.binds) == 2, 15, "a new session bound")
        assert b.shard.problem is None or "no message" in (b.shard.problem or "")
        await until(lambda: b.shard.state == "open", 10, "open again")
        lines = b.sim.generate(10, "alpha")
        expected = irc_keys(lines)
        await until(lambda: set(expected) <= set(message_keys(b.events)), 10, "the chat after it")
