"""What finding the live workers and supervisors costs one coordinator pass, with many unrelated
keys in Redis.

Run: ``python bench/liveness.py`` (100,000 unrelated keys, 20 supervisors, 200 workers, 50
reads) or ``python bench/liveness.py --quick`` (the same keys, 10 reads: seconds). Needs Redis
on 127.0.0.1:6379 (or ``--redis URL``).

Compared in the same run, on the same keys:

- **SCAN** (the way before issue 20, kept here as the peer): ``SCAN MATCH P process:*:heartbeat``
  and the same for supervisors, then an ``MGET`` of what was found. Its cost grows with every
  key in Redis: de-duplication markers, rate-limit windows, commands.
- **registry** (``tmi_cluster.bus.heartbeat.live``): the sorted set ``P live:{kind}`` listed,
  then an ``MGET`` of those heartbeats. Its cost is the number of recent owners only.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import secrets
import statistics
import time
from typing import Any

import redis.asyncio

from tmi_cluster.bus import Heartbeat, Keys, ProcessStatus, SupervisorStatus, live


async def _scan(client: redis.asyncio.Redis, keys: Keys, kind: str) -> dict[str, Any]:
    pattern = keys.pattern[:-1] + f"{kind}:*:heartbeat"
    found = [key async for key in client.scan_iter(match=pattern, count=1000)]
    values = await client.mget(found) if found else []
    return dict(zip(found, values, strict=True))


async def _fill(client: redis.asyncio.Redis, keys: Keys, unrelated: int) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for n in range(unrelated):
            pipe.set(keys.dedupe(f"MessageEvent:{n:08}"), b"1", ex=600)
            if n % 10_000 == 9_999:
                await pipe.execute()
        await pipe.execute()


async def _beat_all(
    client: redis.asyncio.Redis, keys: Keys, supervisors: int, workers: int
) -> None:
    for s in range(supervisors):
        beat = Heartbeat(
            client, keys, "supervisor", f"s{s}", ttl_s=600, interval_s=1, status_of=SupervisorStatus
        )
        await beat.beat()
        status = functools.partial(ProcessStatus, supervisor=f"s{s}")
        for w in range(workers // supervisors):
            worker = Heartbeat(
                client, keys, "process", f"s{s}-{w}", ttl_s=600, interval_s=1, status_of=status
            )
            await worker.beat()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 reads instead of 50")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--unrelated", type=int, default=100_000, help="unrelated keys")
    args = parser.parse_args()
    reads = 10 if args.quick else 50
    client = redis.asyncio.Redis.from_url(args.redis)
    keys = Keys(f"bench-{secrets.token_hex(3)}:", 600.0, 600.0)
    try:
        await _fill(client, keys, args.unrelated)
        await _beat_all(client, keys, 20, 200)
        results: dict[str, list[float]] = {"SCAN": [], "registry": []}
        for _ in range(reads):
            started = time.perf_counter()
            old = [await _scan(client, keys, kind) for kind in ("process", "supervisor")]
            results["SCAN"].append(time.perf_counter() - started)
            started = time.perf_counter()
            new = [await live(client, keys, kind) for kind in ("process", "supervisor")]
            results["registry"].append(time.perf_counter() - started)
            assert [len(x) for x in old] == [len(x) for x in new] == [200, 20]
        print(
            f"one pass's liveness read, {args.unrelated:,} unrelated keys, 20 supervisors, "
            f"200 workers, {reads} reads"
        )
        print(f"{'way':<10} {'median ms':>10} {'p95 ms':>8}")
        for way, times in results.items():
            ordered = sorted(times)
            p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
            print(f"{way:<10} {statistics.median(times) * 1000:>10.2f} {p95 * 1000:>8.2f}")
    finally:
        found = [key async for key in client.scan_iter(match=keys.pattern, count=10_000)]
        for first in range(0, len(found), 10_000):
            await client.delete(*found[first : first + 10_000])
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
