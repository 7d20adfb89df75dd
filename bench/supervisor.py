"""Supervisor and worker processes: start-up, recovery after kill -9, idle memory.

Run: ``python bench/supervisor.py`` (10 runs) or ``python bench/supervisor.py --quick`` (3 runs,
under a minute). Needs Redis on 127.0.0.1:6379 (or ``--redis URL``).

Each run starts ``tmi-cluster run`` (two workers, ``auto_scale.processes.min`` = 2, the built-in
simulator) with one channel already assigned to each worker's id, and measures:

- start to ready: from the command's start until both workers beat;
- start to reading: until both hold their channel (joined and confirmed by the simulator);
- kill -9 to reading: from a SIGKILL of one worker until its channel is held again (by the other
  worker: the supervisor moves it at once) and its replacement beats;
- RSS of the idle supervisor (with its simulator) and of an idle worker, after the run settles.

The original TMI Cluster's figures are printed beside ours for reference: a dead worker was
known after ``process.stale`` (90 s) and its channels were back after 90 to 100 s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

from tmi_cluster.harness import ProcessHarness

SCRIPT = shutil.which("tmi-cluster", path=str(Path(sys.executable).parent)) or "tmi-cluster"


def _wait(check: Callable[[], Any], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not get there in time")
        time.sleep(0.005)


def one_run(redis_url: str, folder: Path) -> dict[str, float]:
    prefix = f"bench-{secrets.token_hex(3)}:"
    supervisor_id = "bench"
    client = redis.Redis.from_url(redis_url)
    workers = [f"{supervisor_id}-1", f"{supervisor_id}-2"]
    channels = {"alpha": workers[0], "beta": workers[1]}
    for channel, owner in channels.items():  # as the coordinator would have left them
        client.hset(prefix + "assignment", channel, owner)
        client.sadd(f"{prefix}process:{owner}:channels", channel)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
    env.update(
        {
            "TMI_CLUSTER_REDIS__URL": redis_url,
            "TMI_CLUSTER_PREFIX": prefix,
            "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{folder / f'{prefix[:-1]}.db'}",
            "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",
            "TMI_CLUSTER_TMI__CONNECTION__CONNECT_INTERVAL": "0",
            "TMI_CLUSTER_LOG__LEVEL": "warning",
        }
    )

    def beating(process_id: str) -> bool:
        return bool(client.exists(f"{prefix}process:{process_id}:heartbeat"))

    def held(process_id: str) -> set[bytes]:
        members: Any = client.smembers(f"{prefix}process:{process_id}:held")
        return set(members)

    started = time.monotonic()
    harness = ProcessHarness()  # the supervisor and its workers, none left behind
    proc = harness.spawn(
        [SCRIPT, "run", "--id", supervisor_id],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: all(beating(w) for w in workers))
        ready = time.monotonic() - started
        _wait(lambda: all(c.encode() in held(o) for c, o in channels.items()))
        reading = time.monotonic() - started
        time.sleep(2.0)  # idle
        supervisor = psutil.Process(proc.pid)
        children = [c for c in supervisor.children() if "tmi_cluster.worker.process" in c.cmdline()]
        rss_supervisor = supervisor.memory_info().rss
        rss_worker = max(c.memory_info().rss for c in children)
        victim = next(c for c in children if f"--id={workers[0]}" in c.cmdline())
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        replacement = f"{supervisor_id}-3"
        _wait(lambda: b"alpha" in held(workers[1]) | held(replacement) and beating(replacement))
        recovered = time.monotonic() - killed
    finally:
        left = harness.stop(proc, within_s=30)
        if left:
            print(f"warning: processes the cluster left running, killed: {left}", file=sys.stderr)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()
    return {
        "ready": ready,
        "reading": reading,
        "recovered": recovered,
        "rss_supervisor": rss_supervisor / 1048576,
        "rss_worker": rss_worker / 1048576,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 10")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    args = parser.parse_args()
    runs = 3 if args.quick else 10
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(runs):
            results.append(one_run(args.redis, Path(folder)))
            print(
                f"run {number + 1}/{runs}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in results[-1].items()),
                flush=True,
            )

    def p50(key: str) -> float:
        return statistics.median(r[key] for r in results)

    def worst(key: str) -> float:
        return max(r[key] for r in results)

    print()
    print(f"{'figure':42} {'p50':>8} {'worst':>8}   original TMI Cluster")
    rows = [
        ("start to both workers ready (s)", "ready", "-"),
        ("start to both workers reading (s)", "reading", "-"),
        ("kill -9 of a worker to reading again (s)", "recovered", "90-100 s"),
        ("idle supervisor with simulator, RSS (MiB)", "rss_supervisor", "-"),
        ("idle worker, RSS (MiB)", "rss_worker", "-"),
    ]
    for label, key, original in rows:
        print(f"{label:42} {p50(key):8.2f} {worst(key):8.2f}   {original}")


if __name__ == "__main__":
    main()
