"""Simulator throughput: generated and delivered messages per second on one core.

Run: ``python bench/simulator.py`` (about a minute) or ``python bench/simulator.py --quick``.

The simulator runs in this process and generates as fast as it can (its rate set far above
what one core can do); raw socket readers in a second process (the other core) join the
channels and count the lines they receive. Target: at least 50,000 messages per second
delivered, so that the simulator is never the bottleneck of the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import platform
import time
from multiprocessing.connection import Connection

from tmi_cluster.simulator import ChatSimulator, Limits


def _readers(port: int, channels: list[str], readers: int, pipe: Connection) -> None:
    """Child process: ``readers`` connections share the channels; report lines received."""

    async def main() -> None:
        counts = [0] * readers
        ends: list[asyncio.Future[None]] = []

        class Reader(asyncio.Protocol):
            def __init__(self, index: int) -> None:
                self.index = index
                self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def data_received(self, data: bytes) -> None:
                counts[self.index] += data.count(b" PRIVMSG #")

            def connection_lost(self, exc: Exception | None) -> None:
                if not self.done.done():
                    self.done.set_result(None)

        loop = asyncio.get_running_loop()
        transports = []
        for index in range(readers):
            transport, protocol = await loop.create_connection(
                functools.partial(Reader, index), "127.0.0.1", port
            )
            mine = channels[index::readers]
            transport.write(b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK justinfan1\r\n")
            for start in range(0, len(mine), 100):
                transport.write(f"JOIN #{',#'.join(mine[start : start + 100])}\r\n".encode())
            transports.append(transport)
            ends.append(protocol.done)
        pipe.send("ready")
        await loop.run_in_executor(None, pipe.recv)  # "stop"
        pipe.send(sum(counts))
        for transport in transports:
            transport.close()

    asyncio.run(main())


async def _measure(channels: int, readers: int, seconds: float) -> dict[str, float]:
    names = [f"channel{i}" for i in range(1, channels + 1)]
    limits = Limits(ping_interval_s=0, max_send_buffer_bytes=256 * 1024 * 1024)
    async with ChatSimulator(channels=names, rate=0, seed=1, record=False, limits=limits) as sim:
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.Process(target=_readers, args=(sim.port, names, readers, child))
        process.start()
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, parent.recv) == "ready"
        while sum(len(sim.joined(n)) for n in names) < channels:
            await asyncio.sleep(0.05)  # waiting for the readers' joins to be processed
        generated = 0
        start = time.perf_counter()
        cpu = time.process_time()
        while time.perf_counter() - start < seconds:
            lines = sim.generate(500)
            generated += sum(1 for line in lines if line.command == "PRIVMSG")
            await asyncio.sleep(0)  # let the transports write
        elapsed = time.perf_counter() - start
        cpu_used = time.process_time() - cpu
        while sim.buffered_bytes():
            await asyncio.sleep(0.01)  # flush what is still buffered
        await asyncio.sleep(0.5)  # the readers' last reads
        parent.send("stop")
        received = await loop.run_in_executor(None, parent.recv)
        process.join(10)
        return {
            "generated": generated / elapsed,
            "delivered": received / elapsed,
            "cpu": cpu_used / elapsed,
            "lost": generated - received,
        }


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    args = options.parse_args()
    seconds = 3.0 if args.quick else 10.0
    cases = [(100, 4), (1000, 8)] if args.quick else [(100, 4), (1000, 8), (10_000, 16)]
    print(f"Python {platform.python_version()}, {seconds:g} s per case")
    header = ("channels", "readers", "generated/s", "delivered/s", "sim CPU", "lost")
    print("{:>9} {:>8} {:>13} {:>13} {:>8} {:>6}".format(*header))
    for channels, readers in cases:
        result = asyncio.run(_measure(channels, readers, seconds))
        print(
            f"{channels:>9,} {readers:>8} {result['generated']:>13,.0f} "
            f"{result['delivered']:>13,.0f} {result['cpu']:>7.0%} {result['lost']:>6,.0f}"
        )
    print()
    print("target: at least 50,000 messages per second delivered by one simulator core")


if __name__ == "__main__":
    main()
