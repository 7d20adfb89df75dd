"""Chat events: every Twitch chat message as a typed, serialisable Python object.

:func:`from_message` turns one parsed :class:`~tmi_cluster.irc.Message` into its events;
:func:`to_json` and :func:`from_json` give each event a stable JSON form (tagged with its class
name under ``"type"``) that round-trips exactly. The catalogue: ``docs/events.md``.
"""

from __future__ import annotations

from typing import Union

import msgspec

from tmi_cluster.events import types
from tmi_cluster.events.build import from_message
from tmi_cluster.events.emote import Emote
from tmi_cluster.events.types import (
    AnnouncementEvent,
    AnonGiftPaidUpgradeEvent,
    AnonSubGiftEvent,
    AnonSubMysteryGiftEvent,
    BitsBadgeTierEvent,
    CapEvent,
    ChannelLostEvent,
    CheerEvent,
    ClearChatEvent,
    ClearMsgEvent,
    ClusterClientRegistered,
    ClusterClientTerminated,
    ClusterEvent,
    ConnectedEvent,
    DisconnectedEvent,
    EmoteOnlyModeEvent,
    EndOfNamesEvent,
    Event,
    FollowersOnlyModeEvent,
    GiftPaidUpgradeEvent,
    GlobalUserStateEvent,
    IrcCommandEvent,
    IrcMessageEvent,
    JoinEvent,
    MessageEvent,
    ModeEvent,
    MotdEvent,
    NameReplyEvent,
    NoticeEvent,
    PartEvent,
    PeriodicTimerCalled,
    PingEvent,
    PongEvent,
    PrimePaidUpgradeEvent,
    ProcessScaled,
    R9kModeEvent,
    RaidEvent,
    ReconnectEvent,
    ResubEvent,
    RitualEvent,
    RoomStateEvent,
    SharedChatBeginEvent,
    SharedChatEndEvent,
    SharedChatEvent,
    SharedChatUpdateEvent,
    SlowModeEvent,
    SubEvent,
    SubGiftEvent,
    SubMysteryGiftEvent,
    SubsOnlyModeEvent,
    SupervisorLooped,
    UnableToLaunchProcess,
    UnknownEvent,
    UnknownUserNoticeEvent,
    UnraidEvent,
    UserEvent,
    UserNoticeEvent,
    UserStateEvent,
    ViewerMilestoneEvent,
    WelcomeEvent,
    WhisperEvent,
    WorkerProcessRestarting,
)

__all__ = [
    "ALL_EVENT_TYPES",
    "LOCAL_EVENTS",
    "RAW_LINE_EVENTS",
    "AnnouncementEvent",
    "AnonGiftPaidUpgradeEvent",
    "AnonSubGiftEvent",
    "AnonSubMysteryGiftEvent",
    "BitsBadgeTierEvent",
    "CapEvent",
    "ChannelLostEvent",
    "CheerEvent",
    "ClearChatEvent",
    "ClearMsgEvent",
    "ClusterClientRegistered",
    "ClusterClientTerminated",
    "ClusterEvent",
    "ConnectedEvent",
    "DisconnectedEvent",
    "Emote",
    "EmoteOnlyModeEvent",
    "EndOfNamesEvent",
    "Event",
    "FollowersOnlyModeEvent",
    "GiftPaidUpgradeEvent",
    "GlobalUserStateEvent",
    "IrcCommandEvent",
    "IrcMessageEvent",
    "JoinEvent",
    "MessageEvent",
    "ModeEvent",
    "MotdEvent",
    "NameReplyEvent",
    "NoticeEvent",
    "PartEvent",
    "PeriodicTimerCalled",
    "PingEvent",
    "PongEvent",
    "PrimePaidUpgradeEvent",
    "ProcessScaled",
    "R9kModeEvent",
    "RaidEvent",
    "ReconnectEvent",
    "ResubEvent",
    "RitualEvent",
    "RoomStateEvent",
    "SharedChatBeginEvent",
    "SharedChatEndEvent",
    "SharedChatEvent",
    "SharedChatUpdateEvent",
    "SlowModeEvent",
    "SubEvent",
    "SubGiftEvent",
    "SubMysteryGiftEvent",
    "SubsOnlyModeEvent",
    "SupervisorLooped",
    "UnableToLaunchProcess",
    "UnknownEvent",
    "UnknownUserNoticeEvent",
    "UnraidEvent",
    "UserEvent",
    "UserNoticeEvent",
    "UserStateEvent",
    "ViewerMilestoneEvent",
    "WelcomeEvent",
    "WhisperEvent",
    "WorkerProcessRestarting",
    "companion_of",
    "covers",
    "from_json",
    "from_message",
    "to_json",
]

#: Every concrete event type: every type of ``events.types`` but the three bases (the two
#: raw-line events are made by connections, not by :func:`from_message`).
ALL_EVENT_TYPES: tuple[type[Event], ...] = tuple(
    getattr(types, name)
    for name in types.__all__
    if name not in ("Event", "UserEvent", "ModeEvent", "ClusterEvent", "SharedChatEvent")
)
#: The raw-line events: made only for handlers that subscribe to them, never streamed.
RAW_LINE_EVENTS: tuple[type[Event], ...] = (IrcMessageEvent, IrcCommandEvent)
#: The cluster's events that stay in the process where they happen (never streamed).
LOCAL_EVENTS: tuple[type[Event], ...] = (PeriodicTimerCalled, SupervisorLooped)


def companion_of(event_type: type[Event]) -> type[Event] | None:
    """The event that every event of ``event_type`` comes with, made from the same line: a
    cheer's CheerEvent comes with its MessageEvent, a sub's SubEvent (and every other specific
    USERNOTICE event) with its UserNoticeEvent; None for the others."""
    if issubclass(event_type, CheerEvent):
        return MessageEvent
    if issubclass(event_type, UserNoticeEvent) and event_type is not UserNoticeEvent:
        return UserNoticeEvent
    return None


def covers(registered: type[Event], event_type: type[Event]) -> bool:
    """Whether a handler or a filter of class ``registered`` gets events of ``event_type``: the
    class and its subclasses, but not the companion of an event it gets already, so that each
    line reaches it once (a MessageEvent handler gets a cheer's MessageEvent, not also its
    CheerEvent; a CheerEvent handler gets the CheerEvent)."""
    if not issubclass(event_type, registered):
        return False
    companion = companion_of(event_type)
    return companion is None or not issubclass(companion, registered)


_ENCODER = msgspec.json.Encoder()
_DECODER: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Union[ALL_EVENT_TYPES])  # noqa: UP007


def to_json(event: Event) -> bytes:
    """The JSON form of an event: an object with ``"type"`` (the class name) and every field."""
    return _ENCODER.encode(event)


def from_json(data: bytes | str) -> Event:
    """The event whose JSON form is ``data``; raises ``msgspec.ValidationError`` if it is none."""
    return _DECODER.decode(data)
