"""Density: how many channels and messages one 2-core machine holds, every message once.

Run: ``python bench/density.py`` (100,000 channels, 10,000 messages per second in all, 10
workers, 30 s measured) or ``python bench/density.py --quick`` (10,000 channels, 2,000 per
second, 2 workers, 10 s: under a minute). Needs Redis on 127.0.0.1:6379 (or ``--redis URL``;
the Redis figures are differences of the whole server's memory: use a Redis of its own).

``tmi-cluster run`` reads anonymously from a simulator in this process (the JOIN budget and the
connection pacing raised: the cold start is not what is measured here). Once every channel is
joined, the simulator generates the traffic for the measured window. Measured: the rate the
simulator achieved (all lines: 93 % are messages with an id, PRIVMSG and USERNOTICE, the rest
CLEARCHAT, CLEARMSG and ROOMSTATE), the CPU time of the cluster's processes (supervisor and
workers) per 1,000 lines per second, their resident memory per 1,000 channels (all of it, the
supervisor's fixed part included, and what the channels added to the processes running with
none) and in all (target: under 2 GiB), Redis's memory, and whether every message with an id
of the window reached the event stream exactly once (read back afterwards).

The peers, printed beside: recent-messages2 holds about 161,000 channels on a larger server; a
worker here used 1.1-1.4 MiB per 1,000 channels in issue 5 (0.8-1.0 MiB in issue 20).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import redis.asyncio

from tmi_cluster.bus import Keys, wanted_changed
from tmi_cluster.cluster.client import Cluster
from tmi_cluster.config import load_settings
from tmi_cluster.harness import ProcessHarness
from tmi_cluster.simulator import ChatSimulator, Limits
from tmi_cluster.store import Store

SCRIPT = shutil.which("tmi-cluster", path=str(Path(sys.executable).parent)) or "tmi-cluster"
MIB = 1024 * 1024
TARGET_RSS_MIB = 2048


def _tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


async def _until(check: object, timeout_s: float, what: str, every_s: float = 1.0) -> float:
    assert callable(check)
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"not {what} after {timeout_s:g} s")
        await asyncio.sleep(every_s)
    return time.monotonic() - began


def _variables(
    sim: ChatSimulator,
    *,
    redis_url: str,
    prefix: str,
    folder: Path,
    channels: int,
    rate: float,
    workers: int,
    seconds: float,
) -> dict[str, str]:
    """The cluster's settings: a fixed number of workers, budgets and pacing out of the way."""
    return {
        "TMI_CLUSTER_REDIS__URL": redis_url,
        "TMI_CLUSTER_PREFIX": prefix,
        "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{folder / 'density.db'}",
        "TMI_CLUSTER_TMI__CONNECTION__SERVER": sim.host,
        "TMI_CLUSTER_TMI__CONNECTION__PORT": str(sim.port),
        "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
        "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
        "TMI_CLUSTER_TMI__CONNECTION__CONNECT_INTERVAL": "0.02",
        "TMI_CLUSTER_TMI__CONNECTION__CONNECT_BURST": "50",
        "TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW": "5000",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": str(workers),
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": str(workers),
        "TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__CHANNELS": str(math.ceil(channels / workers)),
        "TMI_CLUSTER_PROCESS__MEMORY": "4096",
        # ten workers starting at once, then 100,000 JOINs, saturate both cores: a worker's
        # heartbeat can be late by more than the default 3 s, and its replacement by the
        # supervisor then makes it worse (one run here replaced workers 163 times in 10 min)
        "TMI_CLUSTER_PROCESS__STALE": "15",
        "TMI_CLUSTER_HANDLERS__STREAM_MAXLEN": str(int(rate * seconds * 3) + 100_000),
        "TMI_CLUSTER_LOG__LEVEL": "warning",
    }


async def density(
    redis_url: str, folder: Path, *, channels: int, rate: float, workers: int, seconds: float
) -> dict[str, float]:
    names = [f"dense{i:06}" for i in range(channels)]
    prefix = f"density-{secrets.token_hex(3)}:"
    limits = Limits(anonymous_join_allow=5000, join_every_s=10.0, ping_interval_s=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
    async with ChatSimulator(channels=names, limits=limits, seed=5) as sim:
        variables = _variables(
            sim,
            redis_url=redis_url,
            prefix=prefix,
            folder=folder,
            channels=channels,
            rate=rate,
            workers=workers,
            seconds=seconds,
        )
        env.update(variables)
        client = redis.asyncio.Redis.from_url(redis_url)
        log = (folder / "density.log").open("w")
        harness = ProcessHarness()
        supervisor = harness.spawn(
            [SCRIPT, "run", "--id", "density"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                if supervisor.poll() is not None:
                    raise RuntimeError("the supervisor ended: " + _tail(folder))
                return len(_tree(supervisor.pid)) == workers + 1

            await _until(ready, 120, f"{workers} workers")
            await asyncio.sleep(3.0)  # they have started
            empty = _rss(_tree(supervisor.pid))
            redis_empty = int((await client.info("memory"))["used_memory"])
            with Store(variables["TMI_CLUSTER_DATABASE__URL"]) as store:
                await asyncio.to_thread(store.migrate)  # the supervisor may not have yet
                await asyncio.to_thread(store.want, names)
            await wanted_changed(client, Keys(prefix, 30.0, 3.0))

            def joined() -> bool:
                if supervisor.poll() is not None:
                    raise RuntimeError("the supervisor ended: " + _tail(folder))
                return all(sim.joined(n) for n in names)

            cold = await _until(joined, 1200, f"{channels:,} channels joined", every_s=2.0)
            await asyncio.sleep(3.0)  # the rebalancing after the joins settles
            processes = _tree(supervisor.pid)
            cpu_before = _cpu_s(processes)
            stream = Keys(prefix, 30.0, 3.0).events
            redis_before = int((await client.info("memory"))["used_memory"])
            stream_before = await client.memory_usage(stream) or 0
            began, ended, lines = await _window(sim, rate, seconds)
            cpu = _cpu_s(processes) - cpu_before
            rss = _rss(_tree(supervisor.pid))
            info = await client.info("memory")
            await asyncio.sleep(3.0)  # the last events reach the stream
            entries, stream_bytes = await asyncio.gather(
                client.xlen(stream), client.memory_usage(stream)
            )
            generated = [
                d.message_id
                for n in names
                for d in sim.deliveries(n)
                if began <= d.at <= ended and d.connections
            ]
            once, twice, missing = await _count(env, folder, set(generated))
            achieved = lines / (ended - began)
            return {
                "cold_s": cold,
                "achieved": achieved,
                "with_id": len(generated) / (ended - began),
                "cpu_cores": cpu / (ended - began),
                "cpu_per_1000": cpu / (ended - began) / (achieved / 1000),
                "rss_mib": rss / MIB,
                "per_1000_channels_mib": rss / MIB / (channels / 1000),
                "empty_mib": empty / MIB,
                "added_per_1000_mib": (rss - empty) / MIB / (channels / 1000),
                "redis_mib": int(info["used_memory"]) / MIB,
                "redis_channels_mib": (redis_before - redis_empty - stream_before) / MIB,
                "redis_per_channel_b": (redis_before - redis_empty - stream_before) / channels,
                "redis_per_entry_b": (stream_bytes or 0) / max(entries, 1),
                "stream_entries": entries,
                "processes": len(_tree(supervisor.pid)),
                "generated": len(generated),
                "once": once,
                "twice": twice,
                "missing": missing,
            }
        finally:
            log.close()
            await _clean(harness, supervisor, client, prefix)


async def _window(sim: ChatSimulator, rate: float, seconds: float) -> tuple[float, float, int]:
    """Traffic at ``rate`` for ``seconds``: when it began and ended, and the lines sent."""
    began, before = time.monotonic(), sim.lines_generated
    sim.set_rate(rate)
    await asyncio.sleep(seconds)
    sim.set_rate(0.0)
    return began, time.monotonic(), sim.lines_generated - before


async def _clean(
    harness: ProcessHarness,
    supervisor: subprocess.Popen[bytes],
    client: redis.asyncio.Redis,
    prefix: str,
) -> None:
    """Stop the cluster (none of its processes left) and delete its keys."""
    left = await asyncio.to_thread(harness.stop, supervisor)
    if left:
        print(f"warning: processes left running, killed: {left}", file=sys.stderr)
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _count(env: dict[str, str], folder: Path, wanted: set[str]) -> tuple[int, int, int]:
    """Of ``wanted`` message ids: on the event stream once, more than once, not at all."""
    settings = load_settings(environ=env, cwd=folder)
    seen: Counter[tuple[str, str]] = Counter()  # a line may make events of several kinds
    async with Cluster(settings) as app:
        reader = app.events(since="0")  # every kind: a notice's line has an id too
        try:
            while True:
                try:
                    event = await asyncio.wait_for(reader.__anext__(), 5.0)
                except (TimeoutError, StopAsyncIteration):
                    break
                line_id = event.tags.get("id")
                if line_id in wanted:
                    seen[(type(event).__name__, line_id)] += 1
        finally:
            await reader.aclose()
    twice = {line_id for (_, line_id), n in seen.items() if n > 1}
    found = {line_id for _, line_id in seen}
    return len(found - twice), len(twice), len(wanted - found)


def _tail(folder: Path) -> str:
    return (folder / "density.log").read_text(errors="replace")[-3000:]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller: under a minute")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="lines per second in all (93 %% of them messages with an id: PRIVMSG, USERNOTICE)",
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="the measured window")
    args = parser.parse_args()
    quick = args.quick
    channels = args.channels or (10_000 if quick else 100_000)
    rate = args.rate or (2_000.0 if quick else 10_000.0)
    workers = args.workers or (2 if quick else 10)
    seconds = args.seconds or (10.0 if quick else 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        r = await density(
            args.redis, Path(tmp), channels=channels, rate=rate, workers=workers, seconds=seconds
        )
    print(f"{channels:,} channels, {workers} workers, target {rate:,.0f} messages/s, {seconds:g} s")
    rows = [
        ("cold start, every channel joined (s)", f"{r['cold_s']:.1f}", ""),
        ("messages (lines) per second the simulator sent", f"{r['achieved']:,.0f}", f"{rate:,.0f}"),
        ("  of them with an id, checked once each", f"{r['with_id']:,.0f}", "93 % of the lines"),
        ("cluster CPU (cores)", f"{r['cpu_cores']:.2f}", "2 in all"),
        ("CPU per 1,000 messages/s (cores)", f"{r['cpu_per_1000']:.3f}", ""),
        ("resident memory, all processes (MiB)", f"{r['rss_mib']:,.0f}", f"< {TARGET_RSS_MIB}"),
        ("  with no channel yet (MiB)", f"{r['empty_mib']:,.0f}", ""),
        ("  added per 1,000 channels (MiB)", f"{r['added_per_1000_mib']:.2f}", "1.1-1.4 (issue 5)"),
        ("  all of it per 1,000 channels (MiB)", f"{r['per_1000_channels_mib']:.2f}", ""),
        ("Redis used_memory (MiB)", f"{r['redis_mib']:,.0f}", ""),
        ("  the channels' keys, stream aside (MiB)", f"{r['redis_channels_mib']:,.1f}", ""),
        ("  per channel (bytes)", f"{r['redis_per_channel_b']:,.0f}", ""),
        (
            "  per event-stream entry (bytes)",
            f"{r['redis_per_entry_b']:,.0f}",
            f"{r['stream_entries']:,.0f} entries",
        ),
        ("processes (supervisor and workers)", f"{r['processes']}", ""),
        (
            "messages in the window: once, twice, missing",
            f"{r['once']:,} / {r['twice']} / {r['missing']}",
            f"{r['generated']:,} sent",
        ),
    ]
    print(f"{'':48} {'ours':>22}  target or peer")
    for label, ours, peer in rows:
        print(f"{label:48} {ours:>22}  {peer}")
    print("peer: recent-messages2 holds about 161,000 channels on a larger server")


if __name__ == "__main__":
    asyncio.run(main())
