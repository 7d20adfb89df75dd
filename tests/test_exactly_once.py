"""Exactly once, under faults, with real processes and the simulator as judge.

- Sends: four producer processes send 10,000 messages through ``Cluster.send`` while a
  worker is killed with SIGKILL. The simulator saw each message at most once; each one whose
  result says ``written`` it saw exactly once, each ``refused`` or plain ``timed_out`` one
  never; only an ``in_flight`` one (begun by the killed worker) may go either way, and they
  are counted.
- Events: chat traffic while the cluster rebalances (a third worker joins: make-before-break
  moves), a RECONNECT storm hits every connection, and a worker is killed. Every message the
  simulator delivered while a live connection of the cluster held its channel reached the
  handlers (inside the workers) and the event stream exactly once; the only losses are the
  messages sent to the killed worker's connections in its failover window, counted.
- A slow handler in one channel delays no other channel.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tmi_cluster import Cluster
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import run, streamed_keys

ROOMS = [f"room{i:03}" for i in range(100)]
SENDS = 10_000
PRODUCERS = 4

_PRODUCER = """
import asyncio, json, sys
from tmi_cluster import Cluster
from tmi_cluster.config import load_settings

async def main(index: int, count: int, out: str) -> None:
    rooms = [f"room{i:03}" for i in range(100)]
    results = {}
    async with Cluster(load_settings()) as app:
        gate = asyncio.Semaphore(50)

        async def one(n: int) -> None:
            async with gate:
                text = f"p{index}-{n}"
                result = await app.send(rooms[n % len(rooms)], text, timeout_s=60)
                results[text] = [result.status.value, result.reason, result.process]

        await asyncio.gather(*(one(n) for n in range(count)))
    with open(out, "w") as file:
        json.dump(results, file)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
"""


@pytest.mark.timeout(300)
@run
async def test_sends_are_written_once_each_while_a_worker_is_killed(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    limits = Limits(message_allow=0, moderator_message_allow=0, channel_interval_s=0.0)
    async with ChatSimulator(channels=ROOMS, limits=limits) as sim:
        sim.add_account(BOT, TOKEN)
        cluster = ProcessCluster(
            tmp_path,
            sim,
            redis_server,
            redis_prefix,
            **IDENTITY,
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="3",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="3",
            TMI_CLUSTER_THROTTLE__MESSAGES__ALLOW="1000000",
            TMI_CLUSTER_THROTTLE__MESSAGES__MODERATOR_ALLOW="1000000",
            TMI_CLUSTER_THROTTLE__MESSAGES__CHANNEL_INTERVAL="0",
        )
        try:
            cluster.start("sup-a")

            async def three_senders() -> bool:
                workers = await cluster.workers()
                return sum(1 for s in workers.values() if s.sends) == 3

            await cluster.until(three_senders, 60, "three workers that can send")
            script = tmp_path / "producer.py"
            script.write_text(textwrap.dedent(_PRODUCER))
            producers = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(script),
                    str(i),
                    str(SENDS // PRODUCERS),
                    str(tmp_path / f"results{i}.json"),
                    env=cluster.env,
                    cwd=tmp_path,
                )
                for i in range(PRODUCERS)
            ]
            said = sim.account(BOT).said
            await cluster.until(lambda: len(said) >= SENDS * 0.3, 120, "30 % of the sends")
            victim_id, victim = max((await cluster.worker_pids()).items())
            os.kill(victim, signal.SIGKILL)
            codes = [await asyncio.wait_for(p.wait(), 200) for p in producers]
            assert codes == [0] * PRODUCERS, cluster.logs()
        finally:
            await cluster.stop()
        results: dict[str, list[Any]] = {}
        for i in range(PRODUCERS):
            results.update(json.loads((tmp_path / f"results{i}.json").read_text()))
        assert len(results) == SENDS
        seen = collections.Counter(text for _, text in said)
        assert max(seen.values()) == 1, "a message reached Twitch twice"
        assert set(seen) <= set(results)
        by_status = collections.Counter((s, r) for s, r, _ in results.values())
        in_flight = [t for t, (s, r, _) in results.items() if r == "in_flight"]
        for text, (status, reason, _) in results.items():
            if status == "written":
                assert seen[text] == 1, f"{text} said written but Twitch never saw it"
            elif reason != "in_flight":
                assert seen[text] == 0, f"{text} said {status}/{reason} but Twitch saw it"
        # Nothing is refused here: each send was written, or begun by the killed worker and
        # never confirmed. How many of those there are depends on when the kill fell; what
        # bounds them is the sends under way at once (the producers' gates).
        assert by_status[("written", None)] + len(in_flight) == SENDS, by_status
        assert {results[t][2] for t in in_flight} <= {victim_id}, "in flight on a live worker"
        assert len(in_flight) <= PRODUCERS * 50, by_status
        print(
            f"\n{dict(by_status)}; in flight: {len(in_flight)}, of which Twitch saw "
            f"{sum(seen[t] for t in in_flight)}"
        )
        assert sim.account(BOT).violations == []


_HANDLER = """
import os
import time
import tmi_cluster
from tmi_cluster.events import Event

FOLDER = os.environ["TEST_HANDLER_FOLDER"]


@tmi_cluster.on(Event)
def record(event):  # a USERNOTICE is two events, a cheer two: each has a key of its own
    if event.dedupe_key is not None:
        with open(os.path.join(FOLDER, f"{os.getpid()}.ids"), "a") as out:
            out.write(f"{event.dedupe_key} {time.time()!r}\\n")
"""


@pytest.mark.timeout(300)
@run
async def test_chat_events_once_each_under_rebalance_reconnects_and_a_kill(
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
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="2",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="3",
            TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__CHANNELS="100",
            TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW="500",
            TMI_CLUSTER_HANDLERS__MODULES='["recorder_handlers"]',
            PYTHONPATH=str(tmp_path),
            TEST_HANDLER_FOLDER=str(tmp_path / "ids"),
        )
        try:
            cluster.start("sup-a")
            await cluster.until(lambda: _workers(cluster, 2), 60, "two workers")
            await cluster.want(ROOMS)
            await cluster.until(
                lambda: all(len(sim.joined(r)) == 1 for r in ROOMS), 60, "every room joined once"
            )
            async with (
                Cluster(cluster.settings()) as app,
                streamed_keys(app) as streamed,
            ):
                sim.set_rate(300.0)
                start = time.monotonic()
                # a rebalance: a third worker, channels move to it make-before-break
                await app.scale(paused=True)  # the auto-scaler would undo it
                await app.scale("sup-a", 3)
                await cluster.until(lambda: _workers(cluster, 3), 60, "a third worker")
                await cluster.until(lambda: _spread(cluster, 3), 60, "channels on three workers")
                # a RECONNECT storm: every connection told to reconnect, twice
                for _ in range(2):
                    sim.reconnect()
                    await asyncio.sleep(1.0)  # traffic goes on meanwhile
                await cluster.until(
                    lambda: all(len(sim.joined(r)) == 1 for r in ROOMS),
                    60,
                    "every room joined once after the storm",
                )
                # a kill: its channels fail over (the only window where messages may be lost)
                pids = await cluster.worker_pids()
                victim_id, victim = sorted(pids.items())[0]
                victim_connections = {
                    c for r in (await cluster.held())[victim_id] for c in sim.joined(r)
                }
                os.kill(victim, signal.SIGKILL)
                await cluster.until(
                    lambda: _workers(cluster, 3, exclude=victim_id),
                    60,
                    "the killed worker replaced",
                )
                await cluster.until(
                    lambda: all(len(sim.joined(r)) == 1 for r in ROOMS),
                    60,
                    "every room joined once after the kill",
                )
                await cluster.until(
                    lambda: len(_delivered(sim)) >= 1000, 60, "1,000 messages through it all"
                )
                sim.set_rate(0.0)
                elapsed = time.monotonic() - start
                delivered = _delivered(sim)
                expected = {m for m, c in delivered.items() if c - victim_connections}

                def through() -> bool:
                    return expected <= _ids(_handled_counts(tmp_path)) and expected <= _ids(
                        streamed
                    )

                await cluster.until(through, 60, "the last events through")
        finally:
            await cluster.stop()
        handled = _handled_counts(tmp_path)
        assert_once(handled, streamed)
        lost = set(delivered) - expected  # only the killed worker's connections had them
        missed = len(lost - _ids(handled))
        print(
            f"\n{len(delivered)} messages in {elapsed:.0f} s; {len(lost)} went only to the "
            f"killed worker's connections, {missed} of them lost"
        )


async def _workers(cluster: ProcessCluster, count: int, exclude: str = "") -> bool:
    workers = await cluster.workers()
    running = [p for p, s in workers.items() if s.state == "running" and p != exclude]
    return len(running) == count


async def _spread(cluster: ProcessCluster, count: int) -> bool:
    held = await cluster.held()
    return sum(1 for channels in held.values() if channels) == count


def _delivered(sim: ChatSimulator) -> dict[str, set[int]]:
    """Every line with an id the simulator delivered while the cluster held its channel,
    with the connections joined at that moment."""
    found = {}
    for room in ROOMS:
        for delivery in sim.deliveries(room):
            if delivery.connections:
                found[delivery.message_id] = set(delivery.connections)
    return found


def assert_once(handled: collections.Counter[str], streamed: collections.Counter[str]) -> None:
    """No event reached the handlers, nor the stream, twice."""
    twice = sorted(k for k, n in handled.items() if n > 1)
    assert not twice, f"{len(twice)} events reached the handlers twice: {twice[:5]}"
    twice = sorted(k for k, n in streamed.items() if n > 1)
    assert not twice, f"{len(twice)} events reached the stream twice: {twice[:5]}"


def _handled_counts(folder: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in (folder / "ids").glob("*.ids"):
        counts.update(line.split()[0] for line in path.read_text().splitlines() if line)
    return counts


def _ids(keys: collections.Counter[str]) -> set[str]:
    """The message ids of de-duplication keys (``Type:id``)."""
    return {key.partition(":")[2] for key in keys}


_SLOW = """
import asyncio
import os
import time

import tmi_cluster
from tmi_cluster.events import MessageEvent

FOLDER = os.environ["TEST_HANDLER_FOLDER"]


def _note(event):
    if type(event) is MessageEvent:  # not a cheer's second event
        with open(os.path.join(FOLDER, "handled.log"), "a") as out:
            out.write(f"{event.channel} {event.tags['id']} {event.tags['tmi-sent-ts']} "
                      f"{time.time()!r}\\n")


@tmi_cluster.on(MessageEvent)
async def slow_on_the_loop(event):
    if event.channel == "room000":
        await asyncio.sleep(30)  # stuck for the whole test
    _note(event)


class Blocking(tmi_cluster.Subscriber):
    def subscribe(self):
        return {MessageEvent: self.blocking}

    def blocking(self, event):  # a plain function: runs in a thread
        if event.channel == "room001":
            time.sleep(30)
"""


@pytest.mark.timeout(120)
@run
async def test_a_slow_handler_delays_no_other_channel(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    (tmp_path / "slow_handlers.py").write_text(_SLOW)
    async with ChatSimulator(channels=ROOMS[:12]) as sim:
        cluster = ProcessCluster(
            tmp_path,
            sim,
            redis_server,
            redis_prefix,
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="1",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="1",
            TMI_CLUSTER_HANDLERS__MODULES='["slow_handlers"]',
            PYTHONPATH=str(tmp_path),
            TEST_HANDLER_FOLDER=str(tmp_path),
        )
        try:
            cluster.start("sup-a")
            await cluster.until(lambda: _workers(cluster, 1), 60, "a worker")
            await cluster.want(ROOMS[:12])
            await cluster.until(
                lambda: all(len(sim.joined(r)) == 1 for r in ROOMS[:12]), 60, "every room joined"
            )
            lines = [
                line
                for _ in range(20)
                for room in ROOMS[:12]
                for line in sim.generate(1, channel=room)
            ]
            wanted = {
                line.message_id
                for line in lines
                if line.command == "PRIVMSG" and line.channel not in ("room000", "room001")
            }
            log = tmp_path / "handled.log"

            def handled() -> list[list[str]]:
                text = log.read_text() if log.exists() else ""
                return [line.split() for line in text.splitlines()]

            await cluster.until(
                lambda: wanted <= {r[1] for r in handled()}, 30, "the other channels handled"
            )
        finally:
            await cluster.stop()
        rows = handled()
        assert not [r for r in rows if r[0] == "room000"]  # still stuck on its first event
        latency = sorted(
            float(at) - int(sent) / 1000
            for channel, _, sent, at in rows
            if channel not in ("room000", "room001")
        )
        assert [r[0] for r in rows].count("room001") == 1  # its thread is still blocked
        assert latency[-1] < 2.0, f"the slowest of the other channels took {latency[-1]:.2f} s"
