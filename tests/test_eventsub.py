"""EventSub's messages and their mapping to events: each sample of ``tests/eventsub`` (Twitch's
shapes) decodes, and each notification becomes the same events as the IRC line Twitch sends
for it, property for property."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmi_cluster.errors import EventSubError
from tmi_cluster.events import (
    AnnouncementEvent,
    AnonSubMysteryGiftEvent,
    CheerEvent,
    ClearChatEvent,
    ClearMsgEvent,
    EmoteOnlyModeEvent,
    Event,
    MessageEvent,
    RaidEvent,
    ResubEvent,
    RoomStateEvent,
    SharedChatBeginEvent,
    SharedChatEndEvent,
    SlowModeEvent,
    SubGiftEvent,
    UnknownEvent,
    UserNoticeEvent,
    from_json,
    to_json,
)
from tmi_cluster.events.build import from_message
from tmi_cluster.eventsub import MAPPED_TYPES, decode, to_events
from tmi_cluster.eventsub.mapping import notification_events
from tmi_cluster.eventsub.messages import timestamp_ms
from tmi_cluster.irc import parse

SAMPLES = Path(__file__).parent / "eventsub"
SENT_MS = 1700129472464  # 2023-11-16T10:11:12.464Z, the samples' message_timestamp


#: What a handler reads of an event: the same on both routes.
COMPARED = (
    "channel",
    "user",
    "text",
    "bits",
    "is_action",
    "dedupe_key",
    "shared_chat_key",
    "display_name",
    "user_id",
    "room_id",
    "message_id",
    "sent_at",
    "color",
    "badges",
    "badge_info",
    "is_mod",
    "is_subscriber",
    "emotes",
    "reply_parent_message_id",
    "reply_parent_user",
    "source_room_id",
    "source_message_id",
    "msg_id",
    "system_message",
    "target_message_id",
)


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return data


def events_of(name: str) -> list[Event]:
    """A sample notification, decoded and mapped as a shard does."""
    envelope = decode((SAMPLES / name).read_bytes())
    assert envelope.metadata.message_type == "notification"
    assert envelope.payload.subscription is not None
    assert envelope.payload.event
    events = notification_events(envelope)
    event = json.loads(bytes(envelope.payload.event))
    kind, sent_at = envelope.payload.subscription.type, envelope.metadata.message_timestamp
    if not kind.startswith("channel.shared_chat."):  # the same as without the envelope
        assert events == to_events(kind, event, sent_at)
    return events


def irc_events(line: str) -> list[Event]:
    return from_message(parse(line))


def same(eventsub: list[Event], irc: list[Event]) -> None:
    """Both routes' events agree in type and in everything a handler reads."""
    assert [type(e) for e in eventsub] == [type(e) for e in irc]
    for ours, theirs in zip(eventsub, irc, strict=True):
        for name in COMPARED:
            if hasattr(theirs, name):
                assert getattr(ours, name) == getattr(theirs, name), name


def test_the_session_messages_decode() -> None:
    welcome = decode((SAMPLES / "welcome.json").read_bytes())
    assert welcome.payload.session is not None
    assert welcome.payload.session.id == "AQoQILE98gtqShGmLD7AM6yJThAB"
    assert welcome.payload.session.keepalive_timeout_seconds == 10
    assert decode((SAMPLES / "keepalive.json").read_bytes()).metadata.message_type == (
        "session_keepalive"
    )
    reconnect = decode((SAMPLES / "reconnect.json").read_bytes())
    assert reconnect.payload.session is not None
    assert reconnect.payload.session.reconnect_url == "wss://eventsub.wss.twitch.tv?reconnect=abc"
    revocation = decode((SAMPLES / "revocation.json").read_bytes())
    assert revocation.payload.subscription is not None
    assert revocation.payload.subscription.status == "authorization_revoked"
    assert revocation.payload.subscription.transport is not None
    assert revocation.payload.subscription.transport.method == "conduit"


def test_a_chat_message_is_the_privmsg_twitch_sends() -> None:
    ours = events_of("chat_message.json")
    line = (
        "@badge-info=subscriber/16;badges=moderator/1,subscriber/12,sub-gifter/1;color=#00FF7F;"
        "display-name=Viewer32;emotes=25:10-14,16-20;first-msg=0;"
        "id=cc106a89-1814-919d-454c-f4f2f970aae7;mod=1;room-id=1971641;subscriber=1;"
        f"tmi-sent-ts={SENT_MS};user-id=4145994 "
        ":viewer32!viewer32@viewer32.tmi.twitch.tv PRIVMSG #streamer :Hi chat 😀 Kappa Kappa"
    )
    same(ours, irc_events(line))
    [message] = ours
    assert isinstance(message, MessageEvent)
    assert [(e.id, e.start, e.end) for e in message.emotes] == [("25", 10, 14), ("25", 16, 20)]
    assert [message.text[e.start : e.end + 1] for e in message.emotes] == ["Kappa", "Kappa"]
    assert message.dedupe_key == "MessageEvent:cc106a89-1814-919d-454c-f4f2f970aae7"
    assert message.raw.endswith("PRIVMSG #streamer :Hi chat 😀 Kappa Kappa")
    # and the stream's JSON form round-trips it as any other event
    assert from_json(to_json(message)) == message


def test_a_cheer_reply_and_a_shared_chat_copy() -> None:
    cheer = events_of("chat_message_cheer_reply.json")
    assert [type(e) for e in cheer] == [MessageEvent, CheerEvent]
    message = cheer[0]
    assert isinstance(message, MessageEvent)
    assert message.bits == 100
    assert message.reply_parent_message_id == "0ea1f2ec-5bb8-4b0b-9a1f-6d2b1c8e9a10"
    assert message.reply_parent_user == "streamer"
    assert message.badges == {"vip": "1"}
    assert message.color is None  # never set
    assert message.tags["msg-id"] == "highlighted-message"
    assert message.tags["custom-reward-id"] == "reward-1"
    assert cheer[0].dedupe_key != cheer[1].dedupe_key  # as on IRC: two events, two keys

    [copy] = events_of("chat_message_shared.json")
    assert isinstance(copy, MessageEvent)
    assert copy.source_room_id == "112233"
    assert copy.source_message_id == "1cd8a4f5-2b1a-4b8e-9a7c-6f5e4d3c2b1a"
    assert copy.shared_chat_key == "MessageEvent:1cd8a4f5-2b1a-4b8e-9a7c-6f5e4d3c2b1a"
    assert copy.tags["source-badges"] == "subscriber/3"


def test_notifications_are_the_usernotices_twitch_sends() -> None:
    resub = events_of("notification_resub.json")
    line = (
        "@badge-info=subscriber/65;badges=subscriber/60;color=#00FF7F;display-name=Viewer32;"
        "emotes=;id=5dfe4963-9db8-44a9-9f69-27452aaaaa30;login=viewer32;mod=0;msg-id=resub;"
        "msg-param-cumulative-months=65;msg-param-multimonth-duration=0;"
        "msg-param-should-share-streak=1;msg-param-streak-months=12;msg-param-sub-plan=1000;"
        "msg-param-was-gifted=0;room-id=1971641;subscriber=1;system-msg=system\\stext;"
        f"tmi-sent-ts={SENT_MS};user-id=4145994 "
        ":tmi.twitch.tv USERNOTICE #streamer :still here"
    )
    same(resub, irc_events(line))
    specific = resub[1]
    assert isinstance(specific, ResubEvent)
    assert specific.cumulative_months == 65
    assert specific.streak_months == 12
    assert specific.plan == "1000"
    assert specific.text == "still here"

    gift = events_of("notification_community_gift_anon.json")
    assert [type(e) for e in gift] == [UserNoticeEvent, AnonSubMysteryGiftEvent]
    assert isinstance(gift[1], AnonSubMysteryGiftEvent)
    assert gift[1].gift_count == 5
    assert gift[1].plan == "2000"
    assert gift[1].user == "ananonymousgifter"

    raid = events_of("notification_raid.json")
    assert isinstance(raid[1], RaidEvent)
    assert raid[1].raider == "raider"
    assert raid[1].viewer_count == 42

    announcement = events_of("notification_announcement.json")
    assert isinstance(announcement[1], AnnouncementEvent)
    assert announcement[1].announcement_color == "BLUE"
    assert announcement[1].text == "stream in 5"

    shared = events_of("notification_shared_sub_gift.json")
    assert shared[0].msg_id == "sharedchatnotice"  # type: ignore[attr-defined]
    assert isinstance(shared[1], SubGiftEvent)
    assert shared[1].recipient == "lucky"
    assert shared[1].source_room_id == "112233"


def test_clears_deletes_and_room_settings() -> None:
    [clear] = events_of("clear.json")
    assert isinstance(clear, ClearChatEvent)
    assert (clear.kind, clear.channel, clear.room_id) == ("clear", "streamer", "1971641")
    [ban] = events_of("clear_user_messages.json")
    assert isinstance(ban, ClearChatEvent)
    assert (ban.kind, ban.target_user, ban.target_user_id) == ("ban", "spammer", "7734")
    [deleted] = events_of("message_delete.json")
    assert isinstance(deleted, ClearMsgEvent)
    assert deleted.target_message_id == "ab24e0b0-2260-4bac-94e4-05eedd4ecd0e"
    assert deleted.user == "spammer"
    settings_events = events_of("chat_settings_update.json")
    state = settings_events[0]
    assert isinstance(state, RoomStateEvent)
    assert (state.emote_only, state.followers_only, state.r9k, state.slow, state.subs_only) == (
        True,
        -1,
        True,
        10,
        False,
    )
    modes = {type(e): e for e in settings_events[1:]}
    assert modes[EmoteOnlyModeEvent].enabled is True  # type: ignore[attr-defined]
    assert modes[SlowModeEvent].seconds == 10  # type: ignore[attr-defined]


def test_each_events_raw_line_is_the_irc_line_of_the_same_events() -> None:
    for path in sorted(SAMPLES.glob("*.json")):
        if path.name.startswith(("welcome", "keepalive", "reconnect", "revocation", "shared_chat")):
            continue
        events = events_of(path.name)
        assert events[0].raw, path.name
        same(events, irc_events(events[0].raw))
        assert parse(events[0].raw).tags == events[0].tags, path.name


def test_shared_chat_sessions_are_events_of_their_own() -> None:
    [begin] = events_of("shared_chat_begin.json")
    assert isinstance(begin, SharedChatBeginEvent)
    assert (begin.channel, begin.host_id) == ("streamerdave", "1971641")
    assert begin.session_id == "2b64a92a-dbb8-424e-b1c3-304423ba1b6f"
    assert begin.participants == ["1971641", "112233"]
    assert begin.participant_logins == ["streamerdave", "gamerbob"]
    # keyed by the notification's id: a retry on another shard is the same event
    assert begin.dedupe_key == "SharedChatBeginEvent:a1b2c3d4-0000-4000-8000-000000000001"
    assert begin.sent_at is not None
    assert from_json(to_json(begin)) == begin  # streamed like any other
    [end] = events_of("shared_chat_end.json")
    assert isinstance(end, SharedChatEndEvent)
    assert end.participants == []
    event = sample("shared_chat_begin.json")["payload"]["event"]
    event["participants"] = "everyone"
    [bad] = to_events("channel.shared_chat.update", event)
    assert isinstance(bad, UnknownEvent)
    assert "participants are not a list" in bad.params[1]
    del event["broadcaster_user_login"]
    [missing] = to_events("channel.shared_chat.begin", event)
    assert isinstance(missing, UnknownEvent)
    assert "without broadcaster_user_login" in missing.params[1]


def test_bad_messages_are_errors_that_say_why() -> None:
    cases = {
        b"not json": "cannot be read",
        b"[]": "cannot be read",
        b'{"metadata": {"message_id": "x"}}': "cannot be read",
        b'{"metadata": {"message_id": "x", "message_type": "surprise", '
        b'"message_timestamp": ""}}': "unknown type 'surprise'",
        b'{"metadata": {"message_id": "x", "message_type": "notification", '
        b'"message_timestamp": ""}, "payload": {}}': "without its subscription or event",
        b'{"metadata": {"message_id": "x", "message_type": "session_welcome", '
        b'"message_timestamp": ""}, "payload": {}}': "without its session",
    }
    for data, expected in cases.items():
        with pytest.raises(EventSubError, match=expected):
            decode(data)


def test_events_that_cannot_be_mapped_are_unknown_events_never_errors() -> None:
    [unknown] = to_events("channel.follow", {"user_login": "x"})
    assert isinstance(unknown, UnknownEvent)
    assert unknown.params[0] == "channel.follow"
    assert "no mapping" in unknown.params[1]
    event = sample("chat_message.json")["payload"]["event"]
    del event["chatter_user_login"]
    [missing] = to_events("channel.chat.message", event)
    assert isinstance(missing, UnknownEvent)
    assert "without chatter_user_login" in missing.params[1]
    [not_object] = to_events("channel.chat.message", ["a list"])
    assert isinstance(not_object, UnknownEvent)


def test_text_no_irc_line_can_carry_keeps_its_event() -> None:
    event = sample("chat_message.json")["payload"]["event"]
    event["message"] = {"text": "two\r\nlines", "fragments": []}
    [message] = to_events("channel.chat.message", event)
    assert isinstance(message, MessageEvent)
    assert message.text == "two\r\nlines"
    assert message.raw == ""


def test_twitchs_times_in_milliseconds() -> None:
    assert timestamp_ms("2023-11-16T10:11:12.464757833Z") == SENT_MS
    assert timestamp_ms("2023-11-16T10:11:12Z") == SENT_MS - 464
    assert timestamp_ms("2023-11-16T10:11:12.4+00:00") == SENT_MS - 64
    for bad in ("", "yesterday", "2023-13-45T00:00:00Z"):
        assert timestamp_ms(bad) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(MAPPED_TYPES)),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "broadcaster_user_id",
                "broadcaster_user_login",
                "chatter_user_login",
                "chatter_user_id",
                "message_id",
                "message",
                "badges",
                "notice_type",
                "cheer",
                "reply",
                "target_user_login",
                "slow_mode",
                "slow_mode_wait_time_seconds",
                "follower_mode",
                "resub",
                "source_broadcaster_user_id",
            ]
        ),
        _json,
    ),
    sent_at=st.text(max_size=40),
)
def test_any_event_maps_without_raising(kind: str, fields: dict[str, Any], sent_at: str) -> None:
    events = to_events(kind, fields, sent_at)
    assert events
    for event in events:
        assert isinstance(event, Event)


def test_the_simulators_chat_as_eventsub_is_the_same_chat() -> None:
    """Every PRIVMSG, USERNOTICE and CLEARMSG of the simulator's traffic, sent as the EventSub
    notification Twitch sends for it, maps back to the events of the IRC line."""
    from tmi_cluster.simulator.eventsub import wire  # noqa: PLC0415
    from tmi_cluster.simulator.traffic import Traffic  # noqa: PLC0415

    traffic = Traffic({f"channel{i}": str(10_000 + i) for i in range(1, 40)}, seed=11)
    seen: set[str] = set()
    for n in range(3000):
        line = traffic.next(now_ms=SENT_MS + 17 * n).data.decode().rstrip("\r\n")
        message = parse(line)
        if message.command not in ("PRIVMSG", "USERNOTICE", "CLEARMSG"):
            continue
        built = wire(message)
        if built is None:
            continue
        decoded = decode(json.dumps(built))
        assert decoded.payload.subscription is not None
        ours = to_events(
            decoded.payload.subscription.type,
            json.loads(bytes(decoded.payload.event)),
            decoded.metadata.message_timestamp,
        )
        theirs = from_message(message)
        assert [type(e) for e in ours] == [type(e) for e in theirs], line
        for mine, irc in zip(ours, theirs, strict=True):
            for name in COMPARED:
                if (name, message.command) in (("text", "CLEARMSG"), ("is_action", "PRIVMSG")):
                    continue  # EventSub says neither a deleted message's text nor /me
                if hasattr(irc, name):
                    assert getattr(mine, name) == getattr(irc, name), (name, line)
        seen.add(message.command)
    assert seen == {"PRIVMSG", "USERNOTICE", "CLEARMSG"}
