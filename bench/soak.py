"""Memory over time: a reader's resident set under steady traffic and periodic faults.

Run: ``python bench/soak.py`` (10 minutes) or ``python bench/soak.py --quick`` (under a minute).

The simulator runs in this process with 1,000 channels at 3,000 messages per second and, as in
the field report of issue 14, sends RECONNECT to every connection every 20 s (closing each 5 s
later) and drops every connection every 35 s. The reader, alone in a spawned process, is a
:class:`~tmi_cluster.Worker` whose pool reads anonymously (50 channels per connection), with
the default event queue and a handler that counts messages and any message seen twice (by
``dedupe_key``, remembered for 15 s). Every 30 s (10 s with ``--quick``) the reader's resident
set is sampled. The figure: the growth from the first sample after warm-up (240 s, the time
the allocator's arenas took to fill in the first runs: about a dozen reconnect cycles; 20 s
with ``--quick``) to the last; flat means under 5 MiB. The growth before warm-up is printed
too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import time
from collections import deque
from multiprocessing.connection import Connection as Pipe

import psutil

from tmi_cluster.simulator import ChatSimulator

CHANNELS = [f"soak{i}" for i in range(1000)]
_FLAT_MIB = 5.0
#: How long the reader remembers a message for spotting a second copy (a RECONNECT overlap
#: lasts at most the 5 s close delay plus the linger); its own memory plateaus after this.
_REMEMBER_S = 15.0


def _reader(port: int, pipe: Pipe) -> None:
    asyncio.run(_read(port, pipe))


async def _read(port: int, pipe: Pipe) -> None:
    from tmi_cluster import ConnectionOptions, Dispatcher, Handlers, Pool, Settings, Worker
    from tmi_cluster.chat.ratelimit import LocalWindow, Rate
    from tmi_cluster.events import Event

    recent: deque[tuple[float, str]] = deque()
    seen: set[str] = set()
    tally = {"messages": 0, "twice": 0}

    async def handler(event: Event) -> None:  # on the worker's loop, in order per channel
        key = event.dedupe_key
        if key is None or "id" not in event.tags:
            return
        tally["messages"] += 1
        if key in seen:
            tally["twice"] += 1
            return
        now = time.monotonic()
        seen.add(key)
        recent.append((now, key))
        while recent and recent[0][0] < now - _REMEMBER_S:
            seen.discard(recent.popleft()[1])

    registry = Handlers()
    registry.add(Event, handler)
    dispatcher = Dispatcher.from_settings(registry, Settings().handlers)
    options = ConnectionOptions(host="127.0.0.1", port=port, secure=False, name="soak")
    pool = Pool(options, connect_interval_s=0, join_window=LocalWindow(Rate(2000, 10.0)))
    async with Worker(pool, dispatcher) as worker:
        outcomes = await pool.join(CHANNELS)
        joined = sum(1 for o in outcomes.values() if o.ok)
        pipe.send(("ready", joined))
        loop = asyncio.get_running_loop()
        while True:
            request = await loop.run_in_executor(None, pipe.recv)
            if request == "stop":
                break
            rss = psutil.Process().memory_info().rss
            pipe.send(
                (
                    rss,
                    tally["messages"],
                    tally["twice"],
                    dispatcher.dropped,
                    len(pool.channels),
                    worker.handler_errors,
                )
            )
    pipe.send("stopped")


async def _faults(sim: ChatSimulator, started: float, stop: asyncio.Event) -> None:
    next_reconnect, next_drop = started + 20, started + 35
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_reconnect:
            sim.reconnect(close_after_s=5)
            next_reconnect += 20
        if now >= next_drop:
            sim.drop()
            next_drop += 35
        wait_s = max(0.05, min(next_reconnect, next_drop) - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)


async def main(duration_s: float, every_s: float, warm_up_s: float) -> None:
    async with ChatSimulator(channels=CHANNELS, rate=0, seed=3, record=False) as sim:
        parent, child = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=_reader, args=(sim.port, child), daemon=True
        )
        process.start()
        loop = asyncio.get_running_loop()
        status, joined = await loop.run_in_executor(None, parent.recv)
        assert status == "ready", status
        print(f"reader joined {joined} of {len(CHANNELS)} channels; 3,000 messages/s")
        sim.set_rate(3000)
        started = time.monotonic()
        stop = asyncio.Event()
        faults = asyncio.create_task(_faults(sim, started, stop))
        rows = []
        print(f"{'s':>5} {'RSS MiB':>8} {'messages':>10} {'twice':>6} {'dropped':>8} {'held':>5}")
        while time.monotonic() - started < duration_s:
            await asyncio.sleep(every_s)  # the sampling period
            parent.send("sample")
            rss, messages, twice, dropped, held, _errors = await loop.run_in_executor(
                None, parent.recv
            )
            at = time.monotonic() - started
            rows.append((at, rss / 2**20))
            print(f"{at:5.0f} {rss / 2**20:8.1f} {messages:10,} {twice:6} {dropped:8} {held:5}")
        stop.set()
        await faults
        parent.send("stop")
        await loop.run_in_executor(None, parent.recv)
        process.join(10)
    warm = [mib for at, mib in rows if at >= warm_up_s]
    growth = warm[-1] - warm[0] if len(warm) > 1 else 0.0
    verdict = "flat" if growth < _FLAT_MIB else "GROWING"
    print(f"growth from the first sample to the last: {rows[-1][1] - rows[0][1]:+.1f} MiB")
    print(
        f"growth after warm-up ({warm_up_s:g} s): {growth:+.1f} MiB ({verdict}; flat: under "
        f"{_FLAT_MIB:g} MiB); messages seen twice: {twice}"
    )


if __name__ == "__main__":
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="under a minute")
    args = options.parse_args()
    if args.quick:
        asyncio.run(main(50, 10, 20))
    else:
        asyncio.run(main(600, 30, 240))
