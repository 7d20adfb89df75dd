"""What the cluster commands of the CLI do (``terminate``, ``purge``, ``join``, ``part``,
``channels``, ``scale``), as library functions.

``join`` and ``part`` change what is wanted, never the assignment: the channels are marked
wanted (or no longer) in SQL, ``P wanted:version`` is incremented and the coordinator is woken;
it places (or parts) them within a pass, and ``join`` waits for the joins' outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from tmi_cluster.bus import (
    Assignment,
    AsyncRedis,
    Beat,
    Coordination,
    Keys,
    Order,
    ProcessStatus,
    SupervisorStatus,
    close_client,
    connect_async,
    ping,
    read,
    send_order,
    wanted_changed,
)
from tmi_cluster.bus.routes import EventSubRoutes, is_shard
from tmi_cluster.channels import (
    ChannelManager,
    DatabaseChannelManager,
    load_manager,
    restricts,
)
from tmi_cluster.cluster import housekeeping
from tmi_cluster.config import Settings
from tmi_cluster.coordinator.autoscale import Cause
from tmi_cluster.errors import (
    EmbeddedRedisError,
    NotAvailableError,
    RedisUnavailableError,
    TmiClusterError,
)
from tmi_cluster.logins import normalise_logins
from tmi_cluster.outcomes import ChannelJoin, Grant, JoinResult, JoinStatus
from tmi_cluster.routes import Route, Routing, stored_moderated
from tmi_cluster.store import Channel, Failure, Store

__all__ = [
    "AUTHORIZE_CHANGES",
    "CHANNEL_STATES",
    "ChannelRow",
    "authorize",
    "channel_json",
    "channel_table",
    "channels",
    "join",
    "part",
    "pause_scaling",
    "purge",
    "scale",
    "scaling",
    "terminate",
]

log = logging.getLogger(__name__)

#: The states ``tmi-cluster channels`` shows.
CHANNEL_STATES = ("wanted", "joining", "joined", "moving", "failed", "parted", "unauthorized")
_UNAUTHORIZED = (
    "unauthorized: not authorized by the channel manager (granted by "
    "'tmi-cluster authorize', 'join --authorize' or Cluster.authorize)"
)
_JOINED = "joined"


@dataclass(frozen=True)
class Handles:
    """A Redis client and a store that a caller holds for its life (a
    :class:`~tmi_cluster.Cluster`): the functions here use them instead of opening their own."""

    #: The caller's client, opened on first use (so that a Redis that cannot be reached
    #: fails where a command's own client would).
    redis: Callable[[], Awaitable[AsyncRedis]] | None = None
    store: Store | None = None


_NONE = Handles()


@contextlib.asynccontextmanager
async def _redis(
    settings: Settings, command: str, handles: Handles = _NONE
) -> AsyncIterator[AsyncRedis]:
    """The command's Redis client (the caller's, or one of its own, checked first:
    RedisUnavailableError naming the server unless Redis answers, and closed after)."""
    if handles.redis is not None:
        yield await handles.redis()
        return
    client = connect_async(settings, name=f"tmi-cluster:{command}")
    try:
        await ping(client)
        yield client
    finally:
        await close_client(client)


@contextlib.contextmanager
def _store(settings: Settings, handles: Handles = _NONE) -> Iterator[Store]:
    """The caller's store, or one of its own closed after."""
    if handles.store is not None:
        yield handles.store
        return
    with Store.from_settings(settings) as store:
        yield store


async def _live_supervisors(
    settings: Settings,
    client: AsyncRedis,
    keys: Keys,
    wanted: str | None,
    *,
    handles: Handles = _NONE,
) -> dict[str, Beat[SupervisorStatus]]:
    """The live supervisors; TmiClusterError naming them when ``wanted`` (if given) is not
    one of them."""
    with _store(settings, handles) as store:
        live = await housekeeping.live_supervisors(store, client, keys)
    if wanted is not None and wanted not in live:
        raise TmiClusterError(
            f"no live supervisor {wanted!r} (see 'tmi-cluster list'; live: "
            f"{', '.join(sorted(live)) or 'none'})"
        )
    return live


async def terminate(
    settings: Settings, supervisor_id: str | None = None, *, handles: Handles = _NONE
) -> dict[str, bool]:
    """Ask one supervisor (or every live one) to stop gracefully; wait until each has stopped
    (its heartbeat gone), at most ``process.timeout`` plus 15 s, unless ``fast_termination``.
    Return each supervisor's id and whether it stopped; TmiClusterError for an unknown or dead
    supervisor id."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "terminate", handles) as client:
        live = await _live_supervisors(settings, client, keys, supervisor_id, handles=handles)
        targets = [supervisor_id] if supervisor_id is not None else sorted(live)
        for target in targets:
            await send_order(client, keys, target, Order.TERMINATE)
        stopped = dict.fromkeys(targets, False)
        if settings.fast_termination:
            return stopped
        deadline = time.monotonic() + settings.process.timeout + 15.0
        while not all(stopped.values()) and time.monotonic() < deadline:
            try:
                found = await read(client, keys, "supervisor", targets)
            except RedisUnavailableError:
                if not settings.embedded_redis:
                    raise
                return dict.fromkeys(targets, True)  # the host's Redis went with its supervisor
            for target in targets:
                stopped[target] = target not in found
            if not all(stopped.values()):
                await asyncio.sleep(0.2)
        return stopped


async def purge(settings: Settings, *, handles: Handles = _NONE) -> housekeeping.PurgeResult:
    """Purge the cluster now (every dead or stopped record deleted)."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "purge", handles) as client:
        with _store(settings, handles) as store:
            return await housekeeping.purge(store, client, keys, retention_s=0)


#: The changes ``authorize`` reports that changed something.
AUTHORIZE_CHANGES = ("authorized", "revoked", "reconnect set", "reconnect cleared", "sender set")


async def authorize(
    settings: Settings,
    channels: list[str],
    *,
    revoke: bool = False,
    reconnect: bool = False,
    only_new: bool = False,
    sender: str | None = None,
    handles: Handles = _NONE,
) -> dict[str, Grant]:
    """Grant (or with ``revoke`` withdraw) ``channels`` through ``channel_manager.use``; each
    one's change: ``authorized``, ``already authorized`` (with the Database manager,
    ``reconnect set`` or ``reconnect cleared`` when a new grant changed that: each grant sets
    it anew), ``revoked``, ``was not authorized``. ``only_new``: the channels authorized
    already are left as they are (``join --authorize``). A revoke makes the channels
    unwanted whatever the manager, deletes what their streamers granted on the invite screen
    (its tokens are not withdrawn at Twitch from here), and wakes the coordinator, which parts
    them within a pass (if Redis does not answer, within its next read of SQL).
    NotAvailableError for a revoke with the Dummy manager (it allows every channel: nothing can
    be withdrawn). ``sender`` records the bot account that sends in the channels, ``""``
    forgets it (the settings choose again; the Database manager's
    :meth:`~tmi_cluster.channels.DatabaseChannelManager.choose_sender`; ValueError for an
    account the cluster does not have, NotAvailableError with another manager); a channel whose
    sender changed says ``sender set``. A revoke forgets the channels' senders too."""
    names = normalise_logins(channels)
    _check_sender(settings, sender, revoke=revoke)
    with _store(settings, handles) as store:
        manager = load_manager(settings, store=store)
        changed: set[str] = set()
        if sender is not None:
            if not isinstance(manager, DatabaseChannelManager):
                raise NotAvailableError(
                    f"the {settings.channel_manager.use} channel manager records no sender: "
                    "list the channel in the account's tmi.identities channels, or set "
                    "channel_manager.use = 'database'"
                )
            previous = await manager.senders(names)
            await manager.choose_sender(names, sender or None)
            changed = {n for n in names if previous.get(n) != (sender.lower() or None)}
        if revoke and not restricts(manager):
            raise NotAvailableError(
                "nothing revoked: the dummy channel manager allows every channel (set "
                "channel_manager.use = 'database' to record authorization; 'tmi-cluster part' "
                "parts a channel)"
            )
        before = await manager.authorized(names)
        known = (
            await asyncio.to_thread(store.channels, names)
            if isinstance(manager, DatabaseChannelManager)
            else {}
        )
        if revoke:
            await manager.revoke(names)
            await asyncio.to_thread(store.unwant, names)  # the cluster's own record too
            await asyncio.to_thread(store.delete_grants_of, names)  # the invite screen's
            if isinstance(manager, DatabaseChannelManager):
                await asyncio.to_thread(store.set_sender, names, None)
        else:
            granted = [n for n in names if n not in before] if only_new else names
            if granted:
                await manager.authorize(granted, reconnect=reconnect)
    if not revoke:
        return {
            n: Grant.SENDER_SET
            if n in before and n in changed
            else _granted(n in before, known.get(n), reconnect, only_new)
            for n in names
        }
    with contextlib.suppress(TmiClusterError):  # the coordinator parts them now
        async with _redis(settings, "authorize", handles) as client:
            await wanted_changed(client, Keys.from_settings(settings))
    return {n: Grant.REVOKED if n in before else Grant.NOT_AUTHORIZED for n in names}


def _check_sender(settings: Settings, sender: str | None, *, revoke: bool) -> None:
    """ValueError when ``sender`` is no account of the cluster, or goes with a revoke."""
    if sender is None:
        return
    if revoke:
        raise ValueError("a revoked channel has no sender: --sender goes with a grant")
    if sender:  # "" forgets the sender
        settings.tmi.account(sender)


def _granted(was: bool, known: Channel | None, reconnect: bool, only_new: bool) -> Grant:
    """A grant's change for one channel."""
    if not was:
        return Grant.AUTHORIZED
    if known is not None and known.reconnect != reconnect and not only_new:
        return Grant.RECONNECT_SET if reconnect else Grant.RECONNECT_CLEARED
    return Grant.ALREADY


async def join(
    settings: Settings,
    channels: list[str],
    *,
    timeout_s: float,
    handles: Handles = _NONE,
) -> dict[str, ChannelJoin]:
    """Join ``channels`` (InvalidChannelError before anything is done for a bad name); return
    each one's outcome (:class:`ChannelJoin`: joined by a process, held already, failed with
    Twitch's reason, no answer within the timeout, the workers paused, or unauthorized: the
    channel manager does not authorize it, so it is not wanted). NotAvailableError when no
    worker process is alive, or the cluster does not run. The channels are recorded as wanted
    first and stay wanted whatever the outcome (the coordinator retries a failure as its
    reason demands)."""
    names = normalise_logins(channels)
    with _store(settings, handles) as store:
        allowed = await load_manager(settings, store=store).authorized(names)
        refused = [n for n in names if n not in allowed]
        if refused:  # recorded, not wanted: 'tmi-cluster channels' shows them unauthorized
            await asyncio.to_thread(store.remember_refused, refused, "unauthorized")
        wanted = [n for n in names if n in allowed]
        if wanted:  # durable first: wanted even while the cluster is down
            await asyncio.to_thread(store.want, wanted)
    results = {
        n: ChannelJoin(channel=n, status=JoinStatus.UNAUTHORIZED, detail=_UNAUTHORIZED)
        for n in refused
    }
    if wanted:
        results.update(await _join(settings, wanted, timeout_s=timeout_s, handles=handles))
    return {n: results[n] for n in names}


async def _join(
    settings: Settings,
    names: list[str],
    *,
    timeout_s: float,
    handles: Handles = _NONE,
) -> dict[str, ChannelJoin]:
    keys = Keys.from_settings(settings)
    try:
        async with _redis(settings, "join", handles) as client:
            return await _join_live(
                settings, client, keys, names, timeout_s=timeout_s, handles=handles
            )
    except (RedisUnavailableError, EmbeddedRedisError) as error:
        raise NotAvailableError(
            f"the cluster does not run ({error}): the channels are recorded as wanted and "
            "joined once it runs ('tmi-cluster run')"
        ) from error


async def _join_live(
    settings: Settings,
    client: AsyncRedis,
    keys: Keys,
    names: list[str],
    *,
    timeout_s: float,
    handles: Handles = _NONE,
) -> dict[str, ChannelJoin]:
    assignment = Assignment(client, keys)
    with _store(settings, handles) as store:
        statuses = await housekeeping.live_processes(store, client, keys)
        supervisors = {} if statuses else await housekeeping.live_supervisors(store, client, keys)
    if not statuses:
        await wanted_changed(client, keys)
        problems = [f"{s}: {b.status.problem}" for s, b in supervisors.items() if b.status.problem]
        why = (
            f" (the workers cannot start; {'; '.join(problems)})"
            if problems
            else " ('tmi-cluster run' starts a supervisor with its workers)"
            if not supervisors
            else ""
        )
        raise NotAvailableError(
            "no live worker process to join channels: they are recorded as wanted and "
            f"joined once one runs{why}"
        )
    going = any(beat.status.state != "paused" for beat in statuses.values())
    owners = await assignment.owners(names)
    held = await assignment.holding({c: o for c, o in owners.items() if o in statuses})
    results = {
        c: ChannelJoin(
            channel=c,
            status=JoinStatus.ALREADY,
            process=owners[c],
            result=JoinResult.JOINED,
            detail=f"joined ({owners[c]}, already)",
        )
        for c in held
    }
    after = await assignment.last_report_id()
    await wanted_changed(client, keys)
    waiting = [n for n in names if n not in results]
    # Paused workers take no new work: with nothing but paused ones, say so at once.
    deadline = time.monotonic() + (timeout_s if going else 0.0)
    results.update(await _await_reports(assignment, waiting, after, deadline))
    waiting = [n for n in waiting if n not in results]
    placed = await assignment.owners(waiting)
    for channel in waiting:
        results[channel] = _unanswered(channel, placed.get(channel), going, timeout_s)
    return {name: results[name] for name in names}


async def _await_reports(
    assignment: Assignment, channels: list[str], after: str, deadline: float
) -> dict[str, ChannelJoin]:
    """The outcomes the workers report on ``channels`` (reports after ``after``) until each
    has one or the monotonic ``deadline`` passes; a report counts from the channel's owner."""
    waiting = set(channels)
    results: dict[str, ChannelJoin] = {}
    while waiting and time.monotonic() < deadline:
        reports = await assignment.reports(after, deadline - time.monotonic())
        if not reports:
            continue
        after = reports[-1].id
        mine = [r for r in reports if r.channel in waiting]
        now_owned = await assignment.owners(sorted({r.channel for r in mine}))
        for report in mine:
            if report.channel in waiting and now_owned.get(report.channel) == report.process:
                results[report.channel] = _reported(report.channel, report.process, report.result)
                waiting.discard(report.channel)
    return results


def _unanswered(channel: str, owner: str | None, going: bool, timeout_s: float) -> ChannelJoin:
    """A channel no worker reported on in time: no answer, or the workers are paused."""
    where = f"assigned to {owner}" if owner else "not assigned yet"
    if going:
        detail = f"no answer within {timeout_s:g} s ({where})"
        return ChannelJoin(
            channel=channel, status=JoinStatus.NO_ANSWER, process=owner, detail=detail
        )
    detail = f"{where}; the workers are paused: they join on SIGCONT"
    return ChannelJoin(channel=channel, status=JoinStatus.PAUSED, process=owner, detail=detail)


def _reported(channel: str, process: str, result: str) -> ChannelJoin:
    """A worker's report on a join, as its outcome."""
    try:
        known: JoinResult | None = JoinResult(result)
    except ValueError:  # a reason of a newer version: kept as its text
        known = None
    if known is JoinResult.JOINED:
        return ChannelJoin(
            channel=channel,
            status=JoinStatus.JOINED,
            process=process,
            result=known,
            detail=f"joined ({process})",
        )
    return ChannelJoin(
        channel=channel, status=JoinStatus.FAILED, process=process, result=known, detail=result
    )


async def part(
    settings: Settings, channels: list[str], *, handles: Handles = _NONE
) -> dict[str, str | None]:
    """Part ``channels``: no longer wanted (the coordinator unassigns them within a pass and
    their processes part them); return each one's owner until now."""
    names = normalise_logins(channels)
    keys = Keys.from_settings(settings)
    async with _redis(settings, "part", handles) as client:
        with _store(settings, handles) as store:
            await asyncio.to_thread(store.unwant, names)
        owners = await Assignment(client, keys).owners(names)
        await wanted_changed(client, keys)
        return owners


class ChannelRow(NamedTuple):
    """One channel as :func:`channel_table` sees it (:func:`channels` makes its JSON)."""

    channel: str
    #: One of :data:`CHANNEL_STATES`.
    state: str
    #: Its live owner process, if any.
    process: str | None
    #: Its record's last change, or its last failure.
    since: datetime
    failure: Failure | None
    #: ``irc`` or ``eventsub`` (:class:`~tmi_cluster.routes.Route`), and why.
    route: str = "irc"
    route_reason: str = ""
    #: The bot account that sends in it (None: no account, the cluster reads anonymously).
    sender: str | None = None
    #: The live process that holds its second copy (``coordinator.replicas = 2``), if any.
    replica: str | None = None


@dataclass(frozen=True)
class _LiveRoutes:
    """The EventSub route as Redis has it: routed channels, their problems."""

    routed: Mapping[str, str]
    problems: Mapping[str, str]


def _route_of(login: str, routing: Routing, live: _LiveRoutes | None) -> tuple[str, str]:
    """A channel's route and why: what reads it now (Redis), else what should."""
    choice = routing.choose(login)
    if live is not None and login in live.routed:
        if choice.route is Route.EVENTSUB:
            return Route.EVENTSUB.value, choice.reason
        return Route.EVENTSUB.value, f"moving back to IRC: {choice.reason}"
    problem = live.problems.get(login) if live is not None else None
    if problem is not None:
        return Route.IRC.value, f"{problem}; read through IRC until it works (tried again)"
    if choice.route is Route.EVENTSUB and choice.broadcaster_id is not None:
        return Route.IRC.value, (
            f"{choice.reason}: subscribing through EventSub, read through IRC until then"
        )
    return choice.route.value, choice.reason


async def channel_table(
    settings: Settings,
    names: list[str],
    *,
    warn: Callable[[str], None] | None = None,
    handles: Handles = _NONE,
) -> tuple[list[ChannelRow], bool]:
    """Each known channel (the named ones only, when ``names`` is not empty), sorted by name,
    and whether their live state could be read (see :func:`channels`, which shows these)."""
    logins = normalise_logins(names)
    with _store(settings, handles) as store:
        rows = await asyncio.to_thread(store.channel_states, logins)
        failures = await asyncio.to_thread(store.failures)
        manager = load_manager(settings, store=store)
        allowed = (
            await manager.authorized([login for login, _, _ in rows])
            if restricts(manager)
            else None
        )
        grants = await asyncio.to_thread(store.grants)
        moderated = await asyncio.to_thread(stored_moderated, store)
        senders = await _senders(settings, manager, [login for login, _, _ in rows])
        routes: _LiveRoutes | None = None
        seconds: Mapping[str, str | None] = {}
        try:
            owners, held_by, live, routes, seconds = await _live_channels(
                settings, store, rows, everything=not logins, handles=handles
            )
        except (RedisUnavailableError, EmbeddedRedisError) as error:
            if warn is not None:
                reason = str(error).rstrip(".")
                warn(f"{reason}; live state unknown: each channel's state is the database's")
            owners, held_by, live = {}, {}, None
    # the classification of every row, off the event loop (100,000 rows take a while)
    table = await asyncio.to_thread(
        _classify,
        rows,
        failures,
        allowed=allowed,
        owners=owners,
        held_by=held_by,
        live=live,
        routing=Routing(settings, grants, moderated),
        routes=routes,
        senders=senders,
        seconds=seconds,
    )
    return table, live is not None


async def _senders(
    settings: Settings, manager: ChannelManager, channels: list[str]
) -> Callable[[str], str | None]:
    """Each channel's sending account: the manager's choice, else the settings'."""
    chosen: Mapping[str, str] = {}
    ask = getattr(manager, "senders", None)
    if ask is not None and len(settings.tmi.accounts) > 1 and channels:
        try:
            chosen = await ask(channels)
        except Exception as error:  # a manager of one's own: the settings' choice is shown
            log.warning("the channel manager cannot say the channels' senders: %s", error)
    return lambda channel: chosen.get(channel) or settings.tmi.sender_of(channel)


def _classify(
    rows: list[tuple[str, bool, datetime]],
    failures: Mapping[str, Failure],
    *,
    allowed: set[str] | None,
    owners: Mapping[str, str | None],
    held_by: Mapping[str, set[str]],
    live: Mapping[str, object] | None,
    routing: Routing,
    routes: _LiveRoutes | None,
    senders: Callable[[str], str | None],
    seconds: Mapping[str, str | None] | None = None,
) -> list[ChannelRow]:
    table: list[ChannelRow] = []
    nobody: set[str] = set()
    seconds = seconds or {}
    for login, wanted, since in rows:
        owner = owners.get(login)
        if live is not None and owner not in live:
            owner = None  # assigned to a process that is gone: waiting for a new owner
        second = seconds.get(login)
        if live is not None and second not in live:
            second = None
        holders = held_by.get(login, nobody)
        failure = failures.get(login)
        route, reason = _route_of(login, routing, routes)
        if allowed is not None and login not in allowed and not holders:
            current = "unauthorized"  # refused, revoked (held: being parted, shown so)
        elif wanted and routes is not None and login in routes.routed and not holders:
            current = _JOINED  # read through EventSub: no IRC connection holds it
        else:
            current = _channel_state(
                wanted, owner, holders, failed=failure is not None, second=second
            )
        changed = (failure.failed_at or since) if current == "failed" and failure else since
        if current in ("parted", "unauthorized") and not (routes and login in routes.routed):
            reason = f"not read ({current}); once joined: {reason}"
        table.append(
            ChannelRow(
                login, current, owner, changed, failure, route, reason, senders(login), second
            )
        )
    return table


async def channels(
    settings: Settings,
    names: list[str],
    *,
    state: str | Iterable[str] | None = None,
    warn: Callable[[str], None] | None = None,
    handles: Handles = _NONE,
) -> list[dict[str, Any]]:
    """Each known channel's state (one of :data:`CHANNEL_STATES`), owner process, the time of
    its last change, and its last failure (the reason of the failed joins in a row that the
    coordinator recorded, with ``attempts``, ``retry_at`` and ``given_up``); the named ones
    only when ``names`` is not empty; those in ``state`` only when given. ``unauthorized``: a
    channel the channel manager does not authorize (a join refused, a revoke), one batched
    ``authorized()`` call for all the rows (never with the Dummy manager).

    The durable part comes from SQL and is there while the cluster is down: when Redis cannot
    be asked, each row says ``"live": false`` (its state is the database's: wanted, failed or
    parted; no owner), and ``warn`` is called once with the reason."""
    states = {state} if isinstance(state, str) else None if state is None else set(state)
    table, live = await channel_table(settings, names, warn=warn, handles=handles)
    return [channel_json(row, live=live) for row in table if states is None or row.state in states]


def channel_json(row: ChannelRow, *, live: bool) -> dict[str, Any]:
    """One row of :func:`channels` (the keys are the JSON of ``tmi-cluster channels``)."""
    failure = row.failure
    return {
        "channel": row.channel,
        "state": row.state,
        "process": row.process,
        "since": row.since.isoformat(),
        "failure": failure.reason if failure is not None else None,
        "attempts": failure.attempts if failure is not None else 0,
        "retry_at": (
            failure.retry_at.isoformat()
            if failure is not None and failure.retry_at is not None
            else None
        ),
        "given_up": failure.given_up if failure is not None else False,
        "live": live,
        "route": row.route,
        "route_reason": row.route_reason,
        "sender": row.sender,
        "replica": row.replica,
    }


async def _live_channels(
    settings: Settings,
    store: Store,
    rows: list[tuple[str, bool, Any]],
    *,
    everything: bool = False,
    handles: Handles = _NONE,
) -> tuple[
    Mapping[str, str | None],
    dict[str, set[str]],
    dict[str, Beat[ProcessStatus]],
    _LiveRoutes,
    Mapping[str, str | None],
]:
    """Who owns and who holds each channel now, the live workers, the EventSub routes, and
    where each channel's second copy is (from Redis); ``everything``: the rows are every known
    channel (the whole assignment is read)."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "channels", handles) as client:
        assignment = Assignment(client, keys)
        live = await housekeeping.live_processes(store, client, keys)
        owners: Mapping[str, str | None] = (
            await assignment.all()
            if everything
            else await assignment.owners([login for login, _, _ in rows])
        )
        seconds: Mapping[str, str | None] = (
            await assignment.replicas()
            if everything
            else await assignment.seconds([login for login, _, _ in rows])
        )
        held = await assignment.held_of(sorted(live))
        bus = EventSubRoutes(client, keys)
        routes = _LiveRoutes(await bus.routes(), await bus.problems())
    held_by: dict[str, set[str]] = {}
    for process_id, channels in held.items():
        for channel in channels:
            if not is_shard(channel):
                held_by.setdefault(channel, set()).add(process_id)
    return owners, held_by, live, routes, seconds


def _channel_state(
    wanted: bool, owner: str | None, holders: set[str], *, failed: bool, second: str | None = None
) -> str:
    """A channel's state from whether it is wanted, its live owner, its second copy's process
    and who holds it: held by its own processes only, joined (its second copy too, or only it
    while the owner joins); held by another one as well, moving."""
    if not wanted:
        return "parted"
    mine = {owner, second}
    if holders and not holders - mine:
        return _JOINED
    if holders:
        return "moving"
    if owner is not None:
        return "joining"  # a retry of a failed one too
    return "failed" if failed else "wanted"


async def scale(
    settings: Settings, supervisor_id: str, processes: int, *, handles: Handles = _NONE
) -> int:
    """Set supervisor ``supervisor_id``'s number of worker processes by hand; its number
    before. TmiClusterError for an unknown or dead supervisor, one that runs a fixed number of
    workers (``supervisor.processes``), or a number that would take the cluster outside
    ``auto_scale.processes.min``..``max`` (the auto-scaler would undo it at once). The
    auto-scaler may change it again after its cooldown unless paused
    (:func:`pause_scaling`)."""
    keys = Keys.from_settings(settings)
    bounds = settings.auto_scale.processes
    async with _redis(settings, "scale", handles) as client:
        live = await _live_supervisors(settings, client, keys, supervisor_id, handles=handles)
        status = live[supervisor_id].status
        if status.fixed:
            raise TmiClusterError(
                f"{supervisor_id} runs a fixed {status.target} worker processes "
                "(supervisor.processes): change its setting, or add or remove supervisors"
            )
        coordination = Coordination(client, keys)
        _, now = await coordination.scale_state()
        targets = {s: n for s, n in (await coordination.targets()).items() if s in live}
        before = targets.get(supervisor_id, 0)
        total = sum(targets.values()) - before + processes
        if not bounds.min <= total <= bounds.max:
            raise TmiClusterError(
                f"N = {processes} on {supervisor_id} would make the cluster's total {total}, "
                f"outside auto_scale.processes.min..max ({bounds.min}..{bounds.max})"
            )
        await coordination.set_target_by_hand(supervisor_id, processes, now)
        await send_order(
            client, keys, supervisor_id, Order.SCALE, processes=processes, cause=Cause.MANUAL.value
        )
        with _store(settings, handles) as store:  # the size a restart comes back at
            await asyncio.to_thread(store.set_state, "scale", {"processes": total})
        return before


async def pause_scaling(settings: Settings, paused: bool, *, handles: Handles = _NONE) -> None:
    """Pause the auto-scaler (the cluster keeps its size; ``tmi-cluster scale`` still works)
    or let it go on."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "scale", handles) as client:
        await Coordination(client, keys).set_paused(paused)


async def scaling(settings: Settings, *, handles: Handles = _NONE) -> dict[str, Any]:
    """The auto-scaler's state: ``paused``, ``cause`` of the last change, ``targets`` of the
    live supervisors it sizes, ``processes`` (their sum), and ``fixed``: the live supervisors
    that run a fixed number of workers (``supervisor.processes``), with that number."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "scale", handles) as client:
        with _store(settings, handles) as store:
            live = await housekeeping.live_supervisors(store, client, keys)
        coordination = Coordination(client, keys)
        state, _ = await coordination.scale_state()
        targets = {s: n for s, n in (await coordination.targets()).items() if s in live}
    fixed = {s: beat.status.target for s, beat in live.items() if beat.status.fixed}
    return {
        "paused": state.paused,
        "cause": state.cause,
        "targets": dict(sorted(targets.items())),
        "processes": sum(targets.values()),
        "fixed": dict(sorted(fixed.items())),
    }
