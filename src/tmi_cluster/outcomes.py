"""How a channel's join ended, or why a channel was lost: one vocabulary for every layer.

The connection and the pool report these, the store records them (``last_join_outcome``), and a
:class:`~tmi_cluster.events.ChannelLostEvent` carries one as its ``reason``.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "IN_FLIGHT",
    "JOIN_REFUSALS",
    "ChannelJoin",
    "Grant",
    "JoinResult",
    "JoinStatus",
    "SendRefusal",
    "SendResult",
    "SendStatus",
]


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
    #: The chat server cannot be reached (DNS, a refused connection, TLS): a first join is not
    #: kept waiting for a server that does not answer (a held channel is rejoined when it does).
    UNREACHABLE = "unreachable"

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


class SendStatus(enum.StrEnum):
    """How a :meth:`~tmi_cluster.Cluster.send` ended."""

    #: Every part of the message was written to Twitch's connection.
    WRITTEN = "written"
    #: Nothing was written, for the :class:`SendRefusal` given as the reason.
    REFUSED = "refused"
    #: No result in time. With no reason, nothing was written and nothing will be (the
    #: command was fenced off); with reason ``in_flight``, a worker began writing it and ended
    #: before it said so: it may have reached Twitch.
    TIMED_OUT = "timed_out"


class SendRefusal(enum.StrEnum):
    """Why a send was refused (nothing of it was written)."""

    #: Twitch refused the bot's login, or the channel is not authorized for sending.
    UNAUTHORIZED = "unauthorized"
    #: The text is longer than ``throttle.messages.max_length`` under ``long_text = "refuse"``.
    TOO_LONG = "too_long"
    #: The account's message budget (or the channel's interval) had no room before the
    #: command's deadline.
    RATE_LIMITED = "rate_limited"
    #: No worker has a Twitch identity to send with (``tmi.identity`` is not configured).
    NO_IDENTITY = "no_identity"
    #: The sending connection could not be brought up before the deadline.
    NOT_CONNECTED = "not_connected"
    #: An error of ours while carrying it out, or a command that failed too often (it went to
    #: the dead-letter stream; ``tmi-cluster dead-letters`` shows it).
    FAILED = "failed"


#: The reason of a TIMED_OUT send that a worker began and did not finish.
IN_FLIGHT = "in_flight"


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one send: true to what happened, never a guess.

    ``status`` is a :class:`SendStatus`; ``reason`` a :class:`SendRefusal` value when refused,
    :data:`IN_FLIGHT` or None when timed out; ``detail`` says it in words. ``parts`` is the
    number of messages written (a long text is split); ``process`` the worker that wrote them.
    True (``bool(result)``) exactly when written.
    """

    id: str
    channel: str
    status: SendStatus
    reason: str | None = None
    detail: str = ""
    parts: int = 0
    process: str | None = None

    @property
    def ok(self) -> bool:
        """True when the message was written."""
        return self.status is SendStatus.WRITTEN

    def __bool__(self) -> bool:
        return self.ok


class JoinStatus(enum.StrEnum):
    """What became of one channel of a ``Cluster.join`` (or ``tmi-cluster join``)."""

    #: A worker holds it now (:attr:`ChannelJoin.process`).
    JOINED = "joined"
    #: A worker held it already.
    ALREADY = "already"
    #: Twitch refused it, or it timed out: :attr:`ChannelJoin.result` says why (retried as the
    #: reason demands).
    FAILED = "failed"
    #: The channel manager does not authorize it: not wanted, nothing joined.
    UNAUTHORIZED = "unauthorized"
    #: No outcome within the timeout (:attr:`ChannelJoin.process`: whom it is assigned to).
    NO_ANSWER = "no_answer"
    #: The workers are paused (SIGUSR2): it is joined on SIGCONT.
    PAUSED = "paused"


class ChannelJoin(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a join for one channel; ``str()`` is the line the command line prints
    (``joined (sup-a-1)``, ``msg_banned``, ``no answer within 10 s (assigned to sup-a-1)``)."""

    channel: str
    status: JoinStatus
    #: The worker that holds it (joined, already) or that it is assigned to (no answer).
    process: str | None = None
    #: How Twitch answered (joined, or a failure's reason); None when there was no answer.
    result: JoinResult | None = None
    #: The outcome in words, as the command line prints it.
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether a worker holds the channel."""
        return self.status in (JoinStatus.JOINED, JoinStatus.ALREADY)

    def __bool__(self) -> bool:
        """:attr:`ok`, as a :class:`SendResult` is true when written."""
        return self.ok

    def __str__(self) -> str:
        return self.detail or self.status.value


class Grant(enum.StrEnum):
    """What a grant or a revoke changed for one channel (``Cluster.authorize``, ``revoke``)."""

    AUTHORIZED = "authorized"
    ALREADY = "already authorized"
    RECONNECT_SET = "reconnect set"
    RECONNECT_CLEARED = "reconnect cleared"
    #: Authorized already; the account that sends in it changed (``--sender``).
    SENDER_SET = "sender set"
    REVOKED = "revoked"
    NOT_AUTHORIZED = "was not authorized"
