"""SQLAlchemy models of the durable state: channels, supervisors, processes, their history,
and the cluster's own state.

Table names keep the original's (``tmi_cluster_channels``, ``tmi_cluster_supervisors``,
``tmi_cluster_supervisor_processes``) so that they never collide with an application's own tables
in a shared database. Every timestamp is stored in UTC and read back as an aware datetime.
Changes to these models need a migration in ``store/migrations/versions`` (a test compares them).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tmi_cluster.logins import MAX_LOGIN_LENGTH

__all__ = [
    "Base",
    "ChannelRecord",
    "HistoryRecord",
    "ProcessRecord",
    "RunState",
    "StateRecord",
    "SupervisorRecord",
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


class Base(DeclarativeBase):
    """Declarative base with the naming convention and the UTC timestamp type."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class RunState(enum.StrEnum):
    """Lifecycle of a supervisor or a worker process."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"


class ChannelRecord(Base):
    """One channel the cluster knows: whether it is wanted, authorized, and how its join went."""

    __tablename__ = "tmi_cluster_channels"
    #: The stale cleanup's query: the wanted channels by their last acknowledgement.
    __table_args__ = (
        Index("ix_tmi_cluster_channels_wanted_acknowledged", "wanted", "acknowledged_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(MAX_LOGIN_LENGTH), unique=True)
    #: Indexed with ``acknowledged_at`` (the index's first column serves ``wanted`` alone).
    wanted: Mapped[bool] = mapped_column(Boolean, default=False)
    authorized: Mapped[bool] = mapped_column(Boolean, default=False)
    authorized_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    reconnect: Mapped[bool] = mapped_column(Boolean, default=False)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    acknowledged_at: Mapped[datetime | None]
    last_join_outcome: Mapped[str | None] = mapped_column(String(40))
    last_join_at: Mapped[datetime | None]
    #: Failed joins in a row (0 after a join succeeded); the last one's reason is
    #: ``last_join_outcome``.
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When the coordinator tries again (None: no retry pending).
    retry_at: Mapped[datetime | None]
    #: The reason demands no retry (a ban): joined again only when asked again.
    given_up: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StateRecord(Base):
    """A value of the cluster's own (the size it last ran at, for ``auto_scale.restore``)."""

    __tablename__ = "tmi_cluster_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SupervisorRecord(Base):
    """Latest state of one supervisor (written at start and stop, never per second)."""

    __tablename__ = "tmi_cluster_supervisors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), index=True)
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default=RunState.STARTING)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]


class ProcessRecord(Base):
    """Latest state of one worker process."""

    __tablename__ = "tmi_cluster_supervisor_processes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    supervisor_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("tmi_cluster_supervisors.id", ondelete="CASCADE"), index=True
    )
    pid: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default=RunState.STARTING)
    channels: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    exit_code: Mapped[int | None] = mapped_column(Integer)


class HistoryRecord(Base):
    """One lifecycle step of a supervisor or process (started, restarted, stopped, died)."""

    __tablename__ = "tmi_cluster_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    supervisor_id: Mapped[str] = mapped_column(String(64), index=True)
    process_id: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(String(500), default="")
