"""The parser's hot loop: one line into its atoms. Pure functions of ``str``, no classes.

This module is compiled with mypyc when the package is built on a machine with a C compiler
(see ``setup.py``), which makes it about 1.5 times faster; elsewhere it runs as plain Python,
with the same results (a test compares the two). Keep it free of classes and of imports from the
rest of the package, so that it compiles on its own.

Contracts: :func:`split_line` takes a line, removes one trailing CR LF (or LF), and returns
``(command, params, tags, source, raw)`` (``raw``: the line without its ending) or raises
``ValueError`` with the reason (a CR, LF or NUL inside, no command); tag values are unescaped.
"""

from __future__ import annotations

import re

__all__ = ["ESCAPE_RE", "split_line", "unescape_match", "unescape_value"]

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)


def unescape_match(match: re.Match[str]) -> str:
    """The replacement of one ``\\x`` escape (the reference rule)."""
    char = match.group(1)
    return _UNESCAPES.get(char, char)


def unescape_value(value: str) -> str:
    """The unescaped form of a raw tag value that contains a backslash."""
    if "\\\\" not in value:
        # No escaped backslash: every escape is one unambiguous pair, replaced in C.
        value = (
            value.replace("\\s", " ").replace("\\:", ";").replace("\\r", "\r").replace("\\n", "\n")
        )
        if "\\" not in value:
            return value
    return ESCAPE_RE.sub(unescape_match, value)


def split_line(  # noqa: C901, PLR0912 - the hot path, inlined on purpose
    line: str,
) -> tuple[str, list[str], dict[str, str], str | None, str]:
    """``(command, params, tags, source, raw)`` of a line; ValueError with the reason if invalid.

    The tag loop is inlined and written plainly: on Twitch lines it measured faster than
    ``dict(map(...))``, comprehensions and regular expressions.
    """
    raw = line
    if raw[-1:] == "\n":
        raw = raw[:-2] if raw[-2:] == "\r\n" else raw[:-1]
    if "\r" in raw or "\n" in raw or "\0" in raw:
        raise ValueError("CR, LF or NUL inside a line")
    tags: dict[str, str] = {}
    rest = raw
    if raw[:1] == "@":
        space = raw.find(" ")
        if space == -1:
            raise ValueError("tags without a command")
        for item in raw[1:space].split(";"):
            key, _, value = item.partition("=")
            tags[key] = value
        tags.pop("", None)
        if raw.find("\\", 1, space) != -1:
            for key, value in tags.items():
                if "\\" in value:
                    tags[key] = unescape_value(value)
        rest = raw[space + 1 :]
        if rest[:1] == " ":
            rest = rest.lstrip(" ")
    source: str | None = None
    if rest[:1] == ":":
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    cut = rest.find(" :")
    words = rest.split(" ") if cut == -1 else rest[:cut].split(" ")
    if "" in words:
        words = [word for word in words if word]
    if cut != -1:
        words.append(rest[cut + 2 :])
    if not words or not words[0] or words[0][0] == ":":
        raise ValueError("no command")
    return words[0], words[1:], tags, source, raw
