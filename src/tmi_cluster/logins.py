"""Twitch channel logins: the one place that says what a valid channel name is."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from tmi_cluster.errors import InvalidChannelError

__all__ = ["MAX_LOGIN_LENGTH", "normalise_login", "normalise_logins"]

#: Twitch logins are at most 25 characters long.
MAX_LOGIN_LENGTH = 25
_LOGIN = re.compile(r"[a-z0-9_]{1,25}")


def normalise_login(name: str) -> str:
    """``name`` as a channel login: lower case, without a leading ``#``.

    Raises :class:`InvalidChannelError` (a ``ValueError``) unless the result is 1 to 25 letters,
    digits or underscores, so that no other text can reach an IRC line or a query. The result is
    interned (:func:`sys.intern`): every map that keeps a channel by its name (a pool's, its
    connections', their links') keeps one string per channel, not one per normalisation.
    """
    login = name.strip().removeprefix("#").lower()
    if not _LOGIN.fullmatch(login):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InvalidChannelError(
            f"invalid channel name {shown!r}: expected 1 to 25 letters, digits or underscores"
        )
    return sys.intern(login)


def normalise_logins(names: Iterable[str] | str) -> list[str]:
    """Each of ``names`` normalised, duplicates removed, first occurrence order kept. One name
    given as a string is one channel (never one channel per letter)."""
    if isinstance(names, str):
        names = [names]
    return list(dict.fromkeys(normalise_login(name) for name in names))
