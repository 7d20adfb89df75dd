"""Two copies of every channel (``coordinator.replicas = 2``): a host's death loses nothing.

- Two publishers that read the same events (the two copies of a channel) write each to the
  stream once, in the order they read them, whichever is first (real Redis).
- A worker with two copies checks every event its handlers take, and none that no handler
  takes (one round trip saved per event when only the stream is read).
- Real processes: three supervisors (three "hosts": on one machine, the copies are kept apart
  by supervisor), 100 channels with chat traffic, and one supervisor killed with SIGKILL (its
  workers end with it). Every message the simulator delivered reached the event stream exactly
  once, none lost, and no handler ran twice; each channel has its two copies on two other
  supervisors again afterwards, promoted without a gap.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis.asyncio

from tmi_cluster import Cluster
from tmi_cluster.bus import Keys
from tmi_cluster.bus.events import EventPublisher, Seen
from tmi_cluster.cluster import admin
from tmi_cluster.events import Event, JoinEvent, MessageEvent
from tmi_cluster.events.build import from_message
from tmi_cluster.irc.message import parse
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits
from tmi_cluster.worker.delivery import Delivery, event_key

from .clusterproc import ProcessCluster
from .helpers import run, streamed_keys, until
from .test_exactly_once import _HANDLER, _handled_counts, _ids, assert_once

ROOMS = [f"room{i:03}" for i in range(100)]
SUPERVISORS = ("sup-a", "sup-b", "sup-c")


def _event(line: str) -> Event:
    return from_message(parse(line))[0]


def _line(n: int) -> Event:
    return _event(
        f"@id=msg-{n:04};tmi-sent-ts={1000 + n} :u!u@u.tmi.twitch.tv PRIVMSG #room000 :hi"
    )


_JOIN = ":u!u@u.tmi.twitch.tv JOIN #room000"


@run
async def test_two_publishers_write_each_event_once_in_order(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    first, second = (EventPublisher(client, keys, dedupe_key=event_key) for _ in range(2))
    try:
        events = [_line(n) for n in range(200)]
        # the two copies read the same events; one is ahead, they overlap and interleave
        await first.publish(events[:120])
        await asyncio.gather(second.publish(events[:150]), first.publish(events[120:]))
        await second.publish(events[150:])
        raw: Any = await client.xrange(keys.events)
        texts = [fields[b"e"] for _, fields in raw]
        assert len(texts) == 200
        assert all(f"msg-{n:04}".encode() in text for n, text in enumerate(texts))  # in order
        assert first.published + second.published == 200
        assert first.duplicates + second.duplicates == 200  # every event was read twice
        # the same line again later, as an event of its own (a raw-line key lives 3 s only)
        join = _event(_JOIN)
        await first.publish([join])
        await second.publish([join])
        assert await client.xlen(keys.events) == 201
        ttl = await client.ttl(keys.published(event_key(join)))
        assert 0 < ttl <= 3
    finally:
        await client.aclose()


@run
async def test_two_copies_check_only_what_the_handlers_take(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    got: list[list[Event]] = [[], []]
    copies = [
        Delivery(
            [got[i].append],
            Seen(client, keys),
            check_all=True,
            wanted=lambda e: isinstance(e, MessageEvent),
        )
        for i in range(2)
    ]
    runs = [asyncio.create_task(d.run()) for d in copies]
    try:
        join = _event(_JOIN)
        assert isinstance(join, JoinEvent)
        for n in range(50):
            for copy in copies:
                copy.put(_line(n))
        for copy in copies:
            copy.put(join)  # no handler takes it: not checked, not delivered
        await until(lambda: len(got[0]) + len(got[1]) == 50, 5, "every message once")
        ids = sorted(e.tags["id"] for e in got[0] + got[1])
        assert ids == [f"msg-{n:04}" for n in range(50)]
        assert sum(c.checked for c in copies) == 100
        assert sum(c.duplicates for c in copies) == 50
        assert not any(isinstance(e, JoinEvent) for e in got[0] + got[1])
    finally:
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await client.aclose()


def _delivered(sim: ChatSimulator) -> dict[str, set[int]]:
    """Every line with an id the simulator delivered to a joined connection, with them."""
    found = {}
    for room in ROOMS:
        for delivery in sim.deliveries(room):
            if delivery.connections:
                found[delivery.message_id] = set(delivery.connections)
    return found


async def _copies(cluster: ProcessCluster, sim: ChatSimulator, dead: set[int]) -> bool:
    """Every room joined by exactly two live connections, of two different supervisors."""
    workers = await cluster.workers()
    if len(workers) < 2:
        return False
    held = await cluster.held()
    supervisor_of = {p: s.supervisor for p, s in workers.items()}
    for room in ROOMS:
        joined = sim.joined(room)
        if len(joined) != 2 or set(joined) & dead:
            return False
        holders = [p for p, channels in held.items() if room in channels]
        if len({supervisor_of[p] for p in holders}) != 2:
            return False
    return True


@pytest.mark.timeout(300)
@run
async def test_a_supervisor_killed_loses_no_message_with_two_copies(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    (tmp_path / "recorder_handlers.py").write_text(_HANDLER)
    (tmp_path / "ids").mkdir()
    limits = Limits(anonymous_join_allow=500)
    async with ChatSimulator(channels=ROOMS, limits=limits) as sim:
        cluster = ProcessCluster(
            tmp_path,
            sim,
            redis_server,
            redis_prefix,
            TMI_CLUSTER_COORDINATOR__REPLICAS="2",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="3",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="3",
            TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__CHANNELS="200",
            TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW="500",
            TMI_CLUSTER_HANDLERS__MODULES='["recorder_handlers"]',
            PYTHONPATH=str(tmp_path),
            TEST_HANDLER_FOLDER=str(tmp_path / "ids"),
        )
        try:
            for supervisor in SUPERVISORS:
                cluster.start(supervisor)

            async def three() -> bool:
                return len(await cluster.workers()) == len(SUPERVISORS)

            await cluster.until(three, 60, "a worker on each supervisor")
            await cluster.want(ROOMS)
            await cluster.until(lambda: _copies(cluster, sim, set()), 90, "two copies of each")
            rows = await admin.channels(cluster.settings(), [])
            assert {r["state"] for r in rows} == {"joined"}  # a second copy is no hand-over
            assert all(r["replica"] and r["replica"] != r["process"] for r in rows)
            async with (
                Cluster(cluster.settings()) as app,
                streamed_keys(app) as streamed,
            ):
                sim.set_rate(300.0)
                await cluster.until(lambda: len(_delivered(sim)) >= 300, 30, "traffic")
                workers = await cluster.workers()
                victims = [s.pid for s in workers.values() if s.supervisor == "sup-a"]
                dead = {
                    c.id
                    for c in sim.connections()
                    if c.open and c.peer[1] in _ports(victims, sim.port)
                }
                assert dead, "sup-a holds no connection"
                killed_at = time.monotonic()
                cluster.running["sup-a"].kill()  # a host's death: its workers go with it
                for pid in victims:
                    _kill(pid)
                await cluster.until(
                    lambda: _copies(cluster, sim, dead), 90, "two copies again, on sup-b and sup-c"
                )
                healed_s = time.monotonic() - killed_at
                await cluster.until(
                    lambda: len(_delivered(sim)) >= 3000, 60, "3,000 messages through it all"
                )
                sim.set_rate(0.0)
                delivered = _delivered(sim)

                def through() -> bool:
                    return set(delivered) <= _ids(streamed)

                try:
                    await cluster.until(through, 30, "every message on the stream")
                except AssertionError:
                    lost = sorted(set(delivered) - _ids(streamed))
                    raise AssertionError(f"{len(lost)} lost: {lost[:5]}") from None
        finally:
            await cluster.stop()
        handled = _handled_counts(tmp_path)
        assert_once(handled, streamed)
        print(
            f"\n{len(delivered)} messages, none lost, none twice; two copies again "
            f"{healed_s:.1f} s after the kill"
        )


def _ports(pids: list[int], port: int) -> set[int]:
    """The local ports of these processes' connections to ``port``."""
    found: set[int] = set()
    for pid in pids:
        try:
            found.update(
                c.laddr.port
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port
            )
        except psutil.NoSuchProcess:
            continue
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
