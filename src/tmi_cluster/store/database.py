"""The connection to the SQL database: the engine, transactions whose errors are translated, and
the schema (:meth:`Database.migrate`, :meth:`Database.revision`).

:class:`Database` is the base of every part of :class:`~tmi_cluster.store.Store`; the parts
(channels, supervisors, the cluster's state) reach the database only through ``_read()`` and
``_write()``, a connection in a transaction whose database errors are raised as
:class:`~tmi_cluster.errors.StorageError` with the URL shown password-masked
(:class:`~tmi_cluster.errors.MigrationError` for ``migrate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from tmi_cluster.config import Settings, mask_url
from tmi_cluster.errors import ConfigError, MigrationError, StorageError

__all__ = ["CHUNK_SIZE", "Database", "Transaction", "chunks", "dialect_insert"]

#: Channels per statement of the small path: far below SQLite's 999 and PostgreSQL's 65,535
#: placeholders.
CHUNK_SIZE = 500
_MIGRATIONS = Path(__file__).parent / "migrations"
#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate`` runs.
_MIGRATION_LOCK = 0x746D6963  # "tmic"


def chunks(items: Sequence[str], size: int = CHUNK_SIZE) -> Iterator[Sequence[str]]:
    """``items`` in slices of at most ``size``, in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dialect_insert(dialect: str) -> Any:
    """The INSERT of ``dialect`` (``sqlite`` or ``postgresql``), which has ON CONFLICT.
    Imported here, not with the module: the PostgreSQL dialect alone costs a command that only
    reads a SQLite file about 30 ms at start."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite  # noqa: PLC0415

        return sqlite.insert
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415

    return postgresql.insert


class Database:
    """An engine on one database URL, with transactions whose errors surface as StorageError.
    Use as a context manager, or call :meth:`close`."""

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
    def from_settings(cls, settings: Settings) -> Self:
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

    def _read(self) -> Transaction:
        """A connection in a transaction that is rolled back at the end."""
        return Transaction(self, write=False)

    def _write(self) -> Transaction:
        """A connection in a transaction committed at the end (rolled back on an error)."""
        return Transaction(self)


class Transaction:
    """A connection in a transaction whose database errors surface as StorageError."""

    def __init__(self, database: Database, *, write: bool = True) -> None:
        self._database = database
        self._write = write
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        self._conn = self._database._connect()
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
                f"cannot {action} database {self._database._shown}: {_reason(exc)}"
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
