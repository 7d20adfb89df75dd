"""Two copies of every channel (``coordinator.replicas = 2``) against one, on the same traffic.

Run: ``python bench/replicas.py`` (2,000 channels, 2,000 messages/s) or ``python
bench/replicas.py --quick`` (200 channels, 500 messages/s; under a minute). Needs Redis on
127.0.0.1:6379 (or ``--redis URL``). The simulator runs in this process and is the judge.

For ``replicas`` 1, then 2: three supervisors (three "hosts"; on one machine the copies are
kept apart by supervisor) of two workers each hold the channels. Once every channel is held
(by two connections of two supervisors with two copies), the traffic runs for ``--seconds``:
measured are the cluster's CPU (its processes, in cores) and memory (RSS), the simulator's
open connections, and Redis's commands per second, CPU and memory added meanwhile (the event
stream and the de-duplication marks). Then one supervisor is killed with SIGKILL with its
workers (a host's death) while the traffic goes on, until every channel is held as before
(the recovery) and 3 s more. Every message the simulator sent from the start of the measure
to the end is looked for on the event stream: lost, and read twice.

No peer offers redundancy: the original TMI Cluster, and the chat libraries of other
languages, lose a dead process's messages until its channels are joined again (the original's
failover took 90-100 s).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio

from tmi_cluster.bus.events import EventReader
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits

sys.path.insert(0, str(Path(__file__).parent))
from failover import Cluster, _until

HOSTS = ("host-a", "host-b", "host-c")
WORKERS_PER_HOST = 2


def _processes(cluster: Cluster) -> list[psutil.Process]:
    """The supervisors of ``cluster`` and their workers, alive."""
    found = []
    for process in cluster.processes.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(process.pid)
            found += [parent, *parent.children(recursive=True)]
    return found


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


async def _redis_figures(client: redis.asyncio.Redis) -> tuple[int, float, int]:
    """Redis's commands processed, CPU seconds and memory used, now."""
    stats: Any = await client.info("stats")
    cpu: Any = await client.info("cpu")
    memory: Any = await client.info("memory")
    return (
        int(stats["total_commands_processed"]),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        int(memory["used_memory"]),
    )


class _Stream:
    """How often each dedupe key comes through the event stream, from now on."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.keys: collections.Counter[str] = collections.Counter()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last: Any = await self.cluster.client.xrevrange(self.cluster.keys.events, count=1)
        since = last[0][0].decode() if last else "0-0"
        reader = EventReader(self.cluster.client, self.cluster.keys, since=since)

        async def read() -> None:
            async for event in reader:
                if event.dedupe_key is not None:
                    self.keys[event.dedupe_key] += 1

        self.task = asyncio.create_task(read())

    async def settle(self, expected: set[str], timeout_s: float) -> None:
        """Wait until every id of ``expected`` came, or nothing came for a second (lost:
        they never will), or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        count = -1
        while time.monotonic() < deadline and not expected <= self.ids():
            if len(self.keys) == count:
                return
            count = len(self.keys)
            await asyncio.sleep(1.0)

    def ids(self) -> set[str]:
        """The message ids seen (a cheer is two events of one id)."""
        return {k.partition(":")[2] for k in self.keys}

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def _steady(cluster: Cluster, sim: ChatSimulator, seconds: float) -> dict[str, Any]:
    """The cluster's and Redis's figures over ``seconds`` of traffic."""
    processes = _processes(cluster)
    cpu_before = _cpu_s(processes)
    redis_before = await _redis_figures(cluster.client)
    measured_at = time.monotonic()
    await asyncio.sleep(seconds)
    window = time.monotonic() - measured_at
    redis_after = await _redis_figures(cluster.client)
    return {
        "cores": (_cpu_s(processes) - cpu_before) / window,
        "rss_mib": _rss(processes) / 2**20,
        "connections": sum(1 for c in sim.connections() if c.open),
        "redis_ops": (redis_after[0] - redis_before[0]) / window,
        "redis_cores": (redis_after[1] - redis_before[1]) / window,
        "redis_mib": (redis_after[2] - redis_before[2]) / 2**20,
    }


def _kill_host(cluster: Cluster, sim: ChatSimulator, host: str) -> set[int]:
    """SIGKILL to supervisor ``host`` and its workers; the simulator's connections they had."""
    supervisor = psutil.Process(cluster.processes[host].pid)
    tree = [supervisor, *supervisor.children(recursive=True)]
    ports: set[int] = set()
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            ports.update(
                c.laddr.port
                for c in process.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == sim.port
            )
    dead = {c.id for c in sim.connections() if c.open and c.peer[1] in ports}
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    return dead


def _progress(what: str, since: float) -> None:
    print(f"{time.monotonic() - since:6.1f} s  {what}", file=sys.stderr, flush=True)


def _settings(replicas: int, channels: int) -> dict[str, str]:
    workers = len(HOSTS) * WORKERS_PER_HOST
    return {
        "TMI_CLUSTER_COORDINATOR__REPLICAS": str(replicas),
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": str(workers),
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": str(workers),
        # the same worker count for both: room for two copies on the hosts left
        "TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__CHANNELS": str(
            math.ceil(2 * channels / (workers - WORKERS_PER_HOST) * 1.2)
        ),
        "TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW": "500",
        "TMI_CLUSTER_HANDLERS__STREAM_MAXLEN": "2000000",
        "TMI_CLUSTER_AUTO_SCALE__COOLDOWN": "0",
        # each host runs its share from the start: spreading workers started on one host over
        # the others moves one at a time (up to 35 s), which is not what this measures
        "TMI_CLUSTER_SUPERVISOR__PROCESSES": str(WORKERS_PER_HOST),
        "TMI_CLUSTER_PROCESS__TIMEOUT": "10",
    }


async def one(
    redis_url: str, folder: Path, *, replicas: int, channels: int, rate: float, seconds: float
) -> dict[str, Any]:
    """The figures of ``replicas`` copies: steady, then a host killed."""
    names = [f"chan{i:05}" for i in range(channels)]
    limits = Limits(anonymous_join_allow=500, join_every_s=10.0)
    began = time.monotonic()
    async with ChatSimulator(channels=names, limits=limits) as sim:
        cluster = Cluster(sim, redis_url, folder, _settings(replicas, channels), ids=HOSTS)
        stream = _Stream(cluster)
        try:
            statuses = cluster.statuses

            async def spread() -> bool:
                found = collections.Counter(s.supervisor for s in (await statuses()).values())
                return all(found[h] == WORKERS_PER_HOST for h in HOSTS)

            await _until(spread, 120, f"{WORKERS_PER_HOST} workers on each supervisor")
            _progress(f"replicas {replicas}: workers spread", began)
            await cluster.want(names)

            def held(dead: set[int]) -> bool:
                return all(len(j := sim.joined(n)) == replicas and not set(j) & dead for n in names)

            await _until(lambda: held(set()), 300, f"every channel held {replicas} times")
            _progress(f"replicas {replicas}: every channel held", began)
            await stream.start()
            sim.set_rate(rate)
            traffic_from = time.monotonic()
            await asyncio.sleep(2.0)  # the traffic's first seconds: buffers fill
            figures = await _steady(cluster, sim, seconds)
            killed_at = time.monotonic()
            dead = _kill_host(cluster, sim, HOSTS[0])  # a host's death
            assert dead, "the killed host held no connection"
            await _until(lambda: held(dead), 120, f"every channel held {replicas} times again")
            figures["recovery_s"] = time.monotonic() - killed_at
            _progress(f"replicas {replicas}: a host killed, its channels held again", began)
            await asyncio.sleep(3.0)
            sim.set_rate(0.0)
            ended = time.monotonic()
            sent = {
                d.message_id
                for n in names
                for d in sim.deliveries(n)
                if traffic_from <= d.at <= ended and d.message_id
            }
            await stream.settle(sent, 20.0)
            return {
                "replicas": replicas,
                **figures,
                "sent": len(sent),
                "lost": len(sent - stream.ids()),
                "twice": sum(1 for n in stream.keys.values() if n > 1),
            }
        finally:
            await stream.stop()
            await cluster.stop()
            _progress(f"replicas {replicas}: stopped", began)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 channels, 500 messages/s")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--channels", type=int, help="channels (default 2,000; quick 200)")
    parser.add_argument("--rate", type=float, help="messages/s (default 2,000; quick 500)")
    parser.add_argument("--seconds", type=float, help="steady measure (default 20; quick 4)")
    args = parser.parse_args()
    channels = args.channels if args.channels is not None else (200 if args.quick else 2000)
    rate = args.rate if args.rate is not None else (500.0 if args.quick else 2000.0)
    seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 20.0)
    if channels < 1 or rate <= 0 or seconds <= 0:
        parser.error("--channels, --rate and --seconds must be positive")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tmi-replicas-") as folder:
        for replicas in (1, 2):
            rows.append(
                await one(
                    args.redis,
                    Path(folder),
                    replicas=replicas,
                    channels=channels,
                    rate=rate,
                    seconds=seconds,
                )
            )
    print(
        f"\n{channels:,} channels, {rate:,.0f} messages/s, 3 supervisors of 2 workers; "
        f"one supervisor and its workers killed (SIGKILL) under traffic"
    )
    header = (
        f"{'replicas':>8} {'conns':>6} {'cores':>6} {'RSS MiB':>8} {'Redis ops/s':>11} "
        f"{'Redis cores':>11} {'Redis +MiB':>10} {'recovery s':>10} {'messages':>9} "
        f"{'lost':>6} {'twice':>6}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['replicas']:>8} {r['connections']:>6} {r['cores']:>6.2f} {r['rss_mib']:>8.0f} "
            f"{r['redis_ops']:>11,.0f} {r['redis_cores']:>11.3f} {r['redis_mib']:>10.1f} "
            f"{r['recovery_s']:>10.2f} {r['sent']:>9,} {r['lost']:>6} {r['twice']:>6}"
        )
    print(
        "peers: none offers redundancy; the original TMI Cluster lost a dead worker's "
        "messages for 90-100 s"
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # the clusters were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
