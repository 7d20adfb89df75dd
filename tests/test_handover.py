"""A worker's hand-overs (:class:`~tmi_cluster.worker.handover.HandOver`) on real Redis: a
channel taken over stays checked while anyone else holds it, a worker started a moment ago
included, and a channel taken from a worker presumed dead stays checked for the orphan's own
time (found by the chaos suite, seed 3: a line twice while a new worker held a channel that
another had stopped checking)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio

from tmi_cluster import Dispatcher, Handlers, Pool, Worker
from tmi_cluster.bus import Assignment, Keys
from tmi_cluster.bus.events import Seen
from tmi_cluster.bus.keys import ORPHAN_GUARD_S
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.worker.handover import GUARD_LINGER_S, HandOver

from .helpers import beat_process, run
from .test_pool import _options


@dataclass
class _Side:
    """One worker's hand-overs (process ``p-a``) on real Redis, with the keys and the
    assignment the other processes write."""

    client: redis.asyncio.Redis
    keys: Keys
    assignment: Assignment
    worker: Worker
    handover: HandOver


@asynccontextmanager
async def _side(redis_server: str, redis_prefix: str, channel: str) -> AsyncIterator[_Side]:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        async with ChatSimulator(channels=[channel]) as sim:
            worker = Worker(Pool(_options(sim)), Dispatcher(Handlers()), seen=Seen(client, keys))
            handover = HandOver(worker, "p-a", keys, timeout_s=10.0, stopping=lambda: False)
            yield _Side(client, keys, Assignment(client, keys), worker, handover)
    finally:
        await client.aclose()


@run
async def test_a_take_over_stays_checked_while_a_worker_started_moments_ago_holds_it(
    redis_server: str, redis_prefix: str
) -> None:
    async with _side(redis_server, redis_prefix, "alpha") as side:
        handover, assignment = side.handover, side.assignment
        assert await handover.other_processes(side.client) == []  # read now, kept for seconds
        handover.taking["alpha"] = None
        side.worker.delivery.guard(["alpha"])
        await beat_process(side.client, side.keys, "p-b")  # a worker started after that read
        await assignment.record_held("p-b", joined=["alpha"])
        await handover.lift_taken(assignment)
        assert handover.taking["alpha"] is None  # held elsewhere: still checked
        assert "alpha" in side.worker.delivery.guarded
        await assignment.record_held("p-b", left=["alpha"])
        before = time.monotonic()
        await handover.lift_taken(assignment)
        lingers = handover.taking["alpha"]
        assert lingers is not None
        assert lingers <= time.monotonic() + GUARD_LINGER_S
        assert lingers >= before + GUARD_LINGER_S


@run
async def test_a_channel_taken_from_a_worker_presumed_dead_stays_checked_for_its_own_time(
    redis_server: str, redis_prefix: str
) -> None:
    async with _side(redis_server, redis_prefix, "beta") as side:
        handover, assignment = side.handover, side.assignment
        await side.client.set(side.keys.orphan("beta"), "1", ex=int(ORPHAN_GUARD_S))
        await beat_process(side.client, side.keys, "p-b")  # another survivor holds it, checking
        await assignment.record_held("p-b", joined=["beta"])
        await assignment.guard("p-b", ["beta"])
        taken = time.monotonic()
        assert await handover.ready_to_take(assignment, ["beta"]) == ["beta"]
        assert handover.taking["beta"] is None  # held elsewhere
        await assignment.record_held("p-b", left=["beta"])
        await handover.lift_taken(assignment)
        until = handover.taking["beta"]
        assert until is not None
        assert until >= taken + ORPHAN_GUARD_S  # not the 2 s linger: its old holder may
        assert "beta" in side.worker.delivery.guarded  # only be cut off, and come back


@run
async def test_channels_kept_after_a_fence_stay_checked_while_their_takers_hold_them(
    redis_server: str, redis_prefix: str
) -> None:
    """A worker back from a fence (a host cut off) that keeps, or is given back, channels that
    others took meanwhile checks them until those others have parted them (seed 9 of the
    chaos suite: lines twice right after a cut host came back)."""
    async with _side(redis_server, redis_prefix, "gamma") as side:
        handover, assignment = side.handover, side.assignment
        await beat_process(side.client, side.keys, "p-b")  # took gamma while p-a was cut off
        await assignment.record_held("p-b", joined=["gamma"])
        handover.recheck(["gamma"])
        assert "gamma" in side.worker.delivery.guarded
        await handover.lift_taken(assignment)
        assert handover.taking["gamma"] is None  # p-b still holds it
        await assignment.record_held("p-b", left=["gamma"])
        await handover.lift_taken(assignment)
        assert handover.taking["gamma"] is not None  # lingers, then lifts


@run
async def test_a_channel_taken_over_then_handed_over_stays_checked_until_parted(
    redis_server: str, redis_prefix: str
) -> None:
    """A channel taken over moments ago is given to another worker: its take-over's check ends
    (nobody else holds it yet) while the hand-over runs, but it must stay checked until it is
    parted, or its new owner's checked copies and ours both go out (chaos seed 9: lines twice
    after a Redis restart moved channels twice in a row)."""
    async with _side(redis_server, redis_prefix, "delta") as side:
        handover, assignment, delivery = side.handover, side.assignment, side.worker.delivery
        await side.worker.pool.join(["delta"])
        handover.taking["delta"] = time.monotonic() - 1.0  # its linger is over
        delivery.guard(["delta"])
        await assignment.assign({"delta": "p-b"})  # given to another worker meanwhile
        await handover.start_leaving(assignment, ["delta"])
        await handover.lift_taken(assignment)
        assert "delta" not in handover.taking  # the take-over is over
        assert "delta" in delivery.guarded  # the hand-over is not
        await beat_process(side.client, side.keys, "p-b")
        await assignment.record_held("p-b", joined=["delta"])
        assert await handover.part_handed_over(assignment, time.monotonic()) == ["delta"]
        assert "delta" not in delivery.guarded
        assert not handover.leaving
        assert not handover.taking
