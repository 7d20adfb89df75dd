"""Sending within Twitch's rules, with the simulator as the judge."""

from __future__ import annotations

import pytest

from tmi_cluster.connection import Connection, ConnectionOptions
from tmi_cluster.errors import UnsafeLineError
from tmi_cluster.events import Event, MessageEvent
from tmi_cluster.ratelimit import LocalWindow, Rate
from tmi_cluster.sender import Sender, split_text
from tmi_cluster.simulator import ChatSimulator, Limits

from .test_connection import Recorder
from .test_simulator import run


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
    limits = Limits(message_allow=5, moderator_message_allow=8, message_every_s=1.0,
                    channel_interval_s=0.1)  # fmt: skip
    async with ChatSimulator(channels=["alpha", "modded"], limits=limits) as sim:
        sim.add_account("mybot", "t", moderator_in=["modded"])
        reader_events = Recorder()
        reader_options = ConnectionOptions(host="127.0.0.1", port=sim.port, secure=False)
        bot_options = ConnectionOptions(host="127.0.0.1", port=sim.port, secure=False,
                                        login="mybot", token="t")  # fmt: skip
        sender: Sender | None = None

        def observe(event: Event) -> None:
            if sender is not None:
                sender.observe(event)

        async with Connection(reader_options, on_event=reader_events) as reader, \
                Connection(bot_options, on_event=observe) as bot:  # fmt: skip
            sender = Sender(bot, messages=LocalWindow(Rate(5, 1.0)),
                            moderator_messages=LocalWindow(Rate(8, 1.0)),
                            channel_interval_s=0.1)  # fmt: skip
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
