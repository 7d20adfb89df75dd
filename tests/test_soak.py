"""A soak: a pool on 1,000 channels at a steady rate under random mixes of faults
(RECONNECT, drop, stall, a lagging link, suspend and unsuspend, server-side PART).

Judged by the simulator's own deliveries: every message delivered to one of the pool's
connections while it was healthy reached the application exactly once, none twice, and after
every quiet period the pool's channels equal the server's. CI runs 30 s (seed 1);
``TMI_CLUSTER_FUZZ=nightly`` runs 10 minutes with a random seed. ``TMI_CLUSTER_SOAK_S`` and
``TMI_CLUSTER_SOAK_SEED`` set the length and replay a seed (a failure's message gives it).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import pytest

from tmi_cluster import ConnectionState, Pool
from tmi_cluster.chat.ratelimit import LocalWindow, Rate
from tmi_cluster.events import ChannelLostEvent, Event
from tmi_cluster.simulator import ChatSimulator

from .helpers import run
from .test_pool import _options

NIGHTLY = os.environ.get("TMI_CLUSTER_FUZZ") == "nightly"
DURATION_S = float(os.environ.get("TMI_CLUSTER_SOAK_S") or (600 if NIGHTLY else 30))
SEED = int(os.environ.get("TMI_CLUSTER_SOAK_SEED") or (random.randrange(1 << 30) if NIGHTLY else 1))
CHANNELS = [f"soak{i}" for i in range(1000)]
#: A message delivered this long before its connection was dropped or stalled must arrive.
_IN_FLIGHT_S = 0.5


class _Ledger:
    """Every message id the application received, and how often."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Event()
        #: channel -> (when, why) of each loss reported, for a failure's message
        self.lost: dict[str, list[tuple[float, str]]] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, ChannelLostEvent) and event.channel is not None:
            self.lost.setdefault(event.channel, []).append((time.monotonic(), event.reason))
        key = event.dedupe_key
        if key is not None and "id" in event.tags:
            self.counts[key] += 1
            self.changed.set()

    def ids(self) -> set[str]:
        return {key.split(":", 1)[1] for key in self.counts}


def _held(pool: Pool, sim: ChatSimulator) -> bool:
    if any(c.state is not ConnectionState.CONNECTED for c in pool.connections.values()):
        return False
    if any(c.joined != c.channels for c in pool.connections.values()):
        return False
    server = sorted((c.channels for c in sim.connections() if c.open), key=sorted)
    ours = sorted((frozenset(c.channels) for c in pool.connections.values()), key=sorted)
    return server == ours and pool.channels == {ch for view in ours for ch in view}


def _fault(faulted: dict[int, float], connections: list[int], at: float) -> None:
    """Connections that stop delivering from ``at`` (the earliest fault counts)."""
    for connection in connections:
        faulted[connection] = min(faulted.get(connection, at), at)


@pytest.mark.slow
@pytest.mark.timeout(DURATION_S * 3 + 120)
@run
async def test_a_pool_under_random_faults_delivers_every_message_once() -> None:  # noqa: C901
    rng = random.Random(SEED)
    where = f"soak seed {SEED} (replay: TMI_CLUSTER_SOAK_SEED={SEED})"
    faulted: dict[int, float] = {}  # connection id -> when it was dropped or stalled
    held: dict[int, list[tuple[float, float]]] = {}  # connection id -> when it lagged

    def sent_at(connection: int, at: float) -> float:
        """When a line the simulator delivered at ``at`` left for ``connection``: a held
        link gets it when released (a drop meanwhile loses it, as Twitch would)."""
        for start, end in held.get(connection, ()):
            if start <= at < end:
                return end
        return at

    async with ChatSimulator(channels=CHANNELS, rate=1000, seed=SEED) as sim:
        ledger = _Ledger()
        options = _options(
            sim,
            ping_interval_s=1.0,
            ping_timeout_s=1.0,
            join_timeout_s=5.0,
            overlap_timeout_s=3.0,
            overlap_linger_s=0.3,
        )
        window = LocalWindow(Rate(5000, 1.0))
        async with Pool(
            options,
            channels_per_connection=50,
            connect_interval_s=0,
            join_window=window,
            on_event=ledger,
        ) as pool:
            await pool.join(CHANNELS)
            deadline = time.monotonic() + DURATION_S
            faults: Counter[str] = Counter()
            loop = asyncio.get_running_loop()
            while time.monotonic() < deadline:
                phase_end = min(deadline, time.monotonic() + 8)
                while time.monotonic() < phase_end:
                    ids = [c.id for c in sim.connections() if c.open]
                    picked = rng.sample(ids, k=min(len(ids), rng.randint(1, 3)))
                    kind = rng.choice(
                        ["reconnect", "reconnect", "drop", "stall", "hold", "suspend", "kick"]
                    )
                    faults[kind] += 1
                    now = time.monotonic()
                    if kind == "reconnect":
                        close_after = rng.uniform(1.0, 3.0)
                        sim.reconnect(picked, close_after_s=close_after)
                        _fault(faulted, picked, now + close_after)
                    elif kind == "drop":
                        sim.drop(picked)
                        _fault(faulted, picked, now)
                    elif kind == "stall":
                        sim.stall(picked[:1])
                        _fault(faulted, picked[:1], now)
                    elif kind == "hold":  # a link lags, less than the keepalive allows
                        lag = rng.uniform(0.1, 0.8)
                        sim.hold(picked[:1])
                        loop.call_later(lag, sim.hold, picked[:1], False)
                        held.setdefault(picked[0], []).append((now, now + lag))
                    elif kind == "suspend":
                        sim.suspend(rng.choice(CHANNELS), rng.random() < 0.5)
                    else:
                        sim.kick(rng.choice(CHANNELS))
                    await asyncio.sleep(rng.uniform(0.3, 1.2))  # the mix's pace
                # A quiet period: what was lost is joined again (as the coordinator would),
                # then the pool must equal the server.
                for channel in CHANNELS:
                    sim.suspend(channel, False)
                await pool.join(CHANNELS)
                try:
                    await sim.wait_until(lambda: _held(pool, sim), 30)
                except TimeoutError:
                    raise AssertionError(f"{where}: the pool and the server disagree") from None
            # The judge: no message twice; every message delivered to a healthy connection.
            sim.pause()
            twice = [key for key, n in ledger.counts.items() if n > 1]
            assert not twice, f"{where}: {len(twice)} delivered twice, e.g. {twice[:3]}"
            expected = {
                d.message_id
                for channel in CHANNELS
                for d in sim.deliveries(channel)
                if any(
                    sent_at(c, d.at) < faulted.get(c, float("inf")) - _IN_FLIGHT_S
                    for c in d.connections
                )
            }

            async def arrived() -> None:
                while not expected <= ledger.ids():
                    ledger.changed.clear()
                    await ledger.changed.wait()

            try:
                await asyncio.wait_for(arrived(), 10)
            except TimeoutError:
                missing = expected - ledger.ids()
                lost = [
                    (c, d.at, [(n, faulted.get(n)) for n in d.connections], ledger.lost.get(c))
                    for c in CHANNELS
                    for d in sim.deliveries(c)
                    if d.message_id in missing
                ]
                raise AssertionError(
                    f"{where}: {len(missing)} of {len(expected)} never arrived; faults {faults};"
                    f" e.g. {lost[:3]}"
                ) from None
            assert len(expected) > DURATION_S * 500  # the traffic was real
            twice = [key for key, n in ledger.counts.items() if n > 1]
            assert not twice, f"{where}: {len(twice)} delivered twice, e.g. {twice[:3]}"
