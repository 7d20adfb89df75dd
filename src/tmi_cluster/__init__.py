"""tmi-cluster: keep a Twitch bot connected to any number of chat channels.

The public API, pinned by a test:

- this package's ``__all__``: settings, the errors, and the library's building blocks
  (:class:`Connection`, :class:`Pool`, :class:`Worker` and :func:`build_pool`, which builds a
  pool from the settings);
- the modules :mod:`tmi_cluster.events` (every chat event as a typed object),
  :mod:`tmi_cluster.irc` (parsing and serialising IRC lines) and :mod:`tmi_cluster.simulator`
  (the built-in Twitch chat simulator), each with its own ``__all__``.

Every other module is internal and may change without notice. The building blocks load on
first use, so that ``import tmi_cluster`` (and the command line's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import (
    ConfigError,
    EmbeddedRedisError,
    InvalidChannelError,
    LoginError,
    MessageTooLongError,
    MigrationError,
    NoIdentityError,
    NotAvailableError,
    ParseError,
    RedisUnavailableError,
    StaleLeaseError,
    StorageError,
    TmiClusterError,
    UnsafeLineError,
)

if TYPE_CHECKING:
    from tmi_cluster.connection import Connection, ConnectionOptions, ConnectionState
    from tmi_cluster.outcomes import JoinResult
    from tmi_cluster.pool import JoinOutcome, Pool, PoolState
    from tmi_cluster.worker import EventQueue, Worker, WorkerState, build_pool

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Connection",
    "ConnectionOptions",
    "ConnectionState",
    "EmbeddedRedisError",
    "EventQueue",
    "InvalidChannelError",
    "JoinOutcome",
    "JoinResult",
    "LoginError",
    "MessageTooLongError",
    "MigrationError",
    "NoIdentityError",
    "NotAvailableError",
    "ParseError",
    "Pool",
    "PoolState",
    "RedisUnavailableError",
    "Settings",
    "StaleLeaseError",
    "StorageError",
    "TmiClusterError",
    "UnsafeLineError",
    "Worker",
    "WorkerState",
    "__version__",
    "build_pool",
    "load_settings",
]

_LAZY = {
    "Connection": "tmi_cluster.connection",
    "ConnectionOptions": "tmi_cluster.connection",
    "ConnectionState": "tmi_cluster.connection",
    "EventQueue": "tmi_cluster.worker",
    "JoinOutcome": "tmi_cluster.pool",
    "JoinResult": "tmi_cluster.outcomes",
    "Pool": "tmi_cluster.pool",
    "PoolState": "tmi_cluster.pool",
    "Worker": "tmi_cluster.worker",
    "WorkerState": "tmi_cluster.worker",
    "build_pool": "tmi_cluster.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tmi_cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
