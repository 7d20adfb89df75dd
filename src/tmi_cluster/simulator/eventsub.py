"""The simulator's chat as EventSub notifications: each IRC message it sends, as the EventSub
notification Twitch sends for the same thing (:func:`notification`), in the shapes of Twitch's
reference (``tests/eventsub`` holds samples; a test keeps the two routes equal).

The inverse of :mod:`tmi_cluster.eventsub.mapping`: a PRIVMSG becomes a
``channel.chat.message`` (its emotes as fragments, its badges, cheer, reply and Shared Chat
source), a USERNOTICE a ``channel.chat.notification``, a CLEARCHAT a ``channel.chat.clear`` or
``channel.chat.clear_user_messages``, a CLEARMSG a ``channel.chat.message_delete``, a ROOMSTATE
a ``channel.chat_settings.update``; other messages have no notification (None).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from tmi_cluster.events import values
from tmi_cluster.irc import Message

__all__ = ["SUBSCRIPTION_TYPES", "envelope", "notification", "wire"]

#: The command of each IRC message with a notification, and its subscription type.
SUBSCRIPTION_TYPES = {
    "PRIVMSG": "channel.chat.message",
    "USERNOTICE": "channel.chat.notification",
    "CLEARMSG": "channel.chat.message_delete",
    "ROOMSTATE": "channel.chat_settings.update",
}
_MESSAGE_TYPES = {
    "highlighted-message": "channel_points_highlighted",
    "skip-subs-mode-message": "channel_points_sub_only",
    "user-intro": "user_intro",
    "gigantified-emote-message": "power_ups_gigantified_emote",
    "animated-message": "power_ups_message_effect",
}
_NOTICE_TYPES = {
    "sub": "sub",
    "resub": "resub",
    "subgift": "sub_gift",
    "anonsubgift": "sub_gift",
    "submysterygift": "community_sub_gift",
    "anonsubmysterygift": "community_sub_gift",
    "giftpaidupgrade": "gift_paid_upgrade",
    "anongiftpaidupgrade": "gift_paid_upgrade",
    "primepaidupgrade": "prime_paid_upgrade",
    "raid": "raid",
    "unraid": "unraid",
    "standardpayforward": "pay_it_forward",
    "announcement": "announcement",
    "bitsbadgetier": "bits_badge_tier",
    "charitydonation": "charity_donation",
}
_ALL_NOTICES = sorted(set(_NOTICE_TYPES.values()))


def _badges(tags: Mapping[str, str], name: str, info_name: str) -> list[dict[str, str]]:
    """IRC's ``badges`` and ``badge-info`` tags as EventSub's badges."""
    infos = values.badges(dict(tags), info_name)
    return [
        {"set_id": set_id, "id": version, "info": infos.get(set_id, "")}
        for set_id, version in values.badges(dict(tags), name).items()
    ]


def _fragments(text: str, emotes: str) -> list[dict[str, Any]]:
    """``text`` cut into text and emote fragments by an ``emotes`` tag (code points; the
    ranges read as every event reads them: :func:`tmi_cluster.events.values.emotes`)."""
    fragments: list[dict[str, Any]] = []
    position = 0

    def plain(piece: str) -> None:
        if piece:
            fragments.append(
                {"type": "text", "text": piece, "cheermote": None, "emote": None, "mention": None}
            )

    for emote in values.emotes(emotes, text):
        if emote.start < position:
            continue  # overlapping ranges: the first wins
        plain(text[position : emote.start])
        fragments.append(
            {
                "type": "emote",
                "text": text[emote.start : emote.end + 1],
                "cheermote": None,
                "emote": {
                    "id": emote.id,
                    "emote_set_id": "0",
                    "owner_id": "0",
                    "format": ["static"],
                },
                "mention": None,
            }
        )
        position = emote.end + 1
    plain(text[position:])
    return fragments


def _broadcaster(message: Message) -> dict[str, Any]:
    channel = message.params[0].removeprefix("#") if message.params else ""
    return {
        "broadcaster_user_id": message.tags.get("room-id", ""),
        "broadcaster_user_login": channel,
        "broadcaster_user_name": channel,
    }


def _chatter(tags: Mapping[str, str], login: str) -> dict[str, Any]:
    return {
        "chatter_user_id": tags.get("user-id", ""),
        "chatter_user_login": login,
        "chatter_user_name": tags.get("display-name") or login,
        "color": tags.get("color", ""),
        "badges": _badges(tags, "badges", "badge-info"),
    }


def _source(tags: Mapping[str, str]) -> dict[str, Any]:
    if not tags.get("source-room-id"):
        return {
            "source_broadcaster_user_id": None,
            "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None,
            "source_message_id": None,
            "source_badges": None,
            "is_source_only": None,
        }
    return {
        "source_broadcaster_user_id": tags["source-room-id"],
        "source_broadcaster_user_login": "source",
        "source_broadcaster_user_name": "Source",
        "source_message_id": tags.get("source-id", ""),
        "source_badges": _badges(tags, "source-badges", "source-badge-info"),
        "is_source_only": tags.get("source-only") == "1" if "source-only" in tags else None,
    }


def _chat_message(message: Message) -> dict[str, Any]:
    tags = message.tags
    text = message.params[1] if len(message.params) > 1 else ""
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):
        text = text[8:-1]  # EventSub does not say /me
    login = message.nick or ""
    reply = None
    if tags.get("reply-parent-msg-id"):
        reply = {
            "parent_message_id": tags.get("reply-parent-msg-id", ""),
            "parent_message_body": tags.get("reply-parent-msg-body", ""),
            "parent_user_id": tags.get("reply-parent-user-id", ""),
            "parent_user_name": tags.get("reply-parent-display-name", ""),
            "parent_user_login": tags.get("reply-parent-user-login", ""),
            "thread_message_id": tags.get("reply-thread-parent-msg-id", ""),
            "thread_user_id": tags.get("reply-thread-parent-user-id", ""),
            "thread_user_name": tags.get("reply-thread-parent-display-name", ""),
            "thread_user_login": tags.get("reply-thread-parent-user-login", ""),
        }
    kind = _MESSAGE_TYPES.get(tags.get("msg-id", ""), "text")
    if kind == "text" and tags.get("first-msg") == "1":
        kind = "user_intro"
    bits = tags.get("bits", "")
    return {
        **_broadcaster(message),
        **_chatter(tags, login),
        "message_id": tags.get("id", ""),
        "message": {"text": text, "fragments": _fragments(text, tags.get("emotes", ""))},
        "message_type": kind,
        "cheer": {"bits": int(bits)} if bits.isdigit() else None,
        "reply": reply,
        "channel_points_custom_reward_id": tags.get("custom-reward-id") or None,
        "channel_points_animation_id": None,
        **_source(tags),
    }


def _notice_detail(kind: str, tags: Mapping[str, str]) -> dict[str, Any]:
    def param(name: str) -> str:
        return tags.get(f"msg-param-{name}", "")

    def number(name: str) -> int | None:
        value = param(name)
        return int(value) if value.isdigit() else None

    plan = param("sub-plan")
    tier = {"sub_tier": "1000" if plan == "Prime" else plan, "is_prime": plan == "Prime"}
    gifter = {
        "gifter_is_anonymous": not param("sender-login"),
        "gifter_user_id": param("sender-id") or None,
        "gifter_user_name": param("sender-name") or None,
        "gifter_user_login": param("sender-login") or None,
    }
    details: dict[str, dict[str, Any]] = {
        "sub": {**tier, "duration_months": number("multimonth-duration") or 1},
        "resub": {
            **tier,
            "cumulative_months": number("cumulative-months") or 0,
            "duration_months": number("multimonth-duration") or 0,
            "streak_months": number("streak-months"),
            "is_gift": param("was-gifted") in ("1", "true"),
            **gifter,
        },
        "sub_gift": {
            "sub_tier": plan,
            "duration_months": number("gift-months") or number("months") or 1,
            "cumulative_total": number("sender-count"),
            "recipient_user_id": param("recipient-id"),
            "recipient_user_name": param("recipient-display-name"),
            "recipient_user_login": param("recipient-user-name"),
            "community_gift_id": param("community-gift-id") or None,
        },
        "community_sub_gift": {
            "id": param("community-gift-id") or "0",
            "total": number("mass-gift-count") or 0,
            "sub_tier": plan,
            "cumulative_total": number("sender-count"),
        },
        "gift_paid_upgrade": gifter,
        "prime_paid_upgrade": {"sub_tier": plan},
        "raid": {
            "user_id": param("user-id") or "0",
            "user_name": param("displayName"),
            "user_login": param("login"),
            "viewer_count": number("viewerCount") or 0,
            "profile_image_url": param("profileImageURL"),
        },
        "unraid": {},
        "pay_it_forward": {
            **gifter,
            "recipient_user_id": param("recipient-id") or None,
            "recipient_user_name": param("recipient-display-name") or None,
            "recipient_user_login": param("recipient-user-name") or None,
        },
        "announcement": {"color": param("color").lower() or "primary"},
        "bits_badge_tier": {"tier": number("threshold") or 0},
        "charity_donation": {
            "charity_name": param("charity-name"),
            "amount": {
                "value": number("donation-amount") or 0,
                "decimal_places": number("exponent") or 2,
                "currency": param("donation-currency") or "USD",
            },
        },
    }
    return details.get(kind, {})


def _chat_notification(message: Message) -> dict[str, Any] | None:
    tags = message.tags
    msg_id = tags.get("msg-id", "")
    shared = msg_id == "sharedchatnotice"
    kind = _NOTICE_TYPES.get(tags.get("source-msg-id", "") if shared else msg_id)
    if kind is None:
        return None
    text = message.params[1] if len(message.params) > 1 else ""
    login = tags.get("login", "")
    anonymous = login == "ananonymousgifter" or msg_id.startswith("anon")
    chatter = _chatter(tags, login)
    if anonymous and kind != "gift_paid_upgrade":
        chatter = {
            "chatter_user_id": None,
            "chatter_user_login": None,
            "chatter_user_name": None,
            "color": "",
            "badges": [],
        }
    notice = f"shared_chat_{kind}" if shared else kind
    event: dict[str, Any] = {
        **_broadcaster(message),
        **chatter,
        "chatter_is_anonymous": anonymous and kind != "gift_paid_upgrade",
        "system_message": tags.get("system-msg", ""),
        "message_id": tags.get("id", ""),
        "message": {"text": text, "fragments": _fragments(text, tags.get("emotes", ""))},
        "notice_type": notice,
        **{name: None for name in _ALL_NOTICES},
        **_source(tags),
    }
    if shared:
        event.update({f"shared_chat_{name}": None for name in _ALL_NOTICES})
    event[notice] = _notice_detail(kind, tags)
    return event


def _clear(message: Message) -> tuple[str, dict[str, Any]]:
    event = _broadcaster(message)
    if len(message.params) > 1:
        target = message.params[1]
        event.update(
            target_user_id=message.tags.get("target-user-id", ""),
            target_user_login=target,
            target_user_name=target,
        )
        return "channel.chat.clear_user_messages", event
    return "channel.chat.clear", event


def _message_delete(message: Message) -> dict[str, Any]:
    login = message.tags.get("login", "")
    return {
        **_broadcaster(message),
        "target_user_id": "",
        "target_user_login": login,
        "target_user_name": login,
        "message_id": message.tags.get("target-msg-id", ""),
    }


def _room_state(message: Message) -> dict[str, Any]:
    tags = message.tags

    def number(name: str, default: int) -> int:
        value = tags.get(name, "")
        return int(value) if value.lstrip("-").isdigit() else default

    followers = number("followers-only", -1)
    slow = number("slow", 0)
    return {
        **_broadcaster(message),
        "emote_mode": tags.get("emote-only") == "1",
        "follower_mode": followers >= 0,
        "follower_mode_duration_minutes": followers if followers >= 0 else None,
        "slow_mode": slow > 0,
        "slow_mode_wait_time_seconds": slow if slow > 0 else None,
        "subscriber_mode": tags.get("subs-only") == "1",
        "unique_chat_mode": tags.get("r9k") == "1",
    }


_BUILDERS: dict[str, Callable[[Message], dict[str, Any] | None]] = {
    "PRIVMSG": _chat_message,
    "USERNOTICE": _chat_notification,
    "CLEARMSG": _message_delete,
    "ROOMSTATE": _room_state,
}


def notification(message: Message) -> tuple[str, dict[str, Any]] | None:
    """The subscription type and event of the notification Twitch sends for ``message``, or
    None when there is none (a PING, a JOIN, a notice without a counterpart)."""
    if not message.params or not message.params[0].startswith("#"):
        return None
    if message.command == "CLEARCHAT":
        return _clear(message)
    build = _BUILDERS.get(message.command)
    event = build(message) if build is not None else None
    return None if event is None else (SUBSCRIPTION_TYPES[message.command], event)


def envelope(
    subscription_type: str,
    event: Mapping[str, Any],
    *,
    subscription_id: str,
    condition: Mapping[str, str],
    transport: Mapping[str, str],
    sent_ms: int | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The whole WebSocket message of a notification (metadata and payload)."""
    at = (
        dt.datetime.fromtimestamp(sent_ms / 1000, dt.UTC)
        if sent_ms is not None
        else dt.datetime.now(dt.UTC)
    )
    timestamp = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return {
        "metadata": {
            "message_id": message_id or str(uuid.uuid4()),
            "message_type": "notification",
            "message_timestamp": timestamp,
            "subscription_type": subscription_type,
            "subscription_version": "1",
        },
        "payload": {
            "subscription": {
                "id": subscription_id,
                "status": "enabled",
                "type": subscription_type,
                "version": "1",
                "cost": 0,
                "condition": dict(condition),
                "transport": dict(transport),
                "created_at": timestamp,
            },
            "event": dict(event),
        },
    }


def wire(message: Message, *, conduit_id: str = "conduit") -> dict[str, Any] | None:
    """The WebSocket message of the notification Twitch sends over a conduit for the IRC
    ``message`` (sent when its ``tmi-sent-ts`` says), or None when there is none."""
    found = notification(message)
    if found is None:
        return None
    kind, event = found
    sent = message.tags.get("tmi-sent-ts", "")
    room = event["broadcaster_user_id"]
    return envelope(
        kind,
        event,
        subscription_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{room}")),
        condition={"broadcaster_user_id": room, "user_id": "0"},
        transport={"method": "conduit", "conduit_id": conduit_id},
        sent_ms=int(sent) if sent.isdigit() else None,
    )
