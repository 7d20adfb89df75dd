"""How a chat connection connects (:class:`ConnectionOptions`), and the states it goes through
(:class:`ConnectionState`). Both are public as ``tmi_cluster.ConnectionOptions`` and
``tmi_cluster.ConnectionState``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from tmi_cluster.chat.transport import Endpoint

__all__ = ["CAPABILITIES", "ConnectionOptions", "ConnectionState"]

#: The Twitch capabilities every connection asks for.
CAPABILITIES = ("twitch.tv/tags", "twitch.tv/commands")


class ConnectionState(enum.StrEnum):
    """Lifecycle of a :class:`~tmi_cluster.chat.connection.Connection`."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    #: Ended for good without being closed: a refused login, or an unexpected error
    #: (:attr:`~tmi_cluster.chat.connection.Connection.failure` says which).
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectionOptions:
    """How to connect. Built from settings at the edge (:func:`tmi_cluster.worker.worker`)."""

    host: str = "irc.chat.twitch.tv"
    port: int = 6697
    secure: bool = True
    transport: str = "tcp"
    ca_file: str | None = None
    login: str | None = None
    token: str = field(default="", repr=False)
    capabilities: tuple[str, ...] = CAPABILITIES
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 5.0
    login_timeout_s: float = 10.0
    join_timeout_s: float = 10.0
    reconnect: bool = True
    rejoin: bool = True
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    max_line_bytes: int = 16_384
    overlap_timeout_s: float = 10.0
    overlap_linger_s: float = 1.0
    name: str = "connection"
    #: Also emit an IrcMessageEvent for every line received and an IrcCommandEvent for every
    #: line sent (for handlers that want the raw lines; off by default, it costs).
    raw_lines: bool = False
    #: Log every line received and sent (``tmi.options.debug``) to the ``tmi_cluster.irc``
    #: logger at INFO, secrets masked (a PASS line is sent as ``PASS oauth:***``).
    debug: bool = False

    @property
    def endpoint(self) -> Endpoint:
        """Where the transport connects."""
        return Endpoint(
            self.transport, self.host, self.port, self.secure, self.ca_file, self.login_timeout_s
        )

    def backoff_s(self, attempt: int) -> float:
        """The wait before reconnect attempt ``attempt`` (1: at once), with jitter."""
        if attempt <= 1:
            return 0.0
        delay = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (attempt - 2))
        return float(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not cryptography
