"""Channel managers: Dummy, Database (real SQLite and PostgreSQL), and one's own class loaded
by its import path, a broken one refused with the reason."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tmi_cluster import JoinStatus, SyncCluster
from tmi_cluster.channels import (
    ChannelManager,
    DatabaseChannelManager,
    DummyChannelManager,
    cleans_up,
    cleanup,
    joinable,
    load_manager,
    restricts,
)
from tmi_cluster.cluster import admin
from tmi_cluster.config import Settings
from tmi_cluster.errors import ConfigError, InvalidChannelError, NotAvailableError
from tmi_cluster.store import Store

from .helpers import run


@run
async def test_the_dummy_allows_everything_and_keeps_nothing() -> None:
    dummy = DummyChannelManager()
    assert isinstance(dummy, ChannelManager)
    await dummy.authorize(["#Alpha"])
    await dummy.revoke(["alpha"])
    assert await dummy.authorized(["#Alpha", "beta"]) == {"alpha", "beta"}
    assert await dummy.stale(["alpha"]) == set()
    assert not dummy.invite_screen
    assert not dummy.auto_cleanup
    with pytest.raises(InvalidChannelError):
        await dummy.authorized(["not a channel"])


@run
async def test_one_channel_given_as_a_string_is_one_channel(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        f"[database]\nurl = \"{sqlite_url}\"\n[channel_manager]\nuse = 'database'\n"
    )
    with Store(sqlite_url) as store:
        store.migrate()
        manager = load_manager(settings)
        await manager.authorize("ghostzero")  # as users write it
        assert await manager.authorized("ghostzero") == {"ghostzero"}
        assert sorted(store.channels(["g", "h", "o", "ghostzero"])) == ["ghostzero"]
    assert await DummyChannelManager().authorized("abc") == {"abc"}


@run
async def test_the_database_manager_keeps_authorization_and_acknowledgements(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        f'[database]\nurl = "{database_url}"\n'
        "[channel_manager]\nuse = 'database'\n"
        "[channel_manager.channel]\nstale = 1\n"
    )
    with Store(database_url) as store:
        store.migrate()
        manager = load_manager(settings)
        assert isinstance(manager, DatabaseChannelManager)
        await manager.authorize(["#Alpha", "beta"], reconnect=True)
        assert await manager.authorized(["alpha", "beta", "gamma"]) == {"alpha", "beta"}
        await manager.revoke(["beta"])
        assert await manager.authorized(["alpha", "beta"]) == {"alpha"}
        assert store.channels(["beta"])["beta"].wanted is False
        assert store.channels(["alpha"])["alpha"].reconnect is True
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        store.acknowledge(["alpha", "beta"], now=long_ago)
        assert await manager.stale(["alpha", "beta", "gamma"]) == {"alpha", "beta"}
        await manager.acknowledged(["alpha"])  # pushes alpha's cleanup back
        assert await manager.stale(["alpha", "beta"]) == {"beta"}
        await manager.authorize(["beta"])  # a revoke is cleared by a new grant
        assert await manager.authorized(["beta"]) == {"beta"}
        names = [f"bulk{i}" for i in range(3000)]  # batched: no statement per channel
        await manager.authorize(names)
        assert len(await manager.authorized(names)) == 3000
        manager.store.close()


@pytest.fixture
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("mymanagers")]:
        del sys.modules[name]


_MANAGERS = """
class Good:
    def __init__(self, settings):
        self.settings = settings
    async def authorize(self, channels, *, reconnect=False): ...
    async def revoke(self, channels): ...
    async def authorized(self, channels): return set(channels)
    async def acknowledged(self, channels): ...
    async def stale(self, channels): return set()

class NoArguments(Good):
    def __init__(self):
        self.settings = None

class Missing:
    async def authorize(self, channels, *, reconnect=False): ...

class Sync(Good):
    def stale(self, channels): return set()

class Broken(Good):
    def __init__(self, settings):
        raise RuntimeError("no licence key")
"""


@pytest.mark.parametrize(
    ("use", "problem"),
    [
        ("mymanagers_gone:Good", "does not import: ModuleNotFoundError"),
        ("mymanagers:Nope", "mymanagers has no class 'Nope'"),
        (
            "mymanagers:Missing",
            "needs the coroutine methods revoke, authorized, acknowledged, stale",
        ),
        ("mymanagers:Sync", "needs the coroutine methods stale"),
        ("mymanagers:Broken", "cannot be made: RuntimeError: no licence key"),
    ],
)
def test_a_broken_manager_of_ones_own_is_refused_with_the_reason(
    own_module: Path, make_settings: Callable[..., Settings], use: str, problem: str
) -> None:
    (own_module / "mymanagers.py").write_text(_MANAGERS)
    settings = make_settings(f"[channel_manager]\nuse = '{use}'\n")
    with pytest.raises(ConfigError) as caught:
        load_manager(settings)
    assert f"channel_manager.use: {use!r}" in str(caught.value)
    assert problem in str(caught.value)


def test_a_manager_of_ones_own_is_loaded_by_its_path(
    own_module: Path, make_settings: Callable[..., Settings]
) -> None:
    (own_module / "mymanagers.py").write_text(_MANAGERS)
    good = load_manager(make_settings("[channel_manager]\nuse = 'mymanagers:Good'\n"))
    assert type(good).__name__ == "Good"
    assert good.settings is not None  # type: ignore[attr-defined]
    plain = load_manager(make_settings("[channel_manager]\nuse = 'mymanagers:NoArguments'\n"))
    assert type(plain).__name__ == "NoArguments"
    assert isinstance(load_manager(make_settings("")), DummyChannelManager)  # the default


class _Refusing:
    """A manager of one's own: ``refused`` are not authorized, ``old`` are stale; ``fail``
    makes every call raise (its API is down)."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.old: set[str] = set()
        self.fail = False
        self.calls: list[tuple[str, int]] = []

    async def authorize(self, channels: Sequence[str], *, reconnect: bool = False) -> None:
        self.refused -= set(channels)

    async def revoke(self, channels: Sequence[str]) -> None:
        self.refused |= set(channels)

    async def authorized(self, channels: Sequence[str]) -> set[str]:
        self.calls.append(("authorized", len(channels)))
        if self.fail:
            raise ConnectionError("the manager's API is down")
        return set(channels) - self.refused

    async def acknowledged(self, channels: Sequence[str]) -> None:
        self.old -= set(channels)

    async def stale(self, channels: Sequence[str]) -> set[str]:
        self.calls.append(("stale", len(channels)))
        return set(channels) & self.old


@run
async def test_the_cleanup_parts_stale_and_unauthorized_channels(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        f"[database]\nurl = \"{database_url}\"\n[channel_manager]\nuse = 'database'\n"
    )
    with Store(database_url) as store:
        store.migrate()
        manager = DatabaseChannelManager(settings, store=store)
        names = [f"ch{i:04}" for i in range(3000)]  # the bulk path
        await manager.authorize(names)
        store.want([*names, "unauthorized"])
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=200)  # stale: 168 h
        store.acknowledge(names[:1000], now=long_ago)
        await manager.acknowledged(names[:10])  # fresh interest: pushed back
        done = await cleanup(manager, store)
        assert done.checked == 3001
        assert done.stale == frozenset(names[10:1000])
        assert done.unauthorized == {"unauthorized"}
        assert set(store.wanted()) == set(names[:10]) | set(names[1000:])
        assert await joinable(manager, store) == set(names[:10]) | set(names[1000:])
        await manager.revoke(names[-1:])
        assert names[-1] not in await joinable(manager, store)

        own = _Refusing()
        own.refused, own.old = {names[1001]}, {names[1002]}
        done = await cleanup(own, store)
        assert (set(done.stale), set(done.unauthorized)) == ({names[1002]}, {names[1001]})
        assert own.calls == [("stale", done.checked), ("authorized", done.checked)]  # batched
        assert names[1001] not in await joinable(own, store)
        dummy = DummyChannelManager()
        assert await joinable(dummy, store) == set(store.wanted())
        assert not cleans_up(dummy)
        assert cleans_up(own)
        assert cleans_up(manager)
        assert not restricts(dummy)
        assert restricts(own)


def test_an_application_authorizes_revokes_and_acknowledges(
    sqlite_url: str, redis_server: str, redis_prefix: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        f'prefix = "{redis_prefix}"\n[redis]\nurl = "{redis_server}"\n'
        f'[database]\nurl = "{sqlite_url}"\n'
        "[channel_manager]\nuse = 'database'\n"
    )
    with Store(sqlite_url) as store:
        store.migrate()
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        with SyncCluster(settings) as app:  # no event loop here, as in a WSGI app
            assert app.authorize(["#Alpha", "beta"], reconnect=True) == {
                "alpha": "authorized",
                "beta": "authorized",
            }
            assert app.authorize("alpha", reconnect=True) == {"alpha": "already authorized"}
            assert app.authorize("alpha") == {"alpha": "reconnect cleared"}  # each grant anew
            assert app.authorize("alpha", reconnect=True) == {"alpha": "reconnect set"}
            assert app.revoke(["beta", "gamma"]) == {
                "beta": "revoked",
                "gamma": "was not authorized",
            }
            assert app.join("beta")["beta"].status == JoinStatus.UNAUTHORIZED
            store.acknowledge(["alpha"], now=long_ago)
            app.acknowledged(["#ALPHA", "neverseen"])  # e.g. on EventSub's stream.online
            with pytest.raises(InvalidChannelError):
                app.acknowledged("not a channel")
        alpha = store.channels(["alpha"])["alpha"]
        assert alpha.acknowledged_at is not None
        assert alpha.acknowledged_at > long_ago + dt.timedelta(days=29)
        assert alpha.reconnect
        assert store.channels(["beta"])["beta"].last_join_outcome == "unauthorized"
        assert "neverseen" not in store.channels(["neverseen"])  # an unknown one is ignored


@run
async def test_a_grant_for_join_keeps_the_grant_and_a_revoke_unwants_with_any_manager(
    own_module: Path, sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    (own_module / "mymanagers.py").write_text(_MANAGERS)
    base = f'[database]\nurl = "{sqlite_url}"\n[redis]\nurl = "redis://127.0.0.1:1/0"\n'
    database = make_settings(base + "[channel_manager]\nuse = 'database'\n")
    with Store(sqlite_url) as store:
        store.migrate()
        await admin.authorize(database, ["alpha"], reconnect=True)
        assert await admin.authorize(database, ["alpha", "beta"], only_new=True) == {
            "alpha": "already authorized",
            "beta": "authorized",
        }
        assert store.channels(["alpha"])["alpha"].reconnect  # join --authorize kept it
        own = make_settings(base + "[channel_manager]\nuse = 'mymanagers:Good'\n")
        store.want(["gamma"])
        # its revoke() records nothing; the channel is no longer wanted all the same (Redis
        # away: the coordinator parts it on its next read of SQL)
        assert await admin.authorize(own, ["gamma"], revoke=True) == {"gamma": "revoked"}
        assert "gamma" not in store.wanted()
        dummy = make_settings(base)
        with pytest.raises(NotAvailableError, match="dummy channel manager allows every"):
            await admin.authorize(dummy, ["alpha"], revoke=True)
