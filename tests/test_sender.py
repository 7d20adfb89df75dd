"""Sending within Twitch's rules, with the simulator as the judge."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from tmi_cluster.chat.connection import Connection, ConnectionOptions
from tmi_cluster.chat.ratelimit import LocalWindow, Rate
from tmi_cluster.chat.sender import Sender, split_text
from tmi_cluster.errors import MessageTooLongError, UnsafeLineError
from tmi_cluster.events import Event, MessageEvent
from tmi_cluster.simulator import ChatSimulator, Limits

from .helpers import run
from .test_connection import Recorder
from .test_irc_fuzz import FUZZ


@pytest.mark.parametrize(
    ("text", "limit", "parts"),
    [
        ("short", 500, ["short"]),
        ("", 500, [""]),
        ("a" * 12, 5, ["aaaaa", "aaaaa", "aa"]),
        ("word " * 4, 10, ["word word", "word word "]),
    ],
)
def test_split_text(text: str, limit: int, parts: list[str]) -> None:
    assert split_text(text, limit) == parts
    assert all(len(part) <= limit for part in split_text(text, limit))


def test_split_keeps_every_character_but_cut_spaces() -> None:
    text = " ".join(f"w{i}" for i in range(400))
    parts = split_text(text, 500)
    assert all(len(p) <= 500 for p in parts)
    assert " ".join(parts) == text


@run
async def test_messages_stay_within_every_rule() -> None:
    limits = Limits(
        message_allow=5, moderator_message_allow=8, message_every_s=1.0, channel_interval_s=0.1
    )
    async with ChatSimulator(channels=["alpha", "modded"], limits=limits) as sim:
        sim.add_account("mybot", "t", moderator_in=["modded"])
        reader_events = Recorder()
        reader_options = ConnectionOptions(host="127.0.0.1", port=sim.port, secure=False)
        bot_options = ConnectionOptions(
            host="127.0.0.1", port=sim.port, secure=False, login="mybot", token="t"
        )
        sender: Sender | None = None

        def observe(event: Event) -> None:
            if sender is not None:
                sender.observe(event)

        async with (
            Connection(reader_options, on_event=reader_events) as reader,
            Connection(bot_options, on_event=observe) as bot,
        ):
            sender = Sender(
                bot,
                messages=LocalWindow(Rate(5, 1.0)),
                moderator_messages=LocalWindow(Rate(8, 1.0)),
                channel_interval_s=0.1,
            )
            await reader.join(["alpha", "modded"])
            await bot.join(["alpha", "modded"])
            await sim.wait_until(lambda: len(sim.joined("alpha")) == len(sim.joined("modded")) == 2)
            await sim.wait_until(lambda: "modded" in sender.moderator_in if sender else False)
            sent = 0
            for i in range(6):
                sent += await sender.say("#alpha", "the same text")  # duplicates on purpose
                sent += await sender.say("modded", f"moderated {i}")
            sent += await sender.say("alpha", "x" * 1200)  # three parts
            assert sent == 15
            await reader_events.until(lambda: len(reader_events.of(MessageEvent)) == 15)
            texts = [e.text for e in reader_events.of(MessageEvent)]
            assert texts.count("the same text") == 3  # every other one carries the marker
            assert max(len(t) for t in texts) <= 500
            assert sim.account("mybot").violations == []
            assert sim.account("mybot").messages == 15
            with pytest.raises(UnsafeLineError):
                await sender.say("alpha", "no\r\nJOIN #injection")


# -- splitting never breaks a grapheme ----------------------------------------------------------

_THUMB = "\U0001f44d\U0001f3fd"  # thumbs up, medium skin tone: one grapheme, two code points
_FLAG = "\U0001f1e9\U0001f1ea"  # a flag: two regional indicators
_FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # joined by zero-width joiners
_ACCENTED = "e\u0301"  # e + combining acute accent


def _graphemes(text: str) -> list[str]:
    return regex.findall(r"\X", text)


@pytest.mark.parametrize("cluster", [_THUMB, _FLAG, _FAMILY, _ACCENTED])
def test_split_never_cuts_a_grapheme(cluster: str) -> None:
    for offset in range(len(cluster) + 1):
        text = "x" * (10 - offset) + cluster * 3
        parts = split_text(text, 10)
        assert "".join(parts) == text
        assert all(len(p) <= 10 for p in parts)
        # every part is whole graphemes: splitting the parts gives the text's graphemes
        assert [g for p in parts for g in _graphemes(p)] == _graphemes(text)


def test_a_cluster_longer_than_the_limit_is_cut_as_the_last_resort() -> None:
    zalgo = "a" + "\u0301" * 30  # one grapheme of 31 code points
    parts = split_text(zalgo + " tail", 10)
    assert all(len(p) <= 10 for p in parts)
    assert "".join(parts).replace(" ", "") == (zalgo + "tail")


@FUZZ
@given(
    st.lists(
        st.sampled_from(["a", "bc", " ", "  ", _THUMB, _FLAG, _FAMILY, _ACCENTED, "\u00e9"]),
        max_size=80,
    ),
    st.integers(min_value=8, max_value=40),
)
def test_split_properties(pieces: list[str], limit: int) -> None:
    text = "".join(pieces)
    parts = split_text(text, limit)
    assert all(len(p) <= limit for p in parts)
    # Only spaces are ever dropped, and only at a cut.
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")
    assert [g for p in parts for g in _graphemes(p) if g != " "] == [
        g for g in _graphemes(text) if g != " "
    ]


# -- /me, replies, refusal, injection ---------------------------------------------------------


@run
async def test_actions_replies_and_refusals_reach_the_channel_as_meant() -> None:
    async with ChatSimulator(channels=["alpha"], limits=Limits(channel_interval_s=0.1)) as sim:
        sim.add_account("mybot", "t")
        reader_events = Recorder()
        reader_options = ConnectionOptions(host="127.0.0.1", port=sim.port, secure=False)
        bot_options = ConnectionOptions(
            host="127.0.0.1", port=sim.port, secure=False, login="mybot", token="t"
        )
        async with (
            Connection(reader_options, on_event=reader_events) as reader,
            Connection(bot_options) as bot,
        ):
            await reader.join(["alpha"])
            await sim.wait_until(lambda: len(sim.joined("alpha")) == 1)
            await bot.wait_connected(10)
            sender = Sender(bot, channel_interval_s=0.1)
            assert await sender.say("alpha", "waves", action=True) == 1
            assert await sender.say("alpha", "waves", action=True) == 1  # a duplicate action
            assert await sender.say("alpha", "indeed", reply_to="abc-123") == 1
            await reader_events.until(lambda: len(reader_events.of(MessageEvent)) == 3)
            first, second, reply = reader_events.of(MessageEvent)
            assert (first.is_action, first.text) == (True, "waves")
            assert second.is_action
            assert second.text.startswith("waves")
            assert second.text != "waves"  # carries the invisible marker inside the action
            assert (reply.is_action, reply.reply_parent_message_id) == (False, "abc-123")

            refusing = Sender(bot, max_length=20, long_text="refuse")
            with pytest.raises(MessageTooLongError, match="nothing was sent"):
                await refusing.say("alpha", "x" * 30)
            for bad in ("fine\rPRIVMSG #alpha :injected", "a\0b"):
                with pytest.raises(UnsafeLineError):
                    await sender.say("alpha", "x" * 600 + bad)  # the unsafe part comes last
            with pytest.raises(UnsafeLineError):
                await sender.say("alpha", "text", reply_to="id\r\nQUIT")
            with pytest.raises(ValueError, match="message id"):
                await sender.say("alpha", "text", reply_to="two words")
            assert sim.account("mybot").violations == []
            assert sim.account("mybot").messages == 3  # nothing of the refused ones was sent
