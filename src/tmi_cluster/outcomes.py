"""How a channel's join ended, or why a channel was lost: one vocabulary for every layer.

The connection and the pool report these, the store records them (``last_join_outcome``), and a
:class:`~tmi_cluster.events.ChannelLostEvent` carries one as its ``reason``.
"""

from __future__ import annotations

import enum

__all__ = ["JOIN_REFUSALS", "JoinResult"]


class JoinResult(enum.StrEnum):
    """The outcome of a join, or the reason a held channel was lost."""

    #: The server confirmed the join (its echo of our JOIN, or the channel's ROOMSTATE).
    JOINED = "joined"
    #: Twitch refused it: the channel is suspended.
    SUSPENDED = "msg_channel_suspended"
    #: Twitch refused it: the account is banned from the channel.
    BANNED = "msg_banned"
    #: Twitch refused it: the channel is banned for a terms-of-service violation.
    TOS_BAN = "tos_ban"
    #: Twitch refused it: the account is in as many channels as it may be (100).
    CHANNEL_LIMIT = "msg_concurrent_channel_limit_reached"
    #: No confirmation within the join timeout (a channel that does not exist gives silence).
    TIMEOUT = "timeout"
    #: Parted on request before the join was confirmed.
    PARTED = "parted"
    #: The server parted the channel without being asked (a server-side PART or removal).
    REMOVED = "removed"
    #: The connection's login was refused; it does not retry a refused token.
    LOGIN_REFUSED = "login_refused"
    #: The connection ended for good (closed, failed, or reconnecting without rejoin).
    CLOSED = "closed"

    @property
    def ok(self) -> bool:
        """True for :attr:`JOINED`."""
        return self is JoinResult.JOINED


#: The NOTICE msg-ids with which Twitch refuses a join, as results.
JOIN_REFUSALS: dict[str, JoinResult] = {
    result.value: result
    for result in (
        JoinResult.SUSPENDED,
        JoinResult.BANNED,
        JoinResult.TOS_BAN,
        JoinResult.CHANNEL_LIMIT,
    )
}
