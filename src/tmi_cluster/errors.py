"""Every error that tmi-cluster raises on purpose.

The tree::

    TmiClusterError                 the root: ``except TmiClusterError`` catches all of ours
    ├── ConfigError                 a setting is unknown, of the wrong type, or invalid;
    │                               ``problems`` lists one line per problem, each naming the
    │                               key, where its value came from and what is expected
    ├── StorageError                the SQL database failed or cannot be reached
    │   └── MigrationError          the schema could not be brought up to date
    ├── RedisUnavailableError       Redis cannot be reached, or answered with an error
    ├── StaleLeaseError             a write fenced by a lease token that is not current any
    │                               more (another coordinator took over); nothing was written
    ├── EmbeddedRedisError          the private Redis server could not be started or found
    ├── InvalidChannelError         a channel name is not a Twitch login (also a ValueError)
    ├── LoginError                  Twitch refused a login (bad or malformed token)
    ├── ParseError                  a received line is not a valid IRC message (``line`` holds it)
    ├── EventSubError               a message of an EventSub WebSocket that cannot be read
    ├── OAuthError                  Twitch refused, or did not answer, a step of OAuth
    │                               (``status``, ``reason``: Twitch's own words)
    ├── GrantKeyError               a sealed grant or session that twitch.grant_key cannot open
    ├── HelixError                  Twitch's API refused, or did not answer, a request
    │                               (``status``, ``reason``; ``retry_after_s`` on a 429)
    ├── ChatRefusedError            Twitch refused or dropped a chat message sent through its
    │                               API (``reason``: the send result's refusal)
    ├── UnsafeLineError             a line to send would not be exactly one valid IRC line
    │                               (CR, LF or NUL in it, a bad parameter); also a ValueError
    ├── MessageTooLongError         text over the length limit where splitting is turned off;
    │                               also a ValueError
    ├── NoIdentityError             sending needs a Twitch identity and none is configured
    ├── DeadlineError               a message could not be sent before its deadline (nothing
    │                               of it was written)
    ├── UnknownEventTypeError       an event type name that is not one of tmi_cluster.events
    │                               (a filter); also a ValueError
    └── NotAvailableError           a command or feature that this release does not have yet

Errors of the libraries underneath (redis, SQLAlchemy, ssl, sockets, the operating system) are
translated into these at the boundary, with the original kept as ``__cause__``. Messages say what
went wrong and what to do about it, and never contain a secret.
"""

from __future__ import annotations

__all__ = [
    "ChatRefusedError",
    "ConfigError",
    "DeadlineError",
    "EmbeddedRedisError",
    "EventSubError",
    "GrantKeyError",
    "HelixError",
    "InvalidChannelError",
    "LoginError",
    "MessageTooLongError",
    "MigrationError",
    "NoIdentityError",
    "NotAvailableError",
    "OAuthError",
    "ParseError",
    "RedisUnavailableError",
    "StaleLeaseError",
    "StorageError",
    "TmiClusterError",
    "UnknownEventTypeError",
    "UnsafeLineError",
]


class TmiClusterError(Exception):
    """The root of every error that tmi-cluster raises on purpose."""


class ConfigError(TmiClusterError):
    """The configuration cannot be used.

    ``problems`` holds one line per problem; ``str(error)`` joins them with newlines. Each line
    names the key (``auto_scale.thresholds.scale_out``), the value's source (``tmi-cluster.toml,
    line 12`` or ``environment variable TMI_CLUSTER_...``) and what is expected.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StorageError(TmiClusterError):
    """The SQL database failed or cannot be reached."""


class MigrationError(StorageError):
    """The database schema could not be brought up to date."""


class RedisUnavailableError(TmiClusterError):
    """Redis cannot be reached, or answered with an error."""


class StaleLeaseError(TmiClusterError):
    """A write fenced by a lease token that is not current any more: another coordinator took
    over. Nothing of it was written."""


class EmbeddedRedisError(TmiClusterError):
    """The private Redis server could not be started, or none is running where one is needed."""


class InvalidChannelError(TmiClusterError, ValueError):
    """A channel name is not a Twitch login (1 to 25 letters, digits or underscores)."""


class LoginError(TmiClusterError):
    """Twitch refused a login: ``Login authentication failed`` or ``Improperly formatted auth``."""


class NotAvailableError(TmiClusterError):
    """The requested command or feature is not part of this release yet."""


class ParseError(TmiClusterError):
    """A received line is not a valid IRC message.

    ``line`` holds the offending line, truncated to :data:`ParseError.MAX_SHOWN` characters.
    """

    MAX_SHOWN = 200

    def __init__(self, reason: str, line: str) -> None:
        self.reason = reason
        self.line = line if len(line) <= self.MAX_SHOWN else line[: self.MAX_SHOWN] + "..."
        super().__init__(f"{reason}: {self.line!r}")


class EventSubError(TmiClusterError):
    """A message of an EventSub WebSocket that is not JSON, or not of the shape Twitch
    documents (the text says what is wrong)."""


class OAuthError(TmiClusterError):
    """Twitch refused, or did not answer, a step of the OAuth flow (the text says which and
    why; it holds no secret, nor the address asked). ``status``: Twitch's HTTP status, None
    when it did not answer; ``reason``: Twitch's own words, when it answered."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class HelixError(TmiClusterError):
    """Twitch's API (Helix) refused, or did not answer, a request: the text says which and
    why, without a token. ``status``: the HTTP status (None: no answer); ``reason``: Twitch's
    words; ``retry_after_s``: on a 429, when the budget is back (None when not said)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class ChatRefusedError(TmiClusterError):
    """Twitch refused, or dropped, a chat message sent through its API (Send Chat Message):
    nothing was said. ``reason`` is the :class:`~tmi_cluster.outcomes.SendRefusal` value the
    send's result carries; the text says Twitch's own code and words."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class GrantKeyError(TmiClusterError):
    """A sealed value that the key cannot open: sealed with another ``twitch.grant_key``, or
    tampered with, or (a session) expired."""


class UnsafeLineError(TmiClusterError, ValueError):
    """A line to send would not be exactly one valid IRC line (CR, LF or NUL, a bad parameter).

    Raised instead of sending, so that no text can inject a second IRC command.
    """


class MessageTooLongError(TmiClusterError, ValueError):
    """Text longer than ``throttle.messages.max_length`` while ``long_text`` is ``refuse``.

    Raised before anything is sent.
    """


class NoIdentityError(TmiClusterError):
    """Sending needs ``tmi.identity.username`` and ``password``; the bot reads anonymously."""


class DeadlineError(TmiClusterError):
    """A message could not be sent before its deadline; nothing of it was written."""


class UnknownEventTypeError(TmiClusterError, ValueError):
    """An event type given by name (a filter) is not one of :mod:`tmi_cluster.events`."""
