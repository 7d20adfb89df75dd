"""tmi-cluster: keep a Twitch bot connected to any number of chat channels.

The public API, pinned by a test:

- this package's ``__all__``: :class:`Cluster` and :class:`SyncCluster` (an application's
  handle on a running cluster: join, part, send, channels, events, scale) with
  :class:`SendResult` and its vocabulary; :class:`Subscriber` and :func:`on` (handlers inside
  the workers); settings; the errors; and the library's building blocks (:class:`Connection`,
  :class:`Pool`, :class:`Worker` with its :class:`Dispatcher` and :class:`Handlers`, and
  :func:`build_pool`, which builds a pool from the settings);
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
    ChatRefusedError,
    ConfigError,
    DeadlineError,
    EmbeddedRedisError,
    EventSubError,
    GrantKeyError,
    HelixError,
    InvalidChannelError,
    LoginError,
    MessageTooLongError,
    MigrationError,
    NoIdentityError,
    NotAvailableError,
    OAuthError,
    ParseError,
    RedisUnavailableError,
    StaleLeaseError,
    StorageError,
    TmiClusterError,
    UnknownEventTypeError,
    UnsafeLineError,
)

if TYPE_CHECKING:
    from tmi_cluster.bus.events import EventReader
    from tmi_cluster.channels import ChannelManager
    from tmi_cluster.chat.connection import Connection
    from tmi_cluster.chat.options import ConnectionOptions, ConnectionState
    from tmi_cluster.chat.pool import JoinOutcome, Pool, PoolState
    from tmi_cluster.cluster.client import Cluster, SyncCluster
    from tmi_cluster.outcomes import (
        ChannelJoin,
        Grant,
        JoinResult,
        JoinStatus,
        SendRefusal,
        SendResult,
        SendStatus,
    )
    from tmi_cluster.worker.handlers import Dispatcher, Handlers, Subscriber, on
    from tmi_cluster.worker.worker import Worker, WorkerState, build_pool

__version__ = "0.9.0"

__all__ = [
    "ChannelJoin",
    "ChannelManager",
    "ChatRefusedError",
    "Cluster",
    "ConfigError",
    "Connection",
    "ConnectionOptions",
    "ConnectionState",
    "DeadlineError",
    "Dispatcher",
    "EmbeddedRedisError",
    "EventReader",
    "EventSubError",
    "Grant",
    "GrantKeyError",
    "Handlers",
    "HelixError",
    "InvalidChannelError",
    "JoinOutcome",
    "JoinResult",
    "JoinStatus",
    "LoginError",
    "MessageTooLongError",
    "MigrationError",
    "NoIdentityError",
    "NotAvailableError",
    "OAuthError",
    "ParseError",
    "Pool",
    "PoolState",
    "RedisUnavailableError",
    "SendRefusal",
    "SendResult",
    "SendStatus",
    "Settings",
    "StaleLeaseError",
    "StorageError",
    "Subscriber",
    "SyncCluster",
    "TmiClusterError",
    "UnknownEventTypeError",
    "UnsafeLineError",
    "Worker",
    "WorkerState",
    "__version__",
    "build_pool",
    "load_settings",
    "on",
]

_LAZY = {
    "ChannelJoin": "tmi_cluster.outcomes",
    "ChannelManager": "tmi_cluster.channels",
    "EventReader": "tmi_cluster.bus.events",
    "Grant": "tmi_cluster.outcomes",
    "JoinStatus": "tmi_cluster.outcomes",
    "Cluster": "tmi_cluster.cluster.client",
    "SendRefusal": "tmi_cluster.outcomes",
    "SendResult": "tmi_cluster.outcomes",
    "SendStatus": "tmi_cluster.outcomes",
    "Subscriber": "tmi_cluster.worker.handlers",
    "Dispatcher": "tmi_cluster.worker.handlers",
    "Handlers": "tmi_cluster.worker.handlers",
    "SyncCluster": "tmi_cluster.cluster.client",
    "on": "tmi_cluster.worker.handlers",
    "Connection": "tmi_cluster.chat.connection",
    "ConnectionOptions": "tmi_cluster.chat.options",
    "ConnectionState": "tmi_cluster.chat.options",
    "JoinOutcome": "tmi_cluster.chat.pool",
    "JoinResult": "tmi_cluster.outcomes",
    "Pool": "tmi_cluster.chat.pool",
    "PoolState": "tmi_cluster.chat.pool",
    "Worker": "tmi_cluster.worker.worker",
    "WorkerState": "tmi_cluster.worker.worker",
    "build_pool": "tmi_cluster.worker.worker",
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
