"""Auto join and part with real supervisor processes: the stale cleanup runs once per interval
for a cluster of three supervisors (also when its leader is killed), parts the stale and the
unauthorized channels and keeps the fresh ones; a supervisor's start wants again the channels
authorized with ``reconnect``."""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from tmi_cluster.store import Store

from .helpers import wait_for
from .test_processes import Supervisor, _held, _keys, _statuses, cluster

__all__ = ["cluster"]

INTERVAL_S = 1.0
CLEANUP = {
    "TMI_CLUSTER_CHANNEL_MANAGER__USE": "database",
    "TMI_CLUSTER_CHANNEL_MANAGER__AUTO_CLEANUP__ENABLED": "true",
    "TMI_CLUSTER_CHANNEL_MANAGER__AUTO_CLEANUP__INTERVAL": str(INTERVAL_S),
    "TMI_CLUSTER_CHANNEL_MANAGER__AUTO_CLEANUP__MAX_DELAY": "0.3",
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "1",
}
FRESH = [f"fresh{i}" for i in range(10)]
OLD = [f"old{i}" for i in range(10)]


def _prepare(tmp_path: Path) -> None:
    """The cluster's database before its first start: fresh, stale and unauthorized wanted
    channels, and channels authorized with reconnect that are not wanted."""
    with Store(f"sqlite:///{tmp_path / 'cluster.db'}") as store:
        store.migrate()
        long_ago = datetime.now(UTC) - timedelta(days=30)
        store.authorize([*FRESH, *OLD])
        store.want([*FRESH, *OLD, "unauthorized"])
        store.acknowledge(OLD, now=long_ago)
        store.authorize(["reconnect", "stalereconnect"], reconnect=True)
        store.acknowledge(["stalereconnect"], now=long_ago)


def _runs(client: redis.Redis, env: dict[str, str]) -> list[tuple[int, dict[str, str]]]:
    entries: Any = client.xrange(_keys(env).cleanup_runs)
    return [
        (int(i.split(b"-")[0]), {k.decode(): v.decode() for k, v in f.items()}) for i, f in entries
    ]


def _held_anywhere(client: redis.Redis, env: dict[str, str]) -> set[str]:
    return {c for p in _statuses(client, env) for c in _held(client, env, p)}


def _leader(client: redis.Redis, env: dict[str, str], supervisors: list[Supervisor]) -> Any:
    for supervisor in supervisors:
        raw: Any = client.get(_keys(env).supervisor_heartbeat(supervisor.id))
        if raw and json.loads(raw).get("coordinator"):
            return supervisor
    return None


def test_the_cleanup_runs_once_for_a_cluster_of_three_supervisors(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    _prepare(tmp_path)
    env = {**cluster.env, **CLEANUP}  # type: ignore[attr-defined]
    supervisors = [cluster(name, **CLEANUP) for name in ("sup-a", "sup-b", "sup-c")]
    wanted_held = {*FRESH, "reconnect"}
    wait_for(
        lambda: _held_anywhere(redis_client, env) == wanted_held,
        30,
        "the fresh channels and the reconnect one held, the others parted",
    )
    with Store(f"sqlite:///{tmp_path / 'cluster.db'}") as store:
        assert set(store.wanted()) == wanted_held  # stale and unauthorized ones parted in SQL
    wait_for(lambda: len(_runs(redis_client, env)) >= 4, 30, "four cleanup runs")
    leader = wait_for(lambda: _leader(redis_client, env, supervisors), 10, "a leader")
    before = len(_runs(redis_client, env))
    os.kill(leader.pid, signal.SIGKILL)  # the leader dies: another runs it when it is due
    wait_for(lambda: len(_runs(redis_client, env)) >= before + 4, 40, "four runs more")
    runs = _runs(redis_client, env)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(runs)]
    assert min(gaps) >= INTERVAL_S * 1000 * 0.9, gaps  # once per interval, never per supervisor
    print(
        f"\n{len(runs)} cleanup runs by {sorted({r['by'] for _, r in runs})}, gaps "
        f"{min(gaps)}-{max(gaps)} ms (interval {INTERVAL_S * 1000:.0f} ms + up to 300 ms)"
    )
    assert {r["by"] for _, r in runs[before:]} - {leader.id}, "the others took it over"
    first = runs[0][1]
    assert (int(first["stale"]), int(first["unauthorized"])) == (len(OLD), 1), first
    assert _held_anywhere(redis_client, env) == wanted_held
