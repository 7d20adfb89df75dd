"""Durable state in SQL: channels, supervisors, processes and their history.

:class:`Store` is synchronous (writes are rare and small); asyncio code calls it through
``asyncio.to_thread``. It works on SQLite (the default, one file shared by the processes of one
host) and PostgreSQL (several hosts). Every method that takes channels accepts any number of them:
lists are split into chunks well below every backend's placeholder limit, so 250,000 channels are
as valid an argument as one.

Errors of the database are raised as :class:`~tmi_cluster.errors.StorageError` (and
:class:`~tmi_cluster.errors.MigrationError` for ``migrate``) with the URL shown password-masked.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import (
    ColumnElement,
    Engine,
    String,
    any_,
    cast,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy import insert as sql_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from tmi_cluster.config import Settings, mask_url
from tmi_cluster.errors import ConfigError, MigrationError, StorageError
from tmi_cluster.logins import normalise_logins
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.store.models import (
    ChannelRecord,
    HistoryRecord,
    ProcessRecord,
    RunState,
    StateRecord,
    SupervisorRecord,
    utcnow,
)

__all__ = [
    "BULK_FROM",
    "BULK_SIZE",
    "CHUNK_SIZE",
    "Channel",
    "Failure",
    "RunState",
    "Store",
]

#: Channels per statement of the small path: far below SQLite's 999 and PostgreSQL's 65,535
#: placeholders.
CHUNK_SIZE = 500
#: From how many channels on a statement takes them all as one parameter (a JSON array that
#: SQLite reads with ``json_each``, a PostgreSQL array), and how many it takes at most: the
#: bulk path, 4-13 times faster than a row of parameters per channel (bench/channels.py).
BULK_FROM = 1_000
BULK_SIZE = 50_000
_MIGRATIONS = Path(__file__).parent / "migrations"
#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate`` runs.
_MIGRATION_LOCK = 0x746D6963  # "tmic"


class Channel(NamedTuple):
    """A channel as the store knows it (fields in the order of the query that reads it)."""

    login: str
    wanted: bool
    authorized: bool
    revoked: bool
    reconnect: bool
    options: Mapping[str, Any]
    acknowledged_at: datetime | None
    last_join_outcome: str | None
    last_join_at: datetime | None


class Failure(NamedTuple):
    """A channel whose last joins failed: why, how many times in a row, when it is tried
    again (None: not before it is asked for again), whether it was given up, when it failed."""

    login: str
    reason: str
    attempts: int
    retry_at: datetime | None
    given_up: bool
    failed_at: datetime | None


def _chunks(items: Sequence[str], size: int = CHUNK_SIZE) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def _sqlite_lock(database: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.migrate.lock`` (nothing for a database in memory,
    or where ``fcntl`` does not exist)."""
    if not database or database == ":memory:" or fcntl is None:
        yield
        return
    try:
        lock = open(f"{database}.migrate.lock", "a")  # noqa: SIM115  # closed below
    except OSError as exc:
        raise ConfigError(
            f"database.url: cannot use the SQLite file {database}: {exc.strerror or exc}"
        ) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _dialect_insert(dialect: str) -> Any:
    """The INSERT of ``dialect`` (``sqlite`` or ``postgresql``), which has ON CONFLICT.
    Imported here, not with the module: the PostgreSQL dialect alone costs a command that only
    reads a SQLite file about 30 ms at start."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite  # noqa: PLC0415

        return sqlite.insert
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415

    return postgresql.insert


def _text_array() -> Any:
    """PostgreSQL's ``text[]`` (only ever asked for on PostgreSQL; imported here, as above)."""
    from sqlalchemy.dialects.postgresql import ARRAY  # noqa: PLC0415

    return ARRAY(String)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _check_sqlite_folder(database: Path) -> None:
    """ConfigError unless the folder of a SQLite file exists: a typo in ``database.url`` must
    not create a new database (and its folders) somewhere unexpected."""
    folder = database.parent
    if not folder.exists():
        raise ConfigError(
            f"database.url: the folder {folder} of the SQLite file {database.name} does not "
            "exist: create it first, or check the path"
        )
    if not folder.is_dir():
        raise ConfigError(f"database.url: {folder} is not a folder (in the path of {database})")
    if database.exists() and not database.is_file():
        what = "a folder" if database.is_dir() else "not a regular file"
        raise ConfigError(f"database.url: {database} is {what}, not a SQLite database file")


class Store:
    """The SQL database of a cluster. Use as a context manager, or call :meth:`close`."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self._shown = mask_url(url)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            _check_sqlite_folder(Path(parsed.database))
        try:
            self.engine: Engine = create_engine(url, echo=echo, pool_pre_ping=True)
        except ImportError as exc:  # the dialect's driver, imported by create_engine
            raise StorageError(
                _missing_driver(self._shown, parsed.get_backend_name(), exc)
            ) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot use database {self._shown}: {_reason(exc)}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """A store on ``database.url``."""
        return cls(settings.database.url, echo=settings.database.echo)

    def close(self) -> None:
        """Release every connection. Idempotent."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Bring the schema up to date; return the revisions applied (empty when current).

        Idempotent, and safe when several hosts or processes run it at once (PostgreSQL takes
        an advisory lock; SQLite, a lock on the file ``<database>.migrate.lock`` beside it:
        the driver does not put DDL in a transaction, so two first starts could both create
        the tables).
        """
        # Alembic only here: it costs a command that only reads the database 0.2 s at start
        from alembic import command  # noqa: PLC0415
        from alembic.config import Config as AlembicConfig  # noqa: PLC0415
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
        from alembic.script import ScriptDirectory  # noqa: PLC0415

        config = AlembicConfig()
        config.set_main_option("script_location", str(_MIGRATIONS))
        script = ScriptDirectory.from_config(config)
        try:
            with (
                _sqlite_lock(
                    self.engine.url.database if self.engine.dialect.name == "sqlite" else None
                ),
                self.engine.begin() as conn,
            ):
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                    )
                before = MigrationContext.configure(conn).get_current_revision()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise MigrationError(f"cannot migrate database {self._shown}: {_reason(exc)}") from exc
        head = script.get_current_head()
        if before == head:
            return []
        return [rev.revision for rev in script.iterate_revisions(head, before)][::-1]

    def revision(self) -> str | None:
        """The schema revision of the database; None before the first migration. Read from
        Alembic's table without Alembic (a command that only reads starts 0.2 s sooner)."""
        with self._connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return str(row[0]) if row is not None else None

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot reach database {self._shown}: {_reason(exc)}") from exc

    def _write(self) -> _Transaction:
        return _Transaction(self)

    # -- channels -------------------------------------------------------------------------

    def want(self, channels: Iterable[str], *, now: datetime | None = None) -> None:
        """Mark channels wanted and acknowledged now, creating those not yet known; a failed
        or given-up channel is tried again at once."""
        at = now or utcnow()
        values = {
            "wanted": True,
            "acknowledged_at": at,
            "failures": 0,
            "retry_at": None,
            "given_up": False,
        }
        self._upsert(channels, values, at)

    def unwant(self, channels: Iterable[str]) -> None:
        """Mark channels no longer wanted (unknown ones are ignored)."""
        self._set(channels, wanted=False)

    def acknowledge(
        self, channels: Iterable[str], *, now: datetime | None = None, create: bool = True
    ) -> None:
        """Record fresh interest in channels (delays their stale cleanup); with ``create``
        false, in the known ones only."""
        at = now or utcnow()
        if create:
            self._upsert(channels, {"acknowledged_at": at}, at)
        else:
            self._set(channels, acknowledged_at=at)

    def authorize(
        self,
        channels: Iterable[str],
        *,
        reconnect: bool = False,
        options: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Grant authorization, with ``reconnect`` and free-form ``options``; clears a revoke."""
        at = now or utcnow()
        values = {
            "authorized": True,
            "authorized_at": at,
            "revoked": False,
            "reconnect": reconnect,
            "options": dict(options or {}),
        }
        self._upsert(channels, values, at)

    def revoke(self, channels: Iterable[str]) -> None:
        """Withdraw authorization; the channel is no longer wanted."""
        self._set(channels, authorized=False, revoked=True, wanted=False)

    def record_join_outcomes(
        self, outcomes: Mapping[str, JoinResult], *, now: datetime | None = None
    ) -> None:
        """Store the result of the last join attempt of each channel."""
        at = now or utcnow()
        by_outcome: dict[JoinResult, list[str]] = {}
        for login, outcome in outcomes.items():
            by_outcome.setdefault(JoinResult(outcome), []).append(login)
        for outcome, logins in by_outcome.items():
            self._set(logins, last_join_outcome=outcome.value, last_join_at=at)

    def record_failures(self, failures: Iterable[Failure]) -> None:
        """Record failed joins: each channel's reason, attempts, next retry, given up."""
        with self._write() as conn:
            for failure in failures:
                conn.execute(
                    update(ChannelRecord)
                    .where(ChannelRecord.login == failure.login)
                    .values(
                        last_join_outcome=failure.reason[:40],
                        last_join_at=failure.failed_at or utcnow(),
                        failures=failure.attempts,
                        retry_at=failure.retry_at,
                        given_up=failure.given_up,
                        updated_at=utcnow(),
                    )
                )

    def clear_failures(self, channels: Iterable[str], *, now: datetime | None = None) -> None:
        """Record channels joined: their failures are over."""
        logins = normalise_logins(channels)
        at = now or utcnow()
        with self._write() as conn:
            for chunk in self._batches(logins):
                conn.execute(
                    update(ChannelRecord)
                    .where(self._login_in(chunk))
                    .values(
                        last_join_outcome=JoinResult.JOINED.value,
                        last_join_at=at,
                        failures=0,
                        retry_at=None,
                        given_up=False,
                    )
                )

    def failures(self) -> dict[str, Failure]:
        """The failed joins of the wanted channels (failures in a row, not yet joined again)."""
        record = ChannelRecord
        columns = (
            record.login,
            record.last_join_outcome,
            record.failures,
            record.retry_at,
            record.given_up,
            record.last_join_at,
        )
        query = select(*columns).where(ChannelRecord.wanted.is_(True), ChannelRecord.failures > 0)
        with self._read() as conn:
            return {
                str(row[0]): Failure(
                    str(row[0]), str(row[1] or ""), int(row[2]), row[3], bool(row[4]), row[5]
                )
                for row in conn.execute(query)
            }

    def state(self, key: str) -> dict[str, Any] | None:
        """A value of the cluster's own state (None: never set)."""
        with self._read() as conn:
            value = conn.scalar(select(StateRecord.value).where(StateRecord.key == key))
        return dict(value) if value is not None else None

    def set_state(self, key: str, value: Mapping[str, Any]) -> None:
        """Set a value of the cluster's own state."""
        insert = _dialect_insert(self.engine.dialect.name)
        at = utcnow()
        stmt = insert(StateRecord).values(key=key, value=dict(value), updated_at=at)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": dict(value), "updated_at": at}
        )
        with self._write() as conn:
            conn.execute(stmt)

    def channels(self, channels: Iterable[str]) -> dict[str, Channel]:
        """The known channels among ``channels``, by login."""
        logins = normalise_logins(channels)
        found: dict[str, Channel] = {}
        columns = [getattr(ChannelRecord, name) for name in Channel._fields]
        with self._read() as conn:
            for chunk in self._batches(logins):
                rows = conn.execute(select(*columns).where(self._login_in(chunk)))
                for row in rows:
                    channel = Channel._make(row)
                    found[channel.login] = channel
        return found

    def authorized_among(self, channels: Iterable[str]) -> set[str]:
        """Those of ``channels`` authorized and not revoked (their logins only: the manager's
        ``authorized()``)."""
        return self._logins_where(
            channels, ChannelRecord.authorized.is_(True), ChannelRecord.revoked.is_(False)
        )

    def stale_among(self, channels: Iterable[str], horizon: datetime) -> set[str]:
        """Those of ``channels`` last acknowledged before ``horizon`` (never: not stale)."""
        return self._logins_where(channels, ChannelRecord.acknowledged_at < horizon)

    def _logins_where(self, channels: Iterable[str], *rules: ColumnElement[bool]) -> set[str]:
        logins = normalise_logins(channels)
        found: set[str] = set()
        with self._read() as conn:
            for chunk in self._batches(logins):
                query = select(ChannelRecord.login).where(self._login_in(chunk), *rules)
                found.update(conn.scalars(query))
        return found

    def channel_states(self, channels: Iterable[str] = ()) -> list[tuple[str, bool, datetime]]:
        """(login, wanted, last change) of the named channels, or of every known one, sorted."""
        logins = normalise_logins(channels)
        query = select(ChannelRecord.login, ChannelRecord.wanted, ChannelRecord.updated_at)
        with self._read() as conn:
            if not logins:
                rows = list(conn.execute(query.order_by(ChannelRecord.login)))
            else:
                rows = []
                for chunk in self._batches(logins):
                    rows.extend(conn.execute(query.where(self._login_in(chunk))))
        return sorted((str(r[0]), bool(r[1]), r[2]) for r in rows)

    def wanted(self, *, authorized_only: bool = False) -> list[str]:
        """Logins of every wanted channel (with ``authorized_only``, of those authorized and
        not revoked too), sorted."""
        query = select(ChannelRecord.login).where(ChannelRecord.wanted.is_(True))
        if authorized_only:
            query = query.where(
                ChannelRecord.authorized.is_(True), ChannelRecord.revoked.is_(False)
            )
        with self._read() as conn:
            return sorted(conn.scalars(query))

    def part_stale(self, horizon: datetime) -> tuple[int, set[str], set[str]]:
        """The stale cleanup of the Database manager: mark no longer wanted the wanted
        channels last acknowledged before ``horizon`` and those not authorized or revoked;
        return (how many were wanted, the stale ones, the unauthorized ones). A query on the
        index of ``wanted`` and ``acknowledged_at``, and updates that check the condition again
        (a channel acknowledged meanwhile stays)."""
        record = ChannelRecord
        unauthorized_rule = or_(record.authorized.is_(False), record.revoked.is_(True))
        stale_rule = record.acknowledged_at < horizon
        query = select(record.login, record.authorized, record.revoked).where(
            record.wanted.is_(True), or_(stale_rule, unauthorized_rule)
        )
        with self._write() as conn:
            count = conn.scalar(select(func.count()).where(record.wanted.is_(True)))
            stale: list[str] = []
            unauthorized: list[str] = []
            for login, authorized, revoked in conn.execute(query):
                (unauthorized if not authorized or revoked else stale).append(login)
            for logins, rule in ((stale, stale_rule), (unauthorized, unauthorized_rule)):
                for chunk in self._batches(logins):
                    conn.execute(
                        update(record)
                        .where(self._login_in(chunk), record.wanted.is_(True), rule)
                        .values(wanted=False, updated_at=utcnow())
                    )
        return int(count or 0), set(stale), set(unauthorized)

    def want_reconnect(self, *, horizon: datetime | None = None) -> list[str]:
        """Mark wanted again every channel authorized with ``reconnect`` (not revoked) that is
        not wanted (with ``horizon``, only those acknowledged since, or never: a stale one
        stays parted); their logins, sorted. One never acknowledged counts as acknowledged now
        (so that the stale cleanup parts it in its time); any other acknowledgement is left as
        it was."""
        record = ChannelRecord
        where: list[ColumnElement[bool]] = [
            record.reconnect.is_(True),
            record.authorized.is_(True),
            record.revoked.is_(False),
            record.wanted.is_(False),
        ]
        if horizon is not None:
            where.append(or_(record.acknowledged_at.is_(None), record.acknowledged_at >= horizon))
        with self._write() as conn:
            logins = sorted(conn.scalars(select(record.login).where(*where)))
            for chunk in self._batches(logins):
                at = utcnow()
                conn.execute(
                    update(record)
                    .where(self._login_in(chunk))
                    .values(
                        wanted=True,
                        updated_at=at,
                        acknowledged_at=func.coalesce(record.acknowledged_at, at),
                    )
                )
        return logins

    def remember_refused(self, channels: Iterable[str], reason: str) -> None:
        """Record that joining ``channels`` was refused for ``reason`` (creating those not yet
        known, not wanted) so that listings show them."""
        at = utcnow()
        self._upsert(channels, {"last_join_outcome": reason[:40], "last_join_at": at}, at)

    def count_channels(self) -> int:
        """How many channels the store knows."""
        with self._read() as conn:
            return int(conn.scalar(select(func.count()).select_from(ChannelRecord)) or 0)

    def _read(self) -> _Transaction:
        return _Transaction(self, write=False)

    def _upsert(self, channels: Iterable[str], values: Mapping[str, Any], at: datetime) -> None:
        """Insert ``channels`` with ``values`` (the defaults for the rest), or set ``values``
        on those known: a row of parameters per channel for a few, one statement per
        :data:`BULK_SIZE` channels for many (the bulk path: the logins as one parameter)."""
        logins = normalise_logins(channels)
        insert = _dialect_insert(self.engine.dialect.name)
        defaults: dict[str, Any] = {
            "wanted": False,
            "authorized": False,
            "authorized_at": None,
            "revoked": False,
            "reconnect": False,
            "options": {},
            "acknowledged_at": None,
            "created_at": at,
        }
        row = {**defaults, **values, "updated_at": at}
        with self._write() as conn:
            if len(logins) < BULK_FROM:
                # executemany: one row's parameters per execution, no placeholder limit.
                stmt = insert(ChannelRecord)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["login"], set_={**values, "updated_at": at}
                )
                conn.execute(stmt, [{**row, "login": login} for login in logins])
                return
            table = ChannelRecord.__table__
            shared = [self._typed(value, table.c[name].type) for name, value in row.items()]
            for chunk in _chunks(logins, BULK_SIZE):
                source = self._logins_source(chunk)
                rows = select(source, *shared).where(true())  # WHERE: SQLite's ON CONFLICT rule
                bulk = insert(ChannelRecord).from_select(["login", *row], rows)
                bulk = bulk.on_conflict_do_update(
                    index_elements=["login"],
                    set_={name: bulk.excluded[name] for name in (*values, "updated_at")},
                )
                conn.execute(bulk)

    def _typed(self, value: Any, kind: Any) -> ColumnElement[Any]:
        """``value`` as a bound parameter of type ``kind`` in a SELECT list (PostgreSQL is told
        the type; a CAST on SQLite would change a JSON text's affinity)."""
        bound = literal(value, kind)
        return cast(bound, kind) if self.engine.dialect.name == "postgresql" else bound

    def _logins_source(self, logins: Sequence[str]) -> ColumnElement[str]:
        """A column of the rows ``logins``, from one parameter."""
        if self.engine.dialect.name == "postgresql":
            return func.unnest(literal(list(logins), _text_array()))
        return func.json_each(json.dumps(list(logins))).table_valued("value").c.value

    def _login_in(self, logins: Sequence[str]) -> ColumnElement[bool]:
        """``login IN logins``, the bulk path's way for many."""
        if len(logins) < BULK_FROM:
            return ChannelRecord.login.in_(logins)
        if self.engine.dialect.name == "postgresql":
            return ChannelRecord.login == any_(literal(list(logins), _text_array()))
        return ChannelRecord.login.in_(select(self._logins_source(logins)))

    def _batches(self, logins: Sequence[str]) -> Iterator[Sequence[str]]:
        """``logins`` in the batches one statement takes."""
        return _chunks(logins, CHUNK_SIZE if len(logins) < BULK_FROM else BULK_SIZE)

    def _set(self, channels: Iterable[str], **values: Any) -> None:
        logins = normalise_logins(channels)
        with self._write() as conn:
            for chunk in self._batches(logins):
                conn.execute(
                    update(ChannelRecord)
                    .where(self._login_in(chunk))
                    .values(**values, updated_at=utcnow())
                )

    # -- supervisors and processes --------------------------------------------------------

    def record_supervisor(
        self,
        supervisor_id: str,
        state: RunState,
        *,
        pid: int,
        options: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        """Create or update a supervisor's latest state, and append it to the history."""
        at = utcnow()
        with self._write() as conn:
            row = conn.execute(
                select(SupervisorRecord.id).where(SupervisorRecord.id == supervisor_id)
            ).first()
            values: dict[str, Any] = {"state": state.value, "last_seen_at": at, "pid": pid}
            if state in (RunState.STOPPED, RunState.DEAD):
                values["stopped_at"] = at
            if state is RunState.RUNNING:  # a new run (an id may be used again): its own age
                values.update(started_at=at, stopped_at=None, hostname=socket.gethostname())
            if row is None:
                values.pop("started_at", None)
                values.pop("hostname", None)
                conn.execute(
                    sql_insert(SupervisorRecord).values(
                        id=supervisor_id,
                        hostname=socket.gethostname(),
                        options=dict(options or {}),
                        metrics={},
                        started_at=at,
                        **values,
                    )
                )
            else:
                conn.execute(
                    update(SupervisorRecord)
                    .where(SupervisorRecord.id == supervisor_id)
                    .values(**values)
                )
            conn.execute(
                sql_insert(HistoryRecord).values(
                    at=at, supervisor_id=supervisor_id, state=state.value, detail=detail[:500]
                )
            )

    def record_process(
        self,
        process_id: str,
        supervisor_id: str,
        state: RunState,
        *,
        pid: int | None = None,
        channels: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        exit_code: int | None = None,
        detail: str = "",
        history: bool = True,
    ) -> None:
        """Create or update a worker process's latest state, and (``history``) append it to the
        history. Called on state changes and at most every 30 s, never per heartbeat."""
        at = utcnow()
        values: dict[str, Any] = {"state": state.value, "last_seen_at": at}
        if pid is not None:
            values["pid"] = pid
        if channels is not None:
            values["channels"] = channels
        if metrics is not None:
            values["metrics"] = dict(metrics)
        if exit_code is not None:
            values["exit_code"] = exit_code
        if state in (RunState.STOPPED, RunState.DEAD):
            values["stopped_at"] = at
        with self._write() as conn:
            row = conn.execute(
                select(ProcessRecord.id).where(ProcessRecord.id == process_id)
            ).first()
            if row is None:
                values.setdefault("metrics", {})
                conn.execute(
                    sql_insert(ProcessRecord).values(
                        id=process_id, supervisor_id=supervisor_id, started_at=at, **values
                    )
                )
            else:
                conn.execute(
                    update(ProcessRecord).where(ProcessRecord.id == process_id).values(**values)
                )
            if history:
                conn.execute(
                    sql_insert(HistoryRecord).values(
                        at=at,
                        supervisor_id=supervisor_id,
                        process_id=process_id,
                        state=state.value,
                        detail=detail[:500],
                    )
                )

    def set_supervisor_metrics(self, supervisor_id: str, metrics: Mapping[str, Any]) -> None:
        """Replace a supervisor's metrics (its process count, a problem it reports)."""
        with self._write() as conn:
            conn.execute(
                update(SupervisorRecord)
                .where(SupervisorRecord.id == supervisor_id)
                .values(metrics=dict(metrics), last_seen_at=utcnow())
            )

    def mark_dead(self, supervisor_ids: Iterable[str], process_ids: Iterable[str]) -> None:
        """Record supervisors and processes found dead (no heartbeat), with their history."""
        at = utcnow()
        with self._write() as conn:
            for supervisor_id in supervisor_ids:
                conn.execute(
                    update(SupervisorRecord)
                    .where(SupervisorRecord.id == supervisor_id)
                    .values(state=RunState.DEAD.value, stopped_at=at)
                )
                conn.execute(
                    sql_insert(HistoryRecord).values(
                        at=at,
                        supervisor_id=supervisor_id,
                        state=RunState.DEAD.value,
                        detail="no heartbeat",
                    )
                )
            for process_id in process_ids:
                owner = conn.execute(
                    select(ProcessRecord.supervisor_id).where(ProcessRecord.id == process_id)
                ).scalar()
                conn.execute(
                    update(ProcessRecord)
                    .where(ProcessRecord.id == process_id)
                    .values(state=RunState.DEAD.value, stopped_at=at)
                )
                if owner is not None:
                    conn.execute(
                        sql_insert(HistoryRecord).values(
                            at=at,
                            supervisor_id=owner,
                            process_id=process_id,
                            state=RunState.DEAD.value,
                            detail="no heartbeat",
                        )
                    )

    def delete_records(
        self, *, supervisor_ids: Iterable[str] = (), process_ids: Iterable[str] = ()
    ) -> None:
        """Delete the rows of supervisors (with their processes) and processes; the history
        stays."""
        with self._write() as conn:
            for chunk in _chunks(list(process_ids)):
                conn.execute(delete(ProcessRecord).where(ProcessRecord.id.in_(chunk)))
            for chunk in _chunks(list(supervisor_ids)):
                conn.execute(delete(ProcessRecord).where(ProcessRecord.supervisor_id.in_(chunk)))
                conn.execute(delete(SupervisorRecord).where(SupervisorRecord.id.in_(chunk)))

    def supervisors(self) -> list[SupervisorRecord]:
        """Every supervisor record, newest first."""
        with self._read() as conn:
            query = select(SupervisorRecord).order_by(SupervisorRecord.started_at.desc())
            return [SupervisorRecord(**row._asdict()) for row in conn.execute(query).all()]

    def processes(self) -> list[ProcessRecord]:
        """Every process record, newest first."""
        with self._read() as conn:
            query = select(ProcessRecord).order_by(ProcessRecord.started_at.desc())
            return [ProcessRecord(**row._asdict()) for row in conn.execute(query).all()]

    def history(self, supervisor_id: str) -> list[HistoryRecord]:
        """The lifecycle steps of one supervisor and its processes, oldest first."""
        with self._read() as conn:
            query = (
                select(HistoryRecord)
                .where(HistoryRecord.supervisor_id == supervisor_id)
                .order_by(HistoryRecord.id)
            )
            return [HistoryRecord(**row._asdict()) for row in conn.execute(query).all()]


class _Transaction:
    """A connection in a transaction whose database errors surface as StorageError."""

    def __init__(self, store: Store, *, write: bool = True) -> None:
        self._store = store
        self._write = write
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        self._conn = self._store._connect()
        self._conn.begin()
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        assert conn is not None
        try:
            if exc is None and self._write:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.close()
        if isinstance(exc, SQLAlchemyError):
            action = "write to" if self._write else "read from"
            raise StorageError(
                f"cannot {action} database {self._store._shown}: {_reason(exc)}"
            ) from exc


#: The extra that brings the driver of each backend that needs one.
_DRIVER_EXTRAS = {"postgresql": ("psycopg", "postgres")}


def _missing_driver(shown: str, backend: str, exc: ImportError) -> str:
    """The message for a database driver that cannot be imported: which extra to install."""
    if backend not in _DRIVER_EXTRAS:
        return f"cannot use database {shown}: {_reason(exc)}"
    driver, extra = _DRIVER_EXTRAS[backend]
    missing = isinstance(exc, ModuleNotFoundError) or exc.name == driver
    problem = "is not installed" if missing else f"cannot be imported ({_reason(exc)})"
    return (
        f"cannot use database {shown}: its driver {driver} {problem}; "
        f"install it with: pip install 'tmi-cluster[{extra}]'"
    )


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip().splitlines()
    return message[0] if message else exc.__class__.__name__
