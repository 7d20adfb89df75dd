"""Reading chat: the highest sustained message rate with no loss, latency and memory.

Run: ``python bench/connection.py`` (several minutes) or ``python bench/connection.py --quick``
(under a minute: 1,000 channels, fewer rates, shorter steps).

The simulator runs in this process (one core) and generates its realistic mix of chat lines at
increasing rates. Each reader runs alone in a child process (the other core), joined to every
channel:

- ``tmi-cluster``: one :class:`~tmi_cluster.Worker` composition: a pool (50 channels per
  connection, TCP), the bounded event queue at its default size and a handler receiving every
  typed event off the read path; over WebSocket too, to compare like with like;
- ``TwitchIO 2``: ``twitchio<3`` (one WebSocket connection, which is how it reads), an
  ``event_message`` handler; its pacing of joins (20 per 11 s) is bypassed by joining in chunks,
  since only reading is measured;
- ``bare reader``: asyncio sockets that only split lines and find each PRIVMSG's time stamp
  (the ceiling: no parsing, no events).

At each rate the reader counts the PRIVMSG lines it handled and the delay from their
``tmi-sent-ts`` to its handler. A rate is *sustained* when every PRIVMSG generated was handled
within the drain time after the step, and the 99th percentile delay stayed under 500 ms (a
reader that falls behind builds a backlog, and its delays grow past that within a step).
After the first rate that fails, three bisection steps narrow the ceiling down, each with a
fresh reader process when the previous step failed (a reader that fell behind, or lost its
channels, must not burden the next step).
Memory: the reader's resident set growth from before joining to after, per 1,000 channels (the
reader is a freshly spawned interpreter, its imports done before the first measure); and its
resident set after all the traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

import psutil

from tmi_cluster.simulator import ChatSimulator, Limits

_TICK_S = 0.005
_SUSTAINED_P99_MS = 500.0


# -- the readers, each in its own process --------------------------------------------------------


class _Tally:
    """What a reader handled since the last reset."""

    def __init__(self) -> None:
        self.count = 0
        self.delays: list[int] = []

    def add(self, sent_ms: int) -> None:
        self.count += 1
        self.delays.append(int(time.time() * 1000) - sent_ms)

    def reset(self) -> None:
        self.count = 0
        self.delays = []


async def _serve(pipe: Pipe, tally: _Tally, before_rss: int) -> None:
    """Answer the harness: ``rss``, ``reset``, ``count``, ``stop``."""
    loop = asyncio.get_running_loop()
    process = psutil.Process()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "rss":
            gc.collect()
            pipe.send((before_rss, process.memory_info().rss))
        elif command == "reset":
            tally.reset()
            pipe.send("ok")
        elif command == "count":
            pipe.send(tally.count)
        elif command == "delays":
            pipe.send(tally.delays)
        elif command == "stop":
            pipe.send("ok")
            return


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def _tmi_cluster(
    port: int, ws_port: int, channels: list[str], pipe: Pipe, transport: str
) -> None:
    from tmi_cluster import ConnectionOptions, Dispatcher, Handlers, Pool, Settings, Worker
    from tmi_cluster.chat.ratelimit import LocalWindow, Rate
    from tmi_cluster.events import MessageEvent

    handlers = Settings().handlers  # the default queues: size and policy (before measuring)
    tally = _Tally()
    before = _rss()

    async def handler(event: MessageEvent) -> None:  # the worker's dispatcher, off the read path
        tally.add(int(event.tags.get("tmi-sent-ts", "0")))

    websocket = transport == "websocket"
    options = ConnectionOptions(
        host="127.0.0.1",
        port=ws_port if websocket else port,
        secure=False,
        transport="websocket" if websocket else "tcp",
        ping_interval_s=3600,
    )
    window = LocalWindow(Rate(1_000_000, 1.0))
    registry = Handlers()
    registry.add(MessageEvent, handler)
    dispatcher = Dispatcher.from_settings(registry, handlers)
    pool = Pool(options, join_window=window, connect_interval_s=0, join_timeout_s=120)
    async with Worker(pool, dispatcher):
        outcomes = await pool.join(channels)
        failed = [c for c, o in outcomes.items() if not o.ok]
        if failed:
            raise SystemExit(f"tmi-cluster could not join {len(failed)} channels")
        pipe.send("ready")
        await _serve(pipe, tally, before)
    if dispatcher.dropped:
        print(f"tmi-cluster: {dispatcher.dropped} events dropped by a full handler queue")


async def _twitchio(port: int, ws_port: int, channels: list[str], pipe: Pipe) -> None:
    import aiohttp
    import twitchio
    import twitchio.websocket

    twitchio.websocket.HOST = f"ws://127.0.0.1:{ws_port}"
    tally = _Tally()
    before = _rss()
    joined = asyncio.Event()
    wanted = set(channels)

    class Reader(twitchio.Client):  # type: ignore[misc]
        async def event_message(self, message: Any) -> None:
            tally.add(int(message.tags.get("tmi-sent-ts", "0")))

        async def event_join(self, channel: Any, user: Any) -> None:
            if user.name == self.nick:
                wanted.discard(channel.name)
                if not wanted:
                    joined.set()

    client = Reader(token="anonymous", initial_channels=[])  # noqa: S106 - not a secret
    client._http.nick = "justinfan12345"  # anonymous: skips the token check against Twitch
    client._http.session = aiohttp.ClientSession()  # what the token check would have made
    await client.connect()
    for start in range(0, len(channels), 20):  # at most 20 at a time: no 11 s sleeps
        await client.join_channels(channels[start : start + 20])
    await asyncio.wait_for(joined.wait(), 300)
    pipe.send("ready")
    await _serve(pipe, tally, before)
    await client.close()


async def _bare(port: int, ws_port: int, channels: list[str], pipe: Pipe) -> None:
    tally = _Tally()
    before = _rss()
    loop = asyncio.get_running_loop()
    joined = {"count": 0}
    all_joined = asyncio.Event()

    class Reader(asyncio.Protocol):
        def __init__(self) -> None:
            self.rest = b""

        def data_received(self, data: bytes) -> None:
            lines = (self.rest + data).split(b"\r\n")
            self.rest = lines.pop()
            for line in lines:
                if b" PRIVMSG #" in line:
                    start = line.find(b"tmi-sent-ts=") + 12
                    tally.add(int(line[start : line.find(b";", start)]))
                elif b" ROOMSTATE #" in line:
                    joined["count"] += 1
                    if joined["count"] == len(channels):
                        all_joined.set()

    for start in range(0, len(channels), 50):  # the same 50 channels per connection
        transport, _ = await loop.create_connection(Reader, "127.0.0.1", port)
        mine = channels[start : start + 50]
        transport.write(
            b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK justinfan1\r\n"
            + f"JOIN #{',#'.join(mine)}\r\n".encode()
        )
    await asyncio.wait_for(all_joined.wait(), 120)
    pipe.send("ready")
    await _serve(pipe, tally, before)


def _child(kind: str, port: int, ws_port: int, channels: list[str], pipe: Pipe) -> None:
    if kind == "tmi-cluster":
        asyncio.run(_tmi_cluster(port, ws_port, channels, pipe, "tcp"))
    elif kind == "tmi-cluster (WebSocket)":
        asyncio.run(_tmi_cluster(port, ws_port, channels, pipe, "websocket"))
    elif kind == "TwitchIO 2":
        asyncio.run(_twitchio(port, ws_port, channels, pipe))
    else:
        asyncio.run(_bare(port, ws_port, channels, pipe))


# -- the harness ----------------------------------------------------------------------------------


@dataclass
class Step:
    """One rate step of one reader."""

    nominal: float  # the rate asked of the simulator, lines per second
    rate: float  # the rate achieved, lines per second (all lines, PRIVMSG or not)
    privmsg: int  # PRIVMSG lines generated
    handled: int  # PRIVMSG lines the reader handled
    p50_ms: float
    p99_ms: float

    @property
    def sustained(self) -> bool:
        return self.handled >= self.privmsg and self.p99_ms < _SUSTAINED_P99_MS

    @property
    def simulator_bound(self) -> bool:
        """The simulator could not generate the rate asked: it, not the reader, was the limit."""
        return self.rate < 0.9 * self.nominal


@dataclass
class Result:
    """One reader at one channel count."""

    reader: str
    channels: int
    steps: list[Step]
    rss_per_1000_mib: float
    rss_mib: float
    rss_after_mib: float  # after the traffic: what reading for a while left behind

    @property
    def best(self) -> Step | None:
        sustained = [s for s in self.steps if s.sustained]
        return max(sustained, key=lambda s: s.rate) if sustained else None


async def _ask(pipe: Pipe, command: str) -> Any:
    pipe.send(command)
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


async def _step(
    sim: ChatSimulator, pipe: Pipe, rate: float, seconds: float, drain_s: float
) -> Step:
    await _ask(pipe, "reset")
    lines = privmsg = 0
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    due = 0.0
    while (now := loop.time()) - start < seconds:
        due += rate * (now - last)
        last = now
        count = int(due)
        if count:
            due -= count
            generated = sim.generate(count)
            lines += len(generated)
            privmsg += sum(1 for line in generated if line.command == "PRIVMSG")
        await asyncio.sleep(_TICK_S)
    elapsed = loop.time() - start
    deadline = loop.time() + drain_s
    handled = 0
    while loop.time() < deadline:
        handled = await _ask(pipe, "count")
        if handled >= privmsg:
            break
        await asyncio.sleep(0.05)  # polling another process's count: no event to wait on
    delays = sorted(await _ask(pipe, "delays")) or [0]
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    if handled < privmsg:
        await _settle(pipe)  # a backlog left behind would burden the next step
    return Step(rate, lines / elapsed, privmsg, handled, statistics.median(delays), p99)


@dataclass(frozen=True)
class Plan:
    """The rates to try, seconds per step, drain seconds, bisection steps after a failure."""

    rates: list[float]
    seconds: float
    drain_s: float
    refine: int


async def _settle(pipe: Pipe, limit_s: float = 120.0) -> None:
    """Wait until the reader has worked off its backlog (its count stops growing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    last = -1
    while loop.time() < deadline:
        count = await _ask(pipe, "count")
        if count == last:
            return
        last = count
        await asyncio.sleep(0.5)  # polling another process's count: no event to wait on


class _Reader:
    """One reader process, joined to every channel; :meth:`ask` talks to it."""

    def __init__(self, kind: str, process: multiprocessing.process.BaseProcess, pipe: Pipe):
        self.kind = kind
        self.process = process
        self.pipe = pipe

    @classmethod
    async def start(cls, kind: str, sim: ChatSimulator, names: list[str]) -> _Reader:
        assert sim.websocket_port is not None
        # A fresh interpreter, not a fork: the reader's memory must not include the simulator's.
        spawn = multiprocessing.get_context("spawn")
        parent, child = spawn.Pipe()
        process = spawn.Process(
            target=_child, args=(kind, sim.port, sim.websocket_port, names, child), daemon=True
        )
        process.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 600
        while not await loop.run_in_executor(None, parent.poll, 1.0):
            if not process.is_alive():
                raise SystemExit(f"{kind} exited ({process.exitcode}) before it had joined")
            if loop.time() > deadline:
                process.kill()
                raise SystemExit(f"{kind} did not join {len(names):,} channels in 10 minutes")
        ready = parent.recv()
        assert ready == "ready", ready
        return cls(kind, process, parent)

    async def ask(self, command: str) -> Any:
        return await _ask(self.pipe, command)

    async def stop(self) -> None:
        await self.ask("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


async def _measure(kind: str, channels: int, plan: Plan) -> Result:
    names = [f"channel{i}" for i in range(1, channels + 1)]
    limits = Limits(ping_interval_s=0, max_send_buffer_bytes=1 << 30)
    async with ChatSimulator(
        channels=names, seed=7, record=False, limits=limits, websocket_port=0
    ) as sim:
        reader = await _Reader.start(kind, sim, names)
        before, after = await reader.ask("rss")
        steps = []
        for rate in plan.rates:
            step = await _step(sim, reader.pipe, rate, plan.seconds, plan.drain_s)
            steps.append(step)
            if not step.sustained or step.simulator_bound:
                break
        await reader.ask("reset")  # the harness's own latency records go
        _, after_traffic = await reader.ask("rss")
        low = max((s.nominal for s in steps if s.sustained), default=0.0)
        high = steps[-1].nominal if not steps[-1].sustained else 0.0
        for _ in range(plan.refine if high else 0):  # bisect: last good, first bad
            if not steps[-1].sustained:  # a reader that fell behind starts afresh
                await reader.stop()
                reader = await _Reader.start(kind, sim, names)
            step = await _step(sim, reader.pipe, (low + high) / 2, plan.seconds, plan.drain_s)
            steps.append(step)
            low, high = (step.nominal, high) if step.sustained else (low, step.nominal)
        await reader.stop()
        return Result(
            kind,
            channels,
            steps,
            (after - before) / (1 << 20) / (channels / 1000),
            after / (1 << 20),
            after_traffic / (1 << 20),
        )


READERS = ["tmi-cluster", "tmi-cluster (WebSocket)", "TwitchIO 2", "bare reader"]
_COMMON_RATE = 10_000.0  # every reader's latency is also shown at this rate


def _print(results: list[Result]) -> None:
    print()
    header = (
        "channels",
        "reader",
        "sustained/s",
        "p50 ms",
        "p99 ms",
        "p50@10k",
        "p99@10k",
        "MiB/1k ch",
        "RSS MiB",
        "after",
    )
    print("{:>9} {:<24} {:>12} {:>7} {:>7} {:>8} {:>8} {:>10} {:>8} {:>6}".format(*header))
    for result in results:
        best = result.best
        common = next((s for s in result.steps if s.nominal == _COMMON_RATE), None)
        bound = " *" if best and best.simulator_bound else ""
        cells = [
            f"{best.rate:,.0f}{bound}" if best else "none",
            f"{best.p50_ms:.0f}" if best else "-",
            f"{best.p99_ms:.0f}" if best else "-",
            f"{common.p50_ms:.0f}" if common else "-",
            f"{common.p99_ms:.0f}" if common else "-",
        ]
        print(
            f"{result.channels:>9,} {result.reader:<24} {cells[0]:>12} {cells[1]:>7} "
            f"{cells[2]:>7} {cells[3]:>8} {cells[4]:>8} {result.rss_per_1000_mib:>10.1f} "
            f"{result.rss_mib:>8.0f} {result.rss_after_mib:>6.0f}"
        )
    print("* the simulator generated less than asked (it shares the machine): a lower bound")
    print()
    by_channels: dict[int, dict[str, float]] = {}
    for result in results:
        best = result.best
        by_channels.setdefault(result.channels, {})[result.reader] = best.rate if best else 0.0
    for channels, rates in by_channels.items():
        ours = rates.get("tmi-cluster", 0.0)
        peer = rates.get("TwitchIO 2", 0.0)
        bare = rates.get("bare reader", 0.0)
        ratio = f"{ours / peer:.1f}x" if peer else "n/a"
        share = f"{ours / bare:.0%}" if bare else "n/a"
        print(f"{channels:,} channels: tmi-cluster {ratio} TwitchIO 2, {share} of the bare reader")
    print("targets: at least 3x TwitchIO 2, at least 50 % of the bare reader")


def _why(step: Step) -> str:
    if step.handled < step.privmsg:
        return f"{step.privmsg - step.handled:,} not handled"
    return f"p99 {step.p99_ms:,.0f} ms"


def main(argv: list[str] | None = None) -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    options.add_argument("--readers", nargs="*", default=None, choices=READERS)
    options.add_argument("--channels", nargs="*", type=int, default=None)
    args = options.parse_args(argv)
    if args.quick:
        channel_counts = args.channels or [1000]
        readers = args.readers or ["tmi-cluster", "TwitchIO 2", "bare reader"]
        plan = Plan([5000.0, 10000.0, 20000.0, 40000.0, 80000.0], 1.0, 1.5, 1)
    else:
        channel_counts = args.channels or [1000, 10_000]
        readers = args.readers or READERS
        rates = [5000.0, 10000.0, 20000.0, 40000.0, 80000.0, 120000.0, 160000.0]
        plan = Plan(rates, 4.0, 3.0, 3)
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores; {plan.seconds:g} s a rate")
    results = []
    for channels in channel_counts:
        for reader in readers:
            started = time.perf_counter()
            result = asyncio.run(_measure(reader, channels, plan))
            results.append(result)
            steps = ", ".join(
                f"{s.rate:,.0f}{'' if s.sustained else ' (no: ' + _why(s) + ')'}"
                for s in result.steps
            )
            print(f"  {channels:,} {reader}: {steps}  [{time.perf_counter() - started:.0f} s]")
            sys.stdout.flush()
    _print(results)


if __name__ == "__main__":
    main()
