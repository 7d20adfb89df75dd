"""Parsing and serialising IRC lines: contracts, bad input, injection."""

from __future__ import annotations

import pytest

from tmi_cluster.errors import ParseError, UnsafeLineError
from tmi_cluster.irc import Message, escape_tag_value, parse, serialize, unescape_tag_value


def test_parse_a_twitch_privmsg() -> None:
    message = parse(
        "@badges=;color=#FF0000;display-name=Ronni\\sB;id=abc :ronni!ronni@ronni.tmi.twitch.tv "
        "PRIVMSG #dallas :Kappa Keepo\r\n"
    )
    assert message.tags == {
        "badges": "",
        "color": "#FF0000",
        "display-name": "Ronni B",
        "id": "abc",
    }
    assert message.source == "ronni!ronni@ronni.tmi.twitch.tv"
    assert (message.nick, message.user, message.host) == ("ronni", "ronni", "ronni.tmi.twitch.tv")
    assert message.command == "PRIVMSG"
    assert message.params == ["#dallas", "Kappa Keepo"]
    assert message.raw.endswith("Kappa Keepo")


def test_bytes_are_decoded_and_invalid_utf8_replaced() -> None:
    message = parse(b":a PRIVMSG #c :caf\xc3\xa9 \xff\r\n")
    assert message.params == ["#c", "café \ufffd"]
    assert parse(bytearray(b"PING :x")).params == ["x"]


def test_only_one_line_ending_is_removed() -> None:
    assert parse("PING :x\n").params == ["x"]
    with pytest.raises(ParseError, match="CR, LF or NUL"):
        parse("PING :x\r\n\r\n")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "no command"),
        ("   ", "no command"),
        ("@a=b", "tags without a command"),
        ("@a=b ", "no command"),
        (":source", "no command"),
        (":source  :trailing", "no command"),
        ("PRIVMSG #a :x\rJOIN #b", "CR, LF or NUL inside a line"),
        ("PRIVMSG #a :x\nJOIN #b", "CR, LF or NUL inside a line"),
        ("PRIVMSG #a :x\0", "CR, LF or NUL inside a line"),
    ],
)
def test_invalid_lines_raise_parse_error(line: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as caught:
        parse(line)
    assert caught.value.reason == reason


def test_parse_error_keeps_a_truncated_line() -> None:
    with pytest.raises(ParseError) as caught:
        parse("@" + "x" * 10_000)
    assert len(caught.value.line) == ParseError.MAX_SHOWN + 3


@pytest.mark.parametrize("value", [None, 42, ["PING"]])
def test_non_text_raises_parse_error(value: object) -> None:
    with pytest.raises(ParseError, match="not a line of text"):
        parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("a\\sb", "a b"),
        ("a\\:b", "a;b"),
        ("a\\\\b", "a\\b"),
        ("a\\rb\\n", "a\rb\n"),
        ("a\\xb", "axb"),  # unknown escape: the backslash is dropped
        ("ab\\", "ab"),  # trailing lone backslash: dropped
        ("\\\\s", "\\s"),  # an escaped backslash before s
        ("\\\\\\s", "\\ "),
    ],
)
def test_tag_unescaping(raw: str, value: str) -> None:
    assert unescape_tag_value(raw) == value
    assert parse(f"@k={raw} CMD").tags == {"k": value}


def test_tag_rules() -> None:
    assert parse("@a;b=;c=1;a=2;=x CMD").tags == {"a": "2", "b": "", "c": "1"}
    assert parse("@a=b=c;d CMD").tags == {"a": "b=c", "d": ""}


def test_escape_round_trip() -> None:
    value = "a; b\\c\r\nd"
    assert unescape_tag_value(escape_tag_value(value)) == value


def test_serialize_uses_the_trailing_form_only_where_needed() -> None:
    assert serialize("PRIVMSG", ["#c", "hello"]) == "PRIVMSG #c hello"
    assert serialize("PRIVMSG", ["#c", "hello world"]) == "PRIVMSG #c :hello world"
    assert serialize("PRIVMSG", ["#c", ":)"]) == "PRIVMSG #c ::)"
    assert serialize("PRIVMSG", ["#c", ""]) == "PRIVMSG #c :"
    assert serialize("PING") == "PING"
    line = serialize("PRIVMSG", ["#c", "x y"], tags={"reply-parent-msg-id": "a;b", "x": ""})
    assert line == "@reply-parent-msg-id=a\\:b;x PRIVMSG #c :x y"
    assert parse(line) == Message(
        "PRIVMSG", ["#c", "x y"], {"reply-parent-msg-id": "a;b", "x": ""}, None, line
    )


@pytest.mark.parametrize(
    ("command", "params", "match"),
    [
        ("PRIVMSG", ["#c", "hi\r\nJOIN #evil"], "contains '\\\\r'"),
        ("PRIVMSG", ["#c", "hi\nJOIN #evil"], "contains '\\\\n'"),
        ("PRIVMSG", ["#c", "hi\0"], "contains '\\\\x00'"),
        ("PRIVMSG", ["#c d", "hi"], "only the last parameter"),
        ("PRIVMSG", ["", "hi"], "only the last parameter"),
        ("PRIVMSG", [":c", "hi"], "only the last parameter"),
        ("PRIV MSG", ["#c"], "invalid command"),
        ("", ["#c"], "invalid command"),
        ("PRIVMSG\r\nJOIN", ["#c"], "the command contains"),
    ],
)
def test_serialize_refuses_injection(command: str, params: list[str], match: str) -> None:
    with pytest.raises(UnsafeLineError, match=match):
        serialize(command, params)


def test_serialize_refuses_bad_tags_and_source() -> None:
    with pytest.raises(UnsafeLineError, match="invalid tag name"):
        serialize("X", tags={"a b": "1"})
    with pytest.raises(UnsafeLineError, match="NUL"):
        serialize("X", tags={"a": "\0"})
    with pytest.raises(UnsafeLineError, match="invalid source"):
        serialize("X", source="a b")
    assert serialize("X", tags={"a": "line\r\nbreak"}) == "@a=line\\r\\nbreak X"
