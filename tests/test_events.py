"""Twitch lines to typed events: every message type, every field, dedupe keys, JSON, bad values."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from tmi_cluster import events as ev
from tmi_cluster.events import ALL_EVENT_TYPES, build, from_json, from_message, to_json
from tmi_cluster.irc import Message, parse

PRIVMSG = (
    "@badge-info=subscriber/14;badges=subscriber/12,premium/1;bits=100;color=#1E90FF;"
    "display-name=Ronni;emotes=25:0-4,12-16/1902:6-10;first-msg=0;id=b34ccfc7-4977;mod=1;"
    "returning-chatter=0;room-id=12345678;subscriber=1;tmi-sent-ts=1642696567751;turbo=0;"
    "user-id=1337;user-type=mod :ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #Dallas "
    ":Kappa Keepo Kappa cheer100"
)
USERNOTICE = (
    "@badge-info=;badges=staff/1,broadcaster/1,turbo/1;color=#008000;display-name=ronni;"
    "emotes=;id=db25007f-7a18-43eb-9379-80131e44d633;login=ronni;mod=0;msg-id=resub;"
    "msg-param-cumulative-months=6;msg-param-streak-months=2;msg-param-should-share-streak=1;"
    "msg-param-sub-plan=Prime;msg-param-sub-plan-name=Prime;room-id=12345678;subscriber=1;"
    "system-msg=ronni\\shas\\ssubscribed\\sfor\\s6\\smonths!;tmi-sent-ts=1507246572675;"
    "turbo=1;user-id=87654321;user-type=staff :tmi.twitch.tv USERNOTICE #dallas "
    ":Great stream -- keep it up!"
)


def _events(line: str) -> list[ev.Event]:
    return from_message(parse(line))


def test_message_event_fields() -> None:
    message, cheer = _events(PRIVMSG)
    assert type(message) is ev.MessageEvent
    assert type(cheer) is ev.CheerEvent
    assert message.channel == "dallas"
    assert message.user == "ronni"
    assert message.display_name == "Ronni"
    assert message.user_id == "1337"
    assert message.room_id == "12345678"
    assert message.message_id == "b34ccfc7-4977"
    assert message.sent_at == datetime(2022, 1, 20, 16, 36, 7, 751000, tzinfo=UTC)
    assert message.text == "Kappa Keepo Kappa cheer100"
    assert not message.is_action
    assert message.bits == cheer.bits == 100
    assert message.badges == {"subscriber": "12", "premium": "1"}
    assert message.badge_info == {"subscriber": "14"}
    assert [(e.id, e.start, e.end) for e in message.emotes] == [
        ("25", 0, 4),
        ("1902", 6, 10),
        ("25", 12, 16),
    ]
    assert [message.text[e.start : e.end + 1] for e in message.emotes] == [
        "Kappa",
        "Keepo",
        "Kappa",
    ]
    assert message.color == "#1E90FF"
    assert message.is_mod
    assert message.is_subscriber
    assert not message.is_first_message
    assert message.reply_parent_message_id is None
    assert message.source_room_id is None
    assert message.raw == PRIVMSG


def test_cheer_and_message_never_share_a_dedupe_key() -> None:
    message, cheer = _events(PRIVMSG)
    assert message.dedupe_key == "MessageEvent:b34ccfc7-4977"
    assert cheer.dedupe_key == "CheerEvent:b34ccfc7-4977"


def test_action_and_code_point_emotes() -> None:
    [event] = _events("@emotes=25:2-6;id=x :a!a@a PRIVMSG #c :\x01ACTION 👋 Kappa ünïcode\x01")
    assert isinstance(event, ev.MessageEvent)
    assert event.is_action
    assert event.text == "👋 Kappa ünïcode"
    [emote] = event.emotes
    assert event.text[emote.start : emote.end + 1] == "Kappa"


def test_reply_and_shared_chat() -> None:
    [event] = _events(
        "@id=copy-1;source-id=orig-1;source-room-id=999;room-id=5;reply-parent-msg-id=p-1;"
        "reply-parent-user-login=bob :a!a@a PRIVMSG #c :@bob hi"
    )
    assert isinstance(event, ev.MessageEvent)
    assert event.reply_parent_message_id == "p-1"
    assert event.reply_parent_user == "bob"
    assert (event.source_room_id, event.source_message_id) == ("999", "orig-1")
    assert event.dedupe_key == "MessageEvent:copy-1"
    assert event.shared_chat_key == "MessageEvent:orig-1"
    [plain] = _events("@id=x :a!a@a PRIVMSG #c :hi")
    assert plain.shared_chat_key == plain.dedupe_key == "MessageEvent:x"


def test_usernotice_emits_generic_and_specific_events() -> None:
    generic, specific = _events(USERNOTICE)
    assert type(generic) is ev.UserNoticeEvent
    assert type(specific) is ev.ResubEvent
    assert specific.user == "ronni"
    assert specific.msg_id == "resub"
    assert specific.system_message == "ronni has subscribed for 6 months!"
    assert specific.text == "Great stream -- keep it up!"
    assert (specific.cumulative_months, specific.streak_months, specific.plan) == (6, 2, "Prime")
    assert specific.msg_params["should-share-streak"] == "1"
    assert generic.dedupe_key != specific.dedupe_key


def _notice(msg_id: str, params: str) -> ev.Event:
    line = f"@id=n-1;login=gifter;msg-id={msg_id};{params};room-id=1 :tmi.twitch.tv USERNOTICE #c"
    generic, specific = _events(line)
    assert type(generic) is ev.UserNoticeEvent
    return specific


@pytest.mark.parametrize(
    ("msg_id", "params", "cls", "expected"),
    [
        (
            "sub",
            "msg-param-cumulative-months=1;msg-param-sub-plan=1000",
            ev.SubEvent,
            {"cumulative_months": 1, "plan": "1000"},
        ),
        (
            "subgift",
            "msg-param-months=3;msg-param-recipient-user-name=Lucky;"
            "msg-param-recipient-id=5;msg-param-sub-plan=2000;msg-param-gift-months=6",
            ev.SubGiftEvent,
            {
                "months": 3,
                "recipient": "lucky",
                "recipient_id": "5",
                "plan": "2000",
                "gift_months": 6,
            },
        ),
        ("anonsubgift", "msg-param-recipient-user-name=x", ev.AnonSubGiftEvent, {"recipient": "x"}),
        (
            "submysterygift",
            "msg-param-mass-gift-count=20;msg-param-sender-count=40",
            ev.SubMysteryGiftEvent,
            {"gift_count": 20, "sender_count": 40},
        ),
        (
            "anonsubmysterygift",
            "msg-param-mass-gift-count=5",
            ev.AnonSubMysteryGiftEvent,
            {"gift_count": 5},
        ),
        (
            "giftpaidupgrade",
            "msg-param-sender-login=Giver;msg-param-promo-gift-total=3",
            ev.GiftPaidUpgradeEvent,
            {"sender": "giver", "promo_gift_total": 3},
        ),
        (
            "anongiftpaidupgrade",
            "msg-param-promo-name=Spring",
            ev.AnonGiftPaidUpgradeEvent,
            {"promo_name": "Spring"},
        ),
        ("primepaidupgrade", "msg-param-sub-plan=1000", ev.PrimePaidUpgradeEvent, {"plan": "1000"}),
        (
            "raid",
            "msg-param-login=Raider;msg-param-displayName=RaiDer;msg-param-viewerCount=42",
            ev.RaidEvent,
            {"raider": "raider", "raider_display_name": "RaiDer", "viewer_count": 42},
        ),
        ("unraid", "x=1", ev.UnraidEvent, {}),
        (
            "ritual",
            "msg-param-ritual-name=new_chatter",
            ev.RitualEvent,
            {"ritual_name": "new_chatter"},
        ),
        (
            "announcement",
            "msg-param-color=PRIMARY",
            ev.AnnouncementEvent,
            {"announcement_color": "PRIMARY"},
        ),
        ("bitsbadgetier", "msg-param-threshold=1000", ev.BitsBadgeTierEvent, {"threshold": 1000}),
        (
            "viewermilestone",
            "msg-param-category=watch-streak;msg-param-value=7;msg-param-copoReward=450",
            ev.ViewerMilestoneEvent,
            {"category": "watch-streak", "value": 7, "reward": 450},
        ),
        (
            "brandnewthing",
            "msg-param-foo=bar",
            ev.UnknownUserNoticeEvent,
            {"msg_id": "brandnewthing"},
        ),
        (
            "sharedchatnotice",
            "source-msg-id=announcement;msg-param-color=BLUE",
            ev.AnnouncementEvent,
            {"announcement_color": "BLUE", "msg_id": "sharedchatnotice"},
        ),
    ],
)
def test_every_usernotice_kind(
    msg_id: str, params: str, cls: type[ev.Event], expected: dict[str, Any]
) -> None:
    event = _notice(msg_id, params)
    assert type(event) is cls
    for name, value in expected.items():
        assert getattr(event, name) == value, name


@pytest.mark.parametrize(
    ("line", "kind", "target", "duration"),
    [
        (
            "@ban-duration=350;room-id=1;target-user-id=2;tmi-sent-ts=1642719320727 "
            ":tmi.twitch.tv CLEARCHAT #dallas :Ronni",
            "timeout",
            "ronni",
            350,
        ),
        (
            "@room-id=1;target-user-id=2;tmi-sent-ts=1642715756806 "
            ":tmi.twitch.tv CLEARCHAT #dallas :ronni",
            "ban",
            "ronni",
            None,
        ),
        (
            "@room-id=1;tmi-sent-ts=1642715695392 :tmi.twitch.tv CLEARCHAT #dallas",
            "clear",
            None,
            None,
        ),
    ],
)
def test_clearchat(line: str, kind: str, target: str | None, duration: int | None) -> None:
    [event] = _events(line)
    assert isinstance(event, ev.ClearChatEvent)
    assert (event.kind, event.target_user, event.duration) == (kind, target, duration)
    assert event.channel == "dallas"
    assert event.sent_at is not None
    assert event.dedupe_key is not None
    assert event.dedupe_key.startswith("ClearChatEvent:1:")


def test_clearmsg() -> None:
    [event] = _events(
        "@login=foo;room-id=;target-msg-id=94e6c7ff-bf98-4faa-af5d-7ad633a158a9;"
        "tmi-sent-ts=1642720582342 :tmi.twitch.tv CLEARMSG #bar :what a great day"
    )
    assert isinstance(event, ev.ClearMsgEvent)
    assert (event.user, event.text) == ("foo", "what a great day")
    assert event.target_message_id == "94e6c7ff-bf98-4faa-af5d-7ad633a158a9"
    assert event.dedupe_key == "ClearMsgEvent:94e6c7ff-bf98-4faa-af5d-7ad633a158a9"


def test_roomstate_and_only_the_mode_events_present() -> None:
    events = _events(
        "@emote-only=0;followers-only=10;r9k=1;room-id=12345678;slow=30;subs-only=0 "
        ":tmi.twitch.tv ROOMSTATE #bar"
    )
    state = events[0]
    assert isinstance(state, ev.RoomStateEvent)
    assert (state.emote_only, state.followers_only, state.r9k, state.slow, state.subs_only) == (
        False,
        10,
        True,
        30,
        False,
    )
    modes = {type(e): e for e in events[1:]}
    assert set(modes) == {
        ev.EmoteOnlyModeEvent,
        ev.FollowersOnlyModeEvent,
        ev.R9kModeEvent,
        ev.SlowModeEvent,
        ev.SubsOnlyModeEvent,
    }
    followers = modes[ev.FollowersOnlyModeEvent]
    assert isinstance(followers, ev.FollowersOnlyModeEvent)
    assert (followers.enabled, followers.minutes) == (True, 10)
    slow = modes[ev.SlowModeEvent]
    assert isinstance(slow, ev.SlowModeEvent)
    assert (slow.enabled, slow.seconds) == (True, 30)

    changed = _events("@room-id=1;slow=0 :tmi.twitch.tv ROOMSTATE #bar")
    assert [type(e) for e in changed] == [ev.RoomStateEvent, ev.SlowModeEvent]
    assert not changed[1].enabled  # type: ignore[attr-defined]
    off = _events("@followers-only=-1;room-id=1 :tmi.twitch.tv ROOMSTATE #bar")[1]
    assert isinstance(off, ev.FollowersOnlyModeEvent)
    assert not off.enabled


@pytest.mark.parametrize(
    ("line", "cls", "fields"),
    [
        (
            "@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #bar "
            ":This channel has been suspended.",
            ev.NoticeEvent,
            {
                "channel": "bar",
                "msg_id": "msg_channel_suspended",
                "text": "This channel has been suspended.",
            },
        ),
        (
            ":tmi.twitch.tv NOTICE * :Login authentication failed",
            ev.NoticeEvent,
            {"channel": None, "msg_id": "", "text": "Login authentication failed"},
        ),
        (
            "@badge-info=;badges=moderator/1;color=#0D4200;display-name=MyBot;emote-sets=0,33,50;"
            "mod=1;subscriber=0;user-type=mod :tmi.twitch.tv USERSTATE #dallas",
            ev.UserStateEvent,
            {
                "channel": "dallas",
                "is_mod": True,
                "display_name": "MyBot",
                "emote_sets": ["0", "33", "50"],
                "badges": {"moderator": "1"},
            },
        ),
        (
            "@badge-info=subscriber/8;badges=subscriber/6;color=#0D4200;display-name=MyBot;"
            "emote-sets=0,1;user-id=123;user-type= :tmi.twitch.tv GLOBALUSERSTATE",
            ev.GlobalUserStateEvent,
            {"user_id": "123", "display_name": "MyBot", "badge_info": {"subscriber": "8"}},
        ),
        (
            "@badges=;color=;display-name=Foo;emotes=;message-id=306;thread-id=1_2;turbo=0;"
            "user-id=1;user-type= :foo!foo@foo.tmi.twitch.tv WHISPER bot :hello there",
            ev.WhisperEvent,
            {
                "user": "foo",
                "recipient": "bot",
                "text": "hello there",
                "thread_id": "1_2",
                "message_id": "306",
                "dedupe_key": "WhisperEvent:306",
                "color": None,
            },
        ),
        (
            ":mybot!mybot@mybot.tmi.twitch.tv JOIN #Bar",
            ev.JoinEvent,
            {"channel": "bar", "user": "mybot"},
        ),
        (":mybot!mybot@mybot.tmi.twitch.tv PART #bar", ev.PartEvent, {"user": "mybot"}),
        (":tmi.twitch.tv RECONNECT", ev.ReconnectEvent, {}),
        ("PING :tmi.twitch.tv", ev.PingEvent, {"text": "tmi.twitch.tv"}),
        (":tmi.twitch.tv PONG tmi.twitch.tv :check-1", ev.PongEvent, {"text": "check-1"}),
        (
            ":tmi.twitch.tv 001 mybot :Welcome, GLHF!",
            ev.WelcomeEvent,
            {"numeric": "001", "user": "mybot", "text": "Welcome, GLHF!"},
        ),
        (":tmi.twitch.tv 004 mybot :-", ev.WelcomeEvent, {"numeric": "004"}),
        (
            ":tmi.twitch.tv 372 mybot :You are in a maze of twisty passages.",
            ev.MotdEvent,
            {"numeric": "372", "text": "You are in a maze of twisty passages."},
        ),
        (":tmi.twitch.tv 376 mybot :>", ev.MotdEvent, {"numeric": "376"}),
        (
            ":mybot.tmi.twitch.tv 353 mybot = #bar :mybot foo",
            ev.NameReplyEvent,
            {"channel": "bar", "names": ["mybot", "foo"]},
        ),
        (
            ":mybot.tmi.twitch.tv 366 mybot #bar :End of /NAMES list",
            ev.EndOfNamesEvent,
            {"channel": "bar"},
        ),
        (
            ":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands",
            ev.CapEvent,
            {"subcommand": "ACK", "capabilities": ["twitch.tv/tags", "twitch.tv/commands"]},
        ),
        (
            ":tmi.twitch.tv 421 mybot WHO :Unknown command",
            ev.UnknownEvent,
            {"command": "421", "params": ["mybot", "WHO", "Unknown command"]},
        ),
        (":tmi.twitch.tv HOSTTARGET #bar :baz 10", ev.UnknownEvent, {"channel": "bar"}),
        (":a!a@a PRIVMSG notachannel :hi", ev.UnknownEvent, {"command": "PRIVMSG"}),
        (":a!a@a JOIN", ev.UnknownEvent, {"command": "JOIN"}),
    ],
)
def test_every_other_message(line: str, cls: type[ev.Event], fields: dict[str, Any]) -> None:
    [event] = _events(line)
    assert type(event) is cls
    for name, value in fields.items():
        assert getattr(event, name) == value, name


def test_malformed_values_degrade_to_their_defaults() -> None:
    [event] = _events(
        "@bits=lots;badges=broken,vip/1;emotes=25:0-4,9-99,x-y/:0-1;tmi-sent-ts=soon;id=1 "
        ":a!a@a PRIVMSG #c :Kappa hi"
    )
    assert isinstance(event, ev.MessageEvent)
    assert event.bits == 0
    assert event.badges == {"vip": "1"}
    assert [(e.id, e.start, e.end) for e in event.emotes] == [("25", 0, 4)]
    assert event.sent_at is None


def test_malformed_timeout_duration_keeps_the_timeout() -> None:
    [event] = _events("@ban-duration=abc;room-id=1 :tmi.twitch.tv CLEARCHAT #c :x")
    assert isinstance(event, ev.ClearChatEvent)
    assert (event.kind, event.duration) == ("timeout", None)


LINES = [
    PRIVMSG,
    USERNOTICE,
    "@emote-only=1;followers-only=-1;r9k=0;room-id=1;slow=0;subs-only=1 "
    ":tmi.twitch.tv ROOMSTATE #c",
    "@ban-duration=1;room-id=1;target-user-id=2;tmi-sent-ts=1 :tmi.twitch.tv CLEARCHAT #c :x",
    "@login=a;target-msg-id=t :tmi.twitch.tv CLEARMSG #c :gone",
    ":tmi.twitch.tv 001 me :Welcome",
    ":tmi.twitch.tv WEIRD a b :c d",
    "@message-id=1;thread-id=2 :foo!foo@foo WHISPER me :hey",
]


@pytest.mark.parametrize("line", LINES)
def test_json_round_trips(line: str) -> None:
    for event in _events(line):
        data = to_json(event)
        assert msgspec.json.decode(data)["type"] == type(event).__name__
        again = from_json(data)
        assert again == event
        assert type(again) is type(event)
        assert again.dedupe_key == event.dedupe_key


def test_every_event_type_round_trips_from_defaults() -> None:
    for cls in ALL_EVENT_TYPES:
        event = cls(channel="c", tags={"id": "1"}, raw="x")
        assert from_json(to_json(event)) == event


def test_from_json_refuses_garbage() -> None:
    with pytest.raises(msgspec.ValidationError):
        from_json(b'{"type": "NoSuchEvent"}')


def test_events_are_immutable() -> None:
    [event] = _events(":a!a@a PRIVMSG #c :hi")
    with pytest.raises(AttributeError):
        event.channel = "other"  # type: ignore[misc]


def test_catalogue_is_current() -> None:
    from pathlib import Path  # noqa: PLC0415

    from tmi_cluster.events.catalogue import SOURCES, catalogue_markdown  # noqa: PLC0415

    assert set(SOURCES) == {cls.__name__ for cls in ALL_EVENT_TYPES}
    docs = Path(__file__).parent.parent / "docs" / "events.md"
    assert docs.read_text(encoding="utf-8") == catalogue_markdown(), (
        "regenerate with: python -m tmi_cluster.events.catalogue > docs/events.md"
    )


def test_a_builder_that_raises_is_counted_logged_and_the_line_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: Message) -> list[ev.Event]:
        raise ValueError("a value nobody foresaw")

    monkeypatch.setitem(build.BUILDERS, "TESTBOOM", broken)
    monkeypatch.setattr(build, "BUILDER_FAILURES", Counter())
    line = ":tmi.twitch.tv TESTBOOM #chan :text"
    with caplog.at_level(logging.WARNING, logger="tmi_cluster.events.build"):
        for _ in range(3):
            events = from_message(parse(line))
            assert [type(e) for e in events] == [ev.UnknownEvent]
    assert build.BUILDER_FAILURES["TESTBOOM"] == 3
    logged = [r for r in caplog.records if "TESTBOOM builder failed" in r.getMessage()]
    assert len(logged) == 2  # the 1st (with its traceback) and the 2nd; the 4th would be next
    assert logged[0].exc_info is not None
    assert line in logged[0].getMessage()
