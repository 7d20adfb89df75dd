"""Tag value conversions shared by the event types, each with a documented default.

A malformed value degrades to its documented default (no value of Twitch's can make an event
unreadable); events read these lazily and cache the result:

- a number (``bits``, ``ban-duration``, ``msg-param-*`` counts, room modes) that is not one: 0,
  or None where the field is optional;
- ``tmi-sent-ts`` that is not a number of milliseconds: ``sent_at`` is None;
- a ``badges`` or ``badge-info`` item without ``/``: that item is left out;
- an ``emotes`` range that is not ``start-end`` within the text: that range is left out.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "Emote",
    "badges",
    "count",
    "emotes",
    "flag",
    "number",
    "optional_flag",
    "sent_at",
]

from tmi_cluster.events.emote import Emote


def number(tags: dict[str, str], name: str) -> int | None:
    """The integer value of a tag; None when absent, empty or malformed."""
    value = tags.get(name)
    if not value:
        return None
    digits = value[1:] if value[0] == "-" else value
    if digits.isascii() and digits.isdigit():
        return int(value)
    return None


def count(tags: dict[str, str], name: str) -> int:
    """A non-negative integer tag; 0 when absent, empty, negative or malformed."""
    value = number(tags, name)
    return value if value is not None and value >= 0 else 0


def sent_at(tags: dict[str, str]) -> datetime | None:
    """``tmi-sent-ts`` (milliseconds) as an aware UTC datetime; None when absent or malformed."""
    millis = number(tags, "tmi-sent-ts")
    if millis is None:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def badges(tags: dict[str, str], name: str) -> dict[str, str]:
    """A ``name/version,...`` tag as a mapping; items without ``/`` are left out (counted)."""
    value = tags.get(name)
    if not value:
        return {}
    found = {}
    for item in value.split(","):
        badge, slash, version = item.partition("/")
        if slash and badge:
            found[badge] = version
    return found


def emotes(value: str | None, text: str) -> list[Emote]:
    """An ``emotes`` tag (``id:start-end,start-end/id:...``) checked against ``text``."""
    if not value:
        return []
    found = []
    length = len(text)
    for group in value.split("/"):
        emote_id, colon, ranges = group.partition(":")
        if not colon or not emote_id:
            continue
        for span in ranges.split(","):
            start, dash, end = span.partition("-")
            if (
                dash
                and start.isascii()
                and start.isdigit()
                and end.isascii()
                and end.isdigit()
                and int(start) <= int(end) < length
            ):
                found.append(Emote(emote_id, int(start), int(end)))
    found.sort(key=lambda emote: emote.start)
    return found


def flag(tags: dict[str, str], name: str) -> bool:
    """True when the tag is ``1``."""
    return tags.get(name) == "1"


def optional_flag(tags: dict[str, str], name: str) -> bool | None:
    """``0``/``1`` as a bool; None when absent, or (counted) when anything else."""
    value = tags.get(name)
    if value is None:
        return None
    if value in ("0", "1"):
        return value == "1"
    return None
