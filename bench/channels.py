"""The channel managers' database side: ``DatabaseChannelManager`` and the store under it, on
SQLite and PostgreSQL, with 250,000 channels.

Run: ``python bench/channels.py [--quick] [--postgres URL]`` (``--postgres ''``: SQLite only).
The full run (N = 250,000 channels, M = 50,000, 3 interleaved rounds, best round kept) takes
three to four minutes; ``--quick`` (N = 50,000, M = 10,000, one round) about 20 s. SQLite: a
fresh file in a temporary folder for every database; PostgreSQL (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``): a fresh schema ``bench_<random>`` for
every database (the connections' ``search_path``), dropped at the end.

Per backend and round:

- **authorize(N)**, rows new and again (rows exist), by ``manager.authorize`` (the bulk path:
  the logins as one parameter, 50,000 a statement) and by the peer, the store's old way: one
  row of parameters per channel through executemany, got by ``store.authorize`` on chunks of
  999 (below ``BULK_FROM``) in a loop, each chunk its own transaction; each in a fresh
  database, the two in alternating order.
- **authorized(M)** and **acknowledged(M)** (M of the N, spread), against the same peer
  (``store.channels`` and ``store.acknowledge`` on chunks of 999: ``IN`` lists of 500,
  executemany); 3 times a round, the two in turn (the first read after the import is slower).
- **joinable** over N wanted (what the coordinator runs on each reload of the wanted channels;
  3 times a round) and one **stale cleanup** pass (``channels.cleanup``): all N wanted
  (``store.want``), 10 % acknowledged 30 days ago (the stale age is 168 h), 1 % revoked
  (``manager.revoke``, which unwants them) and wanted again without authorization
  (``store.want``: as channels wanted before the switch to the database manager). The counts
  are checked: joinable N - 1 %; the cleanup checked N, stale 10 %, unauthorized 1 %.
- **want_reconnect** over N: 10 % authorized with ``reconnect`` and not wanted (as after a
  restart), with the horizon a supervisor passes when the cleanup runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tmi_cluster import channels
from tmi_cluster.channels import DatabaseChannelManager, stale_horizon
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.config.urls import normalise_database_url
from tmi_cluster.store import BULK_FROM, Store

T = TypeVar("T")

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: The peer's chunk: just below the bulk path's threshold, so every call takes the row path.
PEER_CHUNK = BULK_FROM - 1
LONG_AGO = dt.timedelta(days=30)
#: How many times a round repeats what leaves the database as it was (the reads, acknowledged).
REPEATS = 3


@dataclass(frozen=True)
class Plan:
    """How big, how often."""

    channels: int
    some: int
    rounds: int


@dataclass
class Figure:
    """One operation on one backend: its best time, the peer's, what it returned."""

    label: str
    count: int
    seconds: float = float("inf")
    peer: float | None = None
    result: str = ""

    def keep(self, seconds: float, peer: float | None = None) -> None:
        self.seconds = min(self.seconds, seconds)
        if peer is not None:
            self.peer = min(self.peer if self.peer is not None else float("inf"), peer)


@dataclass
class Results:
    """The figures of one backend, in the order they are printed."""

    backend: str
    figures: dict[str, Figure] = field(default_factory=dict)

    def figure(self, key: str, label: str, count: int) -> Figure:
        return self.figures.setdefault(key, Figure(label, count))


class Databases:
    """Fresh, empty databases of one backend, each removed at the end."""

    def __init__(self, backend: str, folder: Path, postgres: str) -> None:
        self.backend = backend
        self.folder = folder
        self.postgres = normalise_database_url(postgres) if postgres else ""
        self._made = 0

    @contextlib.contextmanager
    def fresh(self) -> Iterator[Store]:
        """A migrated store on a database of its own."""
        self._made += 1
        with self._url() as url, Store(url) as store:
            store.migrate()
            yield store

    @contextlib.contextmanager
    def _url(self) -> Iterator[str]:
        if self.backend == "sqlite":
            yield f"sqlite:///{self.folder / f'channels{self._made}.db'}"
            return
        # As tests/conftest.py: a schema of its own, the connections' search_path.
        plain = make_url(self.postgres).set(drivername="postgresql")
        admin = plain.render_as_string(hide_password=False)
        name = f"bench_{secrets.token_hex(6)}"
        schema = sql.Identifier(name)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        separator = "&" if "?" in self.postgres else "?"
        try:
            yield f"{self.postgres}{separator}options=-csearch_path%3D{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))


def settings_for(store: Store, folder: Path) -> Settings:
    """Settings of a cluster with the database manager on ``store``'s database."""
    env = {"TMI_CLUSTER_CHANNEL_MANAGER__USE": "database", "TMI_CLUSTER_DATABASE__URL": store.url}
    return load_settings(environ=env, cwd=folder)


async def timed(work: Awaitable[T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


def peer(call: Callable[[list[str]], object], logins: list[str]) -> float:
    """The seconds the row path takes: ``call`` on chunks of :data:`PEER_CHUNK` in a loop."""
    assert PEER_CHUNK < BULK_FROM
    started = time.perf_counter()
    for start in range(0, len(logins), PEER_CHUNK):
        call(logins[start : start + PEER_CHUNK])
    return time.perf_counter() - started


def check(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise SystemExit(f"{what}: {got:,}, expected {expected:,}")


async def import_peer(databases: Databases, logins: list[str], results: Results) -> None:
    """authorize(N) by the row path, rows new and again, in a fresh database."""
    with databases.fresh() as store:
        first = await asyncio.to_thread(peer, store.authorize, logins)
        again = await asyncio.to_thread(peer, store.authorize, logins)
        check("peer authorize", store.count_channels(), len(logins))
    results.figure("new", "authorize, rows new", len(logins)).keep(float("inf"), first)
    results.figure("again", "authorize, rows exist", len(logins)).keep(float("inf"), again)


async def bulk_round(
    databases: Databases, folder: Path, logins: list[str], plan: Plan, results: Results
) -> None:
    """authorize(N) by the manager, rows new and again, then everything else on that database."""
    n = len(logins)
    with databases.fresh() as store:
        manager = DatabaseChannelManager(settings_for(store, folder), store=store)
        first, _ = await timed(manager.authorize(logins))
        again, _ = await timed(manager.authorize(logins))
        check("authorize", store.count_channels(), n)
        results.figure("new", "authorize, rows new", n).keep(first)
        results.figure("again", "authorize, rows exist", n).keep(again)

        some = logins[:: n // plan.some][: plan.some]
        for repeat in range(REPEATS):  # idempotent: the best of a few, bulk and peer in turn
            allowed = await reads(manager, store, some, results, peer_first=repeat % 2 == 1)
        check("authorized", len(allowed), len(some))

        await wanted_round(manager, store, logins, results)


async def reads(
    manager: DatabaseChannelManager,
    store: Store,
    some: list[str],
    results: Results,
    *,
    peer_first: bool,
) -> set[str]:
    """authorized(M) and acknowledged(M), by the manager and by the peer."""
    peer_s = 0.0
    if peer_first:
        peer_s = await asyncio.to_thread(peer, store.channels, some)
    seconds, allowed = await timed(manager.authorized(some))
    if not peer_first:
        peer_s = await asyncio.to_thread(peer, store.channels, some)
    figure = results.figure("authorized", "authorized(M)", len(some))
    figure.keep(seconds, peer_s)
    figure.result = f"{len(allowed):,} authorized"
    if peer_first:
        peer_s = await asyncio.to_thread(peer, store.acknowledge, some)
    seconds, _ = await timed(manager.acknowledged(some))
    if not peer_first:
        peer_s = await asyncio.to_thread(peer, store.acknowledge, some)
    results.figure("acknowledged", "acknowledged(M)", len(some)).keep(seconds, peer_s)
    return allowed


async def wanted_round(
    manager: DatabaseChannelManager, store: Store, logins: list[str], results: Results
) -> None:
    """joinable, the stale cleanup and want_reconnect over N wanted channels."""
    n = len(logins)
    old = logins[0::10]  # 10 %: last acknowledged 30 days ago
    revoked = logins[5::100]  # 1 %: revoked, then wanted without authorization
    reconnect = logins[1::10]  # 10 %: authorized with reconnect, not wanted
    seconds, _ = await timed(asyncio.to_thread(store.want, logins))
    results.figure("want", "Store.want(N) (the set-up)", n).keep(seconds)
    await asyncio.to_thread(store.acknowledge, old, now=dt.datetime.now(dt.UTC) - LONG_AGO)
    await manager.revoke(revoked)
    await asyncio.to_thread(store.want, revoked)

    figure = results.figure("joinable", "joinable (N wanted)", n)
    for _ in range(REPEATS):
        seconds, joinable = await timed(channels.joinable(manager, store))
        figure.keep(seconds)
    check("joinable", len(joinable), n - len(revoked))
    figure.result = f"{len(joinable):,} joinable"

    seconds, done = await timed(channels.cleanup(manager, store))
    check("cleanup: checked", done.checked, n)
    check("cleanup: stale", len(done.stale), len(old))
    check("cleanup: unauthorized", len(done.unauthorized), len(revoked))
    check("wanted after the cleanup", len(store.wanted()), n - len(old) - len(revoked))
    figure = results.figure("cleanup", "cleanup (N wanted, one pass)", n)
    figure.keep(seconds)
    figure.result = (
        f"checked {done.checked:,}, stale {len(done.stale):,}, "
        f"unauthorized {len(done.unauthorized):,}"
    )

    await manager.authorize(reconnect, reconnect=True)
    await asyncio.to_thread(store.unwant, reconnect)
    horizon = stale_horizon(manager.settings)
    seconds, again = await timed(asyncio.to_thread(store.want_reconnect, horizon=horizon))
    check("want_reconnect", len(again), len(reconnect))
    figure = results.figure("reconnect", "Store.want_reconnect() over N", n)
    figure.keep(seconds)
    figure.result = f"{len(again):,} wanted again"


def report(all_results: list[Results]) -> None:
    print(
        f"{'backend':10} {'operation':32} {'channels':>8} {'seconds':>8} {'channels/s':>10} "
        f"{'peer s':>7} {'peer /s':>9} {'speed-up':>8}  result"
    )
    for results in all_results:
        for figure in results.figures.values():
            rate = figure.count / figure.seconds
            peer_s = peer_rate = speedup = ""
            if figure.peer is not None:
                peer_s = f"{figure.peer:.3f}"
                peer_rate = f"{figure.count / figure.peer:,.0f}"
                speedup = f"{figure.peer / figure.seconds:.1f}x"
            print(
                f"{results.backend:10} {figure.label:32} {figure.count:8,} "
                f"{figure.seconds:8.3f} {rate:10,.0f} {peer_s:>7} {peer_rate:>9} {speedup:>8}  "
                f"{figure.result}"
            )


async def run(plan: Plan, backends: list[str], postgres: str, folder: Path) -> list[Results]:
    logins = [f"ch{i:07d}" for i in range(plan.channels)]
    all_results = {backend: Results(backend) for backend in backends}
    for round_ in range(plan.rounds):
        for backend in backends:
            databases = Databases(backend, folder, postgres)
            results = all_results[backend]
            if round_ % 2 == 0:
                await bulk_round(databases, folder, logins, plan, results)
                await import_peer(databases, logins, results)
            else:
                await import_peer(databases, logins, results)
                await bulk_round(databases, folder, logins, plan, results)
    return list(all_results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 channels, one round")
    parser.add_argument(
        "--postgres", default=POSTGRES, help="a PostgreSQL URL ('' for SQLite only)"
    )
    args = parser.parse_args()
    plan = Plan(50_000, 10_000, 1) if args.quick else Plan(250_000, 50_000, 3)
    backends = ["sqlite", "postgresql"] if args.postgres else ["sqlite"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(plan, backends, args.postgres, Path(tmp)))
    report(results)
    print(
        f"N = {plan.channels:,}, M = {plan.some:,}, best of {plan.rounds} round(s); peer: the "
        f"row path (store calls on {PEER_CHUNK} channels at a time); "
        f"{time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
