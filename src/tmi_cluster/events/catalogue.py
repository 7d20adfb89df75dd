"""``docs/events.md``, generated from the event types so that it cannot drift from them.

Run ``python -m tmi_cluster.events.catalogue > docs/events.md``; a test keeps the file current.
"""

from __future__ import annotations

import inspect
from functools import cached_property
from typing import Any, get_type_hints

from tmi_cluster.events import ALL_EVENT_TYPES
from tmi_cluster.events.types import Event

__all__ = ["catalogue_markdown"]

#: Event -> (the Twitch message it comes from, the original PHP event it replaces).
SOURCES: dict[str, tuple[str, str]] = {
    "MessageEvent": ("PRIVMSG to a channel", "MessageEvent (and PrivmsgEvent)"),
    "CheerEvent": ("PRIVMSG with `bits` > 0", "CheerEvent"),
    "WhisperEvent": ("WHISPER", "(missing in the original)"),
    "UserNoticeEvent": ("USERNOTICE", "UserNoticeEvent"),
    "SubEvent": ("USERNOTICE msg-id=sub", "SubEvent"),
    "ResubEvent": ("USERNOTICE msg-id=resub", "ResubEvent"),
    "SubGiftEvent": ("USERNOTICE msg-id=subgift", "SubGiftEvent"),
    "AnonSubGiftEvent": ("USERNOTICE msg-id=anonsubgift", "AnonSubGiftEvent"),
    "SubMysteryGiftEvent": ("USERNOTICE msg-id=submysterygift", "SubMysteryGiftEvent"),
    "AnonSubMysteryGiftEvent": (
        "USERNOTICE msg-id=anonsubmysterygift",
        "AnonSubMysteryGiftEvent",
    ),
    "GiftPaidUpgradeEvent": ("USERNOTICE msg-id=giftpaidupgrade", "GiftPaidUpgradeEvent"),
    "AnonGiftPaidUpgradeEvent": (
        "USERNOTICE msg-id=anongiftpaidupgrade",
        "AnonGiftPaidUpgradeEvent",
    ),
    "PrimePaidUpgradeEvent": ("USERNOTICE msg-id=primepaidupgrade", "PrimePaidUpgradeEvent"),
    "RaidEvent": ("USERNOTICE msg-id=raid", "RaidEvent"),
    "UnraidEvent": ("USERNOTICE msg-id=unraid", "(new)"),
    "RitualEvent": ("USERNOTICE msg-id=ritual", "RitualEvent"),
    "AnnouncementEvent": ("USERNOTICE msg-id=announcement", "(new)"),
    "BitsBadgeTierEvent": ("USERNOTICE msg-id=bitsbadgetier", "(new)"),
    "ViewerMilestoneEvent": ("USERNOTICE msg-id=viewermilestone", "(new)"),
    "UnknownUserNoticeEvent": ("USERNOTICE with any other msg-id", "(new)"),
    "ClearChatEvent": ("CLEARCHAT", "(missing in the original)"),
    "ClearMsgEvent": ("CLEARMSG", "(missing in the original)"),
    "RoomStateEvent": ("ROOMSTATE", "RoomStateEvent"),
    "EmoteOnlyModeEvent": ("ROOMSTATE with `emote-only`", "EmoteOnlyModeEvent"),
    "FollowersOnlyModeEvent": ("ROOMSTATE with `followers-only`", "FollowersOnlyModeEvent"),
    "R9kModeEvent": ("ROOMSTATE with `r9k`", "R9kModeEvent"),
    "SlowModeEvent": ("ROOMSTATE with `slow`", "SlowModeEvent"),
    "SubsOnlyModeEvent": ("ROOMSTATE with `subs-only`", "SubsOnlyModeEvent"),
    "SharedChatBeginEvent": ("EventSub `channel.shared_chat.begin` (no IRC message)", "(new)"),
    "SharedChatUpdateEvent": ("EventSub `channel.shared_chat.update` (no IRC message)", "(new)"),
    "SharedChatEndEvent": ("EventSub `channel.shared_chat.end` (no IRC message)", "(new)"),
    "NoticeEvent": ("NOTICE", "NoticeEvent"),
    "UserStateEvent": ("USERSTATE", "(missing in the original)"),
    "GlobalUserStateEvent": ("GLOBALUSERSTATE", "(missing in the original)"),
    "JoinEvent": ("JOIN", "JoinEvent"),
    "PartEvent": ("PART", "PartEvent"),
    "ReconnectEvent": ("RECONNECT", "(missing in the original)"),
    "PingEvent": ("PING", "PingEvent"),
    "PongEvent": ("PONG", "(new)"),
    "WelcomeEvent": ("001, 002, 003, 004", "WelcomeEvent"),
    "MotdEvent": ("375, 372, 376", "MotdEvent"),
    "NameReplyEvent": ("353", "NameReplyEvent"),
    "EndOfNamesEvent": ("366", "(new)"),
    "CapEvent": ("CAP ACK / NAK / LS", "(new)"),
    "UnknownEvent": ("any other line", "(new: the original dropped unknown lines)"),
    "IrcMessageEvent": ("every line received (for handlers that subscribe)", "IrcMessageEvent"),
    "IrcCommandEvent": ("every line sent (for handlers that subscribe)", "IrcCommandEvent"),
    "ConnectedEvent": ("a connection's confirmed login (001)", "(new)"),
    "DisconnectedEvent": ("a lost or closed connection", "(missing in the original)"),
    "ChannelLostEvent": (
        "a held channel lost: refused or timed-out rejoin, server PART, a connection that gave up",
        "(missing in the original: lost channels went unnoticed)",
    ),
    "ClusterClientRegistered": (
        "a worker process runs (in it, and streamed)",
        "ClusterClientRegistered",
    ),
    "ClusterClientTerminated": (
        "a worker process stops (in it, and streamed)",
        "ClusterClientTerminated",
    ),
    "PeriodicTimerCalled": (
        "every process.periodic_timer s in each worker (not streamed)",
        "PeriodicTimerCalled",
    ),
    "SupervisorLooped": (
        "a supervisor's periodic chores (in it; not streamed)",
        "SupervisorLooped",
    ),
    "WorkerProcessRestarting": (
        "a worker ended and is started again (in its supervisor, and streamed)",
        "WorkerProcessRestarting",
    ),
    "UnableToLaunchProcess": (
        "a worker ended before it was ready (in its supervisor, and streamed)",
        "UnableToLaunchProcess",
    ),
    "ProcessScaled": (
        "a supervisor's number of workers changed (in it, and streamed)",
        "ProcessScaled",
    ),
}

_INTRO = """# Chat events

<!-- Generated from src/tmi_cluster/events by
`python -m tmi_cluster.events.catalogue > docs/events.md`; a test keeps it current. -->

`tmi_cluster.events.from_message(message)` turns one parsed line into its events (at least one:
no line is ever dropped; anything unforeseen becomes `UnknownEvent`). Events are frozen msgspec
Structs. *Stored* fields are what the line says beyond its tags; *properties* are read from the
tags on first use (and cached where it costs), which keeps events cheap to create.
`to_json(event)` gives `{"type": "<EventName>", ...stored fields}` and `from_json` reads it back
exactly; properties are recomputed from `tags`.

Every event has `channel` (login, lower case, without `#`, or null), `tags` (unescaped) and `raw`
(the line), and these properties:

- `dedupe_key`: the event type plus the message id (`MessageEvent:<id>`), so a cheer's
  MessageEvent and CheerEvent never collide; for CLEARCHAT the room, target and timestamp; for
  CLEARMSG the deleted message's id; null for events that carry no id.
- `shared_chat_key`: like `dedupe_key`, but every Shared Chat copy of one message (`source-id`)
  has the same key: use it to deliver a shared message once for the whole session.

Malformed tag values degrade to a documented default: a bad number gives 0 (or null where
optional), a bad `tmi-sent-ts` gives `sent_at` null, a badge without `/` and an emote range
outside the text are left out.

Twitch's EventSub notifications of chat (`channel.chat.message`, `channel.chat.notification`,
`channel.chat.clear`, `channel.chat.clear_user_messages`, `channel.chat.message_delete`,
`channel.chat_settings.update`) become the same events, through the IRC message Twitch sends
for each: same types, same tags, same properties, the same
`dedupe_key` (the message's id), so a handler cannot tell the route. What EventSub does not
say, the events do not either: `is_first_message` only for Twitch's first-message intros,
`is_returning_chatter` false, `is_action` false, a clear of a user's messages is a `ban` (no
duration), a deleted message has no text.

## Index

| event | Twitch message | original (PHP) event |
|---|---|---|
"""

_OBSOLETE = """
## Left out on purpose

- Hosting (`HOSTTARGET`, `HostingEvent`, ...) and the mods and VIPs lists (`NOTICE room_mods`):
  Twitch no longer sends them (hosting ended in 2022, `/mods` and `/vips` in 2023). Should a
  line of theirs arrive, it is an `UnknownEvent` or a `NoticeEvent`, never dropped.
- `KickEvent`: Twitch never sends KICK.
- The original's cluster events (`ClusterClientRegistered`, `SupervisorLooped`, ...) are not
  chat events; they arrive with the supervisor.
"""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "").replace("tmi_cluster.events.emote.", "")


def _members(cls: type[Event]) -> tuple[list[str], list[str]]:
    hints = get_type_hints(cls)
    own_fields = [
        f"`{name}`: {_type_name(hints[name])}"
        for name in cls.__struct_fields__
        if name not in ("channel", "tags", "raw")
    ]
    properties = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or name in ("dedupe_key", "shared_chat_key"):
            continue
        if isinstance(member, property | cached_property):
            function = member.fget if isinstance(member, property) else member.func
            returns = get_type_hints(function).get("return")
            doc = (inspect.getdoc(member) or "").splitlines()[0]
            properties.append(f"`{name}`: {_type_name(returns)}: {doc}")
    return own_fields, properties


def catalogue_markdown() -> str:
    """The whole of ``docs/events.md``."""
    out = [_INTRO.rstrip("\n")]
    for cls in ALL_EVENT_TYPES:
        source, original = SOURCES[cls.__name__]
        out.append(f"| [`{cls.__name__}`](#{cls.__name__.lower()}) | {source} | {original} |")
    for cls in ALL_EVENT_TYPES:
        fields, properties = _members(cls)
        source, original = SOURCES[cls.__name__]
        doc = " ".join((inspect.getdoc(cls) or "").split())
        parent = next(c.__name__ for c in cls.__mro__[1:] if not c.__name__.startswith("_"))
        out += ["", f"## {cls.__name__}", "", doc, "", f"Base: `{parent}`.", ""]
        out.append(f"From: {source}. Replaces: {original}.")
        if fields:
            out += ["", "Stored: " + "; ".join(fields) + "."]
        if properties:
            out += ["", "Properties:", ""] + [f"- {line}" for line in properties]
    out.append(_OBSOLETE.rstrip("\n"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(catalogue_markdown(), end="")
