"""The grants' user tokens kept valid (hourly validation, refreshes, ended grants deleted),
against the simulator's Twitch OAuth and a real SQLite store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio

from tmi_cluster.bus import Assignment, Heartbeat, Keys, ProcessStatus
from tmi_cluster.bus.lease import Lease
from tmi_cluster.bus.routes import EventSubRoutes
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.coordinator.eventsub import CHECK_S, ConduitKeeper
from tmi_cluster.coordinator.tokens import TokenKeeper
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.routes import BOT_SCOPES
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id
from tmi_cluster.store import Store

from .helpers import free_port, run
from .test_simulator_eventsub import grant

pytestmark = pytest.mark.timeout(60)

KEY = "a grant key of at least thirty-two characters"


def settings_of(folder: Path, oauth: str) -> Settings:
    return load_settings(
        environ={
            "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
            "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
            "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{oauth}/oauth2",
            "TMI_CLUSTER_TWITCH__GRANT_KEY": KEY,
        },
        cwd=folder,
    )


def sealed(login: str, access: str, refresh: str) -> TokenGrant:
    return TokenGrant(
        user_id=user_id(login),
        login=login,
        scopes=("channel:bot",),
        access_token=access,
        refresh_token=refresh,
    )


@run
async def test_tokens_validated_refreshed_and_ended_grants_deleted(tmp_path: Path) -> None:
    async with ChatSimulator(control_port=0) as sim:
        base = f"http://{sim.host}:{sim.control_port}"
        settings = settings_of(tmp_path, base)
        sealer = Grants(KEY)
        good = grant(sim, "good", "channel:bot")
        stale_refresh = sim.oauth.token(
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "code": sim.oauth.issue_code(CLIENT_ID, "http://x/cb", "stale", ("channel:bot",)),
                "grant_type": "authorization_code",
                "redirect_uri": "http://x/cb",
            }
        )["refresh_token"]
        with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
            store.migrate()
            store.save_grants(
                [
                    sealer.seal(sealed("good", good, "unused-refresh-token")),
                    # an access token Twitch no longer accepts, a refresh token it does
                    sealer.seal(sealed("stale", "expired-access-token", stale_refresh)),
                    # neither: the user disconnected the application
                    sealer.seal(sealed("gone", "expired-access-token", "revoked-refresh")),
                    # sealed with another twitch.grant_key: said, never deleted
                    Grants("another key of at least thirty-two characters").seal(
                        sealed("other", "a-token", "a-refresh")
                    ),
                ]
            )
            keeper = TokenKeeper(settings, store, every_s=3600, step_s=3600)
            try:
                ended = await keeper.step(store.grants())
                assert ended == {user_id("gone")}
                assert (keeper.validated, keeper.refreshed, keeper.ended) == (1, 1, 1)
                assert keeper.problem is not None
                assert "1 grants cannot be read" in keeper.problem
                assert "other" in keeper.problem
                left = {g.login: sealer.open(g) for g in store.grants() if g.login != "other"}
                assert sorted(left) == ["good", "stale"]
                assert left["good"].access_token == good  # untouched
                renewed = left["stale"].access_token
                assert renewed != "expired-access-token"
                assert sim.oauth.validate(renewed)["login"] == "stale"  # a working token
                assert left["stale"].expires_at is not None
                # checked within the hour: the next step asks Twitch nothing
                assert await keeper.step(store.grants()) == set()
                assert (keeper.validated, keeper.refreshed) == (1, 1)
            finally:
                await keeper.aclose()


@run
async def test_twitch_not_answering_deletes_nothing(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, f"http://127.0.0.1:{free_port()}")
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        store.migrate()
        store.save_grant(Grants(KEY).seal(sealed("someone", "a-token", "a-refresh")))
        keeper = TokenKeeper(settings, store, every_s=3600, step_s=3600)
        try:
            assert await keeper.step(store.grants()) == set()
            assert [g.login for g in store.grants()] == ["someone"]
            assert keeper.problem is not None
            assert "did not answer" in keeper.problem
            assert "a-token" not in keeper.problem
        finally:
            await keeper.aclose()


# -- the coordinator's EventSub keeper, step by step, under faults ----------------------------


def save_granted(
    store: Store, sim: ChatSimulator, grants: list[tuple[str, tuple[str, ...]]]
) -> None:
    """Each (login, scopes) granted at the simulator's Twitch and stored sealed with
    :data:`KEY`, as the invite screen stores it."""
    sealer = Grants(KEY)
    store.save_grants(
        [
            sealer.seal(
                TokenGrant(
                    user_id=user_id(login),
                    login=login,
                    scopes=scopes,
                    access_token=grant(sim, login, *scopes),
                    refresh_token=f"refresh-{login}",
                )
            )
            for login, scopes in grants
        ]
    )


def keeper_settings(folder: Path, sim: ChatSimulator, api: str | None = None) -> Settings:
    base = f"http://{sim.host}:{sim.control_port}"
    return load_settings(
        environ={
            "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
            "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
            "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{base}/oauth2",
            "TMI_CLUSTER_TWITCH__API_URL": api or f"{base}/helix",
            "TMI_CLUSTER_TMI__IDENTITY__USERNAME": "tmibot",
        },
        cwd=folder,
    )


@run
async def test_the_keeper_reconciles_after_a_restart_a_redis_loss_and_twitch_away(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    channels = ["alpha", "beta", "gamma"]
    async with ChatSimulator(control_port=0) as sim:
        settings = keeper_settings(tmp_path, sim)
        with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
            store.migrate()
            save_granted(
                store, sim, [("tmibot", BOT_SCOPES)] + [(c, ("channel:bot",)) for c in channels]
            )
            client = redis.asyncio.Redis.from_url(redis_server)
            keys = Keys(redis_prefix, 10.0, 10.0)
            lease = Lease(client, keys, "test", 60.0)
            await lease.acquire()
            shard_holder = await _a_shard_holder(client, keys)
            try:
                first = ConduitKeeper(settings, client, keys, store, lease)
                first.wanted, first.workers = frozenset(channels), 1
                await first.step()  # conduit and subscriptions; no shard bound yet: not routed
                assert first.shards == 1
                assert first.routed == {}
                assert first.placed(frozenset(channels)) == {*channels, "~eventsub/0"}
                await shard_holder("~eventsub/0")
                await first.step()
                routes = EventSubRoutes(client, keys)
                assert set(await routes.routes()) == set(channels)
                assert first.placed(frozenset(channels)) == {"~eventsub/0"}  # IRC reads none
                made = len(sim.conduits._subscriptions)
                # each channel's types, and the conduit's watch of its shards
                assert made == 3 * len(settings.tmi.transport.subscriptions) + 1
                await first.helix.aclose()
                # a new leader (a restart): lists, reconciles, makes nothing twice
                second = ConduitKeeper(settings, client, keys, store, lease)
                second.wanted, second.workers = frozenset(channels), 1
                await second.step()
                assert len(sim.conduits._subscriptions) == made
                assert len(sim.conduits.conduits(CLIENT_ID)["data"]) == 1
                assert set(second.routed) == set(channels)
                # Redis forgets everything: the next step writes the routes again
                await client.delete(keys.eventsub_routes, keys.eventsub_conduit)
                await second.step()
                assert set(await routes.routes()) == set(channels)
                assert (await routes.status()).subscriptions == made - 1  # the chat's
                # the conduit deleted at Twitch: found at the next look, made again, subscribed
                old = (await routes.status()).conduit_id
                sim.conduits.delete_conduit(CLIENT_ID, old)
                second._known.checked_at = -CHECK_S  # the look is due (every CHECK_S)
                await second.step()
                status = await routes.status()
                assert status.conduit_id not in ("", old)
                assert len(sim.conduits._subscriptions) == made
                assert set(await routes.routes()) == set(channels)
                # a broadcaster revoked at Twitch (a worker reported it): back to IRC
                await routes.revoked(user_id("beta"))
                await second.step()
                routed, leaving = await routes.table()
                assert set(routed) == {"alpha", "gamma"}
                assert set(leaving) == {"beta"}  # until IRC holds it, or 15 s
                assert [g.login for g in store.grants(["beta"])] == []
                assert "beta" in second.placed(frozenset(channels))
                await second.helix.aclose()
                # Twitch's API away: the problem is shown, the routes stay
                third = ConduitKeeper(
                    keeper_settings(tmp_path, sim, f"http://127.0.0.1:{free_port()}/helix"),
                    client,
                    keys,
                    store,
                    lease,
                )
                third.wanted, third.workers = frozenset(channels), 1
                await third.step()
                assert third.problem is not None
                assert "did not answer" in third.problem
                assert set(await routes.routes()) == {"alpha", "gamma"}
                await third.helix.aclose()
            finally:
                await client.aclose()


async def _a_shard_holder(
    client: redis.asyncio.Redis, keys: Keys
) -> Callable[[str], Awaitable[None]]:
    """A live worker process of the test's own that says it holds a shard."""
    heartbeat = Heartbeat(
        client,
        keys,
        "process",
        "worker-1",
        ttl_s=60,
        interval_s=1,
        status_of=lambda: ProcessStatus(supervisor="sup", pid=1, state="running"),
    )
    await heartbeat.beat()

    async def hold(name: str) -> None:
        await Assignment(client, keys).record_held("worker-1", joined=[name])

    return hold
