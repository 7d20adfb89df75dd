"""Fuzzing the parser and the event builder with hypothesis.

The default run is CI-sized; ``TMI_CLUSTER_FUZZ=nightly`` runs at least 100,000 cases per
property (the ``slow`` marker selects only these: ``pytest -m slow``).
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmi_cluster.errors import ParseError
from tmi_cluster.events import Event, from_json, from_message, to_json
from tmi_cluster.irc import Message, parse, serialize, split_source
from tmi_cluster.irc._split import ESCAPE_RE, unescape_match
from tmi_cluster.irc.message import unescape_tag_value

NIGHTLY = os.environ.get("TMI_CLUSTER_FUZZ") == "nightly"
FUZZ = settings(
    max_examples=100_000 if NIGHTLY else 1_500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if NIGHTLY else 120)]

IRCISH = st.text(alphabet=st.sampled_from(list("@:;= !#\\\r\n\0\x01abcXYZ019-/_é👋")), max_size=80)


def _parse_or_error(line: str | bytes) -> Message | None:
    try:
        return parse(line)
    except ParseError:
        return None


@FUZZ
@given(st.one_of(st.text(max_size=300), IRCISH))
def test_parse_raises_only_parse_error_on_text(line: str) -> None:
    message = _parse_or_error(line)
    if message is not None:
        assert message.command
        assert message.command[0] != ":"
        assert all("\r" not in p and "\n" not in p and "\0" not in p for p in message.params)


@FUZZ
@given(st.binary(max_size=300))
def test_parse_raises_only_parse_error_on_bytes(line: bytes) -> None:
    _parse_or_error(line)


def _read_everything(event: Event) -> None:
    """Touch every field and property, as a handler might."""
    for name in dir(event):
        if not name.startswith("_"):
            getattr(event, name)
    assert from_json(to_json(event)) == event


@FUZZ
@given(st.one_of(st.text(max_size=300), IRCISH))
def test_events_never_raise_on_any_parsable_line(line: str) -> None:
    message = _parse_or_error(line)
    if message is not None:
        events = from_message(message)
        assert events
        for event in events:
            _read_everything(event)


COMMANDS = st.sampled_from(
    [
        "PRIVMSG",
        "USERNOTICE",
        "CLEARCHAT",
        "CLEARMSG",
        "ROOMSTATE",
        "USERSTATE",
        "NOTICE",
        "WHISPER",
        "JOIN",
        "PART",
        "001",
        "353",
        "366",
        "CAP",
        "PING",
        "GLOBALUSERSTATE",
    ]
)
TAG_NAMES = st.sampled_from(
    [
        "id",
        "bits",
        "badges",
        "badge-info",
        "emotes",
        "tmi-sent-ts",
        "ban-duration",
        "msg-id",
        "login",
        "slow",
        "followers-only",
        "r9k",
        "emote-only",
        "subs-only",
        "source-msg-id",
        "msg-param-cumulative-months",
        "msg-param-viewerCount",
        "msg-param-mass-gift-count",
        "msg-param-threshold",
        "room-id",
        "color",
        "display-name",
        "emote-sets",
        "source-id",
    ]
)
TAG_VALUES = st.one_of(
    st.text(alphabet=st.sampled_from(list("0123456789-:,/ab_é")), max_size=20),
    st.sampled_from(
        [
            "sub",
            "resub",
            "subgift",
            "raid",
            "sharedchatnotice",
            "announcement",
            "viewermilestone",
            "-1",
            "99999999999999999999999",
            "1",
        ]
    ),
)


@FUZZ
@given(
    COMMANDS,
    st.dictionaries(TAG_NAMES, TAG_VALUES, max_size=12),
    st.lists(
        st.text(alphabet=st.sampled_from(list("#abc \x01ACTION:é👋")), max_size=20), max_size=4
    ),
)
def test_twitch_shaped_lines_with_hostile_tag_values(
    command: str, tags: dict[str, str], params: list[str]
) -> None:
    clean = [p for p in params[:-1] if p and " " not in p and p[0] != ":"] + params[-1:]
    line = serialize(command, clean, tags=tags, source="a!a@a.tmi.twitch.tv")
    message = parse(line)
    assert message.tags == {k: v for k, v in tags.items()}
    for event in from_message(message):
        _read_everything(event)


MIDDLE = st.text(
    alphabet=st.characters(blacklist_characters=" \r\n\0", codec="utf-8"),
    min_size=1,
    max_size=15,
).filter(lambda p: p[0] != ":")
TRAILING = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0", codec="utf-8"),
    max_size=30,
)
KEYS = st.from_regex(r"\A\+?([a-z]{1,8}\.[a-z]{1,5}/)?[A-Za-z0-9\-]{1,12}\Z")
VALUES = st.text(alphabet=st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20)


@FUZZ
@given(
    st.from_regex(r"\A([A-Za-z]{1,12}|[0-9]{3})\Z"),
    st.lists(MIDDLE, max_size=5),
    st.one_of(st.none(), TRAILING),
    st.dictionaries(KEYS, VALUES, max_size=6),
    st.one_of(
        st.none(), st.from_regex(r"\A[a-z0-9_]{1,10}(![a-z0-9_~]{1,10})?(@[a-z0-9.\-]{1,20})?\Z")
    ),
)
def test_serialize_then_parse_round_trips(
    command: str, middle: list[str], trailing: str | None, tags: dict[str, str], source: str | None
) -> None:
    params = [*middle, trailing] if trailing is not None else middle
    line = serialize(command, params, tags=tags, source=source)
    assert "\r" not in line
    assert "\n" not in line
    message = parse(line)
    assert (message.command, message.params, message.source) == (command, params, source)
    assert message.tags == {k: v for k, v in tags.items() if k}


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("\\s:rnx=ab")), max_size=40))
def test_fast_unescape_matches_the_reference(raw: str) -> None:
    reference = ESCAPE_RE.sub(unescape_match, raw)
    assert unescape_tag_value(raw) == reference
    assert parse(f"@k={raw} X").tags == {"k": reference}


def test_reference_unescape_is_the_spec() -> None:
    assert (
        re.sub(r"\\(.?)", lambda m: {"s": " ", ":": ";"}.get(m.group(1), m.group(1)), "a\\sb\\:c")
        == "a b;c"
    )


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("ab!@.~")), max_size=12))
def test_fast_nick_matches_split_source(source: str) -> None:
    message = Message("PRIVMSG", [], {}, source)
    assert message.nick == split_source(source)[0]
