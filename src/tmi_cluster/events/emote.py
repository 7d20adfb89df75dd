"""The emote value type."""

from __future__ import annotations

import msgspec

__all__ = ["Emote"]


class Emote(msgspec.Struct, frozen=True, array_like=True):
    """One emote in a message: its id and the code-point range ``start..end`` (inclusive)."""

    id: str
    start: int
    end: int
