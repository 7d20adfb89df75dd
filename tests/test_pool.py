"""The pool against the simulator: placement, the join budget, join outcomes, parting."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import Callable

import pytest
import redis.asyncio

from tmi_cluster.chat.connection import ConnectionOptions
from tmi_cluster.chat.pool import Pool, PoolState
from tmi_cluster.chat.ratelimit import NORMAL, VERIFIED, AccountRates, LocalWindow, Rate
from tmi_cluster.config import Settings
from tmi_cluster.errors import LoginError, NoIdentityError
from tmi_cluster.events import JoinEvent, MessageEvent, PartEvent
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.simulator import ChatSimulator, Limits
from tmi_cluster.worker.worker import build_pool

from .helpers import run, run_documented_example
from .test_connection import TIMEOUT_S, Recorder, every_message_exactly_once


def _options(sim: ChatSimulator, **changes: object) -> ConnectionOptions:
    base: dict[str, object] = {"host": "127.0.0.1", "port": sim.port, "secure": False}
    base.update(changes)
    return ConnectionOptions(**base)  # type: ignore[arg-type]


@run
async def test_channels_spread_over_connections_and_events_flow() -> None:
    names = [f"channel{i}" for i in range(1, 121)]
    async with ChatSimulator(channels=names, seed=4) as sim:
        events = Recorder()
        window = LocalWindow(Rate(200, 1.0))
        async with Pool(
            _options(sim),
            channels_per_connection=50,
            join_window=window,
            connect_interval_s=0.05,
            on_event=events,
        ) as pool:
            outcomes = await pool.join(names)
            assert all(o.ok for o in outcomes.values())
            assert len(pool.connections) == 3
            assert sorted(len(c.channels) for c in pool.connections.values()) == [20, 50, 50]
            assert all(len(sim.joined(n)) == 1 for n in names)
            assert outcomes["channel1"].connection == pool.where("channel1")
            again = await pool.join(["channel1"])
            assert again["channel1"].ok
            assert len(sim.joined("channel1")) == 1  # never joined twice
            lines = sim.generate(100)
            wanted = {line.message_id for line in lines if line.command == "PRIVMSG"}
            await events.until(lambda: wanted <= {e.message_id for e in events.of(MessageEvent)})
            await pool.part(names[:10])
            await sim.wait_until(lambda: not any(sim.joined(n) for n in names[:10]))
            assert pool.where("channel1") is None


@run
async def test_the_join_budget_holds_as_the_simulator_counts_it() -> None:
    names = [f"c{i}" for i in range(30)]
    limits = Limits(anonymous_join_allow=10, join_every_s=1.0)
    async with ChatSimulator(channels=names, limits=limits) as sim:
        window = LocalWindow(Rate(10, 1.0))
        async with Pool(_options(sim), channels_per_connection=50, join_window=window) as pool:
            loop = asyncio.get_running_loop()
            started = loop.time()
            outcomes = await pool.join(names)
            elapsed = loop.time() - started
            assert all(o.ok for o in outcomes.values())
            assert elapsed >= 2.0  # 30 joins at 10 per second
            violations = [
                v for c in sim.connections() for v in sim.account(c.login or "").violations
            ]
            assert violations == []  # the simulator would have disconnected us


@run
async def test_each_anonymous_connection_has_a_join_budget_of_its_own() -> None:
    names = [f"c{i}" for i in range(30)]
    limits = Limits(anonymous_join_allow=10, join_every_s=60.0)  # per connection, as Twitch
    async with ChatSimulator(channels=names, limits=limits) as sim:
        shared = LocalWindow(Rate(10, 60.0))  # one window for all would hold them a minute
        own = Rate(10, 60.0)
        async with Pool(
            _options(sim),
            channels_per_connection=10,
            join_window=shared,
            connection_join_rate=own,
            connect_interval_s=0,
        ) as pool:
            outcomes = await asyncio.wait_for(pool.join(names), 10.0)
            assert all(o.ok for o in outcomes.values())
            assert len(pool.connections) == 3  # three identities, ten JOINs each
            violations = [
                v for c in sim.connections() for v in sim.account(c.login or "").violations
            ]
            assert violations == []


async def _anonymous_join(
    count: int, rate: Rate, *, connect_interval_s: float, connect_burst: int
) -> tuple[float, list[int]]:
    """Join ``count`` channels through a pool whose connections each have the budget ``rate``
    (the simulator enforcing it); the seconds taken and the channels per connection."""
    names = [f"c{i}" for i in range(count)]
    limits = Limits(anonymous_join_allow=rate.allow, join_every_s=rate.every_s)
    async with (
        ChatSimulator(channels=names, limits=limits) as sim,
        Pool(
            _options(sim),
            channels_per_connection=50,
            connection_join_rate=rate,
            connect_interval_s=connect_interval_s,
            connect_burst=connect_burst,
        ) as pool,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.wait_for(pool.join(names), 20.0)
        elapsed = loop.time() - started
        assert all(o.ok for o in outcomes.values())
        violations = [v for c in sim.connections() for v in sim.account(c.login or "").violations]
        assert violations == []  # every connection within its own budget
        return elapsed, sorted(len(c.channels) for c in pool.connections.values())


@run
async def test_anonymous_joins_go_to_fresh_connections_rather_than_wait_for_a_budget() -> None:
    # A failover's channels at today's anonymous budget (20 per 10 s per connection): five
    # fresh connections of 20 join at once, where two full ones would wait out a window.
    elapsed, sizes = await _anonymous_join(
        100, Rate(20, 10.0), connect_interval_s=0.05, connect_burst=10
    )
    assert sizes == [20] * 5
    assert elapsed < 5.0  # no window of 10 s waited out


@run
async def test_a_connection_waits_for_its_budget_when_the_pacing_is_slower() -> None:
    # Opening another connection would take 30 s; the one open frees its budget in 1 s.
    elapsed, sizes = await _anonymous_join(
        12, Rate(5, 1.0), connect_interval_s=30.0, connect_burst=1
    )
    assert sizes == [12]
    assert elapsed >= 2.0  # 12 JOINs at 5 per second, one identity


@run
async def test_joins_a_connection_took_itself_count_against_its_budget() -> None:
    # A connection's rejoins after a reconnect take from its own window, unseen by the pool's
    # placements: the pool reads that window too, and opens a connection rather than wait.
    names = [f"c{i}" for i in range(8)]
    limits = Limits(anonymous_join_allow=5, join_every_s=1.0)
    async with (
        ChatSimulator(channels=names, limits=limits) as sim,
        Pool(
            _options(sim),
            channels_per_connection=50,
            connection_join_rate=Rate(5, 1.0),
            connect_interval_s=0.05,
            connect_burst=10,
        ) as pool,
    ):
        await pool.join(names[:5])
        assert len(pool.connections) == 1
        await asyncio.sleep(1.5)  # its budget is free again, as the pool's placements see it
        first = next(iter(pool.connections.values()))
        assert first.join_window is not None
        await first.join_window.take(5)  # as rejoins after a reconnect would
        outcomes = await asyncio.wait_for(pool.join(names[5:]), 5.0)
        assert all(o.ok for o in outcomes.values())
        assert len(pool.connections) == 2
        assert {outcomes[n].connection for n in names[5:]} != {first.name}


@run
async def test_held_is_what_the_server_confirmed_not_what_is_being_joined() -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:  # "ghost" does not exist: silence
        pool = Pool(_options(sim), join_timeout_s=0.5, connect_interval_s=0)
        async with pool:
            joining = asyncio.ensure_future(pool.join(["alpha", "ghost"]))
            await sim.wait_until(lambda: bool(sim.joined("alpha")))
            assert "ghost" in pool.channels  # reserved while its join is under way
            assert "ghost" not in pool.held
            outcomes = await joining
            assert outcomes["ghost"].result is JoinResult.TIMEOUT
            assert pool.held == pool.channels == {"alpha"}


@run
async def test_join_failures_carry_their_reason_and_are_not_kept() -> None:
    limits = Limits(channel_cap=3)
    async with ChatSimulator(
        channels=["ok", "gone", "strict", "more", "extra"], limits=limits
    ) as sim:
        sim.add_account("mybot", "t")
        sim.suspend("gone")
        sim.ban("mybot", "strict")
        options = _options(sim, login="mybot", token="t")
        async with Pool(options, join_timeout_s=0.5, connect_interval_s=0) as pool:
            outcomes = await pool.join(["ok", "gone", "strict", "nowhere", "more", "extra"])
            results = {name: outcome.result for name, outcome in outcomes.items()}
            assert (
                results
                == {
                    "ok": "joined",
                    "gone": "msg_channel_suspended",
                    "strict": "msg_banned",
                    "nowhere": "timeout",
                    "more": "joined",
                    "extra": "joined",
                }
                or results["extra"] == "msg_concurrent_channel_limit_reached"
            )
            assert pool.channels == {n for n, r in results.items() if r == "joined"}
            capped = await pool.join(["ok", "gone"])
            assert capped["ok"].ok


@run
async def test_the_channel_cap_is_reported() -> None:
    limits = Limits(channel_cap=2)
    async with ChatSimulator(channels=["a", "b", "c"], limits=limits) as sim:
        sim.add_account("mybot", "t")
        async with Pool(_options(sim, login="mybot", token="t"), connect_interval_s=0) as pool:
            outcomes = await pool.join(["a", "b", "c"])
            assert [outcomes[n].result for n in ("a", "b", "c")] == [
                "joined",
                "joined",
                "msg_concurrent_channel_limit_reached",
            ]
            assert pool.channels == {"a", "b"}


# -- make-before-break moves --------------------------------------------------------------------


@run
async def test_a_move_joins_first_and_loses_and_duplicates_nothing() -> None:
    channels = ["alpha", "beta"]
    async with ChatSimulator(channels=channels, rate=3000, seed=5) as sim:
        events = Recorder()
        options = _options(sim, overlap_linger_s=0.3)
        async with Pool(
            options, channels_per_connection=1, connect_interval_s=0, on_event=events
        ) as pool:
            await pool.join(channels)
            source, other = pool.where("alpha"), pool.where("beta")
            await events.until(lambda: len(events.of(MessageEvent)) > 300)
            outcome = await pool.move("#Alpha")
            assert outcome.ok
            assert outcome.connection not in (source, other, None)
            assert pool.where("alpha") == outcome.connection
            await sim.wait_until(lambda: len(sim.joined("alpha")) == 1)
            moved = len(events.of(MessageEvent))
            await events.until(lambda: len(events.of(MessageEvent)) > moved + 300)
            await every_message_exactly_once(events, sim, channels)
            both = [d for d in sim.deliveries("alpha") if len(d.connections) == 2]
            assert both, "the test should cover messages sent while both connections held it"
            own_joins = [e for e in events.of(JoinEvent) if e.channel == "alpha"]
            assert len(own_joins) == 1  # the move's second JOIN is not shown again
            assert not [e for e in events.of(PartEvent) if e.channel == "alpha"]
            assert pool.connections[source or ""].channels == set()


@run
async def test_a_move_to_a_connection_that_lags_delivers_nothing_twice() -> None:
    async with ChatSimulator(channels=["alpha", "beta"]) as sim:
        events = Recorder()
        async with Pool(
            _options(sim, overlap_linger_s=0.0),
            channels_per_connection=1,
            connect_interval_s=0,
            on_event=events,
        ) as pool:
            await pool.join(["alpha", "beta"])
            source, target = pool.where("alpha"), pool.where("beta")
            [target_link] = sim.joined("beta")
            moving = asyncio.create_task(pool.move("alpha", to=target))
            await sim.wait_until(lambda: pool.where("alpha") == target)  # joined there
            sim.hold([target_link])
            sim.generate(20, "alpha")  # both get these; the target late
            await sim.wait_until(lambda: sim.joined("alpha") == (target_link,))  # source parted
            sim.hold([target_link], held=False)
            outcome = await asyncio.wait_for(moving, 10.0)
            assert (outcome.ok, outcome.connection) == (True, target)
            await every_message_exactly_once(events, sim, ["alpha", "beta"])
            assert pool.connections[source or ""].channels == set()


@run
async def test_a_move_from_a_connection_that_lags_loses_nothing() -> None:
    async with ChatSimulator(channels=["alpha", "beta"]) as sim:
        events = Recorder()
        async with Pool(
            _options(sim, overlap_linger_s=0.0),
            channels_per_connection=1,
            connect_interval_s=0,
            on_event=events,
        ) as pool:
            await pool.join(["alpha", "beta"])
            target = pool.where("beta")
            [source_link] = sim.joined("alpha")
            sim.hold([source_link])
            sim.generate(20, "alpha")  # only the source is joined: only it can deliver these
            moving = asyncio.create_task(pool.move("alpha", to=target))
            await sim.wait_until(lambda: pool.where("alpha") == target)  # joined there
            sim.hold([source_link], held=False)
            outcome = await asyncio.wait_for(moving, 10.0)
            assert outcome.ok
            await every_message_exactly_once(events, sim, ["alpha", "beta"])


@run
async def test_a_failed_move_leaves_the_channel_where_it_was() -> None:
    async with (
        ChatSimulator(channels=["alpha", "beta"]) as sim,
        Pool(
            _options(sim), channels_per_connection=1, connect_interval_s=0, join_timeout_s=2
        ) as pool,
    ):
        await pool.join(["alpha", "beta"])
        source = pool.where("alpha")
        target = pool.where("beta")
        sim.suspend("alpha")
        outcome = await pool.move("alpha", to=target)
        assert (outcome.result, outcome.connection) == ("msg_channel_suspended", None)
        assert pool.where("alpha") == source
        assert "alpha" not in pool.connections[target or ""].channels
        with pytest.raises(ValueError, match="does not hold"):
            await pool.move("nowhere")
        with pytest.raises(ValueError, match="no connection named"):
            await pool.move("beta", to="nope")
        assert (await pool.move("beta", to=target)).connection == target  # already there


# -- from the settings: anonymous reading, authenticated sending, shared windows ---------------


def test_rates_come_from_the_preset_and_explicit_limits(
    make_settings: Callable[..., Settings],
) -> None:
    assert AccountRates.from_settings(make_settings()) == NORMAL
    verified = '[throttle]\npreset = "verified"\n'
    assert AccountRates.from_settings(make_settings(verified)) == VERIFIED
    env = {"TMI_CLUSTER_THROTTLE__MESSAGES__EVERY": "20"}
    mixed = AccountRates.from_settings(
        make_settings(verified + "[throttle.join]\nallow = 50\n", env=env)
    )
    assert mixed.join == Rate(50, VERIFIED.join.every_s)
    assert mixed.auth == VERIFIED.auth
    assert mixed.messages == Rate(VERIFIED.messages.allow, 20.0)
    assert mixed.moderator_messages == Rate(VERIFIED.moderator_messages.allow, 20.0)


def _sim_settings(sim: ChatSimulator, make: Callable[..., Settings], extra: str = "") -> Settings:
    return make(
        f'[tmi.connection]\nserver = "127.0.0.1"\nport = {sim.port}\nsecure = false\n'
        f"connect_interval = 0\n{extra}"
    )


@run
async def test_without_identity_the_pool_reads_anonymously_and_cannot_send(
    make_settings: Callable[..., Settings],
) -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:
        settings = _sim_settings(sim, make_settings)
        async with build_pool(settings) as pool:
            assert pool.sender is None
            assert (await pool.join(["alpha"]))["alpha"].ok
            assert next(c.login or "" for c in sim.connections()).startswith("justinfan")
            with pytest.raises(NoIdentityError, match=r"tmi\.identity\.username"):
                await pool.say("alpha", "hello")


@run
async def test_read_anonymously_send_as_the_identity_through_shared_windows(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    limits = Limits(message_allow=3, message_every_s=2.0, channel_interval_s=0.1)
    async with ChatSimulator(channels=["alpha"], limits=limits) as sim:
        sim.add_account("mybot", "secret")
        settings = make_settings(
            f'prefix = "{redis_prefix}"\n'
            f'[tmi.connection]\nserver = "127.0.0.1"\nport = {sim.port}\nsecure = false\n'
            "connect_interval = 0\nread_anonymously = true\n"
            '[tmi.identity]\nusername = "MyBot"\npassword = "oauth:secret"\n'
            "[throttle.messages]\nallow = 3\nevery = 2\nchannel_interval = 0.1\n"
        )
        events = Recorder()
        client = redis.asyncio.Redis.from_url(redis_server)
        try:
            async with build_pool(settings, redis_client=client, on_event=events) as pool:
                assert (await pool.join(["alpha"]))["alpha"].ok
                assert pool.sender is not None
                for i in range(5):  # more than the window allows: the window must hold them
                    assert await pool.say("alpha", f"message {i}") == 1
                await events.until(lambda: len(events.of(MessageEvent)) == 5)
                assert [e.user for e in events.of(MessageEvent)] == ["mybot"] * 5
                logins = sorted(c.login or "" for c in sim.connections())
                assert len(logins) == 2
                assert logins[0].startswith("justinfan")
                assert logins[1] == "mybot"
                assert sim.account("mybot").violations == []
                assert sim.account("mybot").joins == 0  # the identity joined nothing
                keys = {k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")}
                assert f"{redis_prefix}ratelimit:mybot:auth" in keys
                assert f"{redis_prefix}ratelimit:mybot:messages" in keys
                # each anonymous connection has a JOIN window of its own, not one shared
                assert f"{redis_prefix}ratelimit:justinfan:join" not in keys
        finally:
            await client.aclose()


def test_the_documented_example_runs() -> None:
    run_documented_example("connections.md", "test_greet_everyone")


@run
async def test_a_refused_identity_fails_say_with_the_reason(
    make_settings: Callable[..., Settings],
) -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:
        sim.add_account("mybot", "right")
        settings = make_settings(
            f'[tmi.connection]\nserver = "127.0.0.1"\nport = {sim.port}\nsecure = false\n'
            '[tmi.identity]\nusername = "mybot"\npassword = "oauth:wrong"\n'
        )
        async with build_pool(settings) as pool:
            with pytest.raises(LoginError, match="Login authentication failed"):
                await pool.say("alpha", "hello")
            with pytest.raises(LoginError):
                await pool.say("alpha", "again")  # no second attempt with a refused token
        assert sim.account("mybot").authentications == 1


@run
async def test_a_closed_pool_refuses_work() -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:
        pool = Pool(_options(sim), connect_interval_s=0)
        assert pool.state is PoolState.OPEN
        assert (await pool.join(["alpha"]))["alpha"].ok
        await pool.aclose()
        await pool.aclose()  # idempotent
        assert PoolState(pool.state.value) is PoolState.CLOSED  # re-read: no narrowing
        assert pool.channels == set()
        for attempt in (pool.join(["alpha"]), pool.move("alpha"), pool.say("alpha", "hi")):
            with pytest.raises(RuntimeError, match="is closed"):
                await attempt
        await sim.wait_until(lambda: not sim.joined("alpha"))  # its connections are gone


@run
async def test_concurrent_joins_never_join_a_channel_twice() -> None:
    names = [f"c{i}" for i in range(12)]
    async with (
        ChatSimulator(channels=names) as sim,
        Pool(_options(sim), channels_per_connection=5, connect_interval_s=0.05) as pool,
    ):
        first, second, third = await asyncio.gather(
            pool.join(names), pool.join(reversed(names)), pool.join(names[:3])
        )
        for outcomes in (first, second, third):
            assert all(outcome.ok for outcome in outcomes.values())
        assert all(first[n].connection == second[n].connection for n in names)
        assert all(len(sim.joined(n)) == 1 for n in names)  # one connection each, never two
        assert sum(len(c.channels) for c in pool.connections.values()) == len(names)


@run
async def test_a_channel_parted_while_its_join_is_pending_is_not_kept() -> None:
    async with (
        ChatSimulator(channels=["alpha", "beta"]) as sim,
        Pool(_options(sim), connect_interval_s=0) as pool,
    ):
        joining = asyncio.ensure_future(pool.join(["alpha", "beta"]))
        await sim.wait_until(lambda: bool(sim.connections()))  # the join is under way
        await pool.part(["alpha"])
        outcomes = await joining
        assert outcomes["beta"].ok
        assert outcomes["alpha"].result in {"parted", "joined"}
        assert pool.channels == {"beta"} | ({"alpha"} if outcomes["alpha"].ok else set())
        await sim.wait_until(lambda: len(sim.joined("alpha")) == (1 if outcomes["alpha"].ok else 0))
        held = {c for connection in pool.connections.values() for c in connection.channels}
        assert held == pool.channels  # nothing joined that the pool does not know of


@run
async def test_a_pool_keeps_little_per_channel() -> None:
    """What a pool keeps per joined channel (the Python heap, simulator excluded): one string
    per channel name, shared by the pool's map, its connection's and the link's; the room of
    finished joins given back. 533 bytes a channel when written, 719 before (issue 20)."""
    names = [f"channel{i}" for i in range(200)]
    async with ChatSimulator(channels=names) as sim:
        window = LocalWindow(Rate(1000, 1.0))
        mine = [
            tracemalloc.Filter(False, "*/simulator/*", all_frames=True),
            tracemalloc.Filter(False, tracemalloc.__file__),
        ]
        tracemalloc.start(32)
        try:
            gc.collect()
            before = tracemalloc.take_snapshot().filter_traces(mine)
            async with Pool(_options(sim), join_window=window, connect_interval_s=0) as pool:
                outcomes = await pool.join([n.upper() for n in names])  # normalised copies
                assert all(o.ok for o in outcomes.values())
                del outcomes
                gc.collect()
                after = tracemalloc.take_snapshot().filter_traces(mine)
                for connection in pool.connections.values():
                    for name in connection.channels | connection.joined:
                        assert name is sys.intern(name)  # one string per channel
        finally:
            tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert kept / len(names) < 650


@run
async def test_confirmed_counts_the_joins_of_a_batch_still_under_way() -> None:
    """``held`` leaves a first join out until its whole batch has ended; ``confirmed`` says what
    the server confirmed already (a worker records those as held at once: others must see them
    held to keep checking their own copies of the events)."""
    async with (
        ChatSimulator(channels=["alpha"], seed=5) as sim,
        Pool(_options(sim), connect_interval_s=0, join_timeout_s=3.0) as pool,
    ):
        batch = asyncio.create_task(pool.join(["alpha", "nosuchchannel"]))  # silence: 3 s
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while pool.confirmed(["alpha", "nosuchchannel"]) != {"alpha"}:
            assert asyncio.get_running_loop().time() < deadline, "alpha never confirmed"
            assert not batch.done(), "the batch ended first"
            await asyncio.sleep(0.02)
        assert "alpha" not in pool.held  # its batch is still under way
        outcomes = await batch
        assert outcomes["alpha"].ok
        assert not outcomes["nosuchchannel"].ok
        assert pool.confirmed(["alpha", "nosuchchannel", "other"]) == {"alpha"}
        assert pool.held == {"alpha"}
