"""A conduit shard that Twitch disables while our WebSocket session stays open (it would get no
more notifications, and nothing on our side would notice): the holder opens a new session and
binds it, told either by ``conduit.shard.disabled`` (read on another shard) or, when no shard
can carry that, by the coordinator's check of the shards. In one process: the coordinator's
``ConduitKeeper`` and the workers' ``Shards`` against the simulator's Helix and EventSub
server, real Redis and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio

from tmi_cluster.bus import Keys
from tmi_cluster.bus.lease import Lease
from tmi_cluster.bus.routes import EventSubRoutes
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.coordinator.eventsub import CHECK_S, ConduitKeeper
from tmi_cluster.events import Event, MessageEvent
from tmi_cluster.routes import BOT_SCOPES
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.store import Store
from tmi_cluster.worker.shards import Shards

from .helpers import run, until
from .test_eventsub_tokens import KEY, _a_shard_holder, save_granted

pytestmark = pytest.mark.timeout(90)


def _settings(folder: Path, sim: ChatSimulator) -> Settings:
    base = f"http://{sim.host}:{sim.control_port}"
    return load_settings(
        environ={
            "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
            "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
            "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{base}/oauth2",
            "TMI_CLUSTER_TWITCH__API_URL": f"{base}/helix",
            "TMI_CLUSTER_TWITCH__GRANT_KEY": KEY,
            "TMI_CLUSTER_TMI__IDENTITY__USERNAME": "tmibot",
            "TMI_CLUSTER_TMI__TRANSPORT__EVENTSUB_URL": f"ws://{sim.host}:{sim.eventsub_port}/ws",
            "TMI_CLUSTER_TMI__TRANSPORT__SHARDS": "2",
        },
        cwd=folder,
    )


def _shard(sim: ChatSimulator, conduit: str, shard: str) -> dict[str, object]:
    [found] = [s for s in sim.conduits.shards(CLIENT_ID, conduit)["data"] if s["id"] == shard]
    return dict(found)


def _bound_anew(sim: ChatSimulator, shards: Shards, conduit: str, before: str | None) -> bool:
    session = shards.sessions["~eventsub/0"].session_id
    return session != before and _shard(sim, conduit, "0")["status"] == "enabled"


def _all_enabled(sim: ChatSimulator, conduit: str) -> bool:
    return all(s["status"] == "enabled" for s in sim.conduits.shards(CLIENT_ID, conduit)["data"])


@run
async def test_a_disabled_shard_is_bound_to_a_new_session(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with ChatSimulator(channels=["alpha"], control_port=0, eventsub_port=0) as sim:
        settings = _settings(tmp_path, sim)
        got: list[Event] = []
        with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
            store.migrate()
            save_granted(store, sim, [("tmibot", BOT_SCOPES), ("alpha", ("channel:bot",))])
            client = redis.asyncio.Redis.from_url(redis_server)
            keys = Keys(redis_prefix, 10.0, 10.0)
            lease = Lease(client, keys, "test", 60.0)
            await lease.acquire()
            hold = await _a_shard_holder(client, keys)
            keeper = ConduitKeeper(settings, client, keys, store, lease)
            keeper.wanted, keeper.workers = frozenset({"alpha"}), 1
            one = Shards(settings, client, keys, got.extend)
            other = Shards(settings, client, keys, got.extend)
            routes = EventSubRoutes(client, keys)
            try:
                await _scenario(sim, keeper, one, other, routes, hold, got)
            finally:
                await one.aclose()
                await other.aclose()
                await keeper.aclose()
                await client.aclose()


async def _scenario(  # noqa: PLR0917 (the test's parts, in the order it made them)
    sim: ChatSimulator,
    keeper: ConduitKeeper,
    one: Shards,
    other: Shards,
    routes: EventSubRoutes,
    hold: Callable[[str], Awaitable[None]],
    got: list[Event],
) -> None:
    await keeper.step()  # the conduit (2 shards), alpha's subscriptions, the watch
    conduit = (await routes.status()).conduit_id
    watching = sim.conduits.subscriptions(CLIENT_ID, None, "conduit.shard.disabled")
    assert [s["condition"] for s in watching["data"]] == [
        {"client_id": CLIENT_ID, "conduit_id": conduit}
    ]
    await one.follow(["~eventsub/0"])
    await other.follow(["~eventsub/1"])
    await until(lambda: one.held and other.held, 10, "both shards bound")
    first = one.sessions["~eventsub/0"].session_id
    # Twitch disables shard 0; its session stays open: shard 1 hears of it
    assert sim.conduits.disable(conduit, "0") == 1
    await until(routes.disabled, 10, "the report of the shard disabled")
    assert await routes.disabled() == {"0": first}
    await other.follow(["~eventsub/1"])  # not its session: nothing to do
    assert other.renewed == 0
    await one.follow(["~eventsub/0"])  # its session: a new one, bound
    assert one.renewed == 1
    assert await routes.disabled() == {}

    await until(
        lambda: _bound_anew(sim, one, conduit, first),
        15,
        "shard 0 bound to a new session",
    )
    # every shard disabled at once: nobody can hear of it; the coordinator's
    # check of the shards (every CHECK_S) marks them for their holders
    await hold("~eventsub/0")
    second = one.sessions["~eventsub/0"].session_id
    third = other.sessions["~eventsub/1"].session_id
    assert sim.conduits.disable(conduit, "0") == 1  # told on shard 1...
    assert sim.conduits.disable(conduit, "1") == 0  # ...but nobody hears of this
    await until(routes.disabled, 10, "shard 0's report")
    keeper._known.checked_at = -CHECK_S  # the check is due
    await keeper.step()
    assert await routes.disabled() == {"0": second, "1": third}
    await asyncio.gather(one.follow(["~eventsub/0"]), other.follow(["~eventsub/1"]))

    await until(lambda: _all_enabled(sim, conduit), 15, "both shards bound again")
    # chat goes on through the conduit
    got.clear()
    sim.generate(20, "alpha")
    await until(lambda: any(isinstance(e, MessageEvent) for e in got), 10, "alpha's chat")
    keeper._known.checked_at = -CHECK_S
    await keeper.step()
    assert await routes.disabled() == {}  # all enabled: nothing marked
