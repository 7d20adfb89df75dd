"""Channel managers: which channels may be joined (and sent to), and for how long.

One protocol, :class:`ChannelManager`, every method batched (a list of channels in, one
answer for all of them out; no round trip per channel):

- ``authorize(channels, *, reconnect=False)``: grant; ``reconnect`` channels are wanted again
  after any restart.
- ``revoke(channels)``: withdraw (the channels are no longer wanted either).
- ``authorized(channels)``: those of ``channels`` that may be joined.
- ``acknowledged(channels)``: fresh interest in them (pushes their stale cleanup back).
- ``stale(channels)``: those of ``channels`` whose last acknowledgement is older than
  ``channel_manager.channel.stale`` hours.
- optional, ``senders(channels)``: of ``channels``, those with a chosen sender -> the bot
  account's login (one of ``tmi.identity`` and ``tmi.identities``). A manager without it, or a
  channel it leaves out, is sent to by the account whose ``channels`` lists it, else by
  ``tmi.identity`` (:meth:`~tmi_cluster.config.Tmi.sender_of`).

The managers:

- :class:`DummyChannelManager` (``channel_manager.use = "dummy"``, the default): everything
  is allowed, nothing is ever stale; no invite screen, no auto join and part (as the original).
- :class:`DatabaseChannelManager` (``"database"``): authorization and acknowledgements in the
  cluster's SQL database.
- The user's own class (``"package.module:Class"``), made with the settings
  (``Class(settings)``) or with no arguments; :func:`load_manager` checks at start that it
  loads and has every method of the protocol, with a clear error when not.

Where the cluster consults it:

- ``join`` (CLI and :class:`~tmi_cluster.Cluster`) refuses a channel it does not authorize
  (``unauthorized``; the channel is recorded, not wanted, and ``tmi-cluster channels`` shows
  it so);
- the coordinator places only the wanted channels it authorizes (:func:`joinable`): a revoke
  parts the channel within a pass;
- the workers load it at start (one that does not load keeps them from starting, with the
  reason) and, with ``channel_manager.channel.restrict_messages``, refuse a send to a channel
  it does not authorize (``unauthorized``);
- the stale cleanup (:func:`cleanup`, ``channel_manager.auto_cleanup.*``), run by the
  coordinator once for the whole cluster, parts the wanted channels not acknowledged for
  ``channel_manager.channel.stale`` hours and those no longer authorized; ``acknowledged()``
  and a ``join`` push it back;
- each supervisor at start wants again the channels authorized with ``reconnect``
  (:meth:`~tmi_cluster.store.Store.want_reconnect`; not a stale one while the cleanup runs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import inspect
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from tmi_cluster.config import Settings
from tmi_cluster.errors import ConfigError
from tmi_cluster.logins import normalise_logins
from tmi_cluster.store import Store

__all__ = [
    "OPTIONAL_METHODS",
    "PROTOCOL_METHODS",
    "ChannelManager",
    "Cleanup",
    "DatabaseChannelManager",
    "DummyChannelManager",
    "cleans_up",
    "cleanup",
    "invite_screen_off",
    "joinable",
    "load_manager",
    "restricts",
    "stale_horizon",
    "want_again",
]

#: The methods a channel manager has (each a coroutine function).
PROTOCOL_METHODS = ("authorize", "revoke", "authorized", "acknowledged", "stale")
#: The methods a channel manager may have (each a coroutine function when it does).
OPTIONAL_METHODS = ("senders",)


@runtime_checkable
class ChannelManager(Protocol):
    """What a channel manager does; see the module. Channels are logins (``name``, ``#name``
    and any case are accepted)."""

    async def authorize(self, channels: Sequence[str], *, reconnect: bool = False) -> None:
        """Grant ``channels``; with ``reconnect``, they are wanted again after a restart."""
        ...

    async def revoke(self, channels: Sequence[str]) -> None:
        """Withdraw ``channels`` (no longer wanted either)."""
        ...

    async def authorized(self, channels: Sequence[str]) -> set[str]:
        """Those of ``channels`` that may be joined."""
        ...

    async def acknowledged(self, channels: Sequence[str]) -> None:
        """Fresh interest in ``channels``: their stale cleanup is pushed back."""
        ...

    async def stale(self, channels: Sequence[str]) -> set[str]:
        """Those of ``channels`` not acknowledged for ``channel_manager.channel.stale`` hours."""
        ...


class DummyChannelManager:
    """Everything allowed, nothing stale, nothing recorded (the default)."""

    #: Whether the invite screen and the auto join and part use this manager.
    invite_screen = False
    auto_cleanup = False

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    async def authorize(self, channels: Sequence[str], *, reconnect: bool = False) -> None:
        """Nothing to record: everything is allowed."""
        normalise_logins(channels)

    async def revoke(self, channels: Sequence[str]) -> None:
        """Nothing to record: everything stays allowed."""
        normalise_logins(channels)

    async def authorized(self, channels: Sequence[str]) -> set[str]:
        """All of them."""
        return set(normalise_logins(channels))

    async def acknowledged(self, channels: Sequence[str]) -> None:
        """Nothing to record."""
        normalise_logins(channels)

    async def stale(self, channels: Sequence[str]) -> set[str]:
        """None of them."""
        normalise_logins(channels)
        return set()


class DatabaseChannelManager:
    """Authorization and acknowledgements in the cluster's SQL database (the ``channels``
    table: ``authorized``, ``revoked``, ``reconnect``, ``acknowledged_at``), each call a few
    batched statements run off the event loop."""

    invite_screen = True
    auto_cleanup = True

    def __init__(self, settings: Settings, *, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store.from_settings(settings)

    async def authorize(self, channels: Sequence[str], *, reconnect: bool = False) -> None:
        """Grant ``channels`` (a revoke is cleared)."""
        names = normalise_logins(channels)
        await asyncio.to_thread(self.store.authorize, names, reconnect=reconnect)

    async def revoke(self, channels: Sequence[str]) -> None:
        """Withdraw ``channels``; they are no longer wanted."""
        names = normalise_logins(channels)
        await asyncio.to_thread(self.store.revoke, names)

    async def authorized(self, channels: Sequence[str]) -> set[str]:
        """Those of ``channels`` authorized and not revoked."""
        names = normalise_logins(channels)
        return await asyncio.to_thread(self.store.authorized_among, names)

    async def acknowledged(self, channels: Sequence[str]) -> None:
        """Record fresh interest now (in the channels it knows: an unknown one is ignored)."""
        names = normalise_logins(channels)
        await asyncio.to_thread(self.store.acknowledge, names, create=False)

    async def stale(self, channels: Sequence[str]) -> set[str]:
        """Those of ``channels`` whose last acknowledgement is older than the stale age (one
        never acknowledged, or unknown, is not stale: nothing says since when)."""
        names = normalise_logins(channels)
        return await asyncio.to_thread(self.store.stale_among, names, stale_horizon(self.settings))

    async def senders(self, channels: Sequence[str]) -> dict[str, str]:
        """Of ``channels``, those whose sender was chosen (:meth:`choose_sender`) -> it."""
        names = normalise_logins(channels)
        return await asyncio.to_thread(self.store.senders_among, names)

    async def choose_sender(self, channels: Sequence[str], account: str | None) -> None:
        """Record that bot account ``account`` sends in ``channels`` (None: the settings
        choose again); ValueError when ``account`` is not configured."""
        names = normalise_logins(channels)
        login = None if account is None else self.settings.tmi.account(account)
        await asyncio.to_thread(self.store.set_sender, names, login)


def load_manager(settings: Settings, *, store: Store | None = None) -> ChannelManager:
    """The manager ``channel_manager.use`` names, made (the Database one on ``store``, else a
    store of its own); ConfigError naming what is wrong when a
    class of one's own does not import, cannot be made, or lacks a method of the protocol (or
    has one that is not a coroutine function)."""
    use = settings.channel_manager.use
    if use == "dummy":
        return DummyChannelManager(settings)
    if use == "database":
        return DatabaseChannelManager(settings, store=store)
    module_name, _, attribute = use.partition(":")
    where = f"channel_manager.use: {use!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error is a launch failure
        raise ConfigError([f"{where} does not import: {type(exc).__name__}: {exc}"]) from exc
    cls: Any = getattr(module, attribute, None)
    if not isinstance(cls, type):
        raise ConfigError([f"{where}: {module_name} has no class {attribute!r}"])
    missing = [
        m for m in PROTOCOL_METHODS if not inspect.iscoroutinefunction(getattr(cls, m, None))
    ] + [
        m
        for m in OPTIONAL_METHODS
        if hasattr(cls, m) and not inspect.iscoroutinefunction(getattr(cls, m))
    ]
    if missing:
        raise ConfigError(
            [
                f"{where} is no channel manager: it needs the coroutine methods "
                f"{', '.join(missing)} (see tmi_cluster.channels)"
            ]
        )
    try:
        try:
            manager = cls(settings)
        except TypeError:
            manager = cls()
    except Exception as exc:
        raise ConfigError([f"{where} cannot be made: {type(exc).__name__}: {exc}"]) from exc
    return manager  # type: ignore[no-any-return]


def stale_horizon(settings: Settings) -> dt.datetime:
    """Now less ``channel_manager.channel.stale`` hours: a channel last acknowledged before it
    is stale."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=settings.channel_manager.channel.stale)


def want_again(settings: Settings, store: Store, manager: ChannelManager) -> list[str]:
    """A restart: the channels authorized with ``reconnect`` are wanted again (not one the
    stale cleanup would part); their names (none with a manager that does not restrict)."""
    if not restricts(manager):
        return []
    cleanup = settings.channel_manager.auto_cleanup.enabled and cleans_up(manager)
    horizon = stale_horizon(settings) if cleanup else None
    return store.want_reconnect(horizon=horizon)


def restricts(manager: ChannelManager) -> bool:
    """Whether ``manager`` may refuse a channel (every one but the Dummy manager)."""
    return not isinstance(manager, DummyChannelManager)


def invite_screen_off(manager: ChannelManager) -> str | None:
    """Why the invite screen is off with ``manager`` (None: the manager lets it on): the Dummy
    manager has nothing to authorize; a manager of one's own turns it off with a false
    ``invite_screen`` (true by default)."""
    if not restricts(manager):
        return (
            "the dummy channel manager lets the bot into every channel, so there is nothing to "
            "authorize (channel_manager.use = 'dummy'; 'database' turns the invite screen on)"
        )
    if not getattr(manager, "invite_screen", True):
        return "the channel manager turns it off (its invite_screen is false)"
    return None


def cleans_up(manager: ChannelManager) -> bool:
    """Whether the stale cleanup uses ``manager`` (its ``auto_cleanup``, true by default for
    a class of one's own)."""
    return bool(getattr(manager, "auto_cleanup", True))


async def joinable(manager: ChannelManager, store: Store) -> frozenset[str]:
    """The wanted channels that ``manager`` authorizes: one query for the Dummy and Database
    managers, one query and one batched ``authorized()`` call for any other. StorageError when
    the database does not answer; whatever a manager of one's own raises, as it is."""
    if isinstance(manager, DatabaseChannelManager):
        return frozenset(await asyncio.to_thread(store.wanted, authorized_only=True))
    wanted = frozenset(await asyncio.to_thread(store.wanted))
    if not restricts(manager) or not wanted:
        return wanted
    return wanted & frozenset(await manager.authorized(sorted(wanted)))


class Cleanup(NamedTuple):
    """One pass of the stale cleanup: the channels wanted before it, those it parted as stale
    and as no longer authorized, and how long it took."""

    checked: int
    stale: frozenset[str]
    unauthorized: frozenset[str]
    seconds: float


async def cleanup(manager: ChannelManager, store: Store) -> Cleanup:
    """Part (mark no longer wanted) the wanted channels ``manager`` finds stale or no longer
    authorizes: for the Database manager one query and its updates
    (:meth:`~tmi_cluster.store.Store.part_stale`, which keep a channel acknowledged
    meanwhile); for any other, ``stale()`` and ``authorized()`` of every wanted channel, one
    batched call each. The caller tells the coordinator (``wanted_changed``)."""
    started = time.monotonic()
    if isinstance(manager, DatabaseChannelManager):
        horizon = stale_horizon(manager.settings)
        checked, stale, unauthorized = await asyncio.to_thread(store.part_stale, horizon)
    else:
        wanted = sorted(await asyncio.to_thread(store.wanted))
        checked = len(wanted)
        stale = set(await manager.stale(wanted)) & set(wanted) if wanted else set()
        allowed = set(await manager.authorized(wanted)) if wanted else set()
        unauthorized = set(wanted) - allowed - stale
        if stale or unauthorized:
            await asyncio.to_thread(store.unwant, sorted(stale | unauthorized))
    return Cleanup(checked, frozenset(stale), frozenset(unauthorized), time.monotonic() - started)
