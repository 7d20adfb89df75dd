"""IRCv3 messages: parsing received lines and serialising lines to send. Sans-IO.

Grammar (IRCv3 message tags on RFC 1459)::

    [@tag[=value];tag... SP] [:source SP] command [SP param]* [SP :trailing]

Atoms are separated by one or more spaces. Tag values are unescaped (``\\:`` -> ``;``, ``\\s`` ->
space, ``\\\\`` -> ``\\``, ``\\r``, ``\\n``; an unknown escape drops the backslash, a trailing lone
backslash is dropped); a tag without a value maps to ``""``; a repeated key keeps the last value.

Contracts:

- :func:`parse` takes ``str`` or ``bytes``; bytes are decoded as UTF-8 with invalid sequences
  replaced by U+FFFD (Twitch sends UTF-8; one bad byte must not cost the whole line). One
  trailing CR LF (or LF) is removed. It raises :class:`~tmi_cluster.errors.ParseError` and
  nothing else: for an empty line, a NUL, CR or LF inside the line, tags or a source without a
  command, or a line that is not text.
- :func:`serialize` builds exactly one line (without CR LF) or raises
  :class:`~tmi_cluster.errors.UnsafeLineError`: no parameter may contain CR, LF or NUL, so chat
  text can never inject a second command; only the last parameter may be empty, contain a space
  or start with ``:``, and it gets the trailing form only when it needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from tmi_cluster.errors import ParseError, UnsafeLineError
from tmi_cluster.irc._split import split_line, unescape_value

__all__ = [
    "Message",
    "escape_tag_value",
    "parse",
    "serialize",
    "split_source",
    "unescape_tag_value",
]

_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_FORBIDDEN = ("\0", "\r", "\n")


def unescape_tag_value(value: str) -> str:
    """The IRCv3 unescaped form of a raw tag value."""
    return unescape_value(value) if "\\" in value else value


def escape_tag_value(value: str) -> str:
    """The IRCv3 escaped form of a tag value (``;``, space, ``\\``, CR and LF escaped)."""
    return value.translate(_ESCAPES)


def split_source(source: str | None) -> tuple[str | None, str | None, str | None]:
    """``nick!user@host`` as ``(nick, user, host)``, each None when absent."""
    if source is None:
        return None, None, None
    rest, at, host = source.partition("@")
    nick, bang, user = rest.partition("!")
    return nick, (user if bang else None), (host if at else None)


class Message(msgspec.Struct, gc=False):
    """One parsed IRC message.

    ``command`` is as sent; ``params`` holds the parameters, the trailing one last without its
    colon; ``tags`` maps names to unescaped values; ``source`` is the prefix without its colon,
    or None; ``raw`` is the line without CR LF. ``nick``, ``user`` and ``host`` split the source.
    Equality compares every field, ``raw`` included.
    """

    command: str
    params: list[str]
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    source: str | None = None
    raw: str = msgspec.field(default="")

    @property
    def nick(self) -> str | None:
        """The nick of the source (the server name for server messages), or None."""
        source = self.source
        if source is None:
            return None
        # Read on every chat line: two finds instead of split_source's partitions.
        at = source.find("@")
        bang = source.find("!", 0, at) if at != -1 else source.find("!")
        end = bang if bang != -1 else at
        return source if end == -1 else source[:end]

    @property
    def user(self) -> str | None:
        """The user part of the source, or None."""
        return split_source(self.source)[1]

    @property
    def host(self) -> str | None:
        """The host part of the source, or None."""
        return split_source(self.source)[2]


def _decode(line: object) -> str:
    if isinstance(line, bytes | bytearray | memoryview):
        return bytes(line).decode("utf-8", "replace")
    raise ParseError("not a line of text", repr(line))


def parse(line: str | bytes | bytearray) -> Message:
    """Parse one received line. Raises :class:`ParseError` and nothing else."""
    if type(line) is not str:
        line = _decode(line)
    try:
        return Message(*split_line(line))
    except ValueError as exc:
        raise ParseError(str(exc), line.rstrip("\r\n")) from None


def _check(text: str, what: str) -> None:
    for char in _FORBIDDEN:
        if char in text:
            raise UnsafeLineError(f"{what} contains {char!r}: a line to send must be one line")


def serialize(
    command: str,
    params: Sequence[str] = (),
    *,
    tags: Mapping[str, str] | None = None,
    source: str | None = None,
) -> str:
    """One IRC line (without CR LF). Raises :class:`UnsafeLineError` rather than inject."""
    if not command or " " in command or command[0] == ":":
        raise UnsafeLineError(f"invalid command {command!r}")
    _check(command, "the command")
    parts: list[str] = []
    if tags:
        items = []
        for key, value in tags.items():
            if not key or any(c in key for c in " ;=") or "\0" in key or "\r" in key or "\n" in key:
                raise UnsafeLineError(f"invalid tag name {key!r}")
            if "\0" in value:  # CR and LF are escaped below; NUL has no escape
                raise UnsafeLineError(f"tag {key!r} contains a NUL")
            items.append(f"{key}={escape_tag_value(value)}" if value else key)
        parts.append("@" + ";".join(items))
    if source is not None:
        if not source or " " in source:
            raise UnsafeLineError(f"invalid source {source!r}")
        _check(source, "the source")
        parts.append(":" + source)
    parts.append(command)
    last = len(params) - 1
    for index, param in enumerate(params):
        _check(param, f"parameter {index + 1}")
        needs_trailing = not param or " " in param or param[0] == ":"
        if needs_trailing and index != last:
            raise UnsafeLineError(
                f"parameter {index + 1} ({param!r}) is empty, has a space or starts with ':'; "
                "only the last parameter may"
            )
        parts.append(":" + param if needs_trailing else param)
    return " ".join(parts)
