"""The EventSub route's Helix calls (:class:`Helix`) against the simulator's Twitch: the app
token (renewed after a 401), the conduit reused across restarts, shards, subscriptions
(idempotent), Send Chat Message; Twitch's refusals as HelixError."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import HelixError
from tmi_cluster.eventsub.helix import Helix
from tmi_cluster.simulator import ChatSimulator, Limits
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id

from .helpers import run
from .test_simulator_eventsub import BOT, grant, receive

pytestmark = pytest.mark.timeout(60)


def settings_for(sim: ChatSimulator, folder: Path, api_port: int | None = None) -> Settings:
    port = api_port if api_port is not None else sim.control_port
    return load_settings(
        environ={
            "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
            "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
            "TMI_CLUSTER_TWITCH__OAUTH_URL": f"http://{sim.host}:{sim.control_port}/oauth2",
            "TMI_CLUSTER_TWITCH__API_URL": f"http://{sim.host}:{port}/helix",
        },
        cwd=folder,
    )


@run
async def test_conduits_shards_and_subscriptions(tmp_path: Path) -> None:
    async with ChatSimulator(channels=["alpha", "beta"], control_port=0, eventsub_port=0) as sim:
        grant(sim, BOT, "user:bot", "user:read:chat", "user:write:chat")
        grant(sim, "alpha", "channel:bot")
        settings = settings_for(sim, tmp_path)
        async with Helix(settings) as helix:
            conduit = await helix.conduit(2)
            assert conduit.shard_count == 2
        async with Helix(settings) as helix:  # a restart: the same conduit, resized
            again = await helix.conduit(3)
            assert again.id == conduit.id
            assert again.shard_count == 3
            assert [c.id for c in await helix.conduits()] == [conduit.id]
            async with connect(f"ws://{sim.host}:{sim.eventsub_port}/ws") as socket:
                session = (await receive(socket, "session_welcome"))["payload"]["session"]["id"]
                refused = await helix.bind(conduit.id, {"0": session, "9": session})
                assert list(refused) == ["9"]
                shards = await helix.shards(conduit.id)
                assert (shards[0].status, shards[0].session_id) == ("enabled", session)
            bot, alpha = user_id(BOT), user_id("alpha")
            first = await helix.subscribe("channel.chat.message", alpha, bot, conduit.id)
            second = await helix.subscribe("channel.chat.message", alpha, bot, conduit.id)
            assert second.id == first.id  # idempotent: the 409 answers the existing one
            assert [s.id for s in await helix.subscriptions(conduit.id)] == [first.id]
            with pytest.raises(HelixError) as missing:
                await helix.subscribe("channel.chat.message", user_id("beta"), bot, conduit.id)
            assert missing.value.status == 403
            assert "channel:bot" in missing.value.reason
            await helix.unsubscribe(first.id)
            await helix.unsubscribe(first.id)  # gone already: no error
            assert await helix.subscriptions(conduit.id) == []

            # the app token withdrawn: renewed once, the call made again
            assert helix.app_tokens == 1
            sim.oauth.revoke(CLIENT_ID, helix._token)
            assert [c.id for c in await helix.conduits()] == [conduit.id]
            assert helix.app_tokens == 2


@run
async def test_send_chat_and_twitchs_refusals(tmp_path: Path) -> None:
    limits = Limits(message_allow=2, moderator_message_allow=2)
    channels = ["alpha", "beta", "gamma"]
    async with ChatSimulator(channels=channels, control_port=0, limits=limits) as sim:
        grant(sim, BOT, "user:bot", "user:write:chat")
        async with Helix(settings_for(sim, tmp_path)) as helix:
            bot = user_id(BOT)
            sent = await helix.send_chat(user_id("alpha"), bot, "hello")
            assert sent.is_sent
            assert sent.message_id
            assert ("alpha", "hello") in sim.account(BOT).said
            dropped = await helix.send_chat(user_id("alpha"), bot, "hello")
            assert not dropped.is_sent
            assert dropped.drop_code == "msg_ratelimit"
            await helix.send_chat(user_id("beta"), bot, "hello")
            with pytest.raises(HelixError) as budget:
                await helix.send_chat(user_id("gamma"), bot, "hello")
            assert budget.value.status == 429


@run
async def test_no_answer_is_an_error_that_says_so(tmp_path: Path) -> None:
    async with ChatSimulator(control_port=0) as sim:
        # the OAuth server answers, the API does not (a port nothing listens on)
        async with Helix(settings_for(sim, tmp_path, api_port=1)) as helix:
            with pytest.raises(HelixError, match=r"listing conduits: Twitch did not answer"):
                await helix.conduits()
        settings = settings_for(sim, tmp_path).model_copy(
            update={
                "twitch": settings_for(sim, tmp_path).twitch.model_copy(
                    update={"client_id": "unknown-client"}
                )
            }
        )
        async with Helix(settings) as helix:
            with pytest.raises(HelixError, match="getting an app token") as refused:
                await helix.conduits()
            assert refused.value.status == 400
