"""Messages to events: :func:`from_message`, an explicit command -> builder table.

Contract: :func:`from_message` returns at least one event for every message and never raises.
Malformed tag values degrade to documented defaults (see :mod:`tmi_cluster.events.values`).
Should a builder fail on a line nobody foresaw, the line becomes an :class:`UnknownEvent`, the
failure is counted in :data:`BUILDER_FAILURES` under the line's command and logged (with its
traceback the first time for each command, then at every power of two): a line is never lost
and the connection reading it never stops.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from tmi_cluster.events import values
from tmi_cluster.events.types import (
    AnnouncementEvent,
    AnonGiftPaidUpgradeEvent,
    AnonSubGiftEvent,
    AnonSubMysteryGiftEvent,
    BitsBadgeTierEvent,
    CapEvent,
    CheerEvent,
    ClearChatEvent,
    ClearMsgEvent,
    EmoteOnlyModeEvent,
    EndOfNamesEvent,
    Event,
    FollowersOnlyModeEvent,
    GiftPaidUpgradeEvent,
    GlobalUserStateEvent,
    JoinEvent,
    MessageEvent,
    MotdEvent,
    NameReplyEvent,
    NoticeEvent,
    PartEvent,
    PingEvent,
    PongEvent,
    PrimePaidUpgradeEvent,
    R9kModeEvent,
    RaidEvent,
    ReconnectEvent,
    ResubEvent,
    RitualEvent,
    RoomStateEvent,
    SlowModeEvent,
    SubEvent,
    SubGiftEvent,
    SubMysteryGiftEvent,
    SubsOnlyModeEvent,
    UnknownEvent,
    UnknownUserNoticeEvent,
    UnraidEvent,
    UserNoticeEvent,
    UserStateEvent,
    ViewerMilestoneEvent,
    WelcomeEvent,
    WhisperEvent,
)
from tmi_cluster.irc.message import Message

__all__ = ["BUILDERS", "from_message"]

_ACTION_PREFIX = "\x01ACTION "
_Builder = Callable[[Message], list[Event]]


def _channel(message: Message) -> str | None:
    params = message.params
    if params and params[0][:1] == "#":
        return params[0][1:].lower()
    return None


# ---------------------------------------------------------------------------------------------
# builders


def _privmsg(message: Message) -> list[Event]:
    params = message.params
    if len(params) < 2 or params[0][:1] != "#":
        return _unknown(message)
    tags = message.tags
    text = params[1]
    is_action = text[:8] == _ACTION_PREFIX and text[-1:] == "\x01"
    if is_action:
        text = text[8:-1]
    bits = values.count(tags, "bits") if "bits" in tags else 0
    event = MessageEvent(
        channel=params[0][1:].lower(),
        tags=tags,
        raw=message.raw,
        user=message.nick,
        text=text,
        is_action=is_action,
        bits=bits,
    )
    if bits > 0:
        cheer = CheerEvent(
            channel=event.channel,
            tags=tags,
            raw=message.raw,
            user=event.user,
            text=text,
            is_action=is_action,
            bits=bits,
        )
        return [event, cheer]
    return [event]


def _whisper(message: Message) -> list[Event]:
    params = message.params
    return [
        WhisperEvent(
            tags=message.tags,
            raw=message.raw,
            user=message.nick,
            recipient=params[0] if params else "",
            text=params[1] if len(params) > 1 else "",
        )
    ]


_USERNOTICES: dict[str, type[UserNoticeEvent]] = {
    "sub": SubEvent,
    "resub": ResubEvent,
    "subgift": SubGiftEvent,
    "anonsubgift": AnonSubGiftEvent,
    "submysterygift": SubMysteryGiftEvent,
    "anonsubmysterygift": AnonSubMysteryGiftEvent,
    "giftpaidupgrade": GiftPaidUpgradeEvent,
    "anongiftpaidupgrade": AnonGiftPaidUpgradeEvent,
    "primepaidupgrade": PrimePaidUpgradeEvent,
    "raid": RaidEvent,
    "unraid": UnraidEvent,
    "ritual": RitualEvent,
    "announcement": AnnouncementEvent,
    "bitsbadgetier": BitsBadgeTierEvent,
    "viewermilestone": ViewerMilestoneEvent,
}


def _usernotice(message: Message) -> list[Event]:
    tags = message.tags
    params = message.params
    msg_id = tags.get("msg-id", "")
    fields: dict[str, Any] = {
        "channel": _channel(message),
        "tags": tags,
        "raw": message.raw,
        "user": (tags.get("login") or "").lower() or None,
        "msg_id": msg_id,
        "text": params[1] if len(params) > 1 else "",
    }
    # A Shared Chat copy says what it is a copy of in source-msg-id.
    kind = tags.get("source-msg-id", msg_id) if msg_id == "sharedchatnotice" else msg_id
    specific = _USERNOTICES.get(kind, UnknownUserNoticeEvent)
    return [UserNoticeEvent(**fields), specific(**fields)]


def _clearchat(message: Message) -> list[Event]:
    tags = message.tags
    params = message.params
    target = params[1].lower() if len(params) > 1 else None
    duration = values.number(tags, "ban-duration")
    if target is None:
        kind = "clear"
    elif "ban-duration" in tags:
        kind = "timeout"
    else:
        kind = "ban"
    return [
        ClearChatEvent(
            channel=_channel(message),
            tags=tags,
            raw=message.raw,
            kind=kind,
            target_user=target,
            target_user_id=tags.get("target-user-id"),
            duration=duration,
            room_id=tags.get("room-id"),
        )
    ]


def _clearmsg(message: Message) -> list[Event]:
    tags = message.tags
    params = message.params
    return [
        ClearMsgEvent(
            channel=_channel(message),
            tags=tags,
            raw=message.raw,
            user=(tags.get("login") or "").lower() or None,
            target_message_id=tags.get("target-msg-id", ""),
            text=params[1] if len(params) > 1 else "",
            room_id=tags.get("room-id"),
        )
    ]


def _roomstate(message: Message) -> list[Event]:
    tags = message.tags
    channel = _channel(message)
    state = RoomStateEvent(
        channel=channel,
        tags=tags,
        raw=message.raw,
        room_id=tags.get("room-id"),
        emote_only=values.optional_flag(tags, "emote-only"),
        followers_only=values.number(tags, "followers-only"),
        r9k=values.optional_flag(tags, "r9k"),
        slow=values.number(tags, "slow"),
        subs_only=values.optional_flag(tags, "subs-only"),
    )
    events: list[Event] = [state]
    common: dict[str, Any] = {"channel": channel, "tags": tags, "raw": message.raw}
    if state.emote_only is not None:
        events.append(EmoteOnlyModeEvent(**common, enabled=state.emote_only))
    if state.followers_only is not None:
        minutes = state.followers_only
        events.append(
            FollowersOnlyModeEvent(**common, enabled=minutes >= 0, minutes=max(minutes, 0))
        )
    if state.r9k is not None:
        events.append(R9kModeEvent(**common, enabled=state.r9k))
    if state.slow is not None:
        events.append(SlowModeEvent(**common, enabled=state.slow > 0, seconds=max(state.slow, 0)))
    if state.subs_only is not None:
        events.append(SubsOnlyModeEvent(**common, enabled=state.subs_only))
    return events


def _notice(message: Message) -> list[Event]:
    params = message.params
    return [
        NoticeEvent(
            channel=_channel(message),
            tags=message.tags,
            raw=message.raw,
            msg_id=message.tags.get("msg-id", ""),
            text=params[-1] if len(params) > 1 else "",
        )
    ]


def _userstate(message: Message) -> list[Event]:
    return [UserStateEvent(channel=_channel(message), tags=message.tags, raw=message.raw)]


def _globaluserstate(message: Message) -> list[Event]:
    return [GlobalUserStateEvent(tags=message.tags, raw=message.raw)]


def _membership(cls: type[JoinEvent] | type[PartEvent]) -> _Builder:
    def build(message: Message) -> list[Event]:
        channel = _channel(message)
        if channel is None:
            return _unknown(message)
        return [cls(channel=channel, tags=message.tags, raw=message.raw, user=message.nick or "")]

    return build


def _text_event(cls: type[PingEvent] | type[PongEvent]) -> _Builder:
    def build(message: Message) -> list[Event]:
        text = message.params[-1] if message.params else ""
        return [cls(tags=message.tags, raw=message.raw, text=text)]

    return build


def _reconnect(message: Message) -> list[Event]:
    return [ReconnectEvent(tags=message.tags, raw=message.raw)]


def _welcome(message: Message) -> list[Event]:
    params = message.params
    return [
        WelcomeEvent(
            tags=message.tags,
            raw=message.raw,
            numeric=message.command,
            user=params[0] if params else "",
            text=params[-1] if len(params) > 1 else "",
        )
    ]


def _motd(message: Message) -> list[Event]:
    params = message.params
    text = params[-1] if len(params) > 1 else ""
    return [MotdEvent(tags=message.tags, raw=message.raw, numeric=message.command, text=text)]


def _names(message: Message) -> list[Event]:
    params = message.params
    # 353 <me> = #channel :name name ...
    channel = next((p[1:].lower() for p in params[1:-1] if p[:1] == "#"), None)
    names = params[-1].split() if len(params) > 1 else []
    return [NameReplyEvent(channel=channel, tags=message.tags, raw=message.raw, names=names)]


def _end_of_names(message: Message) -> list[Event]:
    params = message.params
    channel = params[1][1:].lower() if len(params) > 1 and params[1][:1] == "#" else None
    return [EndOfNamesEvent(channel=channel, tags=message.tags, raw=message.raw)]


def _cap(message: Message) -> list[Event]:
    params = message.params
    return [
        CapEvent(
            tags=message.tags,
            raw=message.raw,
            subcommand=params[1].upper() if len(params) > 1 else "",
            capabilities=params[-1].split() if len(params) > 2 else [],
        )
    ]


def _unknown(message: Message) -> list[Event]:
    return [
        UnknownEvent(
            channel=_channel(message),
            tags=message.tags,
            raw=message.raw,
            command=message.command,
            params=message.params,
            source=message.source,
        )
    ]


#: The command -> builder table; commands not listed become UnknownEvent.
BUILDERS: dict[str, _Builder] = {
    "PRIVMSG": _privmsg,
    "WHISPER": _whisper,
    "USERNOTICE": _usernotice,
    "CLEARCHAT": _clearchat,
    "CLEARMSG": _clearmsg,
    "ROOMSTATE": _roomstate,
    "NOTICE": _notice,
    "USERSTATE": _userstate,
    "GLOBALUSERSTATE": _globaluserstate,
    "JOIN": _membership(JoinEvent),
    "PART": _membership(PartEvent),
    "PING": _text_event(PingEvent),
    "PONG": _text_event(PongEvent),
    "RECONNECT": _reconnect,
    "001": _welcome,
    "002": _welcome,
    "003": _welcome,
    "004": _welcome,
    "372": _motd,
    "375": _motd,
    "376": _motd,
    "353": _names,
    "366": _end_of_names,
    "CAP": _cap,
}


log = logging.getLogger(__name__)

#: Lines a builder failed on (each kept as an UnknownEvent), by IRC command, in this process.
BUILDER_FAILURES: Counter[str] = Counter()


def from_message(message: Message) -> list[Event]:
    """The events of one message (at least one). Never raises; see the module contract."""
    builder = BUILDERS.get(message.command) or BUILDERS.get(message.command.upper(), _unknown)
    try:
        return builder(message)
    except Exception:  # a value no builder expected: the line is kept as an UnknownEvent
        BUILDER_FAILURES[message.command] += 1
        failures = BUILDER_FAILURES[message.command]
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8, ...: visible, never a flood
            log.warning(
                "the %s builder failed on a line (kept as an UnknownEvent; %d such "
                "lines so far): %.300s",
                message.command,
                failures,
                message.raw,
                exc_info=failures == 1,
            )
        return _unknown(message)
