"""The EventSub route's Helix calls (:class:`Helix`) against the simulator's Twitch: the app
token (renewed after a 401), the conduit reused across restarts, shards, subscriptions
(idempotent), Send Chat Message; Twitch's refusals as HelixError."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.config.model import Identity
from tmi_cluster.errors import ChatRefusedError, HelixError
from tmi_cluster.eventsub.helix import Helix
from tmi_cluster.eventsub.sending import ApiChat, BotToken
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.simulator import ChatSimulator, Limits
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id
from tmi_cluster.store import Store

from .helpers import free_port, run
from .test_simulator_eventsub import BOT, grant, receive

GRANT_KEY = "a grant key of at least thirty-two characters"

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
        for channel in channels:  # the app token sends where the broadcaster granted channel:bot
            grant(sim, channel, "channel:bot")
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


@run
async def test_sending_as_the_bots_user_needs_its_grant(tmp_path: Path) -> None:
    """``send_with = "user"``: the bot's grant from the store; without one (or without
    user:write:chat, or sealed with another key) nothing is sent, ``unauthorized``."""
    async with ChatSimulator(channels=["alpha"], control_port=0) as sim:
        base = settings_for(sim, tmp_path)
        settings = base.model_copy(
            update={
                "twitch": base.twitch.model_copy(update={"grant_key": SecretStr(GRANT_KEY)}),
                "tmi": base.tmi.model_copy(
                    update={"identity": Identity(username=BOT, password=SecretStr("x"))}
                ),
            }
        )
        with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
            store.migrate()
            chat = ApiChat(Helix(settings), _nowhere, as_user=BotToken(settings, store))
            try:
                with pytest.raises(ChatRefusedError, match="needs its grant") as none:
                    await chat.target("alpha")
                assert none.value.reason == "unauthorized"
                token = grant(sim, BOT, "user:write:chat")
                store.save_grant(
                    Grants(GRANT_KEY).seal(
                        TokenGrant(
                            user_id=user_id(BOT),
                            login=BOT,
                            scopes=("user:write:chat",),
                            access_token=token,
                            refresh_token="r",
                        )
                    )
                )
                target = await chat.target("alpha")
                assert target is not None
                assert (target.broadcaster_id, target.sender_id) == (user_id("alpha"), user_id(BOT))
                assert await chat.send(target, "as the bot itself")
                assert ("alpha", "as the bot itself") in sim.account(BOT).said
                other = BotToken(
                    settings.model_copy(
                        update={
                            "twitch": settings.twitch.model_copy(
                                update={"grant_key": SecretStr("another key" * 4)}
                            )
                        }
                    ),
                    store,
                )
                with pytest.raises(ChatRefusedError) as unreadable:
                    await other.grant()
                assert unreadable.value.reason == "unauthorized"
                # the database away: nothing sent, the send's not_connected (not a bug of ours)
                with (
                    Store(f"postgresql://postgres@127.0.0.1:{free_port()}/test") as away,
                    pytest.raises(ConnectionError, match="grant could not be read"),
                ):
                    await BotToken(settings, away).grant()
            finally:
                await chat.aclose()


async def _nowhere(channel: str) -> tuple[str, str] | None:
    return None
