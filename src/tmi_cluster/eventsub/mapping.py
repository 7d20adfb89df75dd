"""EventSub notifications as the same typed events as IRC's: a handler or a stream reader cannot
tell which route a chat message came by.

Each notification becomes the IRC message Twitch would have sent for it (the same command,
parameters and tags: ``id``, ``room-id``, ``user-id``, ``display-name``, ``color``,
``badges``, ``badge-info``, ``emotes`` with code-point offsets, ``bits``, ``tmi-sent-ts``,
``reply-parent-*``, ``source-*`` of Shared Chat, ``msg-id`` and ``msg-param-*`` of a notice),
and that message goes through the very builder IRC's lines go through
(:func:`tmi_cluster.events.build.from_message`). So every property of every event works the
same, and ``dedupe_key`` is the message's id on both routes: a message Twitch delivers through
EventSub and IRC at once, or a notification retried on another shard, is delivered once.

=================================== ===============================================
subscription type                   events (as from)
=================================== ===============================================
``channel.chat.message``            MessageEvent, plus CheerEvent with bits (PRIVMSG)
``channel.chat.notification``       UserNoticeEvent and its specific event (USERNOTICE)
``channel.chat.clear``              ClearChatEvent ``clear`` (CLEARCHAT)
``channel.chat.clear_user_messages`` ClearChatEvent ``ban`` (CLEARCHAT with a target)
``channel.chat.message_delete``     ClearMsgEvent (CLEARMSG)
``channel.chat_settings.update``    RoomStateEvent and the mode events (ROOMSTATE)
``channel.shared_chat.begin``       SharedChatBeginEvent (no IRC message: EventSub only)
``channel.shared_chat.update``      SharedChatUpdateEvent (EventSub only)
``channel.shared_chat.end``         SharedChatEndEvent (EventSub only)
=================================== ===============================================

The Shared Chat session events have no IRC message to stand for: they are made directly, their
``dedupe_key`` the notification's id (a retry on another shard is delivered once).

What EventSub does not say, the events do not either: no ``first-msg`` flag but for Twitch's
``user_intro`` messages, no ``returning-chatter``, no ``/me`` (``is_action`` is false), no
duration on a clear of a user's messages (a timeout looks like a ban: subscribe to
``channel.ban`` for the difference), no text on a deleted message. A subscription type without
a mapping becomes an :class:`~tmi_cluster.events.UnknownEvent` (command ``EVENTSUB``, the type
in ``params``), and so does an event missing what its type needs: never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from tmi_cluster.events import (
    Event,
    SharedChatBeginEvent,
    SharedChatEndEvent,
    SharedChatEvent,
    SharedChatUpdateEvent,
    UnknownEvent,
)
from tmi_cluster.events.build import from_message
from tmi_cluster.eventsub.messages import Envelope, timestamp_ms
from tmi_cluster.irc import Message, escape_tag_value

__all__ = ["MAPPED_TYPES", "NOTICE_IDS", "notification_events", "to_events", "to_message"]

log = logging.getLogger(__name__)

_SERVER = "tmi.twitch.tv"
#: EventSub's notice types and the ``msg-id`` of the USERNOTICE Twitch sends for each (an
#: anonymous gifter's gifts have their own ids, as on IRC).
NOTICE_IDS = {
    "sub": "sub",
    "resub": "resub",
    "sub_gift": "subgift",
    "community_sub_gift": "submysterygift",
    "gift_paid_upgrade": "giftpaidupgrade",
    "prime_paid_upgrade": "primepaidupgrade",
    "raid": "raid",
    "unraid": "unraid",
    "pay_it_forward": "standardpayforward",
    "announcement": "announcement",
    "bits_badge_tier": "bitsbadgetier",
    "charity_donation": "charitydonation",
}
_ANONYMOUS_IDS = {
    "sub_gift": "anonsubgift",
    "community_sub_gift": "anonsubmysterygift",
    "gift_paid_upgrade": "anongiftpaidupgrade",
}
#: ``message_type`` of a chat message and the ``msg-id`` tag IRC gives it.
_MESSAGE_IDS = {
    "channel_points_highlighted": "highlighted-message",
    "channel_points_sub_only": "skip-subs-mode-message",
    "user_intro": "user-intro",
    "power_ups_gigantified_emote": "gigantified-emote-message",
    "power_ups_message_effect": "animated-message",
}
_PLANS = {"1000": "1000", "2000": "2000", "3000": "3000"}


class _MissingError(Exception):
    """An event without what its type needs (becomes an UnknownEvent)."""


def _str(event: Mapping[str, Any], key: str) -> str:
    """A string field ("" when absent or null; numbers as text)."""
    value = event.get(key)
    if value.__class__ is str:  # the usual case, first
        return value
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _required(event: Mapping[str, Any], key: str) -> str:
    value = _str(event, key)
    if not value:
        raise _MissingError(key)
    return value


def _channel(event: Mapping[str, Any]) -> str:
    return _required(event, "broadcaster_user_login").lower()


def _badges(badges: Any) -> tuple[str, str]:
    """EventSub's badges as IRC's ``badges`` and ``badge-info`` tags."""
    if not isinstance(badges, list):
        return "", ""
    names, infos = [], []
    for badge in badges:
        if not isinstance(badge, dict):
            continue
        set_id, version, info = _str(badge, "set_id"), _str(badge, "id"), _str(badge, "info")
        if not set_id:
            continue
        names.append(f"{set_id}/{version}")
        if info:
            infos.append(f"{set_id}/{info}")
    return ",".join(names), ",".join(infos)


def _emotes(message: Any) -> tuple[str, str]:
    """The text of a structured message, and IRC's ``emotes`` tag for it: each emote's id with
    its code-point ranges, by first appearance (as Twitch writes it)."""
    if not isinstance(message, dict):
        return "", ""
    text = _str(message, "text")
    fragments = message.get("fragments")
    if not isinstance(fragments, list):
        return text, ""
    ranges: dict[str, list[str]] = {}
    position = 0
    for fragment in fragments:
        if not isinstance(fragment, dict):
            continue
        piece = _str(fragment, "text")
        emote = fragment.get("emote")
        if piece and isinstance(emote, dict) and _str(emote, "id"):
            ranges.setdefault(_str(emote, "id"), []).append(
                f"{position}-{position + len(piece) - 1}"
            )
        position += len(piece)
    return text, "/".join(f"{eid}:{','.join(spans)}" for eid, spans in ranges.items())


def _user_tags(event: Mapping[str, Any], prefix: str = "chatter_") -> dict[str, str]:
    """The tags of the user who caused ``event``: id, display name, color, badges."""
    tags: dict[str, str] = {}
    badges, badge_info = _badges(event.get("badges"))
    tags["badge-info"] = badge_info
    tags["badges"] = badges
    tags["color"] = _str(event, "color")
    tags["display-name"] = _str(event, f"{prefix}user_name")
    names = {item.split("/", 1)[0] for item in badges.split(",") if item}
    tags["mod"] = "1" if "moderator" in names else "0"
    tags["subscriber"] = "1" if names & {"subscriber", "founder"} else "0"
    if "vip" in names:
        tags["vip"] = "1"
    tags["user-id"] = _str(event, f"{prefix}user_id")
    return tags


def _shared_chat(event: Mapping[str, Any], tags: dict[str, str]) -> None:
    """The Shared Chat tags of a copy of a message first sent in another channel."""
    source_room = _str(event, "source_broadcaster_user_id")
    if not source_room:
        return
    tags["source-room-id"] = source_room
    tags["source-id"] = _str(event, "source_message_id")
    source_badges, source_info = _badges(event.get("source_badges"))
    tags["source-badges"] = source_badges
    tags["source-badge-info"] = source_info
    if event.get("is_source_only") is not None:
        tags["source-only"] = _str(event, "is_source_only")


def _common(event: Mapping[str, Any], sent_ms: int | None) -> dict[str, str]:
    tags = {"room-id": _required(event, "broadcaster_user_id")}
    if sent_ms is not None:
        tags["tmi-sent-ts"] = str(sent_ms)
    return tags


def _chat_message(event: Mapping[str, Any], sent_ms: int | None) -> Message:
    channel = _channel(event)
    login = _required(event, "chatter_user_login").lower()
    text, emotes = _emotes(event.get("message"))
    tags = _user_tags(event)
    tags["emotes"] = emotes
    tags["id"] = _required(event, "message_id")
    kind = _str(event, "message_type")
    tags["first-msg"] = "1" if kind == "user_intro" else "0"
    if kind in _MESSAGE_IDS:
        tags["msg-id"] = _MESSAGE_IDS[kind]
    cheer = event.get("cheer")
    if isinstance(cheer, dict) and _str(cheer, "bits"):
        tags["bits"] = _str(cheer, "bits")
    reply = event.get("reply")
    if isinstance(reply, dict):
        tags["reply-parent-msg-id"] = _str(reply, "parent_message_id")
        tags["reply-parent-user-id"] = _str(reply, "parent_user_id")
        tags["reply-parent-user-login"] = _str(reply, "parent_user_login")
        tags["reply-parent-display-name"] = _str(reply, "parent_user_name")
        tags["reply-parent-msg-body"] = _str(reply, "parent_message_body")
        tags["reply-thread-parent-msg-id"] = _str(reply, "thread_message_id")
        tags["reply-thread-parent-user-id"] = _str(reply, "thread_user_id")
        tags["reply-thread-parent-user-login"] = _str(reply, "thread_user_login")
        tags["reply-thread-parent-display-name"] = _str(reply, "thread_user_name")
    reward = _str(event, "channel_points_custom_reward_id")
    if reward:
        tags["custom-reward-id"] = reward
    tags.update(_common(event, sent_ms))
    _shared_chat(event, tags)
    source = f"{login}!{login}@{login}.{_SERVER}"
    return Message("PRIVMSG", [f"#{channel}", text], tags, source)


#: Each notice type's ``msg-param-*`` tags (IRC's names) and the fields they come from.
_NOTICE_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "sub": (("multimonth-duration", "duration_months"),),
    "resub": (
        ("multimonth-duration", "duration_months"),
        ("cumulative-months", "cumulative_months"),
        ("streak-months", "streak_months"),
        ("was-gifted", "is_gift"),
    ),
    "sub_gift": (
        ("gift-months", "duration_months"),
        ("months", "duration_months"),
        ("sender-count", "cumulative_total"),
        ("recipient-id", "recipient_user_id"),
        ("recipient-user-name", "recipient_user_login"),
        ("recipient-display-name", "recipient_user_name"),
        ("community-gift-id", "community_gift_id"),
    ),
    "community_sub_gift": (
        ("mass-gift-count", "total"),
        ("sender-count", "cumulative_total"),
        ("community-gift-id", "id"),
    ),
    "gift_paid_upgrade": (
        ("sender-login", "gifter_user_login"),
        ("sender-name", "gifter_user_name"),
        ("sender-id", "gifter_user_id"),
    ),
    "pay_it_forward": (
        ("sender-login", "gifter_user_login"),
        ("sender-name", "gifter_user_name"),
        ("sender-id", "gifter_user_id"),
        ("recipient-id", "recipient_user_id"),
        ("recipient-user-name", "recipient_user_login"),
        ("recipient-display-name", "recipient_user_name"),
    ),
    "raid": (
        ("login", "user_login"),
        ("displayName", "user_name"),
        ("viewerCount", "viewer_count"),
        ("profileImageURL", "profile_image_url"),
    ),
    "bits_badge_tier": (("threshold", "tier"),),
    "charity_donation": (("charity-name", "charity_name"),),
}
_PLANNED = frozenset({"sub", "resub", "sub_gift", "community_sub_gift", "prime_paid_upgrade"})
_AMOUNT = (
    ("donation-amount", "value"),
    ("donation-currency", "currency"),
    ("exponent", "decimal_places"),
)


def _notice_params(kind: str, detail: Mapping[str, Any]) -> dict[str, str]:
    """The ``msg-param-*`` tags of a notice, by IRC's names."""
    params = {
        f"msg-param-{name}": _str(detail, key)
        for name, key in _NOTICE_PARAMS.get(kind, ())
        if _str(detail, key)
    }
    if kind in _PLANNED:
        tier = _str(detail, "sub_tier")
        prime = detail.get("is_prime") is True
        params["msg-param-sub-plan"] = "Prime" if prime else _PLANS.get(tier, tier)
    if kind == "resub":
        params["msg-param-should-share-streak"] = "1" if detail.get("streak_months") else "0"
    if kind == "announcement":
        color = _str(detail, "color")
        params["msg-param-color"] = color.upper() if color else "PRIMARY"
    amount = detail.get("amount")
    if kind == "charity_donation" and isinstance(amount, dict):
        params.update(
            {f"msg-param-{name}": _str(amount, key) for name, key in _AMOUNT if _str(amount, key)}
        )
    return params


def _anonymous(kind: str, event: Mapping[str, Any], detail: Mapping[str, Any]) -> bool:
    if kind == "gift_paid_upgrade":
        return detail.get("gifter_is_anonymous") is True
    return event.get("chatter_is_anonymous") is True


def _chat_notification(event: Mapping[str, Any], sent_ms: int | None) -> Message:
    channel = _channel(event)
    kind = _required(event, "notice_type")
    shared = kind.startswith("shared_chat_")
    base = kind.removeprefix("shared_chat_")
    detail = event.get(kind)
    if not isinstance(detail, dict):
        detail = {}
    text, emotes = _emotes(event.get("message"))
    anonymous = _anonymous(base, event, detail)
    msg_id = _ANONYMOUS_IDS.get(base) if anonymous else None
    msg_id = msg_id or NOTICE_IDS.get(base, base)
    tags = _user_tags(event)
    tags["emotes"] = emotes
    tags["id"] = _required(event, "message_id")
    login = _str(event, "chatter_user_login").lower()
    tags["login"] = "ananonymousgifter" if anonymous and not login else login
    tags["msg-id"] = "sharedchatnotice" if shared else msg_id
    if shared:
        tags["source-msg-id"] = msg_id
    tags["system-msg"] = _str(event, "system_message")
    tags.update(_notice_params(base, detail))
    tags.update(_common(event, sent_ms))
    _shared_chat(event, tags)
    params = [f"#{channel}", text] if text else [f"#{channel}"]
    return Message("USERNOTICE", params, tags, _SERVER)


def _chat_clear(event: Mapping[str, Any], sent_ms: int | None) -> Message:
    return Message("CLEARCHAT", [f"#{_channel(event)}"], _common(event, sent_ms), _SERVER)


def _clear_user(event: Mapping[str, Any], sent_ms: int | None) -> Message:
    tags = _common(event, sent_ms)
    tags["target-user-id"] = _str(event, "target_user_id")
    target = _required(event, "target_user_login").lower()
    return Message("CLEARCHAT", [f"#{_channel(event)}", target], tags, _SERVER)


def _message_delete(event: Mapping[str, Any], sent_ms: int | None) -> Message:
    tags = _common(event, sent_ms)
    tags["login"] = _str(event, "target_user_login").lower()
    tags["target-msg-id"] = _required(event, "message_id")
    return Message("CLEARMSG", [f"#{_channel(event)}", ""], tags, _SERVER)


def _chat_settings(event: Mapping[str, Any], sent_ms: int | None) -> Message:
    tags = _common(event, sent_ms)

    def flag(key: str) -> str:
        return "1" if event.get(key) is True else "0"

    tags["emote-only"] = flag("emote_mode")
    follower = event.get("follower_mode") is True
    minutes = event.get("follower_mode_duration_minutes")
    tags["followers-only"] = str(minutes if isinstance(minutes, int) else 0) if follower else "-1"
    tags["r9k"] = flag("unique_chat_mode")
    slow = event.get("slow_mode_wait_time_seconds")
    slow_on = event.get("slow_mode") is True and isinstance(slow, int)
    tags["slow"] = str(slow) if slow_on else "0"
    tags["subs-only"] = flag("subscriber_mode")
    return Message("ROOMSTATE", [f"#{_channel(event)}"], tags, _SERVER)


_MAPPINGS: dict[str, Callable[[Mapping[str, Any], int | None], Message]] = {
    "channel.chat.message": _chat_message,
    "channel.chat.notification": _chat_notification,
    "channel.chat.clear": _chat_clear,
    "channel.chat.clear_user_messages": _clear_user,
    "channel.chat.message_delete": _message_delete,
    "channel.chat_settings.update": _chat_settings,
}
_SESSIONS: dict[str, type[SharedChatEvent]] = {
    "channel.shared_chat.begin": SharedChatBeginEvent,
    "channel.shared_chat.update": SharedChatUpdateEvent,
    "channel.shared_chat.end": SharedChatEndEvent,
}
#: The subscription types mapped to events.
MAPPED_TYPES = frozenset(_MAPPINGS) | frozenset(_SESSIONS)


def _session(
    kind: type[SharedChatEvent], event: Mapping[str, Any], notification_id: str, sent_at: str
) -> SharedChatEvent:
    """A Shared Chat session event; ValueError for one missing what it needs."""
    try:
        channel = _channel(event)
        room = _required(event, "broadcaster_user_id")
    except _MissingError as exc:
        raise ValueError(f"a Shared Chat event without {exc.args[0]}") from None
    raw = event.get("participants") or []
    if not isinstance(raw, list):
        raise ValueError("a Shared Chat event whose participants are not a list")
    ids, logins = [], []
    for participant in raw:
        if isinstance(participant, dict):
            ids.append(_str(participant, "broadcaster_user_id"))
            logins.append(_str(participant, "broadcaster_user_login").lower())
    tags = {"room-id": room}
    if notification_id:
        tags["id"] = notification_id
    sent_ms = timestamp_ms(sent_at)
    if sent_ms is not None:
        tags["tmi-sent-ts"] = str(sent_ms)
    return kind(
        channel=channel,
        tags=tags,
        session_id=_str(event, "session_id"),
        host_id=_str(event, "host_broadcaster_user_id"),
        participants=ids,
        participant_logins=logins,
    )


def to_message(subscription_type: str, event: Mapping[str, Any], sent_at: str = "") -> Message:
    """The IRC message Twitch sends for the notification ``event`` of ``subscription_type``
    (``sent_at``: the notification's ``message_timestamp``), its ``raw`` line included.
    KeyError for a type without a mapping; ValueError for an event missing what its type
    needs. Text that no IRC line could carry (a line break) leaves ``raw`` empty."""
    mapping = _MAPPINGS[subscription_type]
    try:
        message = mapping(event, timestamp_ms(sent_at))
    except _MissingError as exc:
        raise ValueError(f"a {subscription_type} event without {exc.args[0]}") from None
    message.raw = _line(message)
    return message


def _line(message: Message) -> str:
    """The IRC line of a message the mappings built: its tag names are ours (safe), its
    values escaped; "" when a parameter holds what no IRC line can carry (a line break, a
    NUL), or a value a NUL. As :func:`~tmi_cluster.irc.serialize` writes it, faster (the
    mappings' own tag names need no check)."""
    params = message.params
    last = params[-1] if params else ""
    if "\r" in last or "\n" in last or "\0" in last:
        return ""
    tags = message.tags
    if any("\0" in value for value in tags.values()):
        return ""
    head = ";".join(
        f"{key}={escape_tag_value(value)}" if value else key for key, value in tags.items()
    )
    if len(params) == 1:  # a channel alone, as Twitch writes it
        return f"@{head} :{message.source} {message.command} {last}"
    middle = " ".join(params[:-1])
    return f"@{head} :{message.source} {message.command} {middle} :{last}"


def _unknown(subscription_type: str, why: str, event: Any) -> list[Event]:
    raw = msgspec.json.encode(event).decode() if event is not None else ""
    return [
        UnknownEvent(
            channel=None,
            raw=raw[:2000],
            command="EVENTSUB",
            params=[subscription_type[:100], why[:200]],
        )
    ]


def to_events(
    subscription_type: str, event: Any, sent_at: str = "", notification_id: str = ""
) -> list[Event]:
    """The events of one notification: the same, type for type and property for property, as
    the IRC message Twitch sends for it (see the module; ``notification_id``: the
    notification's message id, the key of the events no IRC message stands for). Never raises:
    an unknown type, or an event missing what its type needs, is one UnknownEvent saying so
    (logged)."""
    if not isinstance(event, dict):
        return _unknown(subscription_type, "the event is not an object", event)
    session = _SESSIONS.get(subscription_type)
    if session is not None:
        try:
            return [_session(session, event, notification_id, sent_at)]
        except ValueError as exc:
            log.warning(
                "an EventSub %s notification that cannot be mapped: %s", subscription_type, exc
            )
            return _unknown(subscription_type, str(exc), event)
    if subscription_type not in _MAPPINGS:
        return _unknown(subscription_type, "no mapping for this subscription type", event)
    try:
        message = to_message(subscription_type, event, sent_at)
    except ValueError as exc:
        log.warning("an EventSub %s notification that cannot be mapped: %s", subscription_type, exc)
        return _unknown(subscription_type, str(exc), event)
    return from_message(message)


def notification_events(envelope: Envelope) -> list[Event]:
    """The events of a decoded notification (:func:`~tmi_cluster.eventsub.messages.decode`);
    none for another message type. Never raises (see :func:`to_events`)."""
    subscription = envelope.payload.subscription
    if envelope.metadata.message_type != "notification" or subscription is None:
        return []
    try:
        event = msgspec.json.decode(envelope.payload.event)
    except msgspec.DecodeError as exc:
        return _unknown(subscription.type, f"the event is not JSON: {exc}", None)
    metadata = envelope.metadata
    return to_events(subscription.type, event, metadata.message_timestamp, metadata.message_id)
