"""The web pages under a big cluster's state (issue 21: p99 under 200 ms with 100,000 channels
and 200 worker processes), and what serving them costs a supervisor.

Run: ``python bench/web.py`` (about two minutes) or ``python bench/web.py --quick`` (under a
minute: 20,000 channels, 40 processes, shorter phases). Redis: ``--redis URL`` (default
``redis://127.0.0.1:6379/0``), every key under a prefix of its own, deleted at the end; the
database is a SQLite file in a temporary folder.

1. **The state of a big cluster**, written straight into the store and Redis (no chat): 10
   supervisors with 20 worker processes each, their records and live heartbeats (beating every
   2 s for the whole run), the channels wanted in SQL, assigned and held in Redis.
2. **One snapshot** (what every page reads, at most once a second): ``ClusterView.snapshot()``
   read again and again in this process.
3. **The pages as 10 open dashboards see them**: ``tmi-cluster dashboard`` serving, 10
   pollers each asking what the page asks every 2 s (statistics, supervisors, the first page
   of channels, a search), plus a Prometheus scrape every 2 s; latency of each route, p50 and
   p99, and the dashboard process's CPU and memory.
4. **A supervisor that serves them** (``web.enabled``, two workers on the built-in simulator,
   200 channels): its workers' heartbeat ages with and without 10 pollers (a worker beats
   every second; the supervisor acts on one silent for 3 s).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from tmi_cluster.bus import Assignment, Keys, ProcessStatus, SupervisorStatus, connect_async
from tmi_cluster.bus.heartbeat import Heartbeat, live
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.harness import ProcessHarness
from tmi_cluster.store import RunState, Store
from tmi_cluster.web import ClusterView

PASSWORD = "bench-password"  # noqa: S105 - a throwaway cluster's
SUPERVISORS = 10


def _environment(folder: Path, redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
    env.update(
        {
            "TMI_CLUSTER_REDIS__URL": redis_url,
            "TMI_CLUSTER_PREFIX": prefix,
            "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{folder / 'cluster.db'}",
            "TMI_CLUSTER_WEB__PASSWORD": PASSWORD,
        }
    )
    return env


def _ms(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _seed(
    settings: Settings, processes: int, channels: int, stop: asyncio.Event
) -> asyncio.Task[None]:
    """The big cluster's state; a task that keeps its heartbeats alive until ``stop``."""
    per_supervisor = processes // SUPERVISORS
    names = [f"chan{i:06d}" for i in range(channels)]
    sups = [f"bench-sup-{s}" for s in range(SUPERVISORS)]
    procs = {f"{sup}-{n + 1}": sup for sup in sups for n in range(per_supervisor)}
    with Store.from_settings(settings) as store:
        for sup in sups:
            store.record_supervisor(sup, RunState.RUNNING, pid=os.getpid())
        for process_id, sup in procs.items():
            store.record_process(process_id, sup, RunState.RUNNING, pid=os.getpid())
        store.want(names)
    client = connect_async(settings, name="bench-web")
    keys = Keys.from_settings(settings)
    owners = {name: list(procs)[i % len(procs)] for i, name in enumerate(names)}
    assignment = Assignment(client, keys)
    await assignment.assign(owners)
    held: dict[str, list[str]] = {}
    for name, process_id in owners.items():
        held.setdefault(process_id, []).append(name)
    for process_id, mine in held.items():
        await assignment.set_held(process_id, mine)

    def process_status(process_id: str, supervisor_id: str) -> ProcessStatus:
        mine = len(held.get(process_id, ()))
        return ProcessStatus(
            supervisor=supervisor_id,
            pid=os.getpid(),
            state="running",
            channels=mine,
            connections=mine // 100 + 1,
            memory_bytes=60 * 2**20,
            messages_per_s=50.0,
        )

    def supervisor_status() -> SupervisorStatus:
        return SupervisorStatus(
            pid=os.getpid(), host="bench", processes=per_supervisor, target=per_supervisor
        )

    beats: list[Heartbeat[Any]] = [
        Heartbeat(
            client, keys, "supervisor", sup, ttl_s=60, interval_s=2, status_of=supervisor_status
        )
        for sup in sups
    ]
    beats += [
        Heartbeat(
            client,
            keys,
            "process",
            process_id,
            ttl_s=60,
            interval_s=2,
            status_of=functools.partial(process_status, process_id, sup),
        )
        for process_id, sup in procs.items()
    ]

    async def beat() -> None:
        try:
            while not stop.is_set():
                await asyncio.gather(*(b.beat() for b in beats))
                await asyncio.sleep(1.0)
        finally:
            await client.aclose()

    await asyncio.gather(*(b.beat() for b in beats))
    return asyncio.create_task(beat())


async def _snapshots(settings: Settings, seconds: float) -> list[float]:
    view = ClusterView(settings)
    times: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline or len(times) < 3:
            started = time.perf_counter()
            snapshot = await view.read()
            times.append(time.perf_counter() - started)
            assert snapshot.status == "operational", snapshot.reason
    finally:
        await view.aclose()
    return times


async def _poll(base: str, seconds: float, pollers: int, search: str) -> dict[str, list[float]]:
    """``pollers`` dashboards (and one scraper) for ``seconds``: latencies by route."""
    routes = {
        "api/statistics": "api/statistics",
        "api/supervisors": "api/supervisors",
        "api/channels (first page)": "api/channels?page=1&per_page=50",
        "api/channels?search=": f"api/channels?search={search}",
    }
    found: dict[str, list[float]] = {name: [] for name in [*routes, "metrics"]}
    deadline = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient, name: str, path: str) -> None:
        started = time.perf_counter()
        answer = await client.get(base + path)
        found[name].append(time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])

    async def dashboard(client: httpx.AsyncClient, offset: float) -> None:
        await asyncio.sleep(offset)
        while time.monotonic() < deadline:
            await asyncio.gather(*(one(client, name, path) for name, path in routes.items()))
            await asyncio.sleep(2.0)

    async def scraper(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            await one(client, "metrics", "metrics")
            await asyncio.sleep(2.0)

    async with httpx.AsyncClient(auth=("admin", PASSWORD), timeout=30) as client:
        await asyncio.gather(
            *(dashboard(client, 2.0 * i / pollers) for i in range(pollers)), scraper(client)
        )
    return found


def _dashboard(
    harness: ProcessHarness, env: Mapping[str, str], folder: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    process = harness.spawn(
        [sys.executable, "-m", "tmi_cluster.cli", "dashboard", "--port", "0"],
        env=dict(env),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("the dashboard: "):
        raise SystemExit(f"the dashboard did not start: {line}{process.stdout.read().decode()}")
    url = line.split()[2]
    # the first read of the cluster (a request waits for it) before the clock starts
    httpx.get(url + "api/statistics", auth=("admin", PASSWORD), timeout=60).raise_for_status()
    return url, process


async def _heartbeat_ages(settings: Settings, seconds: float) -> list[float]:
    """The live workers' heartbeat ages, sampled every 0.1 s."""
    client = connect_async(settings, name="bench-ages")
    keys = Keys.from_settings(settings)
    ages: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            beats = await live(client, keys, "process")
            ages.extend(beat.age_s for beat in beats.values())
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    return ages


async def _supervisor_part(
    harness: ProcessHarness, env: Mapping[str, str], folder: Path, seconds: float
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """A supervisor serving the pages: worker heartbeat ages without, then with, 10 pollers."""
    port = _free_port()
    cluster_env = {
        **env,
        "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",
        "TMI_CLUSTER_WEB__ENABLED": "true",
        "TMI_CLUSTER_WEB__PORT": str(port),
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "2",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "2",
    }
    log = (folder / "supervisor.log").open("wb")
    harness.spawn(
        [sys.executable, "-m", "tmi_cluster.cli", "run"],
        env=cluster_env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = load_settings(environ=cluster_env, cwd=folder)
    names = [f"room{i}" for i in range(200)]
    await asyncio.sleep(2.0)  # the tables, made by the supervisor
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "tmi_cluster.cli", "join", *names, "--timeout", "20"],
            env=cluster_env,
            cwd=folder,
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the cluster did not join: see {folder}/supervisor.log")
        await asyncio.sleep(1.0)
    quiet = await _heartbeat_ages(settings, seconds)
    base = f"http://127.0.0.1:{port}/tmi-cluster/"
    busy_ages, polled = await asyncio.gather(
        _heartbeat_ages(settings, seconds), _poll(base, seconds, 10, "room1")
    )
    return quiet, busy_ages, polled


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _table(found: Mapping[str, list[float]]) -> None:
    print("| route | requests | p50 | p99 | max |\n|---|---:|---:|---:|---:|")
    for name, seconds in found.items():
        print(
            f"| `{name}` | {len(seconds)} | {_ms(seconds, 0.5):.1f} ms | "
            f"{_ms(seconds, 0.99):.1f} ms | {max(seconds) * 1000:.1f} ms |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller state, shorter phases")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    args = parser.parse_args()
    channels, processes, seconds = (20_000, 40, 10.0) if args.quick else (100_000, 200, 30.0)
    prefix = f"bench-web-{secrets.token_hex(4)}:"
    folder = Path(tempfile.mkdtemp(prefix="tmi-bench-web-"))
    env = _environment(folder, args.redis, prefix)
    print(
        f"the web pages with {channels:,} channels and {processes} worker processes "
        f"({SUPERVISORS} supervisors), Python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    stop = asyncio.Event()
    try:
        subprocess.run(
            [sys.executable, "-m", "tmi_cluster.cli", "install"],
            env=env,
            cwd=folder,
            capture_output=True,
            check=True,
        )
        settings = load_settings(environ=env, cwd=folder)
        started = time.perf_counter()
        beating = await _seed(settings, processes, channels, stop)
        print(f"state written in {time.perf_counter() - started:.1f} s")
        times = await _snapshots(settings, seconds / 3)
        print(
            f"\none snapshot (what the pages read, at most once a second): {len(times)} reads, "
            f"p50 {_ms(times, 0.5):.0f} ms, p99 {_ms(times, 0.99):.0f} ms"
        )
        with ProcessHarness() as harness:
            url, served = _dashboard(harness, env, folder)
            dashboard = psutil.Process(served.pid)
            dashboard.cpu_percent()
            search = f"chan{random.randrange(channels):06d}"
            found = await _poll(url, seconds, 10, search)
            cpu = dashboard.cpu_percent()
            rss = dashboard.memory_info().rss / 2**20
            print(f"\n10 dashboards open and a scrape every 2 s, {seconds:g} s, via `dashboard`:")
            _table(found)
            print(f"\nthe dashboard process: {cpu:.0f} % of a core, {rss:.0f} MiB resident")
            harness.stop(served)
        stop.set()
        await beating
        # a cluster of its own: another database and key prefix
        small = folder / "supervisor"
        small.mkdir()
        small_env = _environment(small, args.redis, prefix + "run:")
        with ProcessHarness() as harness:
            quiet, busy, polled = await _supervisor_part(harness, small_env, small, seconds)
            for process in harness.started:
                harness.stop(process)
        print(
            "\na supervisor serving the pages (web.enabled, 2 workers, 200 channels), "
            "its workers' heartbeat ages (they beat every second):"
        )
        print("| | samples | p50 | p99 | max |\n|---|---:|---:|---:|---:|")
        for name, ages in (("no dashboard open", quiet), ("10 dashboards open", busy)):
            print(
                f"| {name} | {len(ages)} | {statistics.median(ages):.2f} s | "
                f"{_ms(ages, 0.99) / 1000:.2f} s | {max(ages):.2f} s |"
            )
        print("\nits pages meanwhile:")
        _table(polled)
    finally:
        stop.set()
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
