"""One EventSub WebSocket session of a conduit's shard, kept: :class:`ShardSession`.

Contracts:

- It connects to ``url``, reads the welcome, and awaits ``bind(session_id)`` (the caller binds
  the session to its shard through Helix, within Twitch's 10 s); then every notification's
  events go to ``deliver`` (:func:`~tmi_cluster.eventsub.mapping.notification_events`), and
  each revocation's subscription to ``revoked``.
- A notification is delivered once: its message id is remembered (the newest
  :data:`DEDUPE_MEMORY`), so one that comes again on this session, or across a
  ``session_reconnect``, is dropped (across shards, the cluster's "seen once" check does it).
- ``session_reconnect`` is make-before-break: the new socket (at the URL Twitch gives) is read
  from its welcome on, the old one closed only then; the shard stays bound (Twitch moves it),
  so ``bind`` is not called again.
- Silence longer than the keepalive timeout plus :data:`GRACE_S` (a half-open socket), a
  closed socket, or a close code of Twitch's: a new session after a backoff (1 s doubling to
  :data:`BACKOFF_MAX_S`, reset once a session is bound), bound again. A message that cannot be
  read is logged and skipped, never the end of the session.
- A ``conduit.shard.disabled`` notification is no chat event: its shard and session go to
  ``disabled`` (the owner reports it, and the holder of that session calls :meth:`renew`).
- :meth:`run` returns only when cancelled; :attr:`state` and :attr:`problem` tell the owner
  what it is doing and why it last failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tmi_cluster.errors import EventSubError
from tmi_cluster.events import Event
from tmi_cluster.eventsub.mapping import notification_events
from tmi_cluster.eventsub.messages import Envelope, Subscription, decode

__all__ = ["BACKOFF_MAX_S", "DEDUPE_MEMORY", "GRACE_S", "SHARD_DISABLED", "ShardSession"]

log = logging.getLogger(__name__)

#: Message ids remembered against duplicates.
DEDUPE_MEMORY = 10_000
#: Seconds beyond the keepalive timeout before silence counts as a dead socket.
GRACE_S = 5.0
#: The longest wait between two attempts to open a session.
BACKOFF_MAX_S = 30.0
#: Seconds to wait for a welcome.
WELCOME_TIMEOUT_S = 10.0
#: The subscription type that tells a conduit's shard was disabled (not a chat event).
SHARD_DISABLED = "conduit.shard.disabled"


class ShardSession:
    """One shard's WebSocket session, kept open; see the module."""

    def __init__(
        self,
        url: str,
        *,
        bind: Callable[[str], Awaitable[None]],
        deliver: Callable[[list[Event]], None],
        revoked: Callable[[Subscription], None] | None = None,
        disabled: Callable[[str, str], None] | None = None,
    ) -> None:
        self.url = url
        self._bind = bind
        self._deliver = deliver
        self._revoked = revoked
        self._disabled = disabled
        self._socket: ClientConnection | None = None
        self._renewing = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: ``connecting``, ``binding``, ``open`` or ``backing_off``.
        self.state = "connecting"
        #: Why the last session ended, or None.
        self.problem: str | None = None
        #: The current session's id (None before the first welcome).
        self.session_id: str | None = None
        #: Sessions opened (1 after the first welcome), and notifications delivered.
        self.sessions = 0
        self.notifications = 0
        self.duplicates = 0
        #: Seconds of silence beyond the keepalive timeout that end a session (:data:`GRACE_S`).
        self.grace_s = GRACE_S
        self._opened = False

    async def renew(self) -> None:
        """Drop the current session (Twitch disabled its shard): a new one is opened and
        bound after the usual short wait."""
        socket = self._socket
        if socket is not None:
            self._renewing = True  # no backoff: nothing failed on our side
            log.warning(
                "EventSub session %s: its shard was disabled at Twitch; opening a new one",
                self.session_id,
            )
            await socket.close()

    async def run(self) -> None:
        """Keep a session open until cancelled (see the module)."""
        delay = 1.0
        while True:
            self._opened = False
            try:
                await self._session(self.url)
                self.problem = "the session ended"
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                self.problem = f"{type(exc).__name__}: {exc}"
            except EventSubError as exc:
                self.problem = str(exc)
            if self._opened:  # it worked for a while: try again soon
                delay = 1.0
            if self._renewing:  # dropped on purpose: a new session at once
                self._renewing = False
                continue
            log.warning(
                "EventSub session of %s lost (%s); again in %g s", self.url, self.problem, delay
            )
            self.state = "backing_off"
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _welcome(self, socket: ClientConnection) -> tuple[str, float]:
        """The welcome's session id and keepalive timeout."""
        async with asyncio.timeout(WELCOME_TIMEOUT_S):
            while True:
                envelope = decode(await socket.recv())
                if envelope.metadata.message_type == "session_welcome":
                    session = envelope.payload.session
                    assert session is not None  # decode checked it
                    return session.id, float(session.keepalive_timeout_seconds or 10)

    async def _session(self, url: str) -> None:
        self.state = "connecting"
        async with connect(url, max_size=2**20) as socket:
            self._socket = socket
            session_id, keepalive = await self._welcome(socket)
            self.session_id, self.sessions = session_id, self.sessions + 1
            self.state = "binding"
            await self._bind(session_id)
            self.state, self.problem, self._opened = "open", None, True
            await self._read(socket, keepalive)

    async def _read(self, socket: ClientConnection, keepalive: float) -> None:
        """Read ``socket`` until it closes or goes silent; a reconnect continues on a new one."""
        while True:
            try:
                async with asyncio.timeout(keepalive + self.grace_s):
                    raw = await socket.recv()
            except TimeoutError:
                raise TimeoutError(f"no message for {keepalive + self.grace_s:g} s") from None
            try:
                envelope = decode(raw)
            except EventSubError as exc:
                log.warning("EventSub session %s: %s", self.session_id, exc)
                continue
            kind = envelope.metadata.message_type
            if kind == "notification":
                self._notified(envelope)
            elif kind == "revocation" and envelope.payload.subscription is not None:
                if self._revoked is not None:
                    self._revoked(envelope.payload.subscription)
            elif kind == "session_reconnect":
                session = envelope.payload.session
                target = session.reconnect_url if session is not None else None
                if target:
                    socket, keepalive = await self._replace(socket, target)
                    self._socket = socket

    async def _replace(self, old: ClientConnection, url: str) -> tuple[ClientConnection, float]:
        """Make-before-break: the new socket welcomed, the old one drained and closed."""
        new = await connect(url, max_size=2**20)
        try:
            session_id, keepalive = await self._welcome(new)
        except BaseException:
            await new.close()
            raise
        with contextlib.suppress(ConnectionClosed, TimeoutError):  # what the old one still had
            async with asyncio.timeout(0.5):
                while True:
                    envelope = decode(await old.recv())
                    if envelope.metadata.message_type == "notification":
                        self._notified(envelope)
        await old.close()
        self.session_id, self.sessions = session_id, self.sessions + 1
        log.info("EventSub session reconnected: %s", session_id)
        return new, keepalive

    def _notified(self, envelope: Envelope) -> None:
        message_id = envelope.metadata.message_id
        if message_id in self._seen:
            self.duplicates += 1
            return
        self._seen[message_id] = None
        if len(self._seen) > DEDUPE_MEMORY:
            self._seen.popitem(last=False)
        self.notifications += 1
        subscription = envelope.payload.subscription
        if subscription is not None and subscription.type == SHARD_DISABLED:
            self._shard_disabled(envelope)
            return
        self._deliver(notification_events(envelope))

    def _shard_disabled(self, envelope: Envelope) -> None:
        """``conduit.shard.disabled``: which shard, bound to which session (for the owner)."""
        try:
            event = json.loads(bytes(envelope.payload.event or b"{}"))
            shard = str(event["shard_id"])
            session = str((event.get("transport") or {}).get("session_id") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("EventSub: a conduit.shard.disabled notification that cannot be read")
            return
        log.warning(
            "EventSub: Twitch disabled shard %s (%s)", shard, event.get("status", "no status")
        )
        if self._disabled is not None and session:
            self._disabled(shard, session)
