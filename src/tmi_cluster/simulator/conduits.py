"""The simulator's EventSub: conduits and their shards, subscriptions, WebSocket sessions, and
the chat's notifications delivered through them, as Twitch's (the parts the cluster uses).

Helix, on the control port (an app access token from ``POST /oauth2/token`` with
``grant_type=client_credentials``, and the ``Client-Id`` header):

======== ===================================== ==============================================
method   path                                  what
======== ===================================== ==============================================
POST     /helix/eventsub/conduits              ``{"shard_count"}``: a conduit (5 per client)
GET      /helix/eventsub/conduits              the client's conduits
PATCH    /helix/eventsub/conduits              ``{"id", "shard_count"}``
DELETE   /helix/eventsub/conduits?id=          a conduit and its subscriptions
PATCH    /helix/eventsub/conduits/shards       ``{"conduit_id", "shards": [{"id", "transport":
                                               {"method": "websocket", "session_id"}}]}``
GET      /helix/eventsub/conduits/shards       ``?conduit_id=``: shards and their status
POST     /helix/eventsub/subscriptions         ``{"type", "version", "condition", "transport":
                                               {"method": "conduit", "conduit_id"}}``: 202,
                                               or 409 with the existing one's id
GET      /helix/eventsub/subscriptions         ``?conduit_id=`` or ``?type=``
DELETE   /helix/eventsub/subscriptions?id=     a subscription
======== ===================================== ==============================================

WebSocket sessions on the EventSub port (``ws://host:eventsub_port/ws``): a
``session_welcome`` with the session's id and ``keepalive_timeout_seconds``, a
``session_keepalive`` when nothing else was sent for that long, ``notification`` for each
chat message of a subscribed channel on the shard its conduit picks (by the broadcaster, among
the enabled shards), ``revocation`` when a subscription's authorization ends. A session not
bound to a shard within :data:`UNUSED_S` seconds is closed with 4003, as Twitch does; a shard
whose session goes away is ``websocket_disconnected``. Faults: :meth:`Conduits.reconnect`
(``session_reconnect`` with a URL; the new session takes over the old one's shards once
welcomed, the old one closes), :meth:`Conduits.retry` (a notification delivered again on
another shard, as Twitch does when a shard misses one), :meth:`Conduits.repeat` (again on the
same shard), :meth:`Conduits.silence` (a half-open socket: nothing more sent),
:meth:`Conduits.disable` (Twitch disables a shard: it takes no more notifications, its session
may stay open, and ``conduit.shard.disabled`` goes to the conduit's subscribers of it, on
another enabled shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tmi_cluster.config.model import EVENTSUB_TYPES, SHARED_CHAT_TYPES
from tmi_cluster.irc import Message
from tmi_cluster.simulator.eventsub import envelope, notification
from tmi_cluster.simulator.peers import user_id

__all__ = [
    "MAX_CONDUITS",
    "MAX_SHARDS",
    "UNUSED_S",
    "Conduits",
    "RefusedError",
    "helix_routes",
]

#: Twitch's limits: conduits per client, shards per conduit.
MAX_CONDUITS = 5
MAX_SHARDS = 20_000
#: Seconds a new session may stay unbound before it is closed (4003).
UNUSED_S = 10.0
#: The subscription types whose condition names a broadcaster and the bot.
CHAT_TYPES = frozenset(EVENTSUB_TYPES)
#: Twitch tells that a conduit's shard was disabled.
SHARD_DISABLED = "conduit.shard.disabled"


class RefusedError(Exception):
    """A Helix request Twitch would refuse: its status and message (and a body to add)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The answer's JSON, as Twitch writes it."""
        phrase = HTTPStatus(self.status).phrase
        return {"error": phrase, "status": self.status, "message": self.message} | self.extra


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"


def _message(
    kind: str, payload: dict[str, Any], sub: _Subscription | None = None
) -> dict[str, Any]:
    """A WebSocket message of EventSub's, sent now."""
    metadata = {
        "message_id": str(uuid.uuid4()),
        "message_type": kind,
        "message_timestamp": _now(),
    }
    if sub is not None:
        metadata |= {"subscription_type": sub.type, "subscription_version": sub.version}
    return {"metadata": metadata, "payload": payload}


@dataclass
class _Shard:
    id: str
    status: str = "websocket_disconnected"
    session_id: str | None = None
    connected_at: str = ""
    disconnected_at: str = ""

    def json(self) -> dict[str, Any]:
        transport: dict[str, Any] = {"method": "websocket"}
        if self.session_id is not None:
            transport["session_id"] = self.session_id
        if self.connected_at:
            transport["connected_at"] = self.connected_at
        if self.disconnected_at:
            transport["disconnected_at"] = self.disconnected_at
        return {"id": self.id, "status": self.status, "transport": transport}


@dataclass
class _Conduit:
    id: str
    client_id: str
    shards: list[_Shard] = field(default_factory=list)

    def resize(self, count: int) -> None:
        self.shards = self.shards[:count] + [_Shard(str(n)) for n in range(len(self.shards), count)]


@dataclass
class _Subscription:
    id: str
    type: str
    version: str
    condition: dict[str, str]
    conduit_id: str
    client_id: str
    created_at: str
    status: str = "enabled"

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "version": self.version,
            "condition": dict(self.condition),
            "created_at": self.created_at,
            "transport": {"method": "conduit", "conduit_id": self.conduit_id},
            "cost": 0,
        }


@dataclass
class _Session:
    id: str
    socket: ServerConnection
    last_sent: float = field(default_factory=time.monotonic)
    bound: asyncio.Event = field(default_factory=asyncio.Event)
    replaces: str | None = None

    async def send(self, message: dict[str, Any]) -> bool:
        try:
            await self.socket.send(json.dumps(message, ensure_ascii=False))
        except ConnectionClosed:
            return False
        self.last_sent = time.monotonic()
        return True


class Conduits:
    """The EventSub state of one simulator. ``authorized(client_id, login, scope)`` says
    whether a user granted an application a scope (the OAuth server's answer)."""

    def __init__(
        self,
        authorized: Callable[[str, str, str], bool],
        *,
        keepalive_s: int = 10,
        login_of: Callable[[str], str | None] | None = None,
        moderates: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._authorized = authorized
        self._login_of = login_of or (lambda _: None)
        #: Whether a user (login) moderates a channel (login): it stands for ``channel:bot``.
        self._moderates = moderates or (lambda user, channel: False)
        self.keepalive_s = keepalive_s
        #: Seconds a new session may stay unbound (:data:`UNUSED_S`; tests shorten it).
        self.unused_s = UNUSED_S
        self._conduits: dict[str, _Conduit] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        #: The subscriptions by broadcaster (what each chat line looks up).
        self._by_room: dict[str, dict[str, _Subscription]] = {}
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._silent: set[str] = set()
        #: Every notification and revocation sent, in order (the newest 1,000), for tests.
        self.sent: deque[dict[str, Any]] = deque(maxlen=1000)
        #: Where a reconnecting session connects (set by the server that serves sessions).
        self.url = "ws://127.0.0.1/ws"

    # -- Helix ------------------------------------------------------------------------------

    def _conduit(self, client_id: str, conduit_id: str) -> _Conduit:
        conduit = self._conduits.get(conduit_id)
        if conduit is None or conduit.client_id != client_id:
            raise RefusedError(404, "conduit not found")
        return conduit

    def create_conduit(self, client_id: str, shard_count: Any) -> dict[str, Any]:
        """``POST /helix/eventsub/conduits``."""
        if not isinstance(shard_count, int) or not 1 <= shard_count <= MAX_SHARDS:
            raise RefusedError(400, f"shard_count must be 1 to {MAX_SHARDS}")
        if sum(c.client_id == client_id for c in self._conduits.values()) >= MAX_CONDUITS:
            raise RefusedError(429, "conduit limit reached")
        conduit = _Conduit(str(uuid.uuid4()), client_id)
        conduit.resize(shard_count)
        self._conduits[conduit.id] = conduit
        return {"data": [{"id": conduit.id, "shard_count": shard_count}]}

    def conduits(self, client_id: str) -> dict[str, Any]:
        """``GET /helix/eventsub/conduits``."""
        return {
            "data": [
                {"id": c.id, "shard_count": len(c.shards)}
                for c in self._conduits.values()
                if c.client_id == client_id
            ]
        }

    def update_conduit(self, client_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /helix/eventsub/conduits``."""
        conduit = self._conduit(client_id, str(body.get("id", "")))
        count = body.get("shard_count")
        if not isinstance(count, int) or not 1 <= count <= MAX_SHARDS:
            raise RefusedError(400, f"shard_count must be 1 to {MAX_SHARDS}")
        conduit.resize(count)
        return {"data": [{"id": conduit.id, "shard_count": count}]}

    def delete_conduit(self, client_id: str, conduit_id: str) -> None:
        """``DELETE /helix/eventsub/conduits``: with its subscriptions."""
        conduit = self._conduit(client_id, conduit_id)
        del self._conduits[conduit.id]
        for sub in [s for s in self._subscriptions.values() if s.conduit_id == conduit.id]:
            self._drop(sub)

    def update_shards(self, client_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /helix/eventsub/conduits/shards``: each shard bound to a session, or the
        error that kept it from it."""
        conduit = self._conduit(client_id, str(body.get("conduit_id", "")))
        shards = body.get("shards")
        if not isinstance(shards, list) or not shards:
            raise RefusedError(400, "shards must be a non-empty list")
        data, errors = [], []
        for item in shards:
            shard_id = str(item.get("id", "")) if isinstance(item, dict) else ""
            transport = item.get("transport") if isinstance(item, dict) else None
            session_id = transport.get("session_id") if isinstance(transport, dict) else None
            index = int(shard_id) if shard_id.isdigit() else -1
            if not 0 <= index < len(conduit.shards):
                errors.append({"id": shard_id, "message": "shard not found", "code": "not_found"})
                continue
            session = self._sessions.get(str(session_id))
            if session is None:
                errors.append(
                    {"id": shard_id, "message": "session does not exist", "code": "invalid"}
                )
                continue
            shard = conduit.shards[index]
            shard.session_id, shard.status = session.id, "enabled"
            shard.connected_at, shard.disconnected_at = _now(), ""
            session.bound.set()
            data.append(shard.json())
        return {"data": data, "errors": errors}

    def shards(self, client_id: str, conduit_id: str) -> dict[str, Any]:
        """``GET /helix/eventsub/conduits/shards``."""
        conduit = self._conduit(client_id, conduit_id)
        return {"data": [shard.json() for shard in conduit.shards], "pagination": {}}

    def subscribe(self, client_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /helix/eventsub/subscriptions`` (202): a chat subscription over a conduit,
        when the bot granted ``user:bot`` and the broadcaster ``channel:bot`` (or the bot
        moderates the channel); RefusedError
        409 with the existing one's id for a duplicate."""
        kind, version = str(body.get("type", "")), str(body.get("version", ""))
        condition = body.get("condition")
        transport = body.get("transport")
        if (kind not in CHAT_TYPES and kind != SHARD_DISABLED) or version != "1":
            raise RefusedError(400, f"unsupported subscription type {kind!r} version {version!r}")
        if not isinstance(condition, dict) or not isinstance(transport, dict):
            raise RefusedError(400, "condition and transport are required")
        if transport.get("method") != "conduit":
            raise RefusedError(400, "transport method must be 'conduit' here")
        conduit = self._conduit(client_id, str(transport.get("conduit_id", "")))
        broadcaster = str(condition.get("broadcaster_user_id", ""))
        wanted = self._condition(client_id, kind, condition)
        for existing in self._by_room.get(broadcaster, {}).values():
            if (existing.type, existing.condition, existing.client_id) == (
                kind,
                wanted,
                client_id,
            ):
                raise RefusedError(409, "subscription already exists", id=existing.id)
        sub = _Subscription(str(uuid.uuid4()), kind, version, wanted, conduit.id, client_id, _now())
        self._subscriptions[sub.id] = sub
        self._by_room.setdefault(broadcaster, {})[sub.id] = sub
        return {"data": [sub.json()], "total": len(self._subscriptions), "total_cost": 0}

    def _condition(self, client_id: str, kind: str, condition: dict[str, Any]) -> dict[str, str]:
        """The condition of a subscription of ``kind``, as Twitch keeps it; RefusedError when
        its authorization is missing."""
        broadcaster = str(condition.get("broadcaster_user_id", ""))
        if kind == SHARD_DISABLED:  # the application's own conduits: its client id
            if condition.get("client_id") != client_id:
                raise RefusedError(403, "the condition's client_id is not the token's")
            wanted = {"client_id": client_id}
            if condition.get("conduit_id"):
                wanted["conduit_id"] = str(condition["conduit_id"])
            return wanted
        if kind in SHARED_CHAT_TYPES:  # the broadcaster alone; no authorization needed
            if self._login_of(broadcaster) is None:
                raise RefusedError(400, "the broadcaster does not exist")
            return {"broadcaster_user_id": broadcaster}
        return self._chat_condition(client_id, broadcaster, str(condition.get("user_id", "")))

    def _chat_condition(self, client_id: str, broadcaster: str, bot: str) -> dict[str, str]:
        """A chat subscription's condition, when the bot granted ``user:bot`` and the
        broadcaster ``channel:bot`` (or the bot moderates); RefusedError 403 when not."""
        bot_login, channel = self._login_of(bot), self._login_of(broadcaster)
        if bot_login is None or not self._authorized(client_id, bot_login, "user:bot"):
            raise RefusedError(403, "subscription missing proper authorization (user:bot)")
        if channel is None or not (
            self._authorized(client_id, channel, "channel:bot")
            or self._moderates(bot_login, channel)
        ):
            raise RefusedError(
                403, "subscription missing proper authorization (channel:bot or moderator)"
            )
        return {"broadcaster_user_id": broadcaster, "user_id": bot}

    def disable(
        self, conduit_id: str, shard_id: str, status: str = "websocket_failed_ping_pong"
    ) -> int:
        """Twitch disables a shard (``status``): it takes no more notifications (they go to the
        other enabled shards); its session stays open (close it with the socket for the
        other case). ``conduit.shard.disabled`` goes to the conduit's subscriptions of it, each
        on an enabled shard; how many were sent."""
        conduit = self._conduits[conduit_id]
        shard = next(s for s in conduit.shards if s.id == shard_id)
        shard.status, shard.disconnected_at = status, _now()
        event = {
            "conduit_id": conduit.id,
            "shard_id": shard.id,
            "status": status,
            "transport": shard.json()["transport"],
        }
        sent = 0
        for sub in list(self._subscriptions.values()):
            if sub.type != SHARD_DISABLED or sub.client_id != conduit.client_id:
                continue
            if sub.condition.get("conduit_id") not in (None, conduit.id):
                continue
            with contextlib.suppress(LookupError):  # no enabled shard: nobody hears it
                target = self._conduits[sub.conduit_id]
                self._send(self._shard_for(target, conduit.id), self._envelope(sub, event))
                sent += 1
        return sent

    def share_chat(self, kind: str, channels: list[str], host: str) -> int:
        """Tell each of ``channels`` (logins) that Shared Chat ``kind`` (``begin``, ``update``
        or ``end``) happened in their session hosted by ``host``, the participants being
        ``channels`` (none for ``end``), as Twitch does, to the subscriptions of
        ``channel.shared_chat.<kind>``; how many notifications were sent."""
        session = f"session-{host}"
        participants = [] if kind == "end" else [_broadcaster(c) for c in channels]
        sent = 0
        for channel in channels:
            event: dict[str, Any] = {
                "session_id": session,
                **_broadcaster(channel),
                **{f"host_{k}": v for k, v in _broadcaster(host).items()},
            }
            if kind != "end":
                event["participants"] = participants
            room = user_id(channel)
            for sub in list(self._by_room.get(room, {}).values()):
                conduit = self._conduits.get(sub.conduit_id)
                if sub.type != f"channel.shared_chat.{kind}" or conduit is None:
                    continue
                with contextlib.suppress(LookupError):
                    self._send(self._shard_for(conduit, room), self._envelope(sub, event))
                    sent += 1
        return sent

    def subscriptions(
        self, client_id: str, conduit_id: str | None, kind: str | None
    ) -> dict[str, Any]:
        """``GET /helix/eventsub/subscriptions``."""
        found = [
            s.json()
            for s in self._subscriptions.values()
            if s.client_id == client_id
            and (conduit_id is None or s.conduit_id == conduit_id)
            and (kind is None or s.type == kind)
        ]
        return {"data": found, "total": len(found), "total_cost": 0, "pagination": {}}

    def unsubscribe(self, client_id: str, subscription_id: str) -> None:
        """``DELETE /helix/eventsub/subscriptions`` (204)."""
        sub = self._subscriptions.get(subscription_id)
        if sub is None or sub.client_id != client_id:
            raise RefusedError(404, "subscription not found")
        self._drop(sub)

    def _drop(self, sub: _Subscription) -> None:
        """Forget a subscription (and its place in the index by broadcaster)."""
        del self._subscriptions[sub.id]
        room = sub.condition.get("broadcaster_user_id", "")
        self._by_room[room].pop(sub.id)
        if not self._by_room[room]:
            del self._by_room[room]

    # -- delivery ---------------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        """Whether any subscription exists (the traffic looks for them only then)."""
        return bool(self._subscriptions)

    def wants(self, broadcaster: str) -> bool:
        """Whether a subscription names ``broadcaster`` (a user id)."""
        return broadcaster in self._by_room

    def _shard_for(self, conduit: _Conduit, broadcaster: str, skip: str | None = None) -> _Shard:
        enabled = [s for s in conduit.shards if s.status == "enabled" and s.session_id != skip]
        if not enabled:
            raise LookupError(conduit.id)
        return enabled[zlib.crc32(broadcaster.encode()) % len(enabled)]

    def deliver(self, message: Message) -> int:
        """Send the notification of an IRC ``message`` of the chat to every subscription of its
        type for its broadcaster, each on its conduit's shard; how many were sent."""
        found = notification(message)
        if found is None:
            return 0
        kind, event = found
        broadcaster = event["broadcaster_user_id"]
        sent = 0
        for sub in list(self._by_room.get(broadcaster, {}).values()):
            if sub.type != kind:
                continue
            conduit = self._conduits.get(sub.conduit_id)
            if conduit is None:
                continue
            with contextlib.suppress(LookupError):  # no enabled shard: dropped, as on Twitch
                shard = self._shard_for(conduit, broadcaster)
                self._send(shard, self._notification(sub, event, message))
                sent += 1
        return sent

    def _notification(
        self, sub: _Subscription, event: dict[str, Any], message: Message
    ) -> dict[str, Any]:
        """The notification of ``event`` for ``sub``, stamped when the chat line was sent."""
        sent = message.tags.get("tmi-sent-ts", "")
        return self._envelope(sub, event, int(sent) if sent.isdigit() else None)

    @staticmethod
    def _envelope(
        sub: _Subscription, event: dict[str, Any], sent_ms: int | None = None
    ) -> dict[str, Any]:
        """The notification of ``event`` for ``sub`` over its conduit (stamped ``sent_ms``,
        else now)."""
        built = envelope(
            sub.type,
            event,
            subscription_id=sub.id,
            condition=sub.condition,
            transport={"method": "conduit", "conduit_id": sub.conduit_id},
            sent_ms=sent_ms,
        )
        built["payload"]["subscription"] = sub.json()
        return built

    def _send(self, shard: _Shard, message: dict[str, Any]) -> None:
        session = self._sessions.get(shard.session_id or "")
        if session is None or session.id in self._silent:
            return
        self.sent.append(message)
        self._spawn(session.send(message))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in a task kept until it ends (a task nobody holds may vanish)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def silence(self, session_id: str, silent: bool = True) -> None:
        """A half-open socket: nothing more is sent to the session (keepalives neither)."""
        if silent:
            self._silent.add(session_id)
        else:
            self._silent.discard(session_id)

    def repeat(self, message: dict[str, Any]) -> bool:
        """Deliver a notification again on the shard it went to (Twitch delivers at least
        once): the same message id. False when its subscription is gone."""
        payload = message["payload"]
        sub = self._subscriptions.get(payload["subscription"]["id"])
        if sub is None:
            return False
        with contextlib.suppress(LookupError):
            shard = self._shard_for(
                self._conduits[sub.conduit_id], sub.condition.get("broadcaster_user_id", "")
            )
            self._send(shard, message)
            return True
        return False

    def retry(self, message: dict[str, Any]) -> bool:
        """Deliver a notification again, on another shard of its conduit than the one it was
        on (as Twitch does when a shard misses one): the same message id. False when there is
        no other enabled shard."""
        payload = message["payload"]
        sub = self._subscriptions.get(payload["subscription"]["id"])
        if sub is None:
            return False
        conduit = self._conduits[sub.conduit_id]
        first = self._shard_for(conduit, sub.condition.get("broadcaster_user_id", ""))
        try:
            other = self._shard_for(conduit, "retry", skip=first.session_id)
        except LookupError:
            return False
        self._send(other, message)
        return True

    def deauthorized(self, client_id: str, login: str) -> None:
        """A user's authorization of an application ended: their subscriptions (as the
        broadcaster or the bot) are revoked, each said on its shard."""
        uid = user_id(login)
        for sub in list(self._subscriptions.values()):
            if sub.client_id != client_id or uid not in sub.condition.values():
                continue
            self._drop(sub)
            sub.status = "authorization_revoked"
            conduit = self._conduits.get(sub.conduit_id)
            if conduit is None:
                continue
            with contextlib.suppress(LookupError):
                shard = self._shard_for(conduit, sub.condition.get("broadcaster_user_id", ""))
                self._send(shard, _message("revocation", {"subscription": sub.json()}, sub))

    def unmodded(self, bot: str, channel: str) -> int:
        """``bot`` (a login) no longer moderates ``channel``: its chat subscriptions there that
        only its moderator status authorized (the broadcaster never granted ``channel:bot``)
        are revoked (``moderator_removed``), each said on its shard; how many."""
        bot_id, room = user_id(bot), user_id(channel)
        revoked = 0
        for sub in list(self._by_room.get(room, {}).values()):
            if sub.condition.get("user_id") != bot_id:
                continue
            if self._authorized(sub.client_id, channel, "channel:bot"):
                continue
            self._drop(sub)
            sub.status = "moderator_removed"
            revoked += 1
            conduit = self._conduits.get(sub.conduit_id)
            if conduit is None:
                continue
            with contextlib.suppress(LookupError):
                shard = self._shard_for(conduit, room)
                self._send(shard, _message("revocation", {"subscription": sub.json()}, sub))
        return revoked

    # -- sessions ---------------------------------------------------------------------------

    async def serve(self, socket: ServerConnection) -> None:
        """One WebSocket session, until it closes: welcome, keepalives, unbound → 4003."""
        session = _Session("AgoQ" + secrets.token_urlsafe(24), socket)
        query = socket.request.path.partition("?")[2] if socket.request else ""
        replaced = query.removeprefix("reconnect=") if query.startswith("reconnect=") else None
        self._sessions[session.id] = session
        try:
            welcome = {
                "id": session.id,
                "status": "connected",
                "connected_at": _now(),
                "keepalive_timeout_seconds": self.keepalive_s,
                "reconnect_url": None,
                "recovery_url": None,
            }
            await session.send(_message("session_welcome", {"session": welcome}))
            if replaced is not None:
                self._take_over(replaced, session)
            await self._keep(session)
        finally:
            del self._sessions[session.id]
            self._disconnected(session.id)

    async def _keep(self, session: _Session) -> None:
        """Keepalives while the socket is open; closed with 4003 when it stays unbound."""
        unused_until = time.monotonic() + self.unused_s
        socket = session.socket
        while True:
            wait = min(0.25, self.keepalive_s / 4)
            try:
                await asyncio.wait_for(socket.wait_closed(), wait)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            if not session.bound.is_set() and now > unused_until:
                await socket.close(4003, "connection unused")
                return
            if now - session.last_sent >= self.keepalive_s and session.id not in self._silent:
                await session.send(_message("session_keepalive", {}))

    def _take_over(self, old_id: str, new: _Session) -> None:
        """A reconnect: the new session has the old one's shards; the old one closes."""
        for conduit in self._conduits.values():
            for shard in conduit.shards:
                if shard.session_id == old_id:
                    shard.session_id = new.id
                    new.bound.set()
        old = self._sessions.get(old_id)
        if old is not None:
            self._spawn(old.socket.close(4004, "reconnected"))

    def _disconnected(self, session_id: str) -> None:
        for conduit in self._conduits.values():
            for shard in conduit.shards:
                if shard.session_id == session_id:
                    shard.status, shard.disconnected_at = "websocket_disconnected", _now()

    async def reconnect(self, session_id: str) -> bool:
        """Send ``session_reconnect`` to a session: its client connects to the URL given, and
        the new session takes over its shards. False when there is no such session."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        moving = {
            "id": session.id,
            "status": "reconnecting",
            "keepalive_timeout_seconds": None,
            "reconnect_url": f"{self.url}?reconnect={session.id}",
            "connected_at": _now(),
        }
        return await session.send(_message("session_reconnect", {"session": moving}))

    def session_ids(self) -> list[str]:
        """The open sessions' ids."""
        return list(self._sessions)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise RefusedError(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise RefusedError(400, "the body must be a JSON object")
    return data


class _HelixRoutes:
    """The Helix handlers of EventSub, each called with the request and the client id."""

    def __init__(self, conduits: Conduits) -> None:
        self.conduits = conduits

    async def create_conduit(self, request: Request, client: str) -> Any:
        return self.conduits.create_conduit(client, (await _body(request)).get("shard_count"))

    async def list_conduits(self, request: Request, client: str) -> Any:
        return self.conduits.conduits(client)

    async def update_conduit(self, request: Request, client: str) -> Any:
        return self.conduits.update_conduit(client, await _body(request))

    async def delete_conduit(self, request: Request, client: str) -> Any:
        self.conduits.delete_conduit(client, request.query_params.get("id", ""))

    async def update_shards(self, request: Request, client: str) -> Any:
        return self.conduits.update_shards(client, await _body(request))

    async def list_shards(self, request: Request, client: str) -> Any:
        return self.conduits.shards(client, request.query_params.get("conduit_id", ""))

    async def subscribe(self, request: Request, client: str) -> Any:
        return self.conduits.subscribe(client, await _body(request))

    async def list_subscriptions(self, request: Request, client: str) -> Any:
        query = request.query_params
        return self.conduits.subscriptions(client, query.get("conduit_id"), query.get("type"))

    async def unsubscribe(self, request: Request, client: str) -> Any:
        self.conduits.unsubscribe(client, request.query_params.get("id", ""))


def helix_routes(conduits: Conduits, client_of: Callable[[str, str], str]) -> list[Route]:
    """The Helix routes of EventSub for the control app. ``client_of(authorization header,
    Client-Id header)`` answers the application's client id, or raises RefusedError 401."""

    def answering(
        handler: Callable[[Request, str], Awaitable[Any]], status: int = 200
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                headers = request.headers
                client = client_of(headers.get("authorization", ""), headers.get("client-id", ""))
                result = await handler(request, client)
            except RefusedError as refused:
                return JSONResponse(refused.body(), status_code=refused.status)
            if result is None:
                return Response(status_code=204)
            return JSONResponse(result, status_code=status)

        return run

    routes = _HelixRoutes(conduits)
    base = "/helix/eventsub"
    table: list[tuple[str, str, Callable[[Request, str], Awaitable[Any]], int]] = [
        ("/conduits", "POST", routes.create_conduit, 200),
        ("/conduits", "GET", routes.list_conduits, 200),
        ("/conduits", "PATCH", routes.update_conduit, 200),
        ("/conduits", "DELETE", routes.delete_conduit, 200),
        ("/conduits/shards", "PATCH", routes.update_shards, 202),
        ("/conduits/shards", "GET", routes.list_shards, 200),
        ("/subscriptions", "POST", routes.subscribe, 202),
        ("/subscriptions", "GET", routes.list_subscriptions, 200),
        ("/subscriptions", "DELETE", routes.unsubscribe, 200),
    ]
    return [
        Route(f"{base}{path}", answering(handler, status), methods=[method])
        for path, method, handler, status in table
    ]


def _broadcaster(login: str) -> dict[str, str]:
    """A broadcaster's fields as EventSub writes them."""
    return {
        "broadcaster_user_id": user_id(login),
        "broadcaster_user_login": login,
        "broadcaster_user_name": login,
    }
