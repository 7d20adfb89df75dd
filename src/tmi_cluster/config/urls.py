"""URLs in the settings: Redis and database URL checks, and masking of embedded passwords."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = ["check_redis_url", "mask_url", "normalise_database_url"]


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
