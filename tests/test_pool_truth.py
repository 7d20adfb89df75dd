"""The pool tells the truth about its channels, whatever the server and the network do.

Each path on which a channel is lost is tested on its own, then the invariant as a property:
after random sequences of join, part, move, drop, RECONNECT, stall, suspend, ban, server-side
PART and a refused login, once things settle, the pool's channels are exactly what the
simulator shows its connections joined to, and no channel is joined twice.

200 sequences by default (CI), 2,000 with ``TMI_CLUSTER_FUZZ=nightly``;
``TMI_CLUSTER_TRUTH_SEQUENCES`` sets another number, and ``TMI_CLUSTER_TRUTH_SEED`` replays one
sequence (a failure's message gives its seed and operations).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from tmi_cluster import (
    Connection,
    ConnectionOptions,
    ConnectionState,
    JoinResult,
    Pool,
)
from tmi_cluster.chat.ratelimit import LocalWindow, Rate, WaitTally, Window
from tmi_cluster.events import ChannelLostEvent, DisconnectedEvent
from tmi_cluster.simulator import ChatSimulator, Limits

from .helpers import run
from .test_connection import Recorder

NIGHTLY = os.environ.get("TMI_CLUSTER_FUZZ") == "nightly"

FAST = {
    "ping_interval_s": 0.25,
    "ping_timeout_s": 0.25,
    "join_timeout_s": 0.4,
    "login_timeout_s": 2.0,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.05,
    "overlap_timeout_s": 0.4,
    "overlap_linger_s": 0.02,
}
LIMITS = Limits(join_allow=100_000, auth_allow=100_000, channel_cap=1_000)


def _options(sim: ChatSimulator, **changes: object) -> ConnectionOptions:
    base: dict[str, object] = {"host": "127.0.0.1", "port": sim.port, "secure": False, **FAST}
    base.update(changes)
    return ConnectionOptions(**base)  # type: ignore[arg-type]


def _pool(sim: ChatSimulator, events: Recorder, **changes: object) -> Pool:
    return Pool(
        _options(sim, **{"login": "bot", "token": "tok", **changes}),
        channels_per_connection=3,
        connect_interval_s=0,
        join_window=LocalWindow(Rate(1_000, 1.0)),
        on_event=events,
    )


def _server_view(sim: ChatSimulator) -> list[frozenset[str]]:
    """The channels of each open connection (every test here has only the pool's)."""
    return sorted((c.channels for c in sim.connections() if c.open), key=sorted)


def _pool_view(pool: Pool) -> list[frozenset[str]]:
    return sorted((frozenset(c.channels) for c in pool.connections.values()), key=sorted)


def _settled(pool: Pool, sim: ChatSimulator) -> bool:
    """Every connection up and confirmed, and the pool's map equal to the server's."""
    for connection in pool.connections.values():
        if connection.state is not ConnectionState.CONNECTED:
            return False
        if connection.joined != connection.channels:
            return False
    held = {c for connection in pool.connections.values() for c in connection.channels}
    return (
        _server_view(sim) == _pool_view(pool)
        and pool.channels == held
        and all(pool.where(c) is not None for c in held)
    )


async def _settle(pool: Pool, sim: ChatSimulator, events: Recorder, timeout_s: float) -> None:
    """Wait until :func:`_settled`, re-checking whenever the server or the pool changes."""
    check = lambda: _settled(pool, sim)  # noqa: E731
    waits = {
        asyncio.ensure_future(sim.wait_until(check, timeout_s)),
        asyncio.ensure_future(events.until(check, timeout_s)),
    }
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    errors = [task.exception() for task in done]
    if all(errors):  # TimeoutError when neither saw it settle
        raise errors[0]  # type: ignore[misc]


def _lost(events: Recorder) -> dict[str, str]:
    return {e.channel or "": e.reason for e in events.of(ChannelLostEvent)}


# -- each path on its own --------------------------------------------------------------------


@run
async def test_a_refused_rejoin_leaves_the_map_with_its_reason() -> None:
    async with ChatSimulator(channels=["alpha", "beta"], limits=LIMITS) as sim:
        sim.add_account("bot", "tok")
        events = Recorder()
        async with _pool(sim, events) as pool:
            assert all(o.ok for o in (await pool.join(["alpha", "beta"])).values())
            sim.suspend("alpha")
            sim.drop()
            await events.until(lambda: "alpha" in _lost(events))
            assert _lost(events) == {"alpha": JoinResult.SUSPENDED}
            [lost] = events.of(ChannelLostEvent)
            assert lost.connection == pool.where("beta")
            await _settle(pool, sim, events, 10)
            assert pool.channels == {"beta"}
            assert pool.where("alpha") is None
            assert sim.joined("alpha") == ()
            assert len(sim.joined("beta")) == 1


@run
async def test_a_server_side_part_and_a_ban_are_reported() -> None:
    async with ChatSimulator(channels=["alpha", "beta", "gamma"], limits=LIMITS) as sim:
        sim.add_account("bot", "tok")
        events = Recorder()
        async with _pool(sim, events) as pool:
            await pool.join(["alpha", "beta", "gamma"])
            assert sim.kick("alpha") == 1
            await events.until(lambda: "alpha" in _lost(events))
            assert _lost(events)["alpha"] == JoinResult.REMOVED
            sim.ban("bot", "beta")  # banned and removed: the rejoin after a drop is refused
            sim.drop()
            await events.until(lambda: "beta" in _lost(events))
            assert _lost(events)["beta"] == JoinResult.BANNED
            await _settle(pool, sim, events, 10)
            assert pool.channels == {"gamma"}
            # the application parting a channel is not a loss
            await pool.part(["gamma"])
            await sim.wait_until(lambda: not sim.joined("gamma"))
            assert "gamma" not in _lost(events)


@run
async def test_a_connection_whose_login_is_refused_gives_up_and_reports_every_channel() -> None:
    async with ChatSimulator(channels=["alpha", "beta"], limits=LIMITS) as sim:
        sim.add_account("bot", "tok")
        events = Recorder()
        async with _pool(sim, events) as pool:
            await pool.join(["alpha", "beta"])
            [name] = pool.connections
            sim.add_account("bot", "a-new-token")  # the old token is revoked
            sim.drop()
            await events.until(lambda: len(_lost(events)) == 2)
            assert _lost(events) == {
                "alpha": JoinResult.LOGIN_REFUSED,
                "beta": JoinResult.LOGIN_REFUSED,
            }
            assert pool.channels == set()
            assert name not in pool.connections  # it ended for good and left the pool
            [final] = [e for e in events.of(DisconnectedEvent) if not e.reconnecting]
            assert "Login authentication failed" in final.reason
            outcome = (await pool.join(["alpha"]))["alpha"]  # a new connection: refused too
            assert outcome.result is JoinResult.LOGIN_REFUSED
            assert pool.channels == set()


@run
async def test_a_failed_move_leaves_the_channel_where_it_was() -> None:
    async with ChatSimulator(channels=["alpha", "beta"], limits=LIMITS) as sim:
        sim.add_account("bot", "tok")
        events = Recorder()
        async with _pool(sim, events) as pool:
            await pool.join(["alpha"])
            source = pool.where("alpha")
            sim.ban("bot", "alpha")  # the target's join is refused
            outcome = await pool.move("alpha")
            assert outcome.result is JoinResult.BANNED
            assert pool.where("alpha") == source
            assert len(sim.joined("alpha")) == 1
            assert _lost(events) == {}


@run
async def test_a_part_during_a_moves_overlap_parts_the_channel_on_both_sides() -> None:
    async with ChatSimulator(channels=["alpha"], limits=LIMITS) as sim:
        sim.add_account("bot", "tok")
        events = Recorder()
        async with _pool(sim, events, overlap_linger_s=1.0) as pool:
            await pool.join(["alpha"])
            moving = asyncio.ensure_future(pool.move("alpha"))
            await sim.wait_until(lambda: len(sim.joined("alpha")) == 2)  # the overlap
            await pool.part(["alpha"])
            assert (await moving).result is JoinResult.PARTED
            assert pool.channels == set()
            await sim.wait_until(lambda: not sim.joined("alpha"))
            assert _lost(events) == {}


@run
async def test_a_loss_on_one_side_of_a_move_is_no_loss_for_the_pool() -> None:
    async with ChatSimulator(channels=["alpha"], limits=LIMITS) as sim:
        events = Recorder()
        async with _pool(sim, events, login=None, token="", overlap_linger_s=1.0) as pool:
            await pool.join(["alpha"])
            source = pool.where("alpha")
            moving = asyncio.ensure_future(pool.move("alpha"))
            await sim.wait_until(lambda: len(sim.joined("alpha")) == 2)  # the overlap
            target = next(n for n in pool.connections if n != source)
            nick = pool.connections[target].nick
            assert nick is not None
            assert sim.kick("alpha", nick) == 1  # the server parts the target only
            outcome = await moving
            assert outcome.result is JoinResult.CLOSED  # the move failed...
            assert pool.where("alpha") == source  # ...and the channel stayed where it was
            assert _lost(events) == {}  # nothing was lost for the application
            await _settle(pool, sim, events, 10)
            assert pool.channels == {"alpha"}


@dataclass
class _Failing:
    """A join window that fails once with an error nobody expects (a bug of ours)."""

    rate: Rate = field(default_factory=lambda: Rate(100, 1.0))
    tally: WaitTally = field(default_factory=WaitTally)
    failed: bool = False

    async def try_take(self, count: int = 1) -> float:
        return 0.0

    async def take(self, count: int = 1) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug")

    async def take_with(self, others: Sequence[Window], count: int = 1) -> None:
        await self.take(count)


@run
async def test_an_unexpected_error_fails_the_connection_visibly() -> None:
    async with ChatSimulator(channels=["alpha"], limits=LIMITS) as sim:
        events = Recorder()
        connection = Connection(_options(sim), on_event=events, join_window=_Failing())
        async with connection:
            joining = asyncio.ensure_future(connection.join(["alpha"]))
            await events.until(lambda: connection.state is ConnectionState.FAILED)
            assert str(connection.failure) == "unexpected RuntimeError: a bug"
            assert (await joining)["alpha"] is JoinResult.CLOSED
            [final] = events.of(DisconnectedEvent)
            assert final.reason == "unexpected RuntimeError: a bug"
            assert not final.reconnecting
            with pytest.raises(ConnectionError, match="failed: unexpected RuntimeError"):
                await connection.wait_connected(1)
            assert connection.channels == set()
        await sim.wait_until(lambda: not any(c.open for c in sim.connections()))


# -- the invariant, over random fault sequences ----------------------------------------------

CHANNELS = [f"c{i}" for i in range(10)]
Op = Callable[[], Awaitable[None]]


def _ops(  # noqa: C901 - one small closure per operation
    rng: random.Random, pool: Pool, sim: ChatSimulator
) -> dict[str, tuple[int, Op]]:
    """Each operation with its weight; each picks its arguments when it runs."""

    def ours() -> list[int]:
        ids = [c.id for c in sim.connections() if c.open and c.login == "bot"]
        return rng.sample(ids, k=rng.randint(1, len(ids))) if ids else []

    async def join() -> None:
        await pool.join(rng.sample(CHANNELS, k=rng.randint(1, 4)))

    async def part() -> None:
        await pool.part(rng.sample(CHANNELS, k=rng.randint(1, 3)))

    async def move() -> None:
        held = sorted(pool.channels)
        if held:
            with contextlib.suppress(ValueError):  # parted, lost or moving meanwhile
                await pool.move(rng.choice(held))

    async def drop() -> None:
        sim.drop(ours())

    async def reconnect() -> None:
        sim.reconnect(ours(), close_after_s=rng.choice([0.05, 0.3]))

    async def stall() -> None:
        sim.stall(ours()[:1])

    async def suspend() -> None:
        sim.suspend(rng.choice(CHANNELS), rng.random() < 0.7)

    async def ban() -> None:
        channel = rng.choice(CHANNELS)
        banned = rng.random() < 0.7
        sim.ban("bot", channel, banned)
        if banned:
            sim.kick(channel, "bot")

    async def kick() -> None:
        sim.kick(rng.choice(CHANNELS))

    async def refuse_login() -> None:
        sim.add_account("bot", "revoked")
        sim.drop(ours())

    return {
        "join": (6, join),
        "part": (3, part),
        "move": (3, move),
        "drop": (3, drop),
        "reconnect": (3, reconnect),
        "stall": (1, stall),
        "suspend": (2, suspend),
        "ban": (2, ban),
        "kick": (2, kick),
        "refuse_login": (0, refuse_login),
    }


async def _sequence(seed: int) -> None:
    rng = random.Random(seed)
    async with ChatSimulator(channels=CHANNELS, limits=LIMITS, seed=seed) as sim:
        sim.add_account("bot", "tok")
        events = Recorder()
        async with _pool(sim, events) as pool:
            ops = _ops(rng, pool, sim)
            weights = {name: weight for name, (weight, _) in ops.items()}
            weights["refuse_login"] = 1 if rng.random() < 0.1 else 0  # rarely: it ends all
            names = rng.choices(list(weights), list(weights.values()), k=rng.randint(4, 12))
            done: list[str] = []
            tasks = []
            for name in names:
                tasks.append(asyncio.ensure_future(ops[name][1]()))
                done.append(name)
                await asyncio.sleep(rng.choice([0, 0, 0.005, 0.02, 0.08]))  # fault timing
            phase = "operations"
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), 20)
                phase = "settling"
                await _settle(pool, sim, events, 15)
            except (TimeoutError, AssertionError) as exc:
                raise AssertionError(
                    f"seed {seed}, {phase}: ops {done}; pool {_pool_view(pool)} "
                    f"{sorted(pool.channels)} joined "
                    f"{[sorted(c.joined) for c in pool.connections.values()]} vs server "
                    f"{_server_view(sim)}; states "
                    f"{[c.state for c in pool.connections.values()]}"
                ) from exc
            joined = Counter(c for view in _server_view(sim) for c in view)
            assert all(n == 1 for n in joined.values()), f"seed {seed}: joined twice {joined}"
            for lost in events.of(ChannelLostEvent):
                assert lost.reason in set(JoinResult), lost


def _seeds() -> list[int]:
    if os.environ.get("TMI_CLUSTER_TRUTH_SEED"):
        return [int(os.environ["TMI_CLUSTER_TRUTH_SEED"])]
    default = 2_000 if NIGHTLY else 200
    return list(range(int(os.environ.get("TMI_CLUSTER_TRUTH_SEQUENCES", default))))


async def _sequences(seeds: list[int], parallel: int = 6) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(seed: int) -> None:
        async with gate:
            await _sequence(seed)

    results = await asyncio.gather(*(one(seed) for seed in seeds), return_exceptions=True)
    failures = [str(r) for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {len(seeds)} sequences failed:\n" + "\n".join(
        failures
    )


@pytest.mark.slow
@pytest.mark.timeout(7200 if NIGHTLY else 600)
@run
async def test_the_pool_equals_the_server_after_random_fault_sequences() -> None:
    await _sequences(_seeds())
