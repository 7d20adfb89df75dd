"""What every command of the ``tmi-cluster`` group shares: the exit codes, the translation of
our errors into ``error:`` lines, the settings of an invocation, option types and tables.

This module imports only click and the light parts of the library (the settings, the errors);
SQLAlchemy and the store are imported inside :func:`cluster_settings` and :func:`records`,
which only the commands about an existing cluster call.
"""

from __future__ import annotations

import enum
import functools
import gc
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import (
    ConfigError,
    EmbeddedRedisError,
    InvalidChannelError,
    MessageTooLongError,
    NotAvailableError,
    RedisUnavailableError,
    StorageError,
    TmiClusterError,
    UnknownEventTypeError,
    UnsafeLineError,
)

__all__ = [
    "START_COLLECTION_THRESHOLD",
    "ExitCode",
    "Group",
    "Seconds",
    "cluster_settings",
    "collect_as_usual",
    "collect_lazily",
    "exit_code",
    "fail",
    "is_number",
    "long_running",
    "plural",
    "records",
    "settings",
    "table",
]

#: The cycle collector's young-generation threshold while a command starts (the usual one is
#: 700 allocations): a start is mostly imports, whose objects live until the command ends, and
#: collecting them again and again cost 50-75 ms of a command's start (issue 20).
START_COLLECTION_THRESHOLD = 1_000_000
_USUAL_THRESHOLDS = gc.get_threshold()


def collect_lazily() -> None:
    """While a command starts and runs briefly: the young generation collected only every
    :data:`START_COLLECTION_THRESHOLD` allocations (cycles are still collected, late)."""
    gc.set_threshold(START_COLLECTION_THRESHOLD, *_USUAL_THRESHOLDS[1:])


def collect_as_usual() -> None:
    """The usual thresholds from now on (a command that runs for long)."""
    gc.set_threshold(*_USUAL_THRESHOLDS)


_F = TypeVar("_F", bound=Callable[..., Any])


def long_running(command: _F) -> _F:
    """Mark a command's function as running for long (``run``, ``demo``, ``simulate``,
    ``tail``, ``dashboard``): it collects as usual from its start (:func:`collect_as_usual`)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        collect_as_usual()
        return command(*args, **kwargs)

    wrapper.long_running = True  # type: ignore[attr-defined]
    return cast("_F", wrapper)


class ExitCode(enum.IntEnum):
    """Exit statuses of the command."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    DATAERR = 65  # sysexits EX_DATAERR
    UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
    TEMPFAIL = 75  # sysexits EX_TEMPFAIL
    NOPERM = 77  # sysexits EX_NOPERM
    CONFIG = 78  # sysexits EX_CONFIG


def exit_code(error: TmiClusterError) -> ExitCode:
    """The exit code of one of our errors."""
    if isinstance(error, ConfigError):
        return ExitCode.CONFIG
    if isinstance(error, InvalidChannelError | UnknownEventTypeError):
        return ExitCode.USAGE
    if isinstance(error, UnsafeLineError | MessageTooLongError):
        return ExitCode.DATAERR
    if isinstance(error, NotAvailableError | RedisUnavailableError | EmbeddedRedisError):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILURE


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print one ``error:`` line and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(int(code))


class Group(click.Group):
    """A click group that turns our errors into ``error:`` lines and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TmiClusterError as error:
            lines = error.problems if isinstance(error, ConfigError) else str(error).splitlines()
            for line in lines or [error.__class__.__name__]:
                click.echo(f"error: {line}", err=True)
            ctx.exit(exit_code(error))


def settings(ctx: click.Context) -> Settings:
    """The settings for this invocation, loaded once (``--config`` honoured)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
    loaded: Settings = obj["settings"]
    return loaded


def cluster_settings(ctx: click.Context) -> Settings:
    """The settings of a command about an existing cluster: StorageError when its database
    has no tables, or there is no SQLite file (such a command never creates one: it most
    likely runs in the wrong folder)."""
    from sqlalchemy.engine import make_url

    from tmi_cluster.store import Store

    loaded = settings(ctx)
    url = make_url(loaded.database.url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise StorageError(
            f"no database at {url.database}: run this where the cluster's tmi-cluster.toml is "
            "(or give --config), or 'tmi-cluster install' to start a cluster here"
        )
    with Store.from_settings(loaded) as store:
        if store.revision() is None:
            raise StorageError("the database has no tables yet: run 'tmi-cluster migrate'")
    return loaded


def records(loaded: Settings) -> tuple[list[Any], list[Any]]:
    """The supervisor and process records."""
    from tmi_cluster.store import Store

    with Store.from_settings(loaded) as store:
        return store.supervisors(), store.processes()


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a float (nan and inf included)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


class Seconds(click.FloatRange):
    """Seconds on the command line: a finite number above 0, at most ``max`` (nan and inf are
    refused, naming the option)."""

    name = "seconds"

    def __init__(self, *, max: float) -> None:  # click's own name
        super().__init__(min=0, min_open=True, max=max)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(super().convert(value, param, ctx))
        except click.BadParameter:
            if isinstance(value, str) and is_number(value):
                raise  # out of the range: click says which
            self.fail(f"expected a number of seconds, got {value!r}", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"expected a number of seconds, got {value!r}", param, ctx)
        return seconds


def table(header: list[str], rows: list[list[str]], empty: str) -> str:
    """Rows as left-aligned columns under ``header``; ``empty`` when there are none."""
    if not rows:
        return empty
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 word``, ``2 words`` (or ``2 <many>``)."""
    return f"{count} {word}" if count == 1 else f"{count} {many or word + 's'}"
