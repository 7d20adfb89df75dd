"""The tables of the durable state (channels, supervisors, processes, their history, and the
cluster's own state) in SQLAlchemy Core, and the records the store reads from them.

Table names keep the original's (``tmi_cluster_channels``, ``tmi_cluster_supervisors``,
``tmi_cluster_supervisor_processes``) so that they never collide with an application's own tables
in a shared database. Every timestamp is stored in UTC and read back as an aware datetime.
Changes to these tables need a migration in ``store/migrations/versions`` (a test compares them).

The tables are Core, not ORM: a record is a frozen dataclass built from a row
(``SupervisorRecord(**row._mapping)``), and the ORM (about 50 ms of a command's start) is never
imported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)

from tmi_cluster.logins import MAX_LOGIN_LENGTH

__all__ = [
    "HistoryRecord",
    "ProcessRecord",
    "RunState",
    "SupervisorRecord",
    "channel_table",
    "grant_table",
    "history_table",
    "metadata",
    "process_table",
    "state_table",
    "supervisor_table",
]

#: Constraint names are explicit so that migrations can name them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as an aware UTC datetime."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


# BigInteger ids that are still SQLite's auto-incrementing INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Every table of the store, with the naming convention (what the migrations are compared with).
metadata = MetaData(naming_convention=NAMING)


class RunState(enum.StrEnum):
    """Lifecycle of a supervisor or a worker process."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"


#: One channel the cluster knows: whether it is wanted, authorized, and how its join went.
channel_table = Table(
    "tmi_cluster_channels",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("login", String(MAX_LOGIN_LENGTH), nullable=False, unique=True),
    # Indexed with acknowledged_at (the index's first column serves wanted alone).
    Column("wanted", Boolean, nullable=False, default=False),
    Column("authorized", Boolean, nullable=False, default=False),
    Column("authorized_at", UTCDateTime(), nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("reconnect", Boolean, nullable=False, default=False),
    Column("options", JSON(), nullable=False, default=dict),
    Column("acknowledged_at", UTCDateTime(), nullable=True),
    Column("last_join_outcome", String(40), nullable=True),
    Column("last_join_at", UTCDateTime(), nullable=True),
    # Failed joins in a row (0 after a join succeeded); the last one's reason is
    # last_join_outcome.
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
    # When the coordinator tries again (NULL: no retry pending).
    Column("retry_at", UTCDateTime(), nullable=True),
    # The reason demands no retry (a ban): joined again only when asked again.
    Column("given_up", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    # The bot account that sends in the channel (NULL: the settings choose).
    Column("sender", String(MAX_LOGIN_LENGTH), nullable=True),
    # The stale cleanup's query: the wanted channels by their last acknowledgement.
    Index("ix_tmi_cluster_channels_wanted_acknowledged", "wanted", "acknowledged_at"),
)

#: What a streamer granted the bot on the invite screen: their Twitch user, the scopes, and the
#: OAuth tokens, encrypted (Fernet, with a key derived from ``twitch.grant_key``): the database
#: never holds a token in clear.
grant_table = Table(
    "tmi_cluster_grants",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("login", String(MAX_LOGIN_LENGTH), nullable=False, unique=True),
    Column("scopes", JSON(), nullable=False, default=list),
    Column("access_token", Text, nullable=False),
    Column("refresh_token", Text, nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

#: A value of the cluster's own (the size it last ran at, for ``auto_scale.restore``).
state_table = Table(
    "tmi_cluster_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

#: Latest state of one supervisor (written at start and stop, never per second).
supervisor_table = Table(
    "tmi_cluster_supervisors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False, index=True),
    Column("pid", Integer, nullable=False),
    Column("state", String(20), nullable=False, default=RunState.STARTING),
    Column("options", JSON(), nullable=False, default=dict),
    Column("metrics", JSON(), nullable=False, default=dict),
    Column("started_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("last_seen_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("stopped_at", UTCDateTime(), nullable=True),
)

#: Latest state of one worker process.
process_table = Table(
    "tmi_cluster_supervisor_processes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "supervisor_id",
        String(64),
        ForeignKey("tmi_cluster_supervisors.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("pid", Integer, nullable=True),
    Column("state", String(20), nullable=False, default=RunState.STARTING),
    Column("channels", Integer, nullable=False, default=0),
    Column("metrics", JSON(), nullable=False, default=dict),
    Column("started_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("last_seen_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("stopped_at", UTCDateTime(), nullable=True),
    Column("exit_code", Integer, nullable=True),
)

#: One lifecycle step of a supervisor or process (started, restarted, stopped, died).
history_table = Table(
    "tmi_cluster_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False, default=utcnow, index=True),
    Column("supervisor_id", String(64), nullable=False, index=True),
    Column("process_id", String(64), nullable=True, index=True),
    Column("state", String(20), nullable=False),
    Column("detail", String(500), nullable=False, default=""),
)


# The records: a row of a table as read, by column name. Keyword-only, with the defaults the
# table gives an inserted row, so that a test can build one with only the fields it needs.


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorRecord:
    """Latest state of one supervisor (a row of :data:`supervisor_table`)."""

    id: str
    hostname: str
    pid: int
    state: str = RunState.STARTING
    options: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=utcnow)
    last_seen_at: datetime = field(default_factory=utcnow)
    stopped_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRecord:
    """Latest state of one worker process (a row of :data:`process_table`)."""

    id: str
    supervisor_id: str
    pid: int | None = None
    state: str = RunState.STARTING
    channels: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=utcnow)
    last_seen_at: datetime = field(default_factory=utcnow)
    stopped_at: datetime | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRecord:
    """One lifecycle step of a supervisor or process (a row of :data:`history_table`)."""

    id: int
    at: datetime
    supervisor_id: str
    process_id: str | None
    state: str
    detail: str = ""
