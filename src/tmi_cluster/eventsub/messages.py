"""The messages of an EventSub WebSocket session (a plain session or a conduit's shard), typed.

Every message is ``{"metadata": {...}, "payload": {...}}``; ``metadata.message_type`` says
which: ``session_welcome``, ``session_keepalive``, ``notification``, ``session_reconnect``,
``revocation``. :func:`decode` reads one (msgspec, in C); a message that is not JSON, or not of
this shape, is an :class:`~tmi_cluster.errors.EventSubError` naming what is wrong, never a crash
of the session that read it. A notification's ``event`` is kept as raw JSON
(:attr:`Payload.event`) and decoded only by the mapping of its subscription type
(:mod:`tmi_cluster.eventsub.mapping`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from tmi_cluster.errors import EventSubError

__all__ = [
    "MESSAGE_TYPES",
    "Envelope",
    "Metadata",
    "Payload",
    "Session",
    "Subscription",
    "Transport",
    "decode",
    "timestamp_ms",
]

#: The message types of an EventSub WebSocket.
MESSAGE_TYPES = frozenset(
    {"session_welcome", "session_keepalive", "notification", "session_reconnect", "revocation"}
)


class Metadata(msgspec.Struct, frozen=True, kw_only=True):
    """Every message's metadata: its id (the de-duplication key of a notification: a
    notification retried on another shard keeps it), its type and when Twitch sent it."""

    message_id: str
    message_type: str
    message_timestamp: str
    subscription_type: str | None = None
    subscription_version: str | None = None


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A WebSocket session (``session_welcome``, ``session_reconnect``)."""

    id: str
    status: str
    connected_at: str = ""
    keepalive_timeout_seconds: int | None = None
    reconnect_url: str | None = None
    recovery_url: str | None = None


class Transport(msgspec.Struct, frozen=True, kw_only=True):
    """Where a subscription's notifications go."""

    method: str
    session_id: str | None = None
    conduit_id: str | None = None
    callback: str | None = None


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription, as a notification or a revocation carries it."""

    id: str
    status: str
    type: str
    version: str
    condition: dict[str, Any] = msgspec.field(default_factory=dict)
    transport: Transport | None = None
    created_at: str = ""
    cost: int = 0


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """A message's payload: a session, or a subscription and (for a notification) its event,
    undecoded."""

    session: Session | None = None
    subscription: Subscription | None = None
    #: The event as raw JSON (empty when the message has none).
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One message of an EventSub WebSocket."""

    metadata: Metadata
    payload: Payload = msgspec.field(default_factory=Payload)


_decoder = msgspec.json.Decoder(Envelope)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decode(data: bytes | str) -> Envelope:
    """One message; EventSubError naming the problem when it is not one (not JSON, a field
    of the wrong type or missing, an unknown message type, a notification without its
    subscription or event, a welcome or reconnect without its session)."""
    try:
        envelope = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EventSubError(f"an EventSub message that cannot be read: {exc}") from None
    kind = envelope.metadata.message_type
    payload = envelope.payload
    if kind not in MESSAGE_TYPES:
        raise EventSubError(f"an EventSub message of an unknown type {kind[:60]!r}")
    if kind == "notification" and (payload.subscription is None or not payload.event):
        raise EventSubError("an EventSub notification without its subscription or event")
    if kind == "revocation" and payload.subscription is None:
        raise EventSubError("an EventSub revocation without its subscription")
    if kind in ("session_welcome", "session_reconnect") and payload.session is None:
        raise EventSubError(f"an EventSub {kind} without its session")
    return envelope


def timestamp_ms(value: str) -> int | None:
    """An RFC 3339 time of Twitch's (nanoseconds allowed, ``Z``) in milliseconds since the
    epoch; None when it is not one."""
    text = value.strip()
    if not text:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:  # Python reads at most microseconds: cut the fraction to six digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact: no float
