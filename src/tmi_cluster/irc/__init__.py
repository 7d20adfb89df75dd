"""IRCv3 lines to messages and back. Sans-IO: nothing here touches a socket.

See :mod:`tmi_cluster.irc.message` for the grammar and the contracts.
"""

from __future__ import annotations

from tmi_cluster.irc.message import (
    Message,
    escape_tag_value,
    parse,
    serialize,
    split_source,
    unescape_tag_value,
)

__all__ = [
    "Message",
    "escape_tag_value",
    "parse",
    "serialize",
    "split_source",
    "unescape_tag_value",
]
