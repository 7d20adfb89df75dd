"""Every chat event type: frozen msgspec Structs, cheap to create and to serialise.

Each event is tagged by its class name in its JSON form (``{"type": "MessageEvent", ...}``), so
:func:`~tmi_cluster.events.to_json` and :func:`~tmi_cluster.events.from_json` round-trip any
event exactly. Field by field documentation, with the Twitch message each event comes from and
the original PHP event it replaces: ``docs/events.md``.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property

import msgspec

from tmi_cluster.events import values
from tmi_cluster.events.emote import Emote

__all__ = [
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
]


class Event(msgspec.Struct, frozen=True, kw_only=True, dict=True, tag_field="type", tag=True):
    """Base of every event: the channel (login, lower case, no ``#``), the tags, the raw line.

    User events store only what their tags do not say (channel, user, text, ...); everything in
    the tags is a property read from them (computed once where it costs, then cached), so events
    are cheap to create and their JSON form is just the stored fields. The rarer events (room
    state, clears, notices) store their decoded values.
    """

    channel: str | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    raw: str = ""

    @property
    def dedupe_key(self) -> str | None:
        """The event type plus the message id; None for events that carry no id.

        A cheer's MessageEvent and CheerEvent share the id but never the key.
        """
        message_id = self.tags.get("id")
        return f"{type(self).__name__}:{message_id}" if message_id else None

    @property
    def shared_chat_key(self) -> str | None:
        """Like :attr:`dedupe_key`, but every Shared Chat copy of one message has the same key.

        The copies carry the original's id in ``source-id``; use this key to deliver the message
        once for the whole shared session instead of once per channel.
        """
        source_id = self.tags.get("source-id")
        if source_id:
            return f"{type(self).__name__}:{source_id}"
        return self.dedupe_key


class UserEvent(Event, frozen=True, kw_only=True):
    """An event a user caused: who (``user``, the login), where, and when Twitch sent it."""

    user: str | None = None

    @property
    def display_name(self) -> str | None:
        """The user's display name (tag ``display-name``)."""
        return self.tags.get("display-name")

    @property
    def user_id(self) -> str | None:
        """The user's id (tag ``user-id``)."""
        return self.tags.get("user-id")

    @property
    def room_id(self) -> str | None:
        """The channel's id (tag ``room-id``)."""
        return self.tags.get("room-id")

    @property
    def message_id(self) -> str | None:
        """The message's id (tag ``id``)."""
        return self.tags.get("id")

    @cached_property
    def sent_at(self) -> datetime | None:
        """When Twitch sent it (tag ``tmi-sent-ts``), aware UTC; None when absent or malformed."""
        return values.sent_at(self.tags)

    @property
    def color(self) -> str | None:
        """The user's name color (tag ``color``), None when unset."""
        return self.tags.get("color") or None

    @cached_property
    def badges(self) -> dict[str, str]:
        """Badge name -> version (tag ``badges``)."""
        return values.badges(self.tags, "badges")

    @cached_property
    def badge_info(self) -> dict[str, str]:
        """Badge name -> detail, such as subscribed months (tag ``badge-info``)."""
        return values.badges(self.tags, "badge-info")

    @property
    def is_mod(self) -> bool:
        """The user is a moderator of the channel (tag ``mod``)."""
        return self.tags.get("mod") == "1"

    @property
    def is_subscriber(self) -> bool:
        """The user subscribes to the channel (tag ``subscriber``)."""
        return self.tags.get("subscriber") == "1"

    @property
    def source_room_id(self) -> str | None:
        """Shared Chat: the id of the channel the message was first sent in."""
        return self.tags.get("source-room-id")

    @property
    def source_message_id(self) -> str | None:
        """Shared Chat: the id of the original message (tag ``source-id``)."""
        return self.tags.get("source-id")


class MessageEvent(UserEvent, frozen=True, kw_only=True):
    """A chat message in a channel (PRIVMSG). ``text`` is without the ``/me`` wrapper."""

    text: str = ""
    is_action: bool = False
    bits: int = 0

    @cached_property
    def emotes(self) -> list[Emote]:
        """The emotes in ``text`` with their code-point ranges (tag ``emotes``), by position."""
        return values.emotes(self.tags.get("emotes"), self.text)

    @property
    def is_first_message(self) -> bool:
        """The user's first message in this channel (tag ``first-msg``)."""
        return self.tags.get("first-msg") == "1"

    @property
    def is_returning_chatter(self) -> bool:
        """Tag ``returning-chatter``."""
        return self.tags.get("returning-chatter") == "1"

    @property
    def reply_parent_message_id(self) -> str | None:
        """The id of the message this one replies to (tag ``reply-parent-msg-id``)."""
        return self.tags.get("reply-parent-msg-id")

    @property
    def reply_parent_user(self) -> str | None:
        """The login of the author of the message replied to."""
        return self.tags.get("reply-parent-user-login")


class CheerEvent(MessageEvent, frozen=True, kw_only=True):
    """A chat message with bits (emitted besides its MessageEvent, with the same fields)."""


class WhisperEvent(UserEvent, frozen=True, kw_only=True):
    """A private message to the bot (WHISPER)."""

    recipient: str = ""
    text: str = ""

    @property
    def message_id(self) -> str | None:
        """The whisper's id (tag ``message-id``)."""
        return self.tags.get("message-id")

    @property
    def thread_id(self) -> str | None:
        """The conversation's id (tag ``thread-id``)."""
        return self.tags.get("thread-id")

    @property
    def dedupe_key(self) -> str | None:
        """``WhisperEvent:`` plus the whisper's ``message-id``."""
        message_id = self.message_id
        return f"WhisperEvent:{message_id}" if message_id else None


class UserNoticeEvent(UserEvent, frozen=True, kw_only=True):
    """A USERNOTICE (subs, gifts, raids, announcements, ...); one per USERNOTICE line.

    A specific event for the ``msg_id`` (SubEvent, RaidEvent, ..., or UnknownUserNoticeEvent)
    is emitted besides it, with the same stored fields and typed properties of its own.
    """

    msg_id: str = ""
    text: str = ""

    @property
    def system_message(self) -> str:
        """Twitch's text for the notice (tag ``system-msg``)."""
        return self.tags.get("system-msg", "")

    @cached_property
    def msg_params(self) -> dict[str, str]:
        """Every ``msg-param-*`` tag, without the prefix."""
        return {k[10:]: v for k, v in self.tags.items() if k.startswith("msg-param-")}

    def _param(self, name: str) -> str:
        return self.tags.get("msg-param-" + name, "")

    def _count(self, name: str) -> int:
        return values.count(self.tags, "msg-param-" + name)


class SubEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A first subscription (msg-id ``sub``)."""

    @property
    def plan(self) -> str:
        """``Prime``, ``1000``, ``2000`` or ``3000``."""
        return self._param("sub-plan")

    @property
    def plan_name(self) -> str:
        """The plan's display name."""
        return self._param("sub-plan-name")

    @cached_property
    def cumulative_months(self) -> int:
        """Months subscribed in all."""
        return self._count("cumulative-months")

    @cached_property
    def streak_months(self) -> int:
        """Months in a row, when the user shares it; else 0."""
        return self._count("streak-months")

    @cached_property
    def multimonth_duration(self) -> int:
        """Months paid in advance."""
        return self._count("multimonth-duration")


class ResubEvent(SubEvent, frozen=True, kw_only=True):
    """A renewed subscription (msg-id ``resub``)."""


class SubGiftEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A gifted subscription (msg-id ``subgift``)."""

    @property
    def plan(self) -> str:
        """The gifted plan."""
        return self._param("sub-plan")

    @property
    def plan_name(self) -> str:
        """The plan's display name."""
        return self._param("sub-plan-name")

    @cached_property
    def months(self) -> int:
        """The recipient's months subscribed."""
        return self._count("months")

    @cached_property
    def gift_months(self) -> int:
        """Months gifted."""
        return self._count("gift-months")

    @property
    def recipient(self) -> str:
        """The recipient's login."""
        return self._param("recipient-user-name").lower()

    @property
    def recipient_display_name(self) -> str:
        """The recipient's display name."""
        return self._param("recipient-display-name")

    @property
    def recipient_id(self) -> str:
        """The recipient's user id."""
        return self._param("recipient-id")

    @cached_property
    def sender_count(self) -> int:
        """Subscriptions the gifter has gifted in the channel."""
        return self._count("sender-count")


class AnonSubGiftEvent(SubGiftEvent, frozen=True, kw_only=True):
    """A subscription gifted anonymously (msg-id ``anonsubgift``)."""


class SubMysteryGiftEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """Several subscriptions gifted to the community (msg-id ``submysterygift``)."""

    @property
    def plan(self) -> str:
        """The gifted plan."""
        return self._param("sub-plan")

    @cached_property
    def gift_count(self) -> int:
        """Subscriptions gifted at once."""
        return self._count("mass-gift-count")

    @cached_property
    def sender_count(self) -> int:
        """Subscriptions the gifter has gifted in the channel."""
        return self._count("sender-count")


class AnonSubMysteryGiftEvent(SubMysteryGiftEvent, frozen=True, kw_only=True):
    """Community gifts from an anonymous gifter (msg-id ``anonsubmysterygift``)."""


class _Promo(UserNoticeEvent, frozen=True, kw_only=True):
    @cached_property
    def promo_gift_total(self) -> int:
        """Subscriptions gifted during the promotion."""
        return self._count("promo-gift-total")

    @property
    def promo_name(self) -> str:
        """The promotion's name."""
        return self._param("promo-name")


class GiftPaidUpgradeEvent(_Promo, frozen=True, kw_only=True):
    """A gifted subscription continued as paid (msg-id ``giftpaidupgrade``)."""

    @property
    def sender(self) -> str:
        """The original gifter's login."""
        return self._param("sender-login").lower()

    @property
    def sender_display_name(self) -> str:
        """The original gifter's display name."""
        return self._param("sender-name")


class AnonGiftPaidUpgradeEvent(_Promo, frozen=True, kw_only=True):
    """An anonymously gifted subscription continued as paid (msg-id ``anongiftpaidupgrade``)."""


class PrimePaidUpgradeEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A Prime subscription converted to a paid one (msg-id ``primepaidupgrade``)."""

    @property
    def plan(self) -> str:
        """The new plan."""
        return self._param("sub-plan")


class RaidEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """An incoming raid (msg-id ``raid``)."""

    @property
    def raider(self) -> str:
        """The raiding channel's login."""
        return self._param("login").lower()

    @property
    def raider_display_name(self) -> str:
        """The raiding channel's display name."""
        return self._param("displayName")

    @cached_property
    def viewer_count(self) -> int:
        """Viewers in the raid."""
        return self._count("viewerCount")


class UnraidEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A raid called off (msg-id ``unraid``)."""


class RitualEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A ritual, such as a new chatter's greeting (msg-id ``ritual``)."""

    @property
    def ritual_name(self) -> str:
        """The ritual, such as ``new_chatter``."""
        return self._param("ritual-name")


class AnnouncementEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A moderator's announcement (msg-id ``announcement``)."""

    @property
    def announcement_color(self) -> str:
        """``PRIMARY``, ``BLUE``, ``GREEN``, ``ORANGE`` or ``PURPLE``."""
        return self._param("color")


class BitsBadgeTierEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A user reached a new bits badge tier (msg-id ``bitsbadgetier``)."""

    @cached_property
    def threshold(self) -> int:
        """The tier reached, in bits."""
        return self._count("threshold")


class ViewerMilestoneEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A viewer milestone such as a watch streak (msg-id ``viewermilestone``)."""

    @property
    def category(self) -> str:
        """The milestone's kind, such as ``watch-streak``."""
        return self._param("category")

    @cached_property
    def value(self) -> int:
        """The milestone's value, such as streams in a row."""
        return self._count("value")

    @cached_property
    def reward(self) -> int:
        """Channel points rewarded."""
        return self._count("copoReward")


class UnknownUserNoticeEvent(UserNoticeEvent, frozen=True, kw_only=True):
    """A USERNOTICE whose msg-id this version does not know; see ``msg_id`` and ``msg_params``."""


class ClearChatEvent(Event, frozen=True, kw_only=True):
    """Messages cleared (CLEARCHAT): ``kind`` is ``ban``, ``timeout`` (with ``duration`` in
    seconds) or ``clear`` (the whole chat)."""

    kind: str = "clear"
    target_user: str | None = None
    target_user_id: str | None = None
    duration: int | None = None
    room_id: str | None = None

    @cached_property
    def sent_at(self) -> datetime | None:
        """When Twitch sent it (tag ``tmi-sent-ts``), aware UTC; None when absent or malformed."""
        return values.sent_at(self.tags)

    @property
    def dedupe_key(self) -> str | None:
        """CLEARCHAT has no id: its room, target and timestamp identify it on every connection."""
        stamp = self.tags.get("tmi-sent-ts")
        if not stamp:
            return None
        return f"ClearChatEvent:{self.room_id}:{self.target_user_id or ''}:{stamp}"


class ClearMsgEvent(Event, frozen=True, kw_only=True):
    """One message deleted (CLEARMSG)."""

    user: str | None = None
    target_message_id: str = ""
    text: str = ""
    room_id: str | None = None

    @cached_property
    def sent_at(self) -> datetime | None:
        """When Twitch sent it (tag ``tmi-sent-ts``), aware UTC; None when absent or malformed."""
        return values.sent_at(self.tags)

    @property
    def dedupe_key(self) -> str | None:
        """The deleted message's id identifies the deletion."""
        return f"ClearMsgEvent:{self.target_message_id}" if self.target_message_id else None


class RoomStateEvent(Event, frozen=True, kw_only=True):
    """A channel's chat settings (ROOMSTATE); a field is None when its tag was absent.

    ``followers_only`` is in minutes (-1: off), ``slow`` in seconds (0: off).
    """

    room_id: str | None = None
    emote_only: bool | None = None
    followers_only: int | None = None
    r9k: bool | None = None
    slow: int | None = None
    subs_only: bool | None = None


class SharedChatEvent(Event, frozen=True, kw_only=True):
    """Base of the Shared Chat session events of a channel (EventSub's
    ``channel.shared_chat.*``: IRC has no such message, so they come through the EventSub route
    only). ``channel`` is the channel that was told; ``host_id`` the session's host broadcaster;
    ``participants`` the broadcasters in the session (their user ids) and ``participant_logins``
    their logins, in the same order. Its ``dedupe_key`` is the notification's id (a retry on
    another shard is delivered once)."""

    session_id: str = ""
    host_id: str = ""
    participants: list[str] = msgspec.field(default_factory=list)
    participant_logins: list[str] = msgspec.field(default_factory=list)

    @cached_property
    def sent_at(self) -> datetime | None:
        """When Twitch sent the notification, aware UTC; None when it did not say."""
        return values.sent_at(self.tags)


class SharedChatBeginEvent(SharedChatEvent, frozen=True, kw_only=True):
    """The channel joined a Shared Chat session (``channel.shared_chat.begin``)."""


class SharedChatUpdateEvent(SharedChatEvent, frozen=True, kw_only=True):
    """A channel joined or left the channel's Shared Chat session
    (``channel.shared_chat.update``)."""


class SharedChatEndEvent(SharedChatEvent, frozen=True, kw_only=True):
    """The channel's Shared Chat session ended, or the channel left it
    (``channel.shared_chat.end``; ``participants`` is empty)."""


class ModeEvent(Event, frozen=True, kw_only=True):
    """Base of the room mode events: one per mode tag present in a ROOMSTATE."""

    enabled: bool = False


class EmoteOnlyModeEvent(ModeEvent, frozen=True, kw_only=True):
    """Emote-only mode changed or reported."""


class FollowersOnlyModeEvent(ModeEvent, frozen=True, kw_only=True):
    """Followers-only mode, with the minutes a user must have followed."""

    minutes: int = 0


class R9kModeEvent(ModeEvent, frozen=True, kw_only=True):
    """Unique-chat (r9k) mode changed or reported."""


class SlowModeEvent(ModeEvent, frozen=True, kw_only=True):
    """Slow mode, with the seconds between a user's messages."""

    seconds: int = 0


class SubsOnlyModeEvent(ModeEvent, frozen=True, kw_only=True):
    """Subscribers-only mode changed or reported."""


class NoticeEvent(Event, frozen=True, kw_only=True):
    """A NOTICE from Twitch: ``msg_id`` (such as ``msg_channel_suspended``) and its text."""

    msg_id: str = ""
    text: str = ""


class _BotState:
    """Properties of the bot's own state, read from the tags of (GLOBAL)USERSTATE."""

    __slots__ = ()
    tags: dict[str, str]

    @property
    def display_name(self) -> str | None:
        """The bot's display name."""
        return self.tags.get("display-name")

    @property
    def color(self) -> str | None:
        """The bot's name color, None when unset."""
        return self.tags.get("color") or None

    @property
    def badges(self) -> dict[str, str]:
        """Badge name -> version."""
        return values.badges(self.tags, "badges")

    @property
    def badge_info(self) -> dict[str, str]:
        """Badge name -> detail."""
        return values.badges(self.tags, "badge-info")

    @property
    def emote_sets(self) -> list[str]:
        """The emote sets the bot may use."""
        sets = self.tags.get("emote-sets")
        return sets.split(",") if sets else []


class UserStateEvent(_BotState, Event, frozen=True, kw_only=True):
    """The bot's own state in a channel (USERSTATE), after joining or sending."""

    @property
    def is_mod(self) -> bool:
        """The bot moderates this channel: it may send 100 messages per 30 s here."""
        return self.tags.get("mod") == "1"

    @property
    def is_subscriber(self) -> bool:
        """The bot subscribes to this channel."""
        return self.tags.get("subscriber") == "1"


class GlobalUserStateEvent(_BotState, Event, frozen=True, kw_only=True):
    """The bot's own state after login (GLOBALUSERSTATE)."""

    @property
    def user_id(self) -> str | None:
        """The bot's user id."""
        return self.tags.get("user-id")


class JoinEvent(Event, frozen=True, kw_only=True):
    """A user joined a channel (our own echo, or others' with the membership capability)."""

    user: str = ""


class PartEvent(Event, frozen=True, kw_only=True):
    """A user left a channel."""

    user: str = ""


class ReconnectEvent(Event, frozen=True, kw_only=True):
    """The server asks us to reconnect: it closes this connection soon (RECONNECT)."""


class PingEvent(Event, frozen=True, kw_only=True):
    """The server's keepalive (PING); answer with PONG and the same text."""

    text: str = ""


class PongEvent(Event, frozen=True, kw_only=True):
    """The server's answer to our PING (PONG)."""

    text: str = ""


class WelcomeEvent(Event, frozen=True, kw_only=True):
    """A welcome numeric after login (001 to 004): ``user`` is the login we got."""

    numeric: str = "001"
    user: str = ""
    text: str = ""


class MotdEvent(Event, frozen=True, kw_only=True):
    """A message-of-the-day line (375 start, 372 line, 376 end)."""

    numeric: str = "372"
    text: str = ""


class NameReplyEvent(Event, frozen=True, kw_only=True):
    """Names in a channel (353)."""

    names: list[str] = msgspec.field(default_factory=list)


class EndOfNamesEvent(Event, frozen=True, kw_only=True):
    """The end of a channel's names (366)."""


class CapEvent(Event, frozen=True, kw_only=True):
    """A capability reply (CAP ACK, NAK or LS) with the capabilities it names."""

    subcommand: str = ""
    capabilities: list[str] = msgspec.field(default_factory=list)


class ConnectedEvent(Event, frozen=True, kw_only=True):
    """A connection logged in (after any reconnect too); ``user`` is the login in use."""

    connection: str = ""
    user: str = ""


class DisconnectedEvent(Event, frozen=True, kw_only=True):
    """A connection was lost or closed, with the reason; ``reconnecting`` when it will retry."""

    connection: str = ""
    reason: str = ""
    reconnecting: bool = False


class ChannelLostEvent(Event, frozen=True, kw_only=True):
    """A channel that was held is not joined any more, without the application parting it.

    ``reason`` is a :class:`tmi_cluster.JoinResult` value: a refused rejoin
    (``msg_channel_suspended``, ``msg_banned``, ``tos_ban``,
    ``msg_concurrent_channel_limit_reached``), ``timeout`` (a rejoin got no confirmation),
    ``removed`` (the server parted it), ``login_refused`` or ``closed`` (the connection gave
    up); ``connection`` names the connection that held it.
    """

    connection: str = ""
    reason: str = ""


class IrcMessageEvent(Event, frozen=True, kw_only=True):
    """Every line a connection received, before it becomes its typed events (``raw``, the
    command, the connection). Made only when a handler subscribes to it: it doubles the events
    of a busy worker. Never published to the event stream."""

    command: str = ""
    connection: str = ""


class IrcCommandEvent(Event, frozen=True, kw_only=True):
    """Every line a connection sent (``raw``; a PASS line's token masked), with its command and
    the connection. Made only when a handler subscribes to it; never published to the stream."""

    command: str = ""
    connection: str = ""


class UnknownEvent(Event, frozen=True, kw_only=True):
    """Any other line, so that none is dropped silently: its command, params and source."""

    command: str = ""
    params: list[str] = msgspec.field(default_factory=list)
    source: str | None = None


# -- the cluster's own events (the original's names) ---------------------------------------------


class ClusterEvent(Event, frozen=True, kw_only=True):
    """Base of the cluster's own events: where they happen (``supervisor``, and ``process``
    for a worker's). They carry no channel. Each reaches the handlers of ``handlers.modules`` in
    the process where it happens; those of interest beyond it go to the event stream too."""

    supervisor: str = ""
    process: str = ""


class ClusterClientRegistered(ClusterEvent, frozen=True, kw_only=True):
    """A worker process runs: its connections can be asked for channels (in the worker, and
    on the stream)."""


class ClusterClientTerminated(ClusterEvent, frozen=True, kw_only=True):
    """A worker process stops, with ``reason`` (in the worker, and on the stream)."""

    reason: str = ""


class PeriodicTimerCalled(ClusterEvent, frozen=True, kw_only=True):
    """Every ``process.periodic_timer`` seconds in each worker: the original's hook for
    periodic work in handler code (in the worker only, never on the stream)."""


class SupervisorLooped(ClusterEvent, frozen=True, kw_only=True):
    """A supervisor ran its periodic chores (every few seconds; in the supervisor only, never
    on the stream)."""


class WorkerProcessRestarting(ClusterEvent, frozen=True, kw_only=True):
    """A worker process ended unexpectedly (``reason``: its exit) and is started again after
    ``delay_s`` (in the supervisor, and on the stream)."""

    reason: str = ""
    delay_s: float = 0.0


class UnableToLaunchProcess(ClusterEvent, frozen=True, kw_only=True):
    """A worker process ended before it was ready; ``error`` says why (its last line on
    standard error); it is tried again after ``delay_s`` (in the supervisor, and on the
    stream)."""

    error: str = ""
    delay_s: float = 0.0


class ProcessScaled(ClusterEvent, frozen=True, kw_only=True):
    """A supervisor's number of workers changed from ``before`` to ``after``, and why
    (``cause``: ``scale_out``, ``scale_in``, ``restore``, ``below_minimum``, ``manual``...; in
    the supervisor, and on the stream)."""

    before: int = 0
    after: int = 0
    cause: str = ""
