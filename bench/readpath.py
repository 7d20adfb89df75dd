"""The read path's cost on one core, without sockets: what the queue to the handlers costs.

Run: ``python bench/readpath.py`` (about a minute) or ``--quick`` (about 15 s).

The simulator's generator makes a corpus of realistic lines (1,000 channels); each variant
feeds it, 50 lines a read, into a link's receiving end, yielding to the event loop every four
reads as a socket would:

- ``parse + events``: :func:`~tmi_cluster.irc.parse` and
  :func:`~tmi_cluster.events.from_message` only (the floor of any reader);
- ``pool, inline handler``: framing, parse, events, the connection and the pool, the handler
  called on the read path (how the pool was used before the worker's queue);
- ``worker (queue + dispatch)``: the same through a :class:`~tmi_cluster.Worker`, the class a
  worker process runs: the duplicate check (no channel under a hand-over: one set lookup) and
  the :class:`~tmi_cluster.Dispatcher` (a bounded queue per channel, channels independent) at its
  default size, calling a coroutine handler off the read path.

Rounds are interleaved and each variant keeps its best (the machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from tmi_cluster import (
    Connection,
    ConnectionOptions,
    Dispatcher,
    Handlers,
    Pool,
    Settings,
    Worker,
)
from tmi_cluster.chat.session import Session
from tmi_cluster.events import Event, from_message
from tmi_cluster.irc import parse
from tmi_cluster.simulator.traffic import Traffic

_LINES_PER_READ = 50


_CHANNELS = [f"channel{i}" for i in range(1000)]


def _corpus(lines: int) -> list[bytes]:
    traffic = Traffic({name: str(100_000 + i) for i, name in enumerate(_CHANNELS)}, seed=7)
    data = [traffic.next().data for _ in range(lines)]
    return [b"".join(data[i : i + _LINES_PER_READ]) for i in range(0, lines, _LINES_PER_READ)]


async def _parse_only(reads: list[bytes], handler: Callable[[Event], None]) -> None:
    for index, read in enumerate(reads):
        for line in read.split(b"\r\n")[:-1]:
            for event in from_message(parse(line)):
                handler(event)
        if index % 4 == 3:
            await asyncio.sleep(0)


async def _through_pool(reads: list[bytes], handler: Callable[[Event], None], queued: bool) -> None:
    options = ConnectionOptions(host="127.0.0.1", port=1, secure=False, name="bench")
    registry = Handlers()

    async def handle(event: Event) -> None:  # a coroutine handler: runs on the worker's loop
        handler(event)

    if queued:
        registry.add(Event, handle)
    dispatcher = Dispatcher.from_settings(registry, Settings().handlers)
    pool = Pool(options, connect_interval_s=0)
    # A connection wired to the pool as the pool wires its own, fed by hand: all but the socket.
    connection = Connection(options, on_event=lambda e: pool._event("bench-1", e))
    connection.channels.update(_CHANNELS)  # held, as after their joins: their events pass
    session = Session(options, connection._deliver)
    async with Worker(pool, dispatcher):
        if not queued:
            pool.on_event = handler  # the pool alone: its events straight to the handler
        for index, read in enumerate(reads):
            session.received(read)
            if index % 4 == 3:
                await asyncio.sleep(0)
        await dispatcher.drain(60.0)


async def _measure(name: str, reads: list[bytes]) -> tuple[float, int]:
    handled = 0

    def handler(event: Event) -> None:
        nonlocal handled
        handled += 1

    started = time.perf_counter()
    if name == "parse + events":
        await _parse_only(reads, handler)
    else:
        await _through_pool(reads, handler, queued=name.startswith("worker"))
    return len(reads) * _LINES_PER_READ / (time.perf_counter() - started), handled


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="a short run (about 15 s)")
    args = options.parse_args()
    rounds, lines = (5, 50_000) if args.quick else (12, 150_000)
    reads = _corpus(lines)
    variants = ["parse + events", "pool, inline handler", "worker (queue + dispatch)"]
    best = dict.fromkeys(variants, 0.0)
    events = dict.fromkeys(variants, 0)
    for _ in range(rounds):
        for variant in variants:
            rate, handled = asyncio.run(_measure(variant, reads))
            best[variant] = max(best[variant], rate)
            events[variant] = handled
    print(f"{lines:,} lines, best of {rounds} interleaved rounds")
    print(f"{'variant':30} {'lines/s':>10} {'events':>9} {'vs inline':>10}")
    inline = best["pool, inline handler"]
    for variant in variants:
        print(
            f"{variant:30} {best[variant]:>10,.0f} {events[variant]:>9,} "
            f"{best[variant] / inline:>9.0%}"
        )
    print("target: the worker's path costs at most 25 % of the inline rate")


if __name__ == "__main__":
    main()
