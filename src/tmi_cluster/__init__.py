"""tmi-cluster: keep a Twitch bot connected to any number of chat channels.

The public API is what ``__all__`` lists (a test pins it); every other module is internal.
"""

from __future__ import annotations

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import (
    ConfigError,
    EmbeddedRedisError,
    InvalidChannelError,
    MigrationError,
    NotAvailableError,
    RedisUnavailableError,
    StorageError,
    TmiClusterError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EmbeddedRedisError",
    "InvalidChannelError",
    "MigrationError",
    "NotAvailableError",
    "RedisUnavailableError",
    "Settings",
    "StorageError",
    "TmiClusterError",
    "__version__",
    "load_settings",
]
