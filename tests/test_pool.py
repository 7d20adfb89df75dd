"""The pool against the simulator: placement, the join budget, join outcomes, parting."""

from __future__ import annotations

import asyncio

from tmi_cluster.connection import ConnectionOptions
from tmi_cluster.events import MessageEvent
from tmi_cluster.pool import Pool
from tmi_cluster.ratelimit import LocalWindow, Rate
from tmi_cluster.simulator import ChatSimulator, Limits

from .test_connection import Recorder
from .test_simulator import run


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
        async with Pool(_options(sim), channels_per_connection=50, join_window=window,
                        connect_interval_s=0.05, on_event=events) as pool:  # fmt: skip
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
                "joined", "joined", "msg_concurrent_channel_limit_reached",
            ]  # fmt: skip
            assert pool.channels == {"a", "b"}
